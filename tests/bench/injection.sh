#!/usr/bin/env bash
# Pod injection benchmark: builds release, starts `keyhook serve` standalone
# against a local Vault-shaped backend answering in 50 ms, and drives
# /mutate-pod over HTTP/2 + TLS with a pod carrying 3 references:
# (a) Secret present and fresh, (b) cold, 100 identical pods at once.
# Prints p50/p99, backend calls and Secret writes; asserts nothing.
# Targets: (a) p99 < 5 ms; (b) one backend call per distinct key and one
# Secret write per 100 pods, p99 < 100 ms.
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --quiet --release --bin keyhook --example injection_bench
"$target/release/examples/injection_bench" "$target/release/keyhook"
