//! Real TLS handshakes with the certificate keyhook generates, for every SAN
//! form, by every client the field uses: rustls, curl, OpenSSL, and Go's
//! crypto/x509 (what the kube-apiserver runs).

use crate::support;

use std::path::Path;

use tokio::process::Command;

use keyhook::server::Mode;
use support::{H2Connection, POD_REVIEW, POD_REVIEW_UID, Running, have_tool};

const EXTRA_DNS: &str = "hooks.example.com";

/// Every name the generated certificate must verify for.
const GOOD_NAMES: &[&str] = &[
    "keyhook.keyhook.svc",
    "keyhook.keyhook.svc.cluster.local",
    "keyhook.keyhook",
    "keyhook",
    "localhost",
    "127.0.0.1",
    EXTRA_DNS,
];

/// Names it must not verify for.
const BAD_NAMES: &[&str] = &["keyhook.other.svc", "evil.keyhook.keyhook.svc"];

async fn start(dir: &Path) -> Running {
    Running::start(Mode::Standalone, dir, &["--extra-san", EXTRA_DNS]).await
}

fn ca_pem(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("ca.crt")).expect("ca.crt written")
}

#[tokio::test]
async fn rustls_verifies_every_san_and_rejects_other_names() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let ca = ca_pem(dir.path());

    for name in GOOD_NAMES {
        let mut connection = H2Connection::open(&ca, server.webhook, name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (status, body) = connection.post("/mutate-pod", POD_REVIEW).await.unwrap();
        assert_eq!(status, 200, "{name}: {body}");
        assert!(body.contains(POD_REVIEW_UID), "{name}: {body}");
    }
    for name in BAD_NAMES {
        let error = H2Connection::open(&ca, server.webhook, name).await.err();
        let error = error.unwrap_or_else(|| panic!("{name} must not verify"));
        assert!(
            error.contains("certificate not valid for name"),
            "{name}: {error}"
        );
    }
    // Each refused handshake is counted on the server side.
    let (_, metrics) = server.admin_get("/metrics").await;
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("keyhook_tls_handshake_failures_total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_default();
    assert!(failures >= BAD_NAMES.len() as u64, "{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn curl_speaks_http2_with_every_san() {
    if !have_tool("curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let port = server.webhook.port();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/admission/pod-create-deployment.json"
    );

    let curl = |name: &str| {
        let host = if name.contains(':') {
            format!("[{name}]")
        } else {
            name.to_string()
        };
        Command::new("curl")
            .args(["-sS", "--http2", "--cacert"])
            .arg(dir.path().join("ca.crt"))
            .args(["--resolve", &format!("{name}:{port}:127.0.0.1")])
            .args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &format!("@{fixture}"),
            ])
            .args(["-w", "\nHTTP/%{http_version} %{http_code}"])
            .arg(format!("https://{host}:{port}/mutate-pod"))
            .output()
    };
    for name in GOOD_NAMES {
        let output = curl(name).await.expect("curl runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains(POD_REVIEW_UID), "{name}: {stdout}");
        assert!(stdout.ends_with("HTTP/2 200"), "{name}: {stdout}");
    }
    for name in BAD_NAMES {
        let output = curl(name).await.expect("curl runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name} must not verify");
        assert!(
            stderr.contains("SSL") || stderr.contains("certificate"),
            "{name}: {stderr}"
        );
    }
    server.stop().await;
}

/// curl's defaults (HTTP/2, a form content type) and a body past
/// `--max-body`: keyhook's refusal reaches the user as its message, not as
/// curl's `(92) Stream error in the HTTP/2 framing layer`, every time.
#[tokio::test]
async fn curl_over_http2_prints_the_415_and_413_messages() {
    if !have_tool("curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let review = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/admission/pod-create-deployment.json"
    );
    let big = dir.path().join("9MB.json");
    std::fs::write(&big, vec![b' '; 9 << 20]).unwrap();
    let url = format!("https://localhost:{}/mutate-pod", server.webhook.port());
    let cases: [(&[&str], String, &str); 2] = [
        (
            &["--data"],
            format!("@{review}"),
            "415 content type `application/x-www-form-urlencoded` is not supported: send a review as application/json",
        ),
        (
            &["-H", "Content-Type: application/json", "--data-binary"],
            format!("@{}", big.display()),
            "413 request body is larger than the 8388608-byte limit (--max-body)",
        ),
    ];
    for (args, body, expected) in &cases {
        for _ in 0..5 {
            let output = Command::new("curl")
                .args(["-sS", "--cacert"])
                .arg(dir.path().join("ca.crt"))
                .args(*args)
                .arg(body)
                .args(["-w", "\nHTTP/%{http_version} %{http_code}"])
                .arg(&url)
                .output()
                .await
                .expect("curl runs");
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let (message, answer) = stdout.rsplit_once('\n').unwrap();
            let (code, text) = expected.split_once(' ').unwrap();
            assert_eq!(answer, format!("HTTP/2 {code}"), "{stdout}");
            assert_eq!(message.trim_end(), text);
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn openssl_verifies_the_chain_and_each_hostname() {
    if !have_tool("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let verify = |name: &str| {
        let check = if name.parse::<std::net::IpAddr>().is_ok() {
            "-verify_ip"
        } else {
            "-verify_hostname"
        };
        Command::new("openssl")
            .args(["verify", "-purpose", "sslserver", "-CAfile"])
            .arg(dir.path().join("ca.crt"))
            .args([check, name])
            .arg(dir.path().join("tls.crt"))
            .output()
    };
    for name in GOOD_NAMES {
        let output = verify(name).await.expect("openssl runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.trim_end().ends_with(": OK"),
            "{name}: {stdout}"
        );
    }
    for name in BAD_NAMES {
        let output = verify(name).await.expect("openssl runs");
        let text = String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name} must not verify");
        assert!(text.contains("hostname mismatch"), "{name}: {text}");
    }
    server.stop().await;
}

#[tokio::test]
async fn go_crypto_x509_accepts_it_as_the_apiserver_would() {
    if !have_tool("go") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let verifier = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/go/tlsverify.go");
    let dial = |name: &str| {
        Command::new("go")
            .args(["run", verifier, "-ca"])
            .arg(dir.path().join("ca.crt"))
            .args(["-addr", &server.webhook.to_string(), "-name", name])
            .env("GOFLAGS", "-mod=mod")
            .env("GO111MODULE", "off")
            .output()
    };
    for name in GOOD_NAMES {
        let output = dial(name).await.expect("go runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{name}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("alpn=h2"), "{name}: {stdout}");
    }
    for name in BAD_NAMES {
        let output = dial(name).await.expect("go runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(!output.status.success(), "{name} must not verify");
        // The very error the apiserver logs for a SAN mismatch.
        assert!(
            stdout.contains("x509: certificate is valid for"),
            "{name}: {stdout}"
        );
    }
    server.stop().await;
}
