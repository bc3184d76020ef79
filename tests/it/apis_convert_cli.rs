//! `keyhook convert` as a user runs it: where output, warnings and errors
//! go, and what the messages say.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const KEYHOOK: &str = env!("CARGO_BIN_EXE_keyhook");

fn fixture(path: &str) -> String {
    format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))
}

fn keyhook(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(KEYHOOK)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn reads_standard_input_without_a_file_and_writes_warnings_apart() {
    let input =
        std::fs::read_to_string(fixture("apis/v1alpha1/externalsecret-template-v1.yaml")).unwrap();
    let output = keyhook(&["convert", "--to", "v1"], Some(&input));
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("apiVersion: external-secrets.io/v1\n"),
        "{stdout}"
    );
    assert!(!stdout.contains("warning"));
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 2, "{stderr}");
    assert!(
        stderr.starts_with("warning: document 1 (ExternalSecret payments/template): spec.target.template.data[tls.crt] calls pemCertificate"),
        "{stderr}"
    );
    let from_file = keyhook(
        &[
            "convert",
            "--to",
            "v1",
            "-f",
            &fixture("apis/v1alpha1/externalsecret-template-v1.yaml"),
        ],
        None,
    );
    assert_eq!(from_file.stdout, output.stdout);
}

#[test]
fn a_bad_duration_is_reported_once_with_its_document_and_the_grammar() {
    let store = std::fs::read_to_string(fixture("apis/v1/secretstore-onepassword.yaml"))
        .unwrap()
        .replace("refreshInterval: 5m", "refreshInterval: 1.5.0");
    let input = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n---\n{store}");
    let output = keyhook(&["convert", "--to", "v1beta1"], Some(&input));
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty(), "nothing is written on error");
    let stderr = text(&output.stderr);
    assert_eq!(
        stderr,
        "error: document 2 (SecretStore team-a/staging): spec.refreshInterval: is not a Go duration \
         (time.ParseDuration): numbers each followed by a unit ns, us, µs, ms, s, m or h, such as \
         `300s`, `5m` or `1h30m`\n"
    );
}

#[test]
fn the_usage_line_shows_the_file_is_optional() {
    let output = keyhook(&["convert", "--help"], None);
    let help = text(&output.stdout);
    assert!(
        help.contains("Usage: keyhook convert --to <VERSION> [-f <FILE>]"),
        "{help}"
    );
    let missing = keyhook(&["convert"], None);
    let stderr = text(&missing.stderr);
    assert!(
        stderr.contains("--to <VERSION>") && stderr.contains("[-f <FILE>]"),
        "{stderr}"
    );
}
