//! The Helm chart, rendered as `helm install` would render it: lint, render
//! every certificate mode on vanilla Kubernetes and on OpenShift (asked for
//! with `openshift.enabled`, and detected through `--api-versions
//! security.openshift.io/v1`), validate each manifest strictly against the
//! Kubernetes 1.33 schemas, and assert what the manifests promise.
//!
//! Needs `helm`, `kubernetes-validate` and `node` with the custom resource
//! validators: `tests/tools/install-chart-tools.sh` installs them. Without
//! them a test prints why and skips, unless `KEYHOOK_REQUIRE_TOOLS=1`.

mod certificates;
mod monitoring;
mod validity;
mod webhooks;
mod workload;

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

fn tools(names: &[&str]) -> bool {
    names.iter().all(|t| have_tool(t))
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
