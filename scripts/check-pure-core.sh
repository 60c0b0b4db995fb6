#!/usr/bin/env bash
# The protocol core and the traitors must stay pure: no async runtime, sockets, TLS,
# storage, OS randomness or clocks anywhere in their dependency trees.
set -euo pipefail
status=0
for crate in pbft-protocol pbft-traitor; do
  bad=$(cargo tree -q -p "$crate" -e normal --prefix none \
        | awk '{print $1}' | sort -u \
        | grep -xE 'tokio|mio|quinn|quinn-proto|rustls|rocksdb|librocksdb-sys|rand|getrandom|socket2|chrono|time' || true)
  if [ -n "$bad" ]; then
    echo "error: $crate depends on: $(echo "$bad" | tr '\n' ' ')" >&2
    status=1
  fi
done
[ "$status" -eq 0 ] && echo "pure core: pbft-protocol and pbft-traitor have no IO, clock or randomness crates"
exit "$status"
