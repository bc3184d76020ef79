//! `--mode`: a kubeconfig alone never makes keyhook touch a cluster; outside
//! a pod only `--mode cluster` does, and it says which cluster.

use std::{path::Path, time::Duration};

use crate::support::{
    fake_apiserver::FakeApiServer,
    process::{Spawned, free_addr, keyhook},
};

const START: Duration = Duration::from_secs(30);

/// An apiserver on loopback that records every request, and a kubeconfig
/// (context `lab`) pointing at it.
struct Cluster {
    api: FakeApiServer,
    url: String,
    _serving: tokio::task::JoinHandle<()>,
}

impl Cluster {
    async fn start() -> Self {
        let api = FakeApiServer::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let serving = api.serve(listener);
        Self {
            api,
            url,
            _serving: serving,
        }
    }

    fn write_kubeconfig(&self, path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: {}\nusers:\n- name: keyhook\n  user:\n    token: keyhook\ncontexts:\n- name: lab\n  context:\n    cluster: lab\n    user: keyhook\n    namespace: keyhook\ncurrent-context: lab\n",
                self.url
            ),
        )
        .unwrap();
    }
}

fn serve(workdir: &Path) -> std::process::Command {
    let mut command = keyhook(workdir);
    command.args([
        "serve",
        "--webhook-addr",
        &free_addr(),
        "--health-addr",
        &free_addr(),
    ]);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubeconfig_outside_a_pod_leaves_keyhook_standalone() {
    let cluster = Cluster::start().await;
    let workdir = tempfile::tempdir().unwrap();
    // Both places a kubeconfig is looked for, pointing at a live apiserver.
    cluster.write_kubeconfig(&workdir.path().join(".kube/config"));
    cluster.write_kubeconfig(&workdir.path().join("lab.kubeconfig"));
    let mut command = serve(workdir.path());
    command.env("KUBECONFIG", workdir.path().join("lab.kubeconfig"));
    let mut keyhook = Spawned::start(command);

    let log = keyhook.wait_for("certificates in ./certs; try: curl", START);
    assert!(
        log.contains(
            "keyhook starting standalone: not in a pod, so no cluster is touched (--mode cluster uses your kubeconfig)"
        ),
        "{log}"
    );
    assert!(workdir.path().join("certs/ca.crt").is_file());
    // Give a cluster client every chance to show itself.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        cluster.api.requests(),
        [],
        "standalone keyhook called the apiserver"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_mode_reads_no_kubeconfig_even_in_a_pod() {
    let cluster = Cluster::start().await;
    let workdir = tempfile::tempdir().unwrap();
    cluster.write_kubeconfig(&workdir.path().join("lab.kubeconfig"));
    let mut command = serve(workdir.path());
    command
        .env("KUBECONFIG", workdir.path().join("lab.kubeconfig"))
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KEYHOOK_MODE", "standalone");
    let mut keyhook = Spawned::start(command);
    let log = keyhook.wait_for("certificates in ./certs; try: curl", START);
    assert!(
        log.contains("keyhook starting standalone (--mode standalone)"),
        "{log}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(cluster.api.requests(), []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_cluster_outside_a_pod_uses_the_kubeconfig_and_names_context_and_server() {
    let cluster = Cluster::start().await;
    let workdir = tempfile::tempdir().unwrap();
    cluster.write_kubeconfig(&workdir.path().join(".kube/config"));
    let mut command = serve(workdir.path());
    command.args(["--mode", "cluster"]);
    let mut keyhook = Spawned::start(command);

    let log = keyhook.wait_for("cluster mode: using this cluster", START);
    assert!(
        log.contains("keyhook starting in cluster mode (--mode cluster)"),
        "{log}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("cluster mode: using this cluster"))
        .unwrap();
    assert!(
        line.contains("context=lab") && line.contains(&format!("server={}/", cluster.url)),
        "{line}"
    );
    let start = std::time::Instant::now();
    while cluster.api.requests().is_empty() {
        assert!(start.elapsed() < START, "no request reached the apiserver");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        !keyhook.output().contains("try: curl"),
        "the standalone hint is not for a cluster"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mode_inside_a_pod_is_cluster_mode() {
    let cluster = Cluster::start().await;
    let workdir = tempfile::tempdir().unwrap();
    cluster.write_kubeconfig(&workdir.path().join("lab.kubeconfig"));
    let mut command = serve(workdir.path());
    command
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBECONFIG", workdir.path().join("lab.kubeconfig"));
    let mut keyhook = Spawned::start(command);
    let log = keyhook.wait_for("cluster mode: using this cluster", START);
    assert!(
        log.contains("keyhook starting in cluster mode: running in a pod"),
        "{log}"
    );
}

#[test]
fn mode_cluster_without_a_kubeconfig_says_where_it_looked_and_how_to_run_without() {
    let workdir = tempfile::tempdir().unwrap();
    let output = serve(workdir.path())
        .args(["--mode", "cluster"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let config = workdir.path().join(".kube/config");
    assert_eq!(
        stderr,
        format!(
            "error: cluster mode: no kubeconfig ({}: No such file or directory (os error 2)): outside a pod keyhook reads the one KUBECONFIG names, else ~/.kube/config; to run without a cluster, use --mode standalone\n",
            config.display()
        )
    );

    let output = serve(workdir.path())
        .args(["--mode", "kubernetes"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid value 'kubernetes' for '--mode <MODE>'")
            && stderr.contains("[possible values: auto, standalone, cluster]"),
        "{stderr}"
    );
}
