//! `keyhook doctor`: the requests it makes (asserted against kube's
//! tower-test mock, answered with recorded apiserver JSON), the handshake it
//! makes with the endpoint like the apiserver would (a real TLS server on
//! loopback), and every finding it reports.

use crate::support;

use std::{sync::Arc, time::Duration};

use keyhook::{
    certs::{
        CertificateAuthority, PemBundle, ServiceIdentity, ServingCert,
        cluster::ca_bundle::ServiceRef,
    },
    doctor::{self, Line},
    metrics::Metrics,
    server::listener,
};
use serde_json::{Value, json};
use support::{ApiServerVerifier, fixture};
use time::OffsetDateTime;
use tokio::net::TcpListener;

const SELECTOR: &str = "labelSelector=app.kubernetes.io%2Fpart-of%3Dkeyhook";

fn service() -> ServiceIdentity {
    ServiceIdentity {
        name: "keyhook".into(),
        namespace: "keyhook".into(),
        cluster_domain: "cluster.local".into(),
    }
}

/// A keyhook replica on loopback serving a certificate of `ca`.
async fn serve(ca: &CertificateAuthority) -> std::net::SocketAddr {
    let now = OffsetDateTime::now_utc();
    let (tls_crt, tls_key) = ca
        .issue_serving(
            &service().san_list(&[], false),
            Duration::from_secs(90 * 24 * 3600),
            now,
        )
        .unwrap();
    let serving = Arc::new(ServingCert::new(service(), Metrics::new().certs));
    serving
        .offer(
            PemBundle {
                tls_crt,
                tls_key,
                ca_crt: ca.cert_pem().into(),
                ca_key: None,
            },
            now.unix_timestamp(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(listener::tls_config(serving).unwrap());
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = socket.accept().await {
            let _ = acceptor.accept(tcp).await;
        }
    });
    addr
}

fn list(kind: &str, api_version: &str, items: Vec<Value>) -> Value {
    json!({ "apiVersion": api_version, "kind": format!("{kind}List"), "metadata": { "resourceVersion": "48400" }, "items": items })
}

fn b64(pem: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(pem)
}

