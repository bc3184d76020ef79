#!/usr/bin/env bash
# keyhook against hostile clients: silent connections, fd pressure, huge
# bodies, a burst of large reviews, a validation burst, HTTP/2 rapid resets;
# and what single reviews cost (examples/review_bench). Prints figures;
# asserts nothing. Needs h2load and curl (tests/tools/install-tools.sh).
#   bash tests/bench/hostile.sh [silent|fds|bodies|burst|validation|resets]...
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v h2load >/dev/null || { echo "needs h2load: apt-get install nghttp2-client" >&2; exit 1; }
profile="${BENCH_PROFILE:-release}"
cargo build --profile "$profile" --quiet --bin keyhook --example review_bench
if [ "$#" -eq 0 ]; then
  "${CARGO_TARGET_DIR:-target}/$profile/examples/review_bench"
fi
exec python3 tests/bench/hostile.py "$@"
