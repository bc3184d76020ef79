//! What decoding one pod AdmissionReview costs, single-threaded: keyhook's
//! [`AdmittedPod`] against k8s-openapi's full `Pod`, and the least serde_json
//! can do with the same bytes (check they are JSON and skip them).
//! `tests/bench/serve.sh` prints these beside the HTTP figures.
//!
//! Usage: decode_bench [review.json]

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use keyhook::{admission::decode_admission, injection::AdmittedPod};
use serde::de::IgnoredAny;

/// The allocator the keyhook binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROUNDS: u32 = 20_000;
/// Timed repetitions of `ROUNDS` decodes; the median is reported.
const REPETITIONS: usize = 7;
/// A thread on this machine runs at ~60% speed for its first ~250 ms of work
/// after starting or idling; nothing is timed before this much work is done.
const WARM_UP: Duration = Duration::from_millis(300);

fn per_review(mut decode: impl FnMut()) -> Duration {
    let warm = Instant::now();
    while warm.elapsed() < WARM_UP {
        decode();
    }
    let mut times: Vec<Duration> = (0..REPETITIONS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..ROUNDS {
                decode();
            }
            start.elapsed() / ROUNDS
        })
        .collect();
    times.sort();
    times[REPETITIONS / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tests/fixtures/admission/pod-create-deployment.json".to_string());
    // Compact, as the apiserver sends it (the fixture is indented to be read).
    let body = serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(
        &std::fs::read(&path)?,
    )?)?;
    // Both must decode before they are timed.
    decode_admission::<AdmittedPod>(&body)?;
    decode_admission::<Pod>(&body)?;

    let admitted = per_review(|| {
        std::hint::black_box(decode_admission::<AdmittedPod>(&body).ok());
    });
    let full = per_review(|| {
        std::hint::black_box(decode_admission::<Pod>(&body).ok());
    });
    let skip = per_review(|| {
        std::hint::black_box(serde_json::from_slice::<IgnoredAny>(&body).ok());
    });
    println!(
        "decoding one {} B pod review: AdmittedPod {:.2} µs, k8s-openapi Pod {:.1} µs, JSON skipped only {:.2} µs",
        body.len(),
        admitted.as_secs_f64() * 1e6,
        full.as_secs_f64() * 1e6,
        skip.as_secs_f64() * 1e6,
    );
    Ok(())
}
