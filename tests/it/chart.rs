//! The Helm chart, rendered as `helm install` would render it: lint, render
//! every certificate mode on vanilla Kubernetes and on OpenShift (asked for
//! with `openshift.enabled`, and detected through `--api-versions
//! security.openshift.io/v1`), validate each manifest strictly against the
//! Kubernetes 1.33 schemas, and assert what the manifests promise.
//!
//! Needs `helm`, `kubernetes-validate` and `node` with the custom resource
//! validators: `tests/tools/install-chart-tools.sh` installs them. Without
//! them a test prints why and skips, unless `KEYHOOK_REQUIRE_TOOLS=1`.

use crate::support;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use keyhook::server::routes::{CONVERT, MUTATE_POD, ROUTES};
use serde_json::{Value, json};
use support::{have_tool, tools_required};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/keyhook");
const MODES: [&str; 4] = ["self-managed", "openshift", "cert-manager", "external"];
/// A release name and namespace other than the defaults, so every name the
/// chart derives is seen to follow them.
const RELEASE: &str = "kh";
const NAMESPACE: &str = "secrets";
const FULLNAME: &str = "kh-keyhook";
const EXTRA_DNS: &str = "keyhook.example.com";
const EXTRA_IP: &str = "10.0.0.7";
/// The CA given in external mode, as PEM and as the base64 the caBundle takes.
const EXTERNAL_CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----";
const EXTERNAL_CA_BUNDLE: &str =
    "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCmFiYwotLS0tLUVORCBDRVJUSUZJQ0FURS0tLS0tCg==";
/// Rendered kinds that Kubernetes' own schemas do not cover.
const CUSTOM_RESOURCE_KINDS: [&str; 4] =
    ["Certificate", "Issuer", "ServiceMonitor", "PrometheusRule"];

/// How the chart learns it runs on OpenShift.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Platform {
    Kubernetes,
    /// `openshift.enabled=true`.
    OpenShiftValue,
    /// The cluster serves `security.openshift.io/v1`.
    OpenShiftDetected,
}

/// One `helm template` invocation.
#[derive(Debug, Clone)]
struct Scenario {
    mode: &'static str,
    platform: Platform,
    set: Vec<String>,
}

impl Scenario {
    fn new(mode: &'static str, platform: Platform) -> Self {
        let mut set = vec![
            format!("certs.mode={mode}"),
            format!("certs.extraSANs={{{EXTRA_DNS},{EXTRA_IP}}}"),
        ];
        if mode == "external" {
            set.push("certs.secretName=my-serving-cert".into());
            set.push(format!("certs.external.caBundle={EXTERNAL_CA_BUNDLE}"));
        }
        if platform == Platform::OpenShiftValue {
            set.push("openshift.enabled=true".into());
        }
        if platform == Platform::Kubernetes {
            set.push("serviceMonitor.enabled=true".into());
            set.push("prometheusRule.enabled=true".into());
        }
        Self {
            mode,
            platform,
            set,
        }
    }

    fn with(mut self, value: &str) -> Self {
        self.set.push(value.into());
        self
    }

    /// Whether the pods must run under OpenShift's restricted-v2 SCC.
    fn on_openshift(&self) -> bool {
        self.platform != Platform::Kubernetes || self.mode == "openshift"
    }

    fn helm_args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["template", RELEASE, CHART, "--namespace", NAMESPACE]
            .map(String::from)
            .into();
        for value in &self.set {
            args.extend(["--set".into(), value.clone()]);
        }
        if self.platform == Platform::OpenShiftDetected {
            args.extend(["--api-versions".into(), "security.openshift.io/v1".into()]);
        }
        args
    }

    fn render(&self) -> Rendered {
        let output = helm(&self.helm_args());
        assert!(
            output.status.success(),
            "{self:?} failed to render: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Rendered::parse(String::from_utf8(output.stdout).expect("helm prints UTF-8"))
    }
}

/// Every mode on every platform.
fn scenarios() -> Vec<Scenario> {
    MODES
        .iter()
        .flat_map(|mode| {
            [
                Platform::Kubernetes,
                Platform::OpenShiftValue,
                Platform::OpenShiftDetected,
            ]
            .map(|platform| Scenario::new(mode, platform))
        })
        .collect()
}

fn helm(args: &[String]) -> Output {
    Command::new("helm").args(args).output().expect("helm runs")
}

/// The rendered manifests, as text and parsed.
struct Rendered {
    raw: String,
    docs: Vec<Value>,
}

