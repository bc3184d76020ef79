//! Cluster-scale benchmark (run by tests/bench/cluster.sh).
//!
//! Serves the tests' in-memory apiserver over HTTP from this process, seeded
//! with a cluster, and runs the release `keyhook serve` binary against it as
//! its own process (through a kubeconfig), so keyhook's RSS is its own. Two
//! runs over the same cluster: a baseline holding only what keyhook works
//! with (2,000 namespaces, 10 stores with their credential Secrets, 1,000
//! injected pods and their 200 managed Secrets, keyhook's webhook
//! configurations and CRD), then the same plus 40,000 unrelated Secrets
//! (~2.9 KB each with managedFields, labels and annotations) and 19,000
//! unrelated pods. For each it prints the time to ready, the RSS at ready
//! and 60 s later, and every request keyhook made to the apiserver in those
//! 60 s of steady state, by verb, resource and selector. Asserts nothing;
//! the figures are the result.

#[path = "../tests/it/support/fake_apiserver.rs"]
mod fake_apiserver;

#[path = "../tests/it/support/cluster_objects.rs"]
mod cluster_objects;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cluster_objects::{
    credential, kubernetes_cluster_store, managed_secret, namespace, pod, unrelated_secret,
};
use fake_apiserver::{ApiRequest, FakeApiServer};
use keyhook::injection::{ManagedSecret, Reference, SecretSpec};
use keyhook::providers::StoreKind;
use serde_json::{Value, json};

const NAMESPACES: usize = 2_000;
const STORES: usize = 10;
const WORKLOADS: usize = 200;
const PODS_PER_WORKLOAD: usize = 5;
const UNRELATED_SECRETS: usize = 40_000;
const PODS: usize = 20_000;

struct Keyhook(Child);

impl Drop for Keyhook {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How long steady state is watched: 60 s (`BENCH_STEADY_SECONDS` to try the bench quickly).
fn steady() -> Duration {
    let seconds = std::env::var("BENCH_STEADY_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(seconds)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// The cluster; `unrelated` adds the Secrets and pods keyhook has no
/// business with.
fn cluster(url: &str, unrelated: bool) -> Vec<Value> {
    let now = time::OffsetDateTime::now_utc();
    let mut objects = Vec::new();
    for n in 0..NAMESPACES {
        objects.push(namespace(
            &format!("team-{n}"),
            &format!("group-{}", n % 20),
        ));
    }
    objects.push(namespace("keyhook", "platform"));
    objects.push(namespace("remote", "platform"));
    objects.push(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "app-config", "namespace": "remote"},
        "data": {"password": "cDRzcw=="}
    }));
    for s in 0..STORES {
        let token = format!("store-token-{s}");
        objects.push(kubernetes_cluster_store(&format!("store-{s}"), url, &token));
        objects.push(credential("keyhook", &token, &token));
    }
    for fixture in [
        "mutatingwebhookconfiguration-keyhook.json",
        "validatingwebhookconfiguration-keyhook.json",
        "crd-externalsecrets.json",
    ] {
        objects.push(fake_apiserver::fixture_as_created(fixture));
    }
    let mut pods = 0;
    for w in 0..WORKLOADS {
        let spec = SecretSpec {
            store_kind: StoreKind::ClusterSecretStore,
            store: format!("store-{}", w % STORES),
            values: vec![Reference::parse(&format!("app-config#password{w}")).unwrap()],
            maps: vec![],
        };
        // Fetched during the last 45 minutes: none is due within the run.
        let secret = ManagedSecret {
            namespace: format!("team-{}", w * 10 % NAMESPACES),
            name: spec.secret_name(),
            fetched_at: now - Duration::from_secs(60 * (w as u64 % 45)),
            spec,
            keys: Default::default(),
        };
        objects.push(managed_secret(&secret, w));
        for p in 0..PODS_PER_WORKLOAD {
            let name = format!("workload-{w}-{p}");
            objects.push(pod(
                &secret.namespace,
                &name,
                pods,
                Some(&secret.spec.hash()),
            ));
            pods += 1;
        }
    }
    if unrelated {
        for i in 0..UNRELATED_SECRETS {
            objects.push(unrelated_secret(&format!("team-{}", i % NAMESPACES), i));
        }
        while pods < PODS {
            let ns = format!("team-{}", pods % NAMESPACES);
            objects.push(pod(&ns, &format!("web-{pods}"), pods, None));
            pods += 1;
        }
    }
    objects
}

struct Run {
    label: String,
    objects: usize,
    ready: Duration,
    rss_ready: f64,
    rss_later: f64,
    startup: Vec<ApiRequest>,
    steady: Vec<ApiRequest>,
}

