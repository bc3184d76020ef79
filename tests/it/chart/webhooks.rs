//! The chart: which requests each webhook configuration sends to keyhook.

use super::*;

/// Whether the apiserver calls `webhook` for a pod with `pod_labels` in `namespace`.
fn calls_for_pod(webhook: &Value, namespace: &str, pod_labels: &[(&str, &str)]) -> bool {
    let namespace_labels = BTreeMap::from([("kubernetes.io/metadata.name", namespace)]);
    let pod_labels: BTreeMap<&str, &str> = pod_labels.iter().copied().collect();
    selects(&webhook["namespaceSelector"], &namespace_labels)
        && selects(&webhook["objectSelector"], &pod_labels)
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