impl Rendered {
    fn parse(raw: String) -> Self {
        let docs: Vec<Value> = serde_saphyr::from_multiple(&raw)
            .unwrap_or_else(|e| panic!("rendered YAML parses: {e}\n{raw}"));
        let docs = docs.into_iter().filter(|d| !d.is_null()).collect();
        Self { raw, docs }
    }

    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.docs.iter().filter(|d| d["kind"] == kind).collect()
    }

    fn one(&self, kind: &str) -> &Value {
        let found = self.of_kind(kind);
        assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
        found[0]
    }

    fn deployment(&self) -> &Value {
        self.one("Deployment")
    }

    fn pod_spec(&self) -> &Value {
        &self.deployment()["spec"]["template"]["spec"]
    }

    fn container(&self) -> &Value {
        let containers = self.pod_spec()["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "one container");
        &containers[0]
    }

    fn args(&self) -> Vec<String> {
        strings(&self.container()["args"])
    }

    /// The value of `--flag=value` in the container's args.
    fn arg(&self, flag: &str) -> Option<String> {
        self.args_of(flag).into_iter().next()
    }

    fn args_of(&self, flag: &str) -> Vec<String> {
        let prefix = format!("{flag}=");
        self.args()
            .iter()
            .filter_map(|a| a.strip_prefix(&prefix).map(String::from))
            .collect()
    }

    /// Every webhook of every webhook configuration, with its configuration's kind.
    fn webhooks(&self) -> Vec<(&str, &Value)> {
        [
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
        ]
        .iter()
        .flat_map(|kind| {
            self.of_kind(kind).into_iter().flat_map(move |config| {
                config["webhooks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(move |w| (*kind, w))
            })
        })
        .collect()
    }

    /// Every client config calling keyhook: webhooks and CRD conversion.
    fn client_configs(&self) -> Vec<(String, &Value)> {
        let mut configs: Vec<(String, &Value)> = self
            .webhooks()
            .into_iter()
            .map(|(kind, w)| (format!("{kind} webhook {}", w["name"]), &w["clientConfig"]))
            .collect();
        for crd in self.of_kind("CustomResourceDefinition") {
            configs.push((
                format!("CRD {}", crd["metadata"]["name"]),
                &crd["spec"]["conversion"]["webhook"]["clientConfig"],
            ));
        }
        configs
    }

    /// What the container finds in `--cert-dir`: the volume mounted there,
    /// read-only, with the Secret it comes from.
    fn cert_dir_files(&self) -> Option<CertDir> {
        let cert_dir = self.arg("--cert-dir")?;
        let mount = self.container()["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == cert_dir.as_str())?;
        assert_eq!(
            mount["readOnly"], true,
            "the certificate is mounted read-only"
        );
        let volume = self.pod_spec()["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("the mounted volume exists");
        if let Some(name) = volume["secret"]["secretName"].as_str() {
            return Some(CertDir {
                secret: name.to_string(),
                projected: Vec::new(),
            });
        }
        let mut secret = None;
        let mut projected = Vec::new();
        for source in volume["projected"]["sources"]
            .as_array()
            .expect("secret or projected")
        {
            let (kind, object) = if source["secret"].is_object() {
                ("Secret", &source["secret"])
            } else {
                ("ConfigMap", &source["configMap"])
            };
            let name = object["name"].as_str().unwrap().to_string();
            if kind == "Secret" {
                secret = Some(name.clone());
            }
            for item in object["items"].as_array().unwrap() {
                projected.push(ProjectedFile {
                    kind,
                    name: name.clone(),
                    key: item["key"].as_str().unwrap().to_string(),
                    path: item["path"].as_str().unwrap().to_string(),
                });
            }
        }
        Some(CertDir {
            secret: secret.expect("a Secret among the projected sources"),
            projected,
        })
    }

    /// The objects whose caBundle someone must inject: webhook configurations and CRDs.
    fn callers(&self) -> Vec<&Value> {
        [
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
            "CustomResourceDefinition",
        ]
        .iter()
        .flat_map(|kind| self.of_kind(kind))
        .collect()
    }
}

/// The volume at `--cert-dir`.
#[derive(Debug)]
struct CertDir {
    /// The Secret holding the serving certificate.
    secret: String,
    /// For a projected volume, each file and where it comes from.
    projected: Vec<ProjectedFile>,
}

#[derive(Debug, PartialEq, Eq)]
struct ProjectedFile {
    kind: &'static str,
    name: String,
    key: String,
    path: String,
}

impl CertDir {
    /// Where `path` comes from: (kind, object name, key).
    fn source_of(&self, path: &str) -> (&str, &str, &str) {
        let file = self
            .projected
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("{path} is not in the cert dir: {self:?}"));
        (file.kind, &file.name, &file.key)
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| i.as_str().expect("a string").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object["metadata"]["annotations"][key].as_str()
}

/// Whether a Kubernetes label selector selects `labels`; an absent selector selects everything.
fn selects(selector: &Value, labels: &BTreeMap<&str, &str>) -> bool {
    if selector.is_null() {
        return true;
    }
    let by_labels = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k.as_str()).copied() == v.as_str());
    let by_expressions = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let value = labels.get(e["key"].as_str().unwrap()).copied();
            let values = strings(&e["values"]);
            let listed = value.is_some_and(|v| values.iter().any(|x| x == v));
            match e["operator"].as_str().unwrap() {
                "In" => listed,
                "NotIn" => !listed,
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                other => panic!("unknown selector operator {other}"),
            }
        });
    by_labels && by_expressions
}

/// Whether the apiserver calls `webhook` for a pod with `pod_labels` in `namespace`.
fn calls_for_pod(webhook: &Value, namespace: &str, pod_labels: &[(&str, &str)]) -> bool {
    let namespace_labels = BTreeMap::from([("kubernetes.io/metadata.name", namespace)]);
    let pod_labels: BTreeMap<&str, &str> = pod_labels.iter().copied().collect();
    selects(&webhook["namespaceSelector"], &namespace_labels)
        && selects(&webhook["objectSelector"], &pod_labels)
}

