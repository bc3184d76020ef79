//! The chart: the SAN list, certificate wiring per mode, and the CRDs.

use super::*;

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
