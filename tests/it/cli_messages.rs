//! What `keyhook` says when a user gets something wrong, word for word: each
//! message names the flag or file and says how to fix it, once.

use std::{
    io::{BufRead, BufReader},
    process::{Output, Stdio},
    time::Duration,
};

use crate::support::process::{Spawned, free_addr, keyhook};

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `keyhook serve` with `args`, expected to be refused before it starts.
fn refused(args: &[&str]) -> String {
    let workdir = tempfile::tempdir().unwrap();
    let output = keyhook(workdir.path())
        .arg("serve")
        .args(args)
        .output()
        .unwrap();
    assert!(!output.status.success(), "{args:?} was accepted");
    assert!(
        !workdir.path().join("certs").exists(),
        "{args:?}: something was written"
    );
    stderr(&output)
}

#[test]
fn a_reader_that_stops_early_ends_the_output_quietly() {
    let workdir = tempfile::tempdir().unwrap();
    let mut child = keyhook(workdir.path())
        .arg("crds")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `keyhook crds | head -1`: one line read, then the pipe is closed.
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first, "apiVersion: apiextensions.k8s.io/v1\n");
    let output = child.wait_with_output().unwrap();
    assert_eq!(stderr(&output), "");
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn doctor_without_a_kubeconfig_says_so_once_and_exits_2() {
    let workdir = tempfile::tempdir().unwrap();
    let output = keyhook(workdir.path()).arg("doctor").output().unwrap();
    assert_eq!(
        stderr(&output),
        format!(
            "error: no kubeconfig ({}: No such file or directory (os error 2)): outside a pod keyhook reads the one KUBECONFIG names, else ~/.kube/config\n",
            workdir.path().join(".kube/config").display()
        )
    );
    assert_eq!(stdout(&output), "");
    assert_eq!(
        output.status.code(),
        Some(2),
        "2: could not check; 1 is for findings"
    );
}

#[test]
fn doctor_against_an_unreachable_cluster_names_it_and_exits_2() {
    let workdir = tempfile::tempdir().unwrap();
    let closed = free_addr();
    let kubeconfig = workdir.path().join("lab.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: http://{closed}\nusers:\n- name: me\n  user:\n    token: t\ncontexts:\n- name: lab\n  context:\n    cluster: lab\n    user: me\ncurrent-context: lab\n"
        ),
    )
    .unwrap();
    let output = keyhook(workdir.path())
        .arg("doctor")
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    let stderr = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines[0], format!("checking context lab (http://{closed}/)"));
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[1].starts_with("error: listing MutatingWebhookConfigurations: ")
            && lines[1].ends_with("Connection refused (os error 111)")
            && lines[1].matches("Connection refused").count() == 1,
        "{stderr}"
    );
}

#[test]
fn an_address_in_use_is_said_once_with_its_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let stderr = refused_after_certs(&["--webhook-addr", &addr]);
    assert!(
        stderr.ends_with(&format!(
            "error: cannot listen on {addr} (--webhook-addr): Address already in use (os error 98); stop what listens there or choose another address with --webhook-addr\n"
        )),
        "{stderr}"
    );
}

/// `keyhook serve` that gets as far as writing its certificates, then fails.
fn refused_after_certs(args: &[&str]) -> String {
    let workdir = tempfile::tempdir().unwrap();
    let output = keyhook(workdir.path())
        .args(["serve", "--health-addr", &free_addr()])
        .args(args)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    stderr(&output)
}

#[test]
fn an_unwritable_cert_dir_names_the_flag_and_leaves_no_temporary_file() {
    let workdir = tempfile::tempdir().unwrap();
    std::fs::write(workdir.path().join("taken"), "a file").unwrap();
    let cases = [
        ("taken", "it is a file, not a directory".to_string()),
        ("taken/certs", "Not a directory (os error 20)".to_string()),
        // sysfs: a directory no one, not even root, may create files in.
        ("/sys/kernel", "Permission denied (os error 13)".to_string()),
    ];
    for (dir, reason) in cases {
        let expected = format!(
            "error: cannot write certificates to {dir}: {reason}; choose a writable directory with --cert-dir\n"
        );
        let generate = keyhook(workdir.path())
            .args(["certs", "generate", "--cert-dir", dir])
            .output()
            .unwrap();
        assert_eq!(stderr(&generate), expected);
        assert_eq!(generate.status.code(), Some(1));
        let serve = keyhook(workdir.path())
            .args(["serve", "--webhook-addr", &free_addr()])
            .args(["--health-addr", &free_addr(), "--cert-dir", dir])
            .output()
            .unwrap();
        assert_eq!(stderr(&serve), expected);
    }
    let left: Vec<_> = std::fs::read_dir(workdir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["taken"]);
}