/// Where the restricted Pod Security Standard (v1.33) is violated in a pod
/// spec, one message per violation.
fn restricted_violations(pod: &Value) -> Vec<String> {
    let mut found = Vec::new();
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod[host] == true {
            found.push(format!("{host} is set"));
        }
    }
    const VOLUME_TYPES: [&str; 8] = [
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    for volume in pod["volumes"].as_array().into_iter().flatten() {
        for key in volume.as_object().unwrap().keys() {
            if key != "name" && !VOLUME_TYPES.contains(&key.as_str()) {
                found.push(format!("volume {} is of type {key}", volume["name"]));
            }
        }
    }
    let pod_sc = &pod["securityContext"];
    if pod_sc["sysctls"].as_array().is_some_and(|s| !s.is_empty()) {
        found.push("pod sets sysctls".into());
    }
    if pod_sc["runAsUser"] == 0 {
        found.push("pod runs as UID 0".into());
    }
    let containers = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| pod[*k].as_array().into_iter().flatten());
    for c in containers {
        let name = c["name"].as_str().unwrap_or("?");
        let sc = &c["securityContext"];
        if sc["privileged"] == true {
            found.push(format!("{name}: privileged"));
        }
        if sc["allowPrivilegeEscalation"] != false {
            found.push(format!("{name}: allowPrivilegeEscalation is not false"));
        }
        let drops = strings(&sc["capabilities"]["drop"]);
        if !drops.iter().any(|d| d == "ALL") {
            found.push(format!("{name}: capabilities do not drop ALL"));
        }
        for add in strings(&sc["capabilities"]["add"]) {
            if add != "NET_BIND_SERVICE" {
                found.push(format!("{name}: adds capability {add}"));
            }
        }
        let non_root = match &sc["runAsNonRoot"] {
            Value::Bool(b) => *b,
            _ => pod_sc["runAsNonRoot"] == true,
        };
        if !non_root {
            found.push(format!("{name}: runAsNonRoot is not true"));
        }
        if sc["runAsUser"] == 0 {
            found.push(format!("{name}: runs as UID 0"));
        }
        let seccomp = if sc["seccompProfile"].is_null() {
            &pod_sc["seccompProfile"]["type"]
        } else {
            &sc["seccompProfile"]["type"]
        };
        if seccomp != "RuntimeDefault" && seccomp != "Localhost" {
            found.push(format!("{name}: seccompProfile is {seccomp}"));
        }
        if !sc["procMount"].is_null() && sc["procMount"] != "Default" {
            found.push(format!("{name}: procMount {}", sc["procMount"]));
        }
        for port in c["ports"].as_array().into_iter().flatten() {
            if port["hostPort"].as_u64().is_some_and(|p| p != 0) {
                found.push(format!("{name}: hostPort {}", port["hostPort"]));
            }
        }
        // Beyond the profile, the issue asks for a read-only root filesystem.
        if sc["readOnlyRootFilesystem"] != true {
            found.push(format!("{name}: root filesystem is writable"));
        }
    }
    found
}

/// The long flags `keyhook serve --help` lists.
fn serve_flags() -> BTreeSet<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_keyhook"))
        .args(["serve", "--help"])
        .output()
        .expect("keyhook runs");
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let line = line.strip_prefix("-h, ").unwrap_or(line);
            let flag = line.strip_prefix("--")?;
            let end = flag
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .unwrap_or(flag.len());
            Some(format!("--{}", &flag[..end]))
        })
        .collect()
}

