//! The chart: lint, strict schemas, custom resources, bad values, and the README.

use super::*;

#[test]
fn helm_lint_passes_for_every_mode_with_and_without_openshift() {
    if !tools(&["helm"]) {
        return;
    }
    for mode in MODES {
        for platform in [Platform::Kubernetes, Platform::OpenShiftValue] {
            let scenario = Scenario::new(mode, platform);
            let mut args: Vec<String> = ["lint", "--strict", CHART, "--namespace", NAMESPACE]
                .map(String::from)
                .into();
            for value in &scenario.set {
                args.extend(["--set".into(), value.clone()]);
            }
            let output = helm(&args);
            assert!(
                output.status.success(),
                "helm lint {scenario:?}:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

#[test]
fn every_manifest_validates_strictly_against_kubernetes_1_33() {
    if !tools(&["helm", "kubernetes-validate"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Scenario, Rendered, PathBuf)> = scenarios()
        .into_iter()
        .enumerate()
        .map(|(i, scenario)| {
            let rendered = scenario.render();
            let file = dir.path().join(format!("rendered-{i}.yaml"));
            std::fs::write(&file, &rendered.raw).unwrap();
            (scenario, rendered, file)
        })
        .collect();
    // One run for all files: the schemas load once.
    let output = Command::new("kubernetes-validate")
        .args(["-k", "1.33.0", "--strict"])
        .args(cases.iter().map(|(_, _, file)| file))
        .output()
        .expect("kubernetes-validate runs");
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{report}");
    for (scenario, rendered, file) in &cases {
        let file = format!("{} ", file.display());
        let lines: Vec<&str> = report.lines().filter(|l| l.contains(&file)).collect();
        // A kind without a schema is only a warning to kubernetes-validate:
        // count the passes, so nothing slips through unvalidated.
        let passed = lines.iter().filter(|l| l.starts_with("INFO ")).count();
        let custom = rendered
            .docs
            .iter()
            .filter(|d| CUSTOM_RESOURCE_KINDS.contains(&d["kind"].as_str().unwrap()))
            .count();
        assert_eq!(
            passed,
            rendered.docs.len() - custom,
            "{scenario:?}: not every Kubernetes object was validated:\n{}",
            lines.join("\n")
        );
        for line in lines.iter().filter(|l| !l.starts_with("INFO ")) {
            assert!(
                line.starts_with("WARN ")
                    && CUSTOM_RESOURCE_KINDS
                        .iter()
                        .any(|k| line.contains(&format!("kind {k} "))),
                "{scenario:?}: {line}"
            );
        }
    }
}

/// Certificate, Issuer, ServiceMonitor and PrometheusRule have no Kubernetes
/// schema: they are checked with the validators generated from
/// cert-manager's and prometheus-operator's API types (types, enums,
/// required fields).
#[test]
fn custom_resources_validate_against_their_projects_types() {
    if !tools(&["helm", "node"]) {
        return;
    }
    let models = std::env::var_os("KEYHOOK_CHART_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/keyhook-chart-tools")
        });
    if !models.join("node_modules/@kubernetes-models").is_dir() {
        assert!(
            !tools_required(),
            "the custom resource validators are required (KEYHOOK_REQUIRE_TOOLS=1) but not in {}; \
             run tests/tools/install-chart-tools.sh",
            models.display()
        );
        eprintln!(
            "SKIPPED: no custom resource validators in {}",
            models.display()
        );
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/validate-crs.mjs");
    let validate = |objects: &[&Value]| -> (bool, String) {
        let mut child = Command::new("node")
            .arg(&script)
            .env("KEYHOOK_CHART_TOOLS", &models)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&serde_json::to_vec(objects).unwrap())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    };

    let rendered = Scenario::new("cert-manager", Platform::Kubernetes).render();
    let custom: Vec<&Value> = rendered
        .docs
        .iter()
        .filter(|d| CUSTOM_RESOURCE_KINDS.contains(&d["kind"].as_str().unwrap()))
        .collect();
    let kinds: BTreeSet<&str> = custom.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, BTreeSet::from(CUSTOM_RESOURCE_KINDS));
    let (ok, report) = validate(&custom);
    assert!(ok, "{report}");
    assert_eq!(
        report.lines().filter(|l| l.starts_with("ok ")).count(),
        custom.len()
    );

    // The validators have teeth: a wrong enum is rejected.
    let mut broken = rendered.one("ServiceMonitor").clone();
    broken["spec"]["endpoints"][0]["scheme"] = json!("gopher");
    let (ok, report) = validate(&[&broken]);
    assert!(!ok && report.contains("scheme"), "{report}");
}

#[test]
fn bad_values_fail_rendering_with_a_clear_message() {
    if !tools(&["helm"]) {
        return;
    }
    // Checked by values.schema.json: `helm lint` refuses them too.
    let schema_cases: [(&[&str], &[&str]); 8] = [
        (
            &["certs.mode=bogus"],
            &[
                "/certs/mode",
                "'self-managed', 'openshift', 'cert-manager', 'external'",
            ],
        ),
        (&["certs.mdoe=openshift"], &["/certs", "'mdoe' not allowed"]),
        (&["replicas=3"], &["'replicas' not allowed"]),
        (
            &["webhook.podFailurePolicy=Sometimes"],
            &["/webhook/podFailurePolicy", "'Fail', 'Ignore'"],
        ),
        (&["webhook.timeoutSeconds=60"], &["/webhook/timeoutSeconds"]),
        (
            &["injection.refreshJitter=80%"],
            &["/injection/refreshJitter"],
        ),
        (
            &["injection.refreshCatchup=0s"],
            &["/injection/refreshCatchup"],
        ),
        // keyhook refuses a smaller --max-body at start.
        (&["maxBody=32KiB"], &["/maxBody"]),
    ];
    // Checked by the templates, whose `fail` says what to set; `helm lint`
    // only logs those by design, so they are checked on render alone.
    let template_cases: [(&[&str], &[&str]); 3] = [
        (
            &["certs.mode=external"],
            &["certs.mode=external needs certs.secretName"],
        ),
        (
            &["certs.mode=external", "certs.secretName=mine"],
            &["certs.mode=external needs certs.external.caBundle"],
        ),
        (
            &[
                "certs.mode=external",
                "certs.secretName=mine",
                "certs.external.caBundle=Zm9v",
            ],
            &["certs.external.caBundle must be the base64 encoding of PEM"],
        ),
    ];
    let run = |command: &str, set: &[&str]| -> (bool, String) {
        let mut args: Vec<String> = vec![command.into()];
        if command == "template" {
            args.push(RELEASE.into());
        }
        args.extend([CHART.into(), "--namespace".into(), NAMESPACE.into()]);
        for value in set {
            args.extend(["--set".into(), (*value).into()]);
        }
        let output = helm(&args);
        let message = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), message)
    };
    let lint = schema_cases.iter().map(|c| ("lint", c));
    let template = schema_cases
        .iter()
        .chain(&template_cases)
        .map(|c| ("template", c));
    for (command, (set, expected)) in lint.chain(template) {
        let (ok, message) = run(command, set);
        assert!(!ok, "helm {command} {set:?} succeeded");
        for needle in *expected {
            assert!(
                message.contains(needle),
                "helm {command} {set:?}: {needle:?} not in:\n{message}"
            );
        }
    }
}

/// Every value has a row in the chart README's values table.
#[test]
fn the_readme_documents_every_value() {
    fn leaves(value: &Value, prefix: &str, out: &mut Vec<String>) {
        match value.as_object() {
            Some(map) if !map.is_empty() && prefix != "resources" => {
                for (key, child) in map {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    leaves(child, &path, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }
    let values: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(Path::new(CHART).join("values.yaml")).unwrap(),
    )
    .unwrap();
    let readme = std::fs::read_to_string(Path::new(CHART).join("README.md")).unwrap();
    let mut keys = Vec::new();
    leaves(&values, "", &mut keys);
    assert!(keys.len() > 40, "{keys:?}");
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !readme.contains(&format!("| `{k}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "values without a README row: {missing:?}"
    );
}
