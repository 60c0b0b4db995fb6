#!/usr/bin/env bash
# Installs what building and testing pbft needs on a fresh Debian machine with Rust.
# Safe to run again: it only installs what is missing.
set -euo pipefail

need_cmd() { command -v "$1" >/dev/null 2>&1; }

if ! need_cmd cargo; then
  echo "error: cargo is not installed; install Rust (rustup) first" >&2
  exit 1
fi
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    echo "note: cargo $component is missing; trying 'rustup component add $component'" >&2
    rustup component add "$component" || { echo "error: could not install $component" >&2; exit 1; }
  fi
done
# System libraries: none are needed yet. (The RocksDB executor will need libclang-dev
# for librocksdb-sys; it is installed here when that lands.)