#[test]
fn certs_generate_names_every_file_it_writes_and_the_sans_on_disk() {
    let workdir = tempfile::tempdir().unwrap();
    let first = keyhook(workdir.path())
        .args(["certs", "generate", "--cert-dir", "out/tls"])
        .args(["--extra-san", "hooks.example.com"])
        .output()
        .unwrap();
    assert_eq!(
        stdout(&first),
        "wrote out/tls/tls.crt, out/tls/tls.key, out/tls/ca.crt, out/tls/ca.key (a new CA was generated)\n\
         SANs: keyhook.keyhook.svc, keyhook.keyhook.svc.cluster.local, keyhook.keyhook, keyhook, hooks.example.com\n\
         trust out/tls/ca.crt (the caBundle is its base64)\n"
    );
    // Asked again without the extra name: nothing is written, and the names
    // printed are those of the certificate on disk.
    let again = keyhook(workdir.path())
        .args(["certs", "generate", "--cert-dir", "out/tls"])
        .output()
        .unwrap();
    assert_eq!(
        stdout(&again),
        "out/tls already holds a valid CA and a serving certificate for these names; nothing written\n\
         SANs: keyhook.keyhook.svc, keyhook.keyhook.svc.cluster.local, keyhook.keyhook, keyhook, hooks.example.com\n\
         trust out/tls/ca.crt (the caBundle is its base64)\n"
    );
    // A new name: the serving certificate is reissued by the same CA.
    let reissued = keyhook(workdir.path())
        .args(["certs", "generate", "--cert-dir", "out/tls"])
        .args(["--extra-san", "10.96.0.20"])
        .output()
        .unwrap();
    assert_eq!(
        stdout(&reissued),
        "wrote out/tls/tls.crt, out/tls/tls.key (serving certificate lacks SANs 10.96.0.20)\n\
         SANs: keyhook.keyhook.svc, keyhook.keyhook.svc.cluster.local, keyhook.keyhook, keyhook, 10.96.0.20\n\
         trust out/tls/ca.crt (the caBundle is its base64)\n"
    );
}

#[test]
fn a_host_name_as_listen_address_gets_the_address_to_use() {
    assert_eq!(
        refused(&["--webhook-addr", "localhost:9443"]),
        "error: invalid value 'localhost:9443' for '--webhook-addr <ADDR>': not an IP address and port: use `127.0.0.1:9443` (this machine only) or `0.0.0.0:9443` (every interface)\n\n\
         For more information, try '--help'.\n"
    );
    assert!(
        refused(&["--health-addr", ":8081"])
            .contains("give the address too: `0.0.0.0:8081` (every interface)")
    );
    assert!(
        refused(&["--webhook-addr", "keyhook.internal:9443"])
            .contains("`keyhook.internal` is a name, not an IP address")
    );
}

#[test]
fn the_charts_cert_manager_mode_points_to_external() {
    assert_eq!(
        refused(&["--cert-mode", "cert-manager"]),
        "error: invalid value 'cert-manager' for '--cert-mode <MODE>': `cert-manager` is a mode of the Helm chart (`certs.mode`); keyhook itself runs it as `--cert-mode external`: cert-manager writes the certificate into --cert-dir and injects the caBundle, keyhook serves and checks it\n\n\
         For more information, try '--help'.\n"
    );
    assert!(refused(&["--cert-mode", "vault"]).contains(
        "expected `self-managed` (keyhook is its own CA), `openshift` (the service-ca operator issues the certificate) or `external`"
    ));
}

#[test]
fn a_body_limit_too_small_for_a_review_is_refused() {
    assert_eq!(
        refused(&["--max-body", "8"]),
        "error: invalid value '8' for '--max-body <SIZE>': 8 bytes would refuse ordinary reviews (a pod's AdmissionReview often runs to tens of KiB): must be at least 64KiB; the default is 8MiB\n\n\
         For more information, try '--help'.\n"
    );
}

#[test]
fn negative_numbers_get_the_flags_own_message() {
    for (flag, message) in [
        (
            "--provider-qps",
            "must be a number of requests per second above 0, e.g. `10` or `0.5`",
        ),
        ("--provider-burst", "-1 is not in 1..=4294967295"),
        ("--max-connections", "-1 is not in 1..=4294967295"),
        (
            "--refresh-jitter",
            "must be a percentage from 0% to 50%, e.g. `10%`",
        ),
    ] {
        let stderr = refused(&[flag, "-1"]);
        assert!(
            stderr.starts_with(&format!("error: invalid value '-1' for '{flag} <"))
                && stderr.contains(message),
            "{stderr}"
        );
    }
}