async fn run(binary: &Path, label: &str, unrelated: bool) -> Run {
    let api = FakeApiServer::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let objects = cluster(&url, unrelated);
    let count = objects.len();
    api.seed_many(objects);
    let _serving = api.serve(listener);

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: bench\n  cluster:\n    server: {url}\nusers:\n- name: keyhook\n  user:\n    token: keyhook\ncontexts:\n- name: bench\n  context:\n    cluster: bench\n    user: keyhook\n    namespace: keyhook\ncurrent-context: bench\n"
        ),
    )
    .unwrap();
    let help = Command::new(binary)
        .args(["serve", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let health = format!("127.0.0.1:{}", free_port());
    let mut command = Command::new(binary);
    command
        .arg("serve")
        .args(["--webhook-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--health-addr", &health])
        .arg("--cert-dir")
        .arg(dir.path().join("certs"))
        .args(["--log-level", "warn"])
        .env("KUBECONFIG", &kubeconfig)
        .env("HOME", dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if help.contains("--mode") {
        command.args(["--mode", "cluster"]);
    }
    let started = Instant::now();
    let keyhook = Keyhook(
        command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display())),
    );
    let pid = keyhook.0.id();
    let ready = loop {
        if is_ready(&health).await {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "keyhook did not become ready within 2 minutes"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let rss_ready = rss_mib(pid);
    let mark = api.api_requests().len();
    tokio::time::sleep(steady()).await;
    let rss_later = rss_mib(pid);
    let requests = api.api_requests();
    let keyhooks = |r: &&ApiRequest| r.replica == "keyhook";
    Run {
        label: label.into(),
        objects: count,
        ready,
        rss_ready,
        rss_later,
        startup: requests[..mark].iter().filter(keyhooks).cloned().collect(),
        steady: requests[mark..].iter().filter(keyhooks).cloned().collect(),
    }
}

/// Whether `GET /readyz` on `addr` answers 200.
async fn is_ready(addr: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut status = [0u8; 12];
    stream.read_exact(&mut status).await.is_ok() && status.ends_with(b"200")
}

fn by_shape(requests: &[ApiRequest]) -> BTreeMap<String, usize> {
    let mut shapes = BTreeMap::new();
    for request in requests {
        *shapes.entry(request.shape()).or_insert(0) += 1;
    }
    shapes
}

fn unfiltered(requests: &[ApiRequest]) -> usize {
    requests
        .iter()
        .filter(|r| matches!(r.resource, "secrets" | "pods") && r.is_unfiltered_cluster_wide())
        .count()
}

#[tokio::main]
async fn main() {
    let binary = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/release/keyhook".into()),
    );
    println!(
        "keyhook {} in cluster mode against the in-memory apiserver over HTTP (this process)",
        binary.display()
    );
    println!(
        "{NAMESPACES} namespaces, {STORES} ClusterSecretStores (a credential Secret each), {} injected pods of {WORKLOADS} workloads, {WORKLOADS} managed Secrets\n",
        WORKLOADS * PODS_PER_WORKLOAD
    );
    let baseline = run(&binary, "baseline", false).await;
    let full = run(
        &binary,
        &format!(
            "+{UNRELATED_SECRETS} Secrets, +{} pods",
            PODS - WORKLOADS * PODS_PER_WORKLOAD
        ),
        true,
    )
    .await;

    println!(
        "{:<28} {:>8} {:>9} {:>11} {:>13} {:>17}",
        "run", "objects", "ready", "RSS ready", "RSS later", "requests"
    );
    for r in [&baseline, &full] {
        println!(
            "{:<28} {:>8} {:>7.2} s {:>7.1} MiB {:>9.1} MiB {:>17}",
            r.label,
            r.objects,
            r.ready.as_secs_f64(),
            r.rss_ready,
            r.rss_later,
            r.steady.len()
        );
    }
    println!(
        "(RSS later and requests: {} s of steady state after ready)",
        steady().as_secs()
    );
    println!(
        "\nRSS over baseline: {:+.1} MiB at ready, {:+.1} MiB later (target <= +16 MiB)",
        full.rss_ready - baseline.rss_ready,
        full.rss_later - baseline.rss_later
    );
    for r in [&baseline, &full] {
        let lists = r.steady.iter().filter(|q| q.starts_list()).count();
        println!(
            "{}: unfiltered cluster-wide LIST/WATCH of Secrets or pods: {} at start, {} in steady state; LISTs started in steady state: {lists}",
            r.label,
            unfiltered(&r.startup),
            unfiltered(&r.steady)
        );
    }
    for (what, requests) in [
        ("start to ready (+ run)", &full.startup),
        ("steady state (+ run)", &full.steady),
    ] {
        println!("\nrequests, {what}, by verb, resource and selector:");
        for (shape, n) in by_shape(requests) {
            println!("  {n:>5}  {shape}");
        }
    }
}
