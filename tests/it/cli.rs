//! The `keyhook` binary as a user runs it: standalone start, SIGTERM during
//! load, the certs commands, and flags that are wrong.

use crate::support;

use std::{
    net::{SocketAddr, TcpListener as StdListener},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{POD_REVIEW, POD_REVIEW_UID, process::keyhook};

fn free_addr() -> SocketAddr {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

struct Served {
    child: Child,
    webhook: SocketAddr,
    health: SocketAddr,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

async fn serve(workdir: &Path) -> Served {
    let (webhook, health) = (free_addr(), free_addr());
    let child = keyhook(workdir)
        .args([
            "serve",
            "--webhook-addr",
            &webhook.to_string(),
            "--health-addr",
            &health.to_string(),
        ])
        .args(["--shutdown-grace", "20s"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let served = Served {
        child,
        webhook,
        health,
    };
    let start = Instant::now();
    while readyz(health).await != Some(200) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "keyhook did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    served
}

async fn readyz(health: SocketAddr) -> Option<u16> {
    let response = support::http_client()
        .get(format!("http://{health}/readyz"))
        .send()
        .await
        .ok()?;
    Some(response.status().as_u16())
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args(["-s", name, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_refuses_new_connections_and_exits_zero() {
    let workdir = tempfile::tempdir().unwrap();
    let mut served = serve(workdir.path()).await;
    let ca = std::fs::read_to_string(workdir.path().join("certs/ca.crt")).unwrap();

    // An in-flight request: headers and half the body sent before SIGTERM.
    let stream = support::tls_connect(
        support::client_config(&ca, &[b"h2"]),
        served.webhook,
        "localhost",
    )
    .await
    .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let (body_tx, body_rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    let request = hyper::Request::post("https://localhost/mutate-pod")
        .header("content-type", "application/json")
        .body(StreamBody::new(tokio_stream_from(body_rx)))
        .unwrap();
    let in_flight = tokio::spawn(async move {
        let response = sender
            .send_request(request)
            .await
            .expect("in-flight request answered");
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    });
    let (head, tail) = POD_REVIEW.split_at(POD_REVIEW.len() / 2);
    body_tx
        .send(Ok(Frame::data(Bytes::from(head.to_string()))))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    signal(&served.child, "TERM");

    // Not ready at once, while the in-flight request is still open.
    let start = Instant::now();
    while readyz(served.health).await != Some(503) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "/readyz did not turn false"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // New connections are refused.
    let start = Instant::now();
    while tokio::net::TcpStream::connect(served.webhook).await.is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the listener kept accepting"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The in-flight request completes.
    body_tx
        .send(Ok(Frame::data(Bytes::from(tail.to_string()))))
        .await
        .unwrap();
    drop(body_tx);
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(POD_REVIEW_UID), "{body}");

    let exit = wait_for_exit(&mut served.child, Duration::from_secs(20));
    assert_eq!(exit.code(), Some(0));
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn wait_for_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < limit, "keyhook did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_restart_reuses_the_certificates_it_wrote() {
    let workdir = tempfile::tempdir().unwrap();
    let served = serve(workdir.path()).await;
    let first = std::fs::read_to_string(workdir.path().join("certs/ca.crt")).unwrap();
    drop(served);
    let served = serve(workdir.path()).await;
    let second = std::fs::read_to_string(workdir.path().join("certs/ca.crt")).unwrap();
    assert_eq!(
        first, second,
        "a restart must not replace the CA clients trust"
    );
    drop(served);
}

#[test]
fn certs_generate_then_inspect_accepts_the_service_names() {
    let workdir = tempfile::tempdir().unwrap();
    let generate = keyhook(workdir.path())
        .args([
            "certs",
            "generate",
            "--service-name",
            "hooks",
            "--service-namespace",
            "platform",
        ])
        .args(["--cert-dir", "out", "--extra-san", "10.96.0.20"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&generate.stdout);
    assert!(
        generate.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&generate.stderr)
    );
    assert!(
        stdout.contains("hooks.platform.svc.cluster.local") && stdout.contains("10.96.0.20"),
        "{stdout}"
    );
    for name in ["tls.crt", "tls.key", "ca.crt", "ca.key"] {
        assert!(workdir.path().join("out").join(name).is_file(), "{name}");
    }

    let inspect = keyhook(workdir.path())
        .args([
            "certs",
            "inspect",
            "--service-name",
            "hooks",
            "--service-namespace",
            "platform",
            "--cert-dir",
            "out",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&inspect.stdout);
    assert!(inspect.status.success(), "{stdout}");
    assert!(
        stdout.contains("ok    hooks.platform.svc: verifies against ca.crt"),
        "{stdout}"
    );
}

#[test]
fn certs_inspect_fails_when_the_apiserver_would_reject_the_cert() {
    let workdir = tempfile::tempdir().unwrap();
    let generate = keyhook(workdir.path())
        .args([
            "certs",
            "generate",
            "--service-name",
            "old-name",
            "--service-namespace",
            "platform",
            "--cert-dir",
            "out",
        ])
        .output()
        .unwrap();
    assert!(generate.status.success());
    let inspect = keyhook(workdir.path())
        .args([
            "certs",
            "inspect",
            "--service-name",
            "hooks",
            "--service-namespace",
            "platform",
            "--cert-dir",
            "out",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&inspect.stdout);
    assert_eq!(inspect.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL  hooks.platform.svc"), "{stdout}");
    assert!(stdout.contains("would reject"), "{stdout}");
}

#[test]
fn invalid_flag_values_fail_at_start_naming_the_flag() {
    let workdir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--webhook-addr", "localhost"], "--webhook-addr"),
        (&["--cert-validity", "forever"], "--cert-validity"),
        (&["--request-timeout", "45s"], "--request-timeout"),
        (&["--max-body", "lots"], "--max-body"),
        (&["--service-name", "Keyhook_Svc"], "--service-name"),
        (&["--extra-san", "not a name!"], "--extra-san"),
        (&["--log-format", "xml"], "--log-format"),
        (&["--log-level", "keyhook=[loud"], "--log-level"),
    ];
    for (args, flag) in cases {
        let output = keyhook(workdir.path())
            .arg("serve")
            .args(*args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} must fail");
        assert!(
            stderr.contains(&format!("for '{flag}")),
            "{args:?}: {stderr}"
        );
    }
    // The same checks apply to the environment variables.
    let output = keyhook(workdir.path())
        .arg("serve")
        .env("KEYHOOK_SHUTDOWN_GRACE", "soon")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("--shutdown-grace"));
    assert!(
        !workdir.path().join("certs").exists(),
        "nothing is written when flags are invalid"
    );
}
