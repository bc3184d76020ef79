#!/usr/bin/env bash
# A ConversionReview of 100 ExternalSecrets v1alpha1 -> v1 over HTTP/2 + TLS:
# p50/p99 latency and conversions per second. Prints figures; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v h2load >/dev/null || { echo "needs h2load: apt-get install nghttp2-client" >&2; exit 1; }
cargo build --profile "${BENCH_PROFILE:-release}" --quiet --bin keyhook
exec python3 tests/bench/bench.py conversion
