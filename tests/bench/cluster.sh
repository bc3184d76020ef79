#!/usr/bin/env bash
# Cluster-scale benchmark: builds release, then runs `keyhook serve` (its own
# process, so its RSS is its own) in cluster mode against the tests'
# in-memory apiserver, served over HTTP by examples/cluster_bench: first a
# cluster holding only what keyhook works with (2,000 namespaces, 10 stores,
# 1,000 injected pods, 200 managed Secrets), then the same plus 40,000
# unrelated Secrets and 19,000 unrelated pods. Prints the time to ready, RSS
# at ready and 60 s later, and every request of those 60 s of steady state;
# asserts nothing. Targets: RSS <= baseline + 16 MiB; ready within 5 s; no
# unfiltered cluster-wide LIST/WATCH of Secrets or pods; no LIST started in
# steady state.
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --quiet --release --bin keyhook --example cluster_bench
"$target/release/examples/cluster_bench" "$target/release/keyhook"