#[tokio::test]
async fn the_doctor_dials_the_ready_endpoint_and_judges_every_bundle() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let now = OffsetDateTime::now_utc();
        let ca = CertificateAuthority::generate(now).unwrap();
        let stranger = CertificateAuthority::generate(now).unwrap();
        let addr = serve(&ca).await;

        let (client, mut api) = ApiServerVerifier::new();
        let gather = tokio::spawn(async move { doctor::gather(&client).await });

        let mut mwc = fixture("mutatingwebhookconfiguration-keyhook.json");
        mwc["webhooks"][0]["clientConfig"]["caBundle"] = b64(ca.cert_pem()).into();
        api.expect("GET", &format!("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations?&{SELECTOR}"))
            .await
            .respond(200, &list("MutatingWebhookConfiguration", "admissionregistration.k8s.io/v1", vec![mwc]));
        let mut vwc = fixture("validatingwebhookconfiguration-keyhook.json");
        for hook in vwc["webhooks"].as_array_mut().unwrap() {
            hook["clientConfig"]["caBundle"] = b64(stranger.cert_pem()).into();
        }
        api.expect("GET", &format!("/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations?&{SELECTOR}"))
            .await
            .respond(200, &list("ValidatingWebhookConfiguration", "admissionregistration.k8s.io/v1", vec![vwc]));
        api.expect("GET", &format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions?&{SELECTOR}"))
            .await
            .respond(200, &list("CustomResourceDefinition", "apiextensions.k8s.io/v1", vec![fixture("crd-externalsecrets.json")]));
        // The metrics port comes first: the doctor must dial the port the
        // webhooks name (443), not the Service's first one.
        let mut service = fixture("service-keyhook.json");
        service["spec"]["ports"].as_array_mut().unwrap().insert(
            0,
            json!({"name": "metrics", "port": 8081, "protocol": "TCP", "targetPort": "metrics"}),
        );
        api.expect("GET", "/api/v1/namespaces/keyhook/services/keyhook")
            .await
            .respond(200, &service);
        let mut slices = fixture("endpointslice-list-keyhook.json");
        slices["items"][0]["endpoints"][0]["addresses"][0] = "127.0.0.1".into();
        slices["items"][0]["ports"][0]["port"] = addr.port().into();
        slices["items"][0]["ports"]
            .as_array_mut()
            .unwrap()
            .insert(0, json!({"name": "metrics", "port": 8081, "protocol": "TCP"}));
        api.expect(
            "GET",
            "/apis/discovery.k8s.io/v1/namespaces/keyhook/endpointslices?&labelSelector=kubernetes.io%2Fservice-name%3Dkeyhook",
        )
        .await
        .respond(200, &slices);
        api.expect("GET", "/apis/apiregistration.k8s.io/v1/apiservices?")
            .await
            .respond(200, &fixture("apiservice-list.json"));

        let gathered = gather.await.unwrap().unwrap();
        let probe = &gathered.services[&keyhook_https()];
        assert_eq!(probe.ready_endpoints, [addr], "the terminating endpoint is not dialed");

        let lines = doctor::evaluate(&gathered, "cluster.local", now.unix_timestamp());
        let text: Vec<String> = lines.iter().map(ToString::to_string).collect();
        let findings: Vec<&Line> = lines.iter().filter(|l| matches!(l, Line::Finding { .. })).collect();
        let has = |needle: &str| text.iter().any(|l| l.contains(needle));
        assert!(has("ok    MutatingWebhookConfiguration/keyhook webhook pods.keyhook.io: the caBundle trusts what keyhook.keyhook.svc serves"), "{text:#?}");
        assert!(has("FAIL  ValidatingWebhookConfiguration/keyhook-validate webhook validate.secretstore.external-secrets.io: the caBundle does not trust the certificate keyhook.keyhook.svc serves"), "{text:#?}");
        assert!(has("FAIL  ValidatingWebhookConfiguration/keyhook-validate webhook validate.externalsecret.external-secrets.io: the caBundle does not trust"), "{text:#?}");
        assert!(has("FAIL  CustomResourceDefinition/externalsecrets.external-secrets.io conversion webhook has no caBundle"), "{text:#?}");
        assert!(has("FAIL  APIService v1beta1.external-secrets.io claims a group keyhook's CRDs serve, forwarding it to Service openshift-operators/external-secrets-operator-service"), "{text:#?}");
        assert!(has("fix: kubectl delete apiservice v1beta1.external-secrets.io"), "{text:#?}");
        assert!(!has("v1.apps"), "only the served groups are judged: {text:#?}");
        assert_eq!(findings.len(), 4, "{text:#?}");
    })
    .await
    .expect("scenario timed out");
}

/// The Service port the recorded webhook configurations call.
fn keyhook_https() -> ServiceRef {
    ServiceRef {
        namespace: "keyhook".into(),
        name: "keyhook".into(),
        port: 443,
    }
}

fn gathered_with(bundle: Option<&str>, probe: doctor::ServiceProbe) -> doctor::Gathered {
    let mut object = keyhook::certs::cluster::ca_bundle::ManagedObject::from_mutating(
        &support::typed("mutatingwebhookconfiguration-keyhook.json"),
    );
    object.client_configs[0].ca_bundle = bundle.map(String::from);
    doctor::Gathered {
        objects: vec![object],
        services: [(keyhook_https(), probe)].into(),
        api_services: Vec::new(),
    }
}

#[test]
fn a_service_without_ready_endpoints_is_a_finding_with_a_command_to_run() {
    let probe = doctor::ServiceProbe {
        ready_endpoints: Vec::new(),
        served: Err("it has no ready endpoints".into()),
    };
    let lines = doctor::evaluate(&gathered_with(Some("PEM"), probe), "cluster.local", 0);
    assert_eq!(
        lines,
        [Line::Finding {
            problem: "MutatingWebhookConfiguration/keyhook webhook pods.keyhook.io calls Service keyhook/keyhook port 443: it has no ready endpoints".into(),
            fix: "check the Service has port 443 and the keyhook pods are ready: kubectl -n keyhook get service keyhook; kubectl -n keyhook get pods,endpointslices -l kubernetes.io/service-name=keyhook; kubectl -n keyhook describe pods".into(),
        }]
    );
}

