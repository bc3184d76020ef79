//! What one review costs the webhook's handlers, single-threaded, through
//! the public routes: time per review, and the heap it holds at its peak as
//! a multiple of its body. Reviews of several kinds and sizes, built here:
//! ExternalSecret validations of 100 KB and 7 MB in `v1` and `v1beta1`, a
//! 7 MB pod review, and a ConversionReview of 100 ExternalSecrets.
//! `tests/bench/hostile.sh` and `tests/bench/serve.sh` print these.
//!
//! Usage: review_bench

use std::{
    alloc::{GlobalAlloc, Layout},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use axum::body::Body;
use http::Request;
use http_body_util::BodyExt;
use keyhook::{
    metrics::Metrics,
    server::routes::{WebhookService, WebhookSettings, webhook_service},
};
use serde_json::{Value, json};
use tower::ServiceExt;

/// The allocator the keyhook binary uses, counting what is held.
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to mimalloc unchanged; only counts are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let held = HELD.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(held, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let held = HELD.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                - layout.size();
            PEAK.fetch_max(held, Ordering::Relaxed);
        } else {
            HELD.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        // SAFETY: as for `alloc`.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// An ExternalSecret review of about `size` bytes: many data entries, with
/// short names (the most entries per byte) or names as teams write them.
fn external_secret_review(size: usize, version: &str, long_names: bool) -> Vec<u8> {
    let mut data = Vec::new();
    let mut left = size.saturating_sub(700) as isize;
    while left > 0 {
        let i = data.len();
        let entry = if long_names {
            json!({"secretKey": format!("PAYMENTS_POSTGRES_PASSWORD_{i}"), "remoteRef": {"key": format!("prod/payments/postgres-primary-{i}"), "property": "password", "conversionStrategy": "Default"}})
        } else {
            json!({"secretKey": format!("key-{i}"), "remoteRef": {"key": format!("shop/db-{i}"), "property": "password"}})
        };
        left -= entry.to_string().len() as isize + 1;
        data.push(entry);
    }
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "0d1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6",
            "kind": {"group": "external-secrets.io", "version": version, "kind": "ExternalSecret"},
            "resource": {"group": "external-secrets.io", "version": version, "resource": "externalsecrets"},
            "name": "large", "namespace": "shop", "operation": "CREATE",
            "userInfo": {"username": "admin", "groups": ["system:masters", "system:authenticated"]},
            "object": {
                "apiVersion": format!("external-secrets.io/{version}"), "kind": "ExternalSecret",
                "metadata": {"name": "large", "namespace": "shop"},
                "spec": {"secretStoreRef": {"name": "vault", "kind": "SecretStore"},
                         "target": {"name": "large"}, "data": data}
            },
            "dryRun": false
        }
    }))
    .unwrap_or_default()
}

/// The repository's pod review grown to `size` bytes by one annotation.
fn pod_review(size: usize) -> Vec<u8> {
    let mut review: Value = serde_json::from_slice(
        &std::fs::read("tests/fixtures/admission/pod-create-deployment.json").unwrap_or_default(),
    )
    .unwrap_or_default();
    let base = review.to_string().len();
    review["request"]["object"]["metadata"]["annotations"]["example.com/blob"] =
        Value::String("x".repeat(size.saturating_sub(base + 40)));
    serde_json::to_vec(&review).unwrap_or_default()
}

/// A ConversionReview of `count` ExternalSecrets, v1alpha1 to v1.
fn conversion_review(count: usize) -> Vec<u8> {
    let mut review: Value = serde_json::from_slice(
        &std::fs::read("tests/fixtures/conversion/externalsecrets-v1alpha1-to-v1.json")
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    let template = review["request"]["objects"][0].clone();
    review["request"]["objects"] = (0..count)
        .map(|i| {
            let mut object = template.clone();
            object["metadata"]["name"] = json!(format!("template-{i}"));
            object
        })
        .collect();
    serde_json::to_vec(&review).unwrap_or_default()
}

/// Sends `body` to `path` once; returns the status.
async fn send(service: &WebhookService, path: &str, body: &[u8]) -> u16 {
    let request = Request::post(path)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(Body::from(body.to_vec()))
        .unwrap_or_default();
    match service.clone().oneshot(request).await {
        Ok(response) => {
            let status = response.status().as_u16();
            let _ = response.into_body().collect().await;
            status
        }
        Err(never) => match never {},
    }
}

async fn measure(service: &WebhookService, what: &str, path: &str, body: &[u8]) {
    // Once to warm up, then the peak of one review, then time over a second.
    let status = send(service, path, body).await;
    let before = HELD.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    send(service, path, body).await;
    let peak = PEAK.load(Ordering::Relaxed) - before;
    let start = Instant::now();
    let mut rounds = 0u32;
    while start.elapsed() < Duration::from_secs(1) || rounds < 3 {
        send(service, path, body).await;
        rounds += 1;
    }
    let each = start.elapsed() / rounds;
    println!(
        "{what:<44} {:>9} B  {:>10.3} ms  peak heap {:>5.1}x body  (HTTP {status})",
        body.len(),
        each.as_secs_f64() * 1e3,
        peak as f64 / body.len() as f64,
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    runtime.block_on(async {
        let settings = WebhookSettings {
            request_timeout: Duration::from_secs(20),
            ..WebhookSettings::default()
        };
        let service = webhook_service(settings, &Metrics::new(), None);
        println!(
            "{:<44} {:>11}  {:>13}  memory held by the handlers at their peak",
            "review", "body", "time"
        );
        for (what, version, size, long_names) in [
            ("ExternalSecret validation, v1", "v1", 100_000, false),
            ("ExternalSecret validation, v1", "v1", 7_000_000, false),
            (
                "ExternalSecret validation, v1, long names",
                "v1",
                7_000_000,
                true,
            ),
            (
                "ExternalSecret validation, v1beta1",
                "v1beta1",
                100_000,
                false,
            ),
            (
                "ExternalSecret validation, v1beta1",
                "v1beta1",
                7_000_000,
                false,
            ),
        ] {
            let body = external_secret_review(size, version, long_names);
            measure(&service, what, "/validate-externalsecret", &body).await;
        }
        measure(&service, "pod review", "/mutate-pod", &pod_review(3_600)).await;
        measure(
            &service,
            "pod review, one large annotation",
            "/mutate-pod",
            &pod_review(7 << 20),
        )
        .await;
        measure(
            &service,
            "ConversionReview of 100 ExternalSecrets",
            "/convert",
            &conversion_review(100),
        )
        .await;
    });
}
