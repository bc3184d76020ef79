#!/usr/bin/env bash
# Provider-layer benchmark: overhead of the layer over a bare HTTP call to a
# local backend answering in 1 ms (p50/p99, warm client), coalescing, and the
# per-store rate limit. Prints figures; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo run --quiet --release --example providers_bench