#[tokio::test]
async fn a_service_without_the_webhooks_port_is_a_finding() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let ca = CertificateAuthority::generate(OffsetDateTime::now_utc()).unwrap();
        let mut mwc = fixture("mutatingwebhookconfiguration-keyhook.json");
        mwc["webhooks"][0]["clientConfig"]["caBundle"] = b64(ca.cert_pem()).into();
        let (client, mut api) = ApiServerVerifier::new();
        let gather = tokio::spawn(async move { doctor::gather(&client).await });
        api.expect("GET", &format!("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations?&{SELECTOR}"))
            .await
            .respond(200, &list("MutatingWebhookConfiguration", "admissionregistration.k8s.io/v1", vec![mwc]));
        api.expect("GET", &format!("/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations?&{SELECTOR}"))
            .await
            .respond(200, &list("ValidatingWebhookConfiguration", "admissionregistration.k8s.io/v1", vec![]));
        api.expect("GET", &format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions?&{SELECTOR}"))
            .await
            .respond(200, &list("CustomResourceDefinition", "apiextensions.k8s.io/v1", vec![]));
        let mut service = fixture("service-keyhook.json");
        service["spec"]["ports"][0]["port"] = 8443.into();
        api.expect("GET", "/api/v1/namespaces/keyhook/services/keyhook")
            .await
            .respond(200, &service);
        api.expect("GET", "/apis/apiregistration.k8s.io/v1/apiservices?")
            .await
            .respond(200, &list("APIService", "apiregistration.k8s.io/v1", vec![]));

        let gathered = gather.await.unwrap().unwrap();
        let lines = doctor::evaluate(&gathered, "cluster.local", 0);
        assert!(
            lines.iter().any(|l| matches!(l, Line::Finding { problem, .. }
                if problem == "MutatingWebhookConfiguration/keyhook webhook pods.keyhook.io calls Service keyhook/keyhook port 443: the Service has no port 443")),
            "{lines:#?}"
        );
    })
    .await
    .expect("scenario timed out");
}

#[test]
fn missing_sans_and_near_expiry_are_reported() {
    let now = OffsetDateTime::now_utc();
    let ca = CertificateAuthority::generate(now).unwrap();
    let sans = [keyhook::certs::SubjectAltName::Dns(
        "keyhook.keyhook.svc".into(),
    )];
    let (leaf, _key) = ca
        .issue_serving(&sans, Duration::from_secs(3 * 24 * 3600), now)
        .unwrap();
    let probe = doctor::ServiceProbe {
        ready_endpoints: vec!["10.244.1.7:9443".parse().unwrap()],
        served: Ok(leaf),
    };
    let lines = doctor::evaluate(
        &gathered_with(Some(ca.cert_pem()), probe),
        "cluster.local",
        now.unix_timestamp(),
    );
    let text: Vec<String> = lines.iter().map(ToString::to_string).collect();
    assert!(text[0].starts_with("ok    "), "{text:#?}");
    assert!(
        text.iter().any(|l| l
            .contains("lacks SANs keyhook.keyhook.svc.cluster.local, keyhook.keyhook, keyhook")),
        "{text:#?}"
    );
    assert!(text.iter().any(|l| l.contains("expires soon")), "{text:#?}");
}

#[test]
fn no_labelled_object_is_a_finding() {
    let lines = doctor::evaluate(&doctor::Gathered::default(), "cluster.local", 0);
    assert!(
        matches!(&lines[..], [Line::Finding { problem, .. }] if problem.contains("app.kubernetes.io/part-of=keyhook")),
        "{lines:?}"
    );
}
