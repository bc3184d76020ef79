//! Replicas of keyhook against an in-memory apiserver, hours of certificate
//! life in milliseconds under tokio's paused clock. Each scenario runs under
//! a timeout (of the paused clock, which auto-advances only while every
//! task waits, so the limit is on behaviour, not on machine speed).

use crate::support;

use std::time::Duration;

use crate::scenarios;
use support::harness::Harness;

async fn within_a_day<F: std::future::Future<Output = ()>>(scenario: F) {
    tokio::time::timeout(Duration::from_secs(24 * 3600), scenario)
        .await
        .expect("scenario did not finish within a day of (paused) time");
}

#[tokio::test(start_paused = true)]
async fn two_replicas_only_the_lease_holder_writes() {
    within_a_day(scenarios::two_replicas_only_the_holder_writes(
        &Harness::fake(),
    ))
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_full_ca_overlap_cycle_never_breaks_a_handshake() {
    within_a_day(scenarios::full_ca_overlap_cycle(&Harness::fake())).await;
}

#[tokio::test(start_paused = true)]
async fn a_leader_killed_in_step_1_is_succeeded_from_the_secret() {
    within_a_day(scenarios::leader_killed_mid_rotation(
        &Harness::fake(),
        true,
    ))
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_leader_killed_in_step_2_is_succeeded_from_the_secret() {
    within_a_day(scenarios::leader_killed_mid_rotation(
        &Harness::fake(),
        false,
    ))
    .await;
}

#[tokio::test(start_paused = true)]
async fn an_overwritten_bundle_is_re_injected_within_seconds() {
    within_a_day(scenarios::an_overwritten_bundle_is_re_injected(
        &Harness::fake(),
    ))
    .await;
}

#[tokio::test(start_paused = true)]
async fn openshift_mode_only_reads_reloads_and_reports() {
    within_a_day(scenarios::openshift_mode_only_reads(&Harness::fake())).await;
}

#[tokio::test(start_paused = true)]
async fn a_secret_broken_during_the_leaders_read_is_repaired_at_once() {
    within_a_day(scenarios::a_secret_broken_during_the_leaders_read_is_repaired(&Harness::fake()))
        .await;
}
