//! The chart: the Deployment, its pods, availability and RBAC.

use super::*;

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
    // The smallest body limit the chart's schema admits, in each unit, is
    // one keyhook takes (the schema refuses what keyhook would).
    for smallest in ["65536B", "64KiB", "66KB", "66K", "1M"] {
        cases.push(
            Scenario::new("self-managed", Platform::Kubernetes)
                .with(&format!("maxBody={smallest}")),
        );
    }
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