fn tools(names: &[&str]) -> bool {
    names.iter().all(|t| have_tool(t))
}

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
fn san_list_and_certificate_wiring_per_mode() {
    if !tools(&["helm"]) {
        return;
    }
    let service_names = [
        FULLNAME.to_string(),
        format!("{FULLNAME}.{NAMESPACE}"),
        format!("{FULLNAME}.{NAMESPACE}.svc"),
        format!("{FULLNAME}.{NAMESPACE}.svc.cluster.local"),
    ];
    for mode in MODES {
        let r = Scenario::new(mode, Platform::Kubernetes).render();
        let service = r.one("Service");
        let serving_cert_annotation = annotation(
            service,
            "service.beta.openshift.io/serving-cert-secret-name",
        );
        let cert_dir = r.cert_dir_files();
        let mounted_secret = cert_dir.as_ref().map(|files| files.secret.clone());
        // Service identity: the names keyhook puts in (or checks against) its certificate.
        assert_eq!(r.arg("--service-name").as_deref(), Some(FULLNAME), "{mode}");
        assert_eq!(r.arg("--service-namespace").as_deref(), Some(NAMESPACE));
        assert_eq!(r.arg("--cluster-domain").as_deref(), Some("cluster.local"));
        assert_eq!(service["metadata"]["name"], FULLNAME);
        for (what, config) in r.client_configs() {
            assert_eq!(config["service"]["name"], FULLNAME, "{what}");
            assert_eq!(config["service"]["namespace"], NAMESPACE, "{what}");
            assert_eq!(config["service"]["port"], 443, "{what}");
            assert!(config["url"].is_null(), "{what}");
        }
        let inject_annotations = |key: &str| -> Vec<Option<String>> {
            r.callers()
                .iter()
                .map(|o| annotation(o, key).map(String::from))
                .collect()
        };
        let openshift_injection = inject_annotations("service.beta.openshift.io/inject-cabundle");
        let cert_manager_injection = inject_annotations("cert-manager.io/inject-ca-from");
        let ca_bundles: Vec<&Value> = r
            .client_configs()
            .iter()
            .map(|(_, c)| &c["caBundle"])
            .collect();
        let callers = r.callers().len();
        assert_eq!(callers, 5, "2 webhook configurations and 3 CRDs");

        match mode {
            "self-managed" => {
                assert_eq!(r.arg("--cert-mode").as_deref(), Some("self-managed"));
                assert_eq!(
                    r.arg("--cert-secret"),
                    Some(format!("{FULLNAME}-tls")),
                    "keyhook keeps its CA and certificate in this Secret"
                );
                assert_eq!(r.args_of("--extra-san"), [EXTRA_DNS, EXTRA_IP]);
                assert_eq!(
                    mounted_secret, None,
                    "self-managed reads the Secret through the API"
                );
                // keyhook injects the bundle itself: nothing asks another injector,
                // and the chart sets no bundle a `helm upgrade` would overwrite.
                assert!(openshift_injection.iter().all(Option::is_none));
                assert!(cert_manager_injection.iter().all(Option::is_none));
                assert!(ca_bundles.iter().all(|b| b.is_null()));
                assert!(serving_cert_annotation.is_none());
                assert!(r.of_kind("Certificate").is_empty());
            }
            "openshift" => {
                assert_eq!(r.arg("--cert-mode").as_deref(), Some("openshift"));
                let secret = serving_cert_annotation.expect("the Service asks for a serving cert");
                assert_eq!(secret, format!("{FULLNAME}-tls"));
                assert_eq!(
                    mounted_secret.as_deref(),
                    Some(secret),
                    "that Secret is mounted"
                );
                // Its Secret has no ca.crt: that comes from the ConfigMap the
                // operator writes its CA into.
                let files = cert_dir.as_ref().unwrap();
                assert_eq!(files.source_of("tls.crt"), ("Secret", secret, "tls.crt"));
                assert_eq!(files.source_of("tls.key"), ("Secret", secret, "tls.key"));
                let (kind, config_map, key) = files.source_of("ca.crt");
                assert_eq!((kind, key), ("ConfigMap", "service-ca.crt"));
                let config_map = r
                    .of_kind("ConfigMap")
                    .into_iter()
                    .find(|c| c["metadata"]["name"] == config_map)
                    .expect("the CA ConfigMap is rendered");
                assert_eq!(
                    annotation(config_map, "service.beta.openshift.io/inject-cabundle"),
                    Some("true")
                );
                assert_eq!(openshift_injection, vec![Some("true".to_string()); callers]);
                assert!(cert_manager_injection.iter().all(Option::is_none));
                assert!(ca_bundles.iter().all(|b| b.is_null()));
                assert!(r.arg("--cert-secret").is_none() && r.args_of("--extra-san").is_empty());
                for kind in ["Certificate", "Issuer", "Secret"] {
                    assert!(
                        r.of_kind(kind).is_empty(),
                        "nothing else manages certs: {kind}"
                    );
                }
            }
            "cert-manager" => {
                assert_eq!(r.arg("--cert-mode").as_deref(), Some("external"));
                let certificate = r
                    .of_kind("Certificate")
                    .into_iter()
                    .find(|c| c["spec"]["isCA"] != true)
                    .expect("a serving Certificate");
                let mut expected_dns = service_names.to_vec();
                expected_dns.push(EXTRA_DNS.into());
                assert_eq!(strings(&certificate["spec"]["dnsNames"]), expected_dns);
                assert_eq!(strings(&certificate["spec"]["ipAddresses"]), [EXTRA_IP]);
                assert_eq!(
                    strings(&certificate["spec"]["usages"]),
                    ["server auth", "digital signature"]
                );
                let secret = certificate["spec"]["secretName"].as_str().unwrap();
                assert_eq!(mounted_secret.as_deref(), Some(secret));
                let name = certificate["metadata"]["name"].as_str().unwrap();
                assert_eq!(certificate["metadata"]["namespace"], NAMESPACE);
                assert_eq!(
                    cert_manager_injection,
                    vec![Some(format!("{NAMESPACE}/{name}")); callers]
                );
                assert!(openshift_injection.iter().all(Option::is_none));
                assert!(ca_bundles.iter().all(|b| b.is_null()));
                // The default issuer is a CA of the chart's own, whose Issuer exists.
                let issuer = &certificate["spec"]["issuerRef"]["name"];
                assert!(
                    r.of_kind("Issuer")
                        .iter()
                        .any(|i| &i["metadata"]["name"] == issuer)
                );
            }
            "external" => {
                assert_eq!(r.arg("--cert-mode").as_deref(), Some("external"));
                assert_eq!(mounted_secret.as_deref(), Some("my-serving-cert"));
                let files = cert_dir.as_ref().unwrap();
                assert_eq!(
                    files.source_of("tls.crt"),
                    ("Secret", "my-serving-cert", "tls.crt")
                );
                assert_eq!(
                    files.source_of("tls.key"),
                    ("Secret", "my-serving-cert", "tls.key")
                );
                let (kind, config_map, key) = files.source_of("ca.crt");
                assert_eq!((kind, key), ("ConfigMap", "ca.crt"));
                let config_map = r
                    .of_kind("ConfigMap")
                    .into_iter()
                    .find(|c| c["metadata"]["name"] == config_map)
                    .expect("the CA ConfigMap is rendered");
                assert_eq!(
                    config_map["data"]["ca.crt"].as_str().map(str::trim_end),
                    Some(EXTERNAL_CA_PEM),
                    "ca.crt is the caBundle the webhooks carry"
                );
                assert!(
                    ca_bundles.iter().all(|b| *b == EXTERNAL_CA_BUNDLE),
                    "{ca_bundles:?}"
                );
                assert!(openshift_injection.iter().all(Option::is_none));
                assert!(cert_manager_injection.iter().all(Option::is_none));
                assert!(r.of_kind("Certificate").is_empty());
            }
            _ => unreachable!(),
        }
    }
}

#[test]
fn cert_manager_mode_uses_a_given_issuer() {
    if !tools(&["helm"]) {
        return;
    }
    let r = Scenario::new("cert-manager", Platform::Kubernetes)
        .with("certs.certManager.issuerRef.name=corp-ca")
        .with("certs.certManager.issuerRef.kind=ClusterIssuer")
        .render();
    let certificate = r.one("Certificate");
    assert_eq!(certificate["spec"]["issuerRef"]["name"], "corp-ca");
    assert_eq!(certificate["spec"]["issuerRef"]["kind"], "ClusterIssuer");
    assert!(
        r.of_kind("Issuer").is_empty(),
        "no chart-made CA when an issuer is given"
    );
}

