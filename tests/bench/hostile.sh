#!/usr/bin/env bash
# keyhook against hostile clients: silent connections, fd pressure, huge
# bodies, a validation burst, HTTP/2 rapid resets. Prints figures; asserts
# nothing. Needs h2load and curl (tests/tools/install-tools.sh).
#   bash tests/bench/hostile.sh [silent|fds|bodies|validation|resets]...
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v h2load >/dev/null || { echo "needs h2load: apt-get install nghttp2-client" >&2; exit 1; }
profile="${BENCH_PROFILE:-release}"
cargo build --profile "$profile" --quiet --bin keyhook
exec python3 tests/bench/hostile.py "$@"
