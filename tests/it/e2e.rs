//! The multi-replica scenarios of `cluster_scenarios` against a
//! real cluster, in real time, when `KEYHOOK_E2E_KUBECONFIG` names a
//! kubeconfig; ignored otherwise. See `docs/e2e.md`.
//!
//! The replicas run in this process (the same `ClusterTasks` as `keyhook
//! serve`); the cluster provides the real apiserver: Lease semantics,
//! server-side apply, watches and validation of every write.

use crate::support;

use std::{future::Future, path::PathBuf};

use crate::scenarios;
use support::harness::Harness;

/// The scenarios share cluster objects: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The kubeconfig of the throwaway cluster. A test run with `--ignored`
/// and no kubeconfig fails: it must never pass having run nothing.
fn kubeconfig() -> PathBuf {
    match std::env::var_os("KEYHOOK_E2E_KUBECONFIG") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => panic!(
            "KEYHOOK_E2E_KUBECONFIG is not set: these tests need a throwaway cluster (docs/e2e.md)"
        ),
    }
}

async fn run<F, Fut>(scenario: F)
where
    F: FnOnce(&'static Harness) -> Fut,
    Fut: Future<Output = ()>,
{
    let _serial = SERIAL.lock().await;
    let path = kubeconfig();
    // Leaked so the scenario can borrow it for 'static; one per test.
    let harness: &'static Harness = Box::leak(Box::new(Harness::real(&path).await));
    let limit = harness.timing.deadline * 2;
    let outcome = tokio::time::timeout(limit, scenario(harness)).await;
    harness.cleanup().await;
    outcome.expect("the scenario did not finish in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a throwaway cluster: set KEYHOOK_E2E_KUBECONFIG and run with --ignored"]
async fn two_replicas_only_the_lease_holder_writes() {
    run(scenarios::two_replicas_only_the_holder_writes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a throwaway cluster: set KEYHOOK_E2E_KUBECONFIG and run with --ignored"]
async fn a_full_ca_overlap_cycle_never_breaks_a_handshake() {
    run(scenarios::full_ca_overlap_cycle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a throwaway cluster: set KEYHOOK_E2E_KUBECONFIG and run with --ignored"]
async fn a_leader_killed_mid_rotation_is_succeeded_from_the_secret() {
    // A real apiserver cannot be told to hold injection back, so the kill
    // happens in step 2 (serving cert switched, old CA not yet retired),
    // which lasts minutes.
    run(|h| scenarios::leader_killed_mid_rotation(h, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a throwaway cluster: set KEYHOOK_E2E_KUBECONFIG and run with --ignored"]
async fn an_overwritten_bundle_is_re_injected_within_seconds() {
    run(scenarios::an_overwritten_bundle_is_re_injected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a throwaway cluster: set KEYHOOK_E2E_KUBECONFIG and run with --ignored"]
async fn openshift_mode_only_reads_reloads_and_reports() {
    run(scenarios::openshift_mode_only_reads).await;
}
