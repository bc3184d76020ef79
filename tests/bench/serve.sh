#!/usr/bin/env bash
# keyhook vs a bare hyper + rustls floor server (and the same floor reading the
# review's uid, as any webhook must): h2load over TLS + HTTP/2 with a real pod
# AdmissionReview at 1 x 1, 1 x 64, 4 x 16 and 16 x 4 connections x streams, a
# steady 2,000 req/s run, start-to-ready and RSS. Prints figures; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v h2load >/dev/null || { echo "needs h2load: apt-get install nghttp2-client" >&2; exit 1; }
# BENCH_PROFILE=dist measures the build the image ships (fat LTO; slower to build).
profile="${BENCH_PROFILE:-release}"
cargo build --profile "$profile" --quiet --bin keyhook --example floor_server --example decode_bench
"${CARGO_TARGET_DIR:-target}/$profile/examples/decode_bench"
exec python3 tests/bench/bench.py serve