#[test]
fn a_request_timeout_past_the_apiservers_default_is_warned_about() {
    let workdir = tempfile::tempdir().unwrap();
    let mut command = keyhook(workdir.path());
    command
        .args(["serve", "--webhook-addr", &free_addr()])
        .args(["--health-addr", &free_addr(), "--request-timeout", "15s"]);
    let mut keyhook = Spawned::start(command);
    let log = keyhook.wait_for("webhooks on https://", Duration::from_secs(30));
    let warning = log
        .lines()
        .find(|l| l.contains(" WARN "))
        .unwrap_or_else(|| panic!("no warning:\n{log}"));
    assert!(
        warning.ends_with(
            "--request-timeout 15s is not below the apiserver's default webhook timeout of 10 s (30 s at most, when a webhook configuration sets `timeoutSeconds`): unless every keyhook webhook sets timeoutSeconds above 15s, the apiserver gives up first and the call fails with its own timeout instead of keyhook's message; raise the webhooks' timeoutSeconds (the chart's `webhook.timeoutSeconds`) or keep --request-timeout under it (default 8s)"
        ),
        "{warning}"
    );
    assert!(refused(&["--request-timeout", "30s"]).contains(
        "must be more than 0s and less than 30s, the apiserver's longest webhook timeout"
    ));
}

#[test]
fn logs_into_a_pipe_carry_no_colour_codes() {
    let workdir = tempfile::tempdir().unwrap();
    let mut command = keyhook(workdir.path());
    command.args(["serve", "--webhook-addr", &free_addr()]);
    command.args(["--health-addr", &free_addr()]);
    let mut keyhook = Spawned::start(command);
    let log = keyhook.wait_for("webhooks on https://", Duration::from_secs(30));
    assert!(log.contains(" INFO keyhook: keyhook starting"), "{log}");
    assert!(!log.contains('\u{1b}'), "{log:?}");
}

/// `keyhook serve | head -1`: the log's reader goes away, keyhook says so
/// once on stderr and goes on serving.
#[test]
fn a_log_reader_that_goes_away_is_noted_once() {
    let workdir = tempfile::tempdir().unwrap();
    let webhook = free_addr();
    let health = free_addr();
    let mut child = keyhook(workdir.path())
        .args([
            "serve",
            "--webhook-addr",
            &webhook,
            "--health-addr",
            &health,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("webhooks on https://") {
        line.clear();
        assert_ne!(stdout.read_line(&mut line).unwrap(), 0, "keyhook exited");
    }
    drop(stdout);
    // Two refused requests, far enough apart to be logged both.
    let port = webhook.rsplit(':').next().unwrap();
    for _ in 0..2 {
        std::process::Command::new("curl")
            .args(["-s", "-k", "-H", "Content-Type: text/plain", "-d", "x"])
            .arg(format!("https://localhost:{port}/mutate-pod"))
            .output()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1_100));
    }
    let ready = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{health}/readyz"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ready.stdout),
        "200",
        "still serving"
    );
    child.kill().unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        stderr(&output),
        "keyhook: standard output was closed; the log is dropped from now on\n"
    );
}

/// Refused requests are logged at info with the client's address and what
/// was wrong, never the content they sent.
#[test]
fn refused_requests_are_logged_with_the_peer() {
    let workdir = tempfile::tempdir().unwrap();
    let webhook = free_addr();
    let mut command = keyhook(workdir.path());
    command.args(["serve", "--webhook-addr", &webhook]);
    command.args(["--health-addr", &free_addr()]);
    let mut keyhook = Spawned::start(command);
    keyhook.wait_for("webhooks on https://", Duration::from_secs(30));
    let port = webhook.rsplit(':').next().unwrap();
    let ca = workdir.path().join("certs/ca.crt");
    let post = |content_type: &str, body: &str| {
        let output = std::process::Command::new("curl")
            .args(["-s", "--cacert", ca.to_str().unwrap(), "-H", content_type])
            .args(["--data-binary", body])
            .arg(format!("https://localhost:{port}/mutate-pod"))
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
    };
    post("Content-Type: text/plain", "hello");
    post(
        "Content-Type: application/json",
        r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":7,"secret":"hunter2"}}"#,
    );
    let log = keyhook.wait_for("is not a valid AdmissionReview", Duration::from_secs(30));
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused a request"))
        .collect();
    assert_eq!(refusals.len(), 2, "{log}");
    assert!(refusals[0].contains(" INFO "), "{}", refusals[0]);
    assert!(refusals[0].contains("peer=127.0.0.1:"), "{}", refusals[0]);
    assert!(refusals[0].contains("status=415"), "{}", refusals[0]);
    assert!(
        refusals[0].contains(
            "refused a request: content type `text/plain` is not supported: send a review as application/json peer="
        ),
        "{}",
        refusals[0]
    );
    assert!(refusals[1].contains("status=400"), "{}", refusals[1]);
    assert!(
        refusals[1].contains(
            "refused a request: request body is not a valid AdmissionReview (admission.k8s.io/v1) peer="
        ),
        "{}",
        refusals[1]
    );
    assert!(!log.contains("hunter2"), "{log}");
}
