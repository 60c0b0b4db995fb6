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
# librocksdb-sys compiles RocksDB (C++) and generates its bindings with libclang.
missing=()
dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]} (needed to build RocksDB)" >&2
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
