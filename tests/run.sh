#!/usr/bin/env bash
# The whole test suite: installs the external programs the tests drive (real
# TLS clients, Go, OpenBao, moto, helm), then runs every test with those
# programs required, so nothing is silently skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/tools/install-tools.sh
export KEYHOOK_REQUIRE_TOOLS=1
cargo test "$@"