#[test]
fn openshift_renders_no_cert_secret_and_no_fixed_ids() {
    if !tools(&["helm"]) {
        return;
    }
    for scenario in scenarios() {
        let r = scenario.render();
        assert!(
            r.of_kind("Secret").is_empty(),
            "{scenario:?}: the chart never ships key material"
        );
        let pod = r.pod_spec();
        let contexts: Vec<&Value> = std::iter::once(&pod["securityContext"])
            .chain(
                pod["containers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| &c["securityContext"]),
            )
            .collect();
        let fixed_ids: Vec<String> = contexts
            .iter()
            .flat_map(|sc| {
                ["runAsUser", "runAsGroup", "fsGroup"]
                    .into_iter()
                    .filter(|k| !sc[*k].is_null())
                    .map(|k| format!("{k}={}", sc[k]))
            })
            .collect();
        if scenario.on_openshift() {
            assert!(
                fixed_ids.is_empty(),
                "{scenario:?}: restricted-v2 assigns the UIDs, but the chart fixes {fixed_ids:?}"
            );
            if scenario.mode == "openshift" {
                assert!(r.of_kind("Certificate").is_empty() && r.of_kind("Issuer").is_empty());
            }
        } else {
            assert_eq!(
                pod["securityContext"]["runAsUser"], 65532,
                "{scenario:?}: vanilla Kubernetes runs as the image's nonroot user"
            );
        }
    }
}

#[test]
fn the_pod_webhook_never_calls_for_unlabelled_pods_kube_system_or_its_own_namespace() {
    if !tools(&["helm"]) {
        return;
    }
    let opted_in = [("keyhook.io/inject", "true"), ("app", "web")];
    let mut cases = scenarios();
    cases.push(
        Scenario::new("self-managed", Platform::Kubernetes)
            .with("webhook.excludeNamespaces={monitoring}"),
    );
    for scenario in cases {
        let r = scenario.render();
        let config = r.one("MutatingWebhookConfiguration");
        assert_eq!(
            config["metadata"]["labels"]["app.kubernetes.io/part-of"],
            "keyhook"
        );
        let webhooks = config["webhooks"].as_array().unwrap();
        assert_eq!(webhooks.len(), 1);
        let w = &webhooks[0];
        assert!(
            calls_for_pod(w, "shop", &opted_in),
            "{scenario:?}: opted-in pods are mutated"
        );
        assert!(
            !calls_for_pod(w, "shop", &[]),
            "{scenario:?}: unlabelled pod"
        );
        assert!(
            !calls_for_pod(w, "shop", &[("app", "web")]),
            "{scenario:?}: other labels"
        );
        assert!(
            !calls_for_pod(w, "shop", &[("keyhook.io/inject", "false")]),
            "{scenario:?}: opted out"
        );
        assert!(
            !calls_for_pod(w, "kube-system", &opted_in),
            "{scenario:?}: kube-system"
        );
        assert!(
            !calls_for_pod(w, NAMESPACE, &opted_in),
            "{scenario:?}: its own namespace"
        );
        if scenario
            .set
            .iter()
            .any(|s| s.starts_with("webhook.excludeNamespaces"))
        {
            assert!(
                !calls_for_pod(w, "monitoring", &opted_in),
                "excluded namespace"
            );
        }
        assert_eq!(
            w["rules"],
            json!([{
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "scope": "Namespaced"
            }])
        );
        assert_eq!(w["failurePolicy"], "Fail");
        assert_eq!(w["timeoutSeconds"], 10);
        assert_eq!(w["sideEffects"], "NoneOnDryRun");
        assert_eq!(w["reinvocationPolicy"], "IfNeeded");
        assert_eq!(w["matchPolicy"], "Equivalent");
        assert_eq!(w["admissionReviewVersions"], json!(["v1"]));
        assert_eq!(w["clientConfig"]["service"]["path"], MUTATE_POD);
    }
    // The failure policies are the operator's choice.
    let r = Scenario::new("self-managed", Platform::Kubernetes)
        .with("webhook.podFailurePolicy=Ignore")
        .with("webhook.crdFailurePolicy=Ignore")
        .render();
    assert!(
        r.webhooks()
            .iter()
            .all(|(_, w)| w["failurePolicy"] == "Ignore")
    );
}

#[test]
fn no_webhook_matches_delete() {
    if !tools(&["helm"]) {
        return;
    }
    for scenario in scenarios() {
        let r = scenario.render();
        let webhooks = r.webhooks();
        assert_eq!(webhooks.len(), 4, "the pod webhook and one per CRD");
        for (kind, w) in &webhooks {
            let name = &w["name"];
            for rule in w["rules"].as_array().unwrap() {
                let ops = strings(&rule["operations"]);
                assert!(
                    !ops.iter().any(|o| o == "DELETE" || o == "*"),
                    "{scenario:?}: {kind} {name} matches {ops:?}"
                );
            }
            let path = w["clientConfig"]["service"]["path"].as_str().unwrap();
            assert!(
                ROUTES.contains(&path),
                "{name} calls {path}, not a route of keyhook"
            );
        }
        let validating = r.one("ValidatingWebhookConfiguration");
        let mut resources = BTreeSet::new();
        for w in validating["webhooks"].as_array().unwrap() {
            let rule = &w["rules"][0];
            assert_eq!(strings(&rule["operations"]), ["CREATE", "UPDATE"]);
            assert_eq!(strings(&rule["apiGroups"]), ["external-secrets.io"]);
            let resource = strings(&rule["resources"]).remove(0);
            let kind_path = format!("/validate-{}", resource.trim_end_matches('s'));
            assert_eq!(w["clientConfig"]["service"]["path"], kind_path.as_str());
            assert_eq!(w["sideEffects"], "None");
            assert_eq!(w["timeoutSeconds"], 10);
            assert_eq!(w["matchPolicy"], "Equivalent");
            resources.insert(resource);
        }
        assert_eq!(
            resources,
            BTreeSet::from(
                ["externalsecrets", "secretstores", "clustersecretstores"].map(String::from)
            )
        );
    }
}

#[test]
fn every_container_passes_the_restricted_pod_security_standard() {
    if !tools(&["helm"]) {
        return;
    }
    // The check finds violations where there are some.
    let bad = json!({
        "hostNetwork": true,
        "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
        "containers": [{"name": "c", "securityContext": {"privileged": true, "capabilities": {"add": ["SYS_ADMIN"]}}}]
    });
    let found = restricted_violations(&bad);
    for expected in [
        "hostNetwork is set",
        "volume \"h\" is of type hostPath",
        "c: privileged",
        "c: allowPrivilegeEscalation is not false",
        "c: capabilities do not drop ALL",
        "c: adds capability SYS_ADMIN",
        "c: runAsNonRoot is not true",
        "c: seccompProfile is null",
    ] {
        assert!(
            found.iter().any(|f| f == expected),
            "{expected} not in {found:?}"
        );
    }

    for scenario in scenarios() {
        let r = scenario.render();
        for workload in [
            "Deployment",
            "DaemonSet",
            "StatefulSet",
            "Job",
            "CronJob",
            "Pod",
        ] {
            for object in r.of_kind(workload) {
                let pod = match workload {
                    "Pod" => &object["spec"],
                    "CronJob" => &object["spec"]["jobTemplate"]["spec"]["template"]["spec"],
                    _ => &object["spec"]["template"]["spec"],
                };
                let violations = restricted_violations(pod);
                assert!(
                    violations.is_empty(),
                    "{scenario:?} {workload}: {violations:?}"
                );
            }
        }
    }
}

#[test]
fn the_deployment_passes_only_flags_keyhook_serve_accepts() {
    if !tools(&["helm"]) {
        return;
    }
    let accepted = serve_flags();
    assert!(
        accepted.contains("--cert-mode") && accepted.contains("--help"),
        "{accepted:?}"
    );
    // keyhook validates every value before it acts on --help, so a run with
    // --help appended checks the values too, without serving.
    let parses = |args: &[String]| {
        Command::new(env!("CARGO_BIN_EXE_keyhook"))
            .args(args)
            .arg("--help")
            .output()
            .expect("keyhook runs")
    };
    let bogus = parses(&["serve".into(), "--cert-mode=bogus".into()]);
    assert!(
        !bogus.status.success(),
        "a bad value is refused before --help"
    );

    let mut cases = scenarios();
    cases.push(
        Scenario::new("self-managed", Platform::Kubernetes)
            .with("leaderElection.enabled=false")
            .with("replicaCount=1")
            .with("logging.format=text"),
    );
    let tuned = Scenario::new("self-managed", Platform::Kubernetes)
        .with("injection.refreshJitter=25%")
        .with("injection.refreshCatchup=5m")
        .with("injection.gcGrace=1h");
    let r = tuned.render();
    assert_eq!(r.args_of("--refresh-jitter"), ["25%"]);
    assert_eq!(r.args_of("--refresh-catchup"), ["5m"]);
    assert_eq!(r.args_of("--gc-grace"), ["1h"]);
    cases.push(tuned);
    for scenario in cases {
        let r = scenario.render();
        let args = r.args();
        assert_eq!(args[0], "serve");
        for arg in &args[1..] {
            let flag = arg.split('=').next().unwrap();
            assert!(
                accepted.contains(flag),
                "{scenario:?}: `{arg}` is not a flag of keyhook serve ({accepted:?})"
            );
        }
        let output = parses(&args);
        assert!(
            output.status.success(),
            "{scenario:?}: keyhook refuses {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn replicas_probes_disruption_budget_and_service_keep_the_webhook_available() {
    if !tools(&["helm"]) {
        return;
    }
    let r = Scenario::new("self-managed", Platform::Kubernetes).render();
    let deployment = r.deployment();
    let pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap();
    let pod_labels: BTreeMap<&str, &str> = pod_labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
        .collect();
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(r.arg("--leader-elect").as_deref(), Some("true"));
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );

    let pdb = r.one("PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert!(selects(&pdb["spec"]["selector"], &pod_labels));

    let pod = r.pod_spec();
    let spread = pod["topologySpreadConstraints"].as_array().unwrap();
    assert!(
        spread
            .iter()
            .any(|c| c["topologyKey"] == "kubernetes.io/hostname"
                && selects(&c["labelSelector"], &pod_labels))
    );
    let anti = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        [0]["podAffinityTerm"];
    assert_eq!(anti["topologyKey"], "kubernetes.io/hostname");
    assert!(selects(&anti["labelSelector"], &pod_labels));

    let c = r.container();
    let port_number = |name: &str| -> u64 {
        c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("container port {name}"))["containerPort"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(port_number("webhook"), 9443);
    assert_eq!(port_number("metrics"), 8081);
    assert_eq!(r.arg("--webhook-addr").as_deref(), Some("0.0.0.0:9443"));
    assert_eq!(r.arg("--health-addr").as_deref(), Some("0.0.0.0:8081"));
    for (probe, path) in [
        ("livenessProbe", "/livez"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/livez"),
    ] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        let port = get["port"].as_str().expect("a named port");
        assert_eq!(port_number(port), 8081, "{probe} on the health port");
    }

    let grace: u64 = r
        .arg("--shutdown-grace")
        .and_then(|g| g.strip_suffix('s').map(str::to_string))
        .and_then(|g| g.parse().ok())
        .expect("--shutdown-grace=<N>s");
    let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap();
    let termination = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        termination > pre_stop + grace,
        "{termination} <= {pre_stop} + {grace}"
    );

    assert!(!c["resources"]["requests"]["cpu"].is_null());
    assert!(!c["resources"]["requests"]["memory"].is_null());
    assert!(!c["resources"]["limits"]["memory"].is_null());

    let service = r.one("Service");
    assert!(selects(
        &json!({ "matchLabels": service["spec"]["selector"] }),
        &pod_labels
    ));
    let ports = service["spec"]["ports"].as_array().unwrap();
    let https = ports.iter().find(|p| p["port"] == 443).expect("port 443");
    assert_eq!(port_number(https["targetPort"].as_str().unwrap()), 9443);
    let metrics = ports
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("a metrics port");
    assert_eq!(port_number(metrics["targetPort"].as_str().unwrap()), 8081);

    // One replica gets no budget that would block every node drain.
    let single = Scenario::new("self-managed", Platform::Kubernetes)
        .with("replicaCount=1")
        .render();
    assert!(single.of_kind("PodDisruptionBudget").is_empty());
}

#[test]
fn rbac_is_least_privilege_and_every_rule_says_why() {
    if !tools(&["helm"]) {
        return;
    }
    for scenario in scenarios() {
        let r = scenario.render();
        let role = |kind: &str| r.one(kind)["rules"].as_array().unwrap().clone();
        let cluster_rules = role("ClusterRole");
        let ns_rules = role("Role");
        let grants = |rules: &[Value],
                      group: &str,
                      resource: &str,
                      verb: &str|
         -> Vec<Option<Vec<String>>> {
            rules
                .iter()
                .filter(|rule| {
                    strings(&rule["apiGroups"]).iter().any(|g| g == group)
                        && strings(&rule["resources"]).iter().any(|x| x == resource)
                        && strings(&rule["verbs"]).iter().any(|v| v == verb)
                })
                .map(|rule| {
                    rule["resourceNames"]
                        .as_array()
                        .map(|_| strings(&rule["resourceNames"]))
                })
                .collect()
        };
        for rule in cluster_rules.iter().chain(&ns_rules) {
            for field in ["apiGroups", "resources", "verbs"] {
                assert!(
                    !strings(&rule[field]).iter().any(|x| x == "*"),
                    "{scenario:?}: wildcard in {rule}"
                );
            }
        }
        // Leases: only in its namespace; read and renewed by name.
        assert!(grants(&cluster_rules, "coordination.k8s.io", "leases", "get").is_empty());
        assert_eq!(
            grants(&ns_rules, "coordination.k8s.io", "leases", "update"),
            [Some(vec!["keyhook".to_string()])]
        );
        assert_eq!(
            grants(&ns_rules, "coordination.k8s.io", "leases", "create"),
            [None]
        );

        // Patch only keyhook's own webhook configurations and CRDs, and only
        // when keyhook injects the bundle itself.
        let config_names: Vec<String> = [
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
        ]
        .iter()
        .map(|k| r.one(k)["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
        let crd_names: Vec<String> = r
            .of_kind("CustomResourceDefinition")
            .iter()
            .map(|c| c["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        let patch_configs: Vec<_> = [
            "mutatingwebhookconfigurations",
            "validatingwebhookconfigurations",
        ]
        .iter()
        .flat_map(|res| grants(&cluster_rules, "admissionregistration.k8s.io", res, "patch"))
        .collect();
        let patch_crds = grants(
            &cluster_rules,
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "patch",
        );
        if scenario.mode == "self-managed" {
            for names in &patch_configs {
                let names = names.as_ref().expect("patch narrowed by resourceNames");
                assert!(names.iter().all(|n| config_names.contains(n)), "{names:?}");
            }
            assert_eq!(patch_configs.len(), 2);
            let mut granted = patch_crds[0]
                .clone()
                .expect("patch narrowed by resourceNames");
            granted.sort();
            let mut expected = crd_names.clone();
            expected.sort();
            assert_eq!(granted, expected);
            assert_eq!(
                grants(&ns_rules, "", "secrets", "update"),
                [Some(vec![format!("{FULLNAME}-tls")])],
                "its TLS Secret, by name"
            );
        } else {
            assert!(
                patch_configs.is_empty() && patch_crds.is_empty(),
                "{scenario:?}"
            );
            assert!(grants(&ns_rules, "", "secrets", "update").is_empty());
        }
        // Injection: keyhook-* Secrets anywhere (RBAC cannot match a prefix), pods for GC.
        for verb in ["create", "patch", "delete"] {
            assert_eq!(
                grants(&cluster_rules, "", "secrets", verb),
                [None],
                "{verb}"
            );
        }
        assert!(grants(&cluster_rules, "", "secrets", "update").is_empty());
        assert_eq!(grants(&cluster_rules, "", "pods", "list"), [None]);
        assert!(grants(&cluster_rules, "", "pods", "delete").is_empty());
        for resource in ["secretstores", "clustersecretstores"] {
            assert_eq!(
                grants(&cluster_rules, "external-secrets.io", resource, "watch"),
                [None]
            );
            assert!(grants(&cluster_rules, "external-secrets.io", resource, "update").is_empty());
        }
        assert_eq!(grants(&cluster_rules, "", "namespaces", "watch"), [None]);

        // The bindings name the ServiceAccount the pods run as.
        let account = r.pod_spec()["serviceAccountName"].as_str().unwrap();
        for binding in ["ClusterRoleBinding", "RoleBinding"] {
            let subject = &r.one(binding)["subjects"][0];
            assert_eq!(subject["name"], account);
            assert_eq!(subject["namespace"], NAMESPACE);
        }

        // Every rule is commented: the line before each `- apiGroups:` in
        // the rendered RBAC is a comment.
        let rbac = r
            .raw
            .split("\n---")
            .filter(|d| d.contains("# Source: keyhook/templates/rbac.yaml"))
            .collect::<String>();
        let lines: Vec<&str> = rbac.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim_start().starts_with("- apiGroups:") && line.starts_with("  -") {
                assert!(
                    lines[i - 1].trim_start().starts_with('#'),
                    "{scenario:?}: rule without a comment: {line} (after {:?})",
                    lines[i - 1]
                );
            }
        }
        assert!(rbac.contains("cannot match a name prefix"));
    }
}

#[test]
fn crds_are_the_generated_ones_calling_this_releases_service() {
    if !tools(&["helm"]) {
        return;
    }
    let generated_dir = Path::new(CHART).join("files/crds");
    for scenario in scenarios() {
        let r = scenario.render();
        let crds = r.of_kind("CustomResourceDefinition");
        assert_eq!(crds.len(), 3);
        for crd in crds {
            let name = crd["metadata"]["name"].as_str().unwrap();
            let text = std::fs::read_to_string(generated_dir.join(format!("{name}.yaml"))).unwrap();
            let mut generated: Value = serde_saphyr::from_str(&text).unwrap();
            let service = &crd["spec"]["conversion"]["webhook"]["clientConfig"]["service"];
            assert_eq!(
                service,
                &json!({"name": FULLNAME, "namespace": NAMESPACE, "path": CONVERT, "port": 443})
            );
            // Apart from the client config, the spec is the generator's.
            let mut spec = crd["spec"].clone();
            for s in [&mut spec, &mut generated["spec"]] {
                s["conversion"]["webhook"]
                    .as_object_mut()
                    .unwrap()
                    .remove("clientConfig");
            }
            assert_eq!(spec, generated["spec"], "{name} differs from files/crds");
            assert_eq!(
                crd["metadata"]["labels"]["app.kubernetes.io/part-of"],
                "keyhook"
            );
            assert_eq!(
                annotation(crd, "helm.sh/resource-policy"),
                Some("keep"),
                "uninstall keeps the CRDs and so every ExternalSecret"
            );
        }
    }
}

#[test]
fn service_monitor_scrapes_the_metrics_port_when_enabled() {
    if !tools(&["helm"]) {
        return;
    }
    let off = Scenario::new("self-managed", Platform::OpenShiftValue).render();
    assert!(off.of_kind("ServiceMonitor").is_empty(), "off by default");

    let r = Scenario::new("self-managed", Platform::Kubernetes)
        .with("serviceMonitor.labels.release=prometheus")
        .render();
    let monitor = r.one("ServiceMonitor");
    let service = r.one("Service");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    let service_labels: BTreeMap<&str, &str> = service["metadata"]["labels"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
        .collect();
    assert!(selects(&monitor["spec"]["selector"], &service_labels));
    assert_eq!(
        strings(&monitor["spec"]["namespaceSelector"]["matchNames"]),
        [NAMESPACE]
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == endpoint["port"] && p["targetPort"] == "metrics")
    );
}

/// Every vector selector of an alert expression.
#[derive(Default)]
struct Selectors(Vec<promql_parser::parser::VectorSelector>);

impl promql_parser::util::ExprVisitor for Selectors {
    type Error = std::convert::Infallible;

    fn pre_visit(&mut self, expr: &promql_parser::parser::Expr) -> Result<bool, Self::Error> {
        use promql_parser::parser::Expr;
        match expr {
            Expr::VectorSelector(selector) => self.0.push(selector.clone()),
            Expr::MatrixSelector(matrix) => self.0.push(matrix.vs.clone()),
            _ => {}
        }
        Ok(true)
    }
}

/// The names of the series keyhook's `/metrics` exposes once each metric
/// has been recorded (labelled families print nothing before their first
/// series).
fn exported_series() -> BTreeSet<String> {
    use keyhook::metrics::{CertKind, Metrics};
    let metrics = Metrics::new();
    metrics.secrets.set_exporting(true);
    metrics
        .certs
        .set_not_after(CertKind::Serving, 1_900_000_000);
    metrics.http.route("/mutate-pod", 200).record(200, 0.001);
    metrics
        .providers
        .record_build("vault", "shop/vault".into(), false);
    metrics
        .encode()
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(String::from)
        .collect()
}

#[test]
fn alerts_are_promql_over_this_releases_metrics() {
    if !tools(&["helm"]) {
        return;
    }
    use promql_parser::label::MatchOp;
    let off = Scenario::new("self-managed", Platform::OpenShiftValue).render();
    assert!(off.of_kind("PrometheusRule").is_empty(), "off by default");

    let r = Scenario::new("self-managed", Platform::Kubernetes)
        .with("prometheusRule.labels.release=prometheus")
        .render();
    let rule = r.one("PrometheusRule");
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    let exported = exported_series();
    let alerts = rule["spec"]["groups"][0]["rules"].as_array().unwrap();
    assert_eq!(alerts.len(), 8);
    for alert in alerts {
        let name = alert["alert"].as_str().unwrap();
        let expr = promql_parser::parser::parse(alert["expr"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{name}: not PromQL: {e}"));
        let mut selectors = Selectors::default();
        promql_parser::util::walk_expr(&mut selectors, &expr).unwrap();
        assert!(!selectors.0.is_empty(), "{name} selects nothing");
        for selector in &selectors.0 {
            let metric = selector.name.as_deref().unwrap_or_default();
            assert!(
                exported.contains(metric),
                "{name}: `{metric}` is not a series keyhook exports: {exported:?}"
            );
            // The ServiceMonitor's target labels pin the series to this release.
            for (label, value) in [("job", FULLNAME), ("namespace", NAMESPACE)] {
                assert!(
                    selector
                        .matchers
                        .matchers
                        .iter()
                        .any(|m| m.name == label && m.value == value && m.op == MatchOp::Equal),
                    "{name}: `{metric}` is not selected by {label}={value}"
                );
            }
        }
        assert_eq!(alert["labels"]["severity"], "warning", "{name}");
        assert!(
            alert["annotations"]["summary"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "{name}"
        );
    }
}

#[test]
fn bad_values_fail_rendering_with_a_clear_message() {
    if !tools(&["helm"]) {
        return;
    }
    // Checked by values.schema.json: `helm lint` refuses them too.
    let schema_cases: [(&[&str], &[&str]); 7] = [
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
