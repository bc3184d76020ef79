//! Validation rules, each exercised with a real manifest wrapped in an
//! AdmissionReview as the kube-apiserver sends it.

use std::path::PathBuf;

use keyhook::apis::validate::{
    validate, validate_cluster_secret_store, validate_external_secret, validate_secret_store,
};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use serde_json::{Value, json};

fn fixture(path: &str) -> Value {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/apis")
        .join(path);
    let text = std::fs::read_to_string(&full).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn plural(kind: &str) -> String {
    format!("{}s", kind.to_lowercase())
}

/// The AdmissionReview the apiserver posts for `operation` on `object`.
fn admission(operation: &str, object: &Value) -> AdmissionRequest<DynamicObject> {
    let (group, version) = object["apiVersion"]
        .as_str()
        .unwrap()
        .split_once('/')
        .unwrap();
    let kind = object["kind"].as_str().unwrap();
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": plural(kind)});
    let (new, old) = match operation {
        "DELETE" => (Value::Null, object.clone()),
        "UPDATE" => (object.clone(), object.clone()),
        _ => (object.clone(), Value::Null),
    };
    let body = json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": "2b752327-a529-4ffd-b2e2-478455e80a0d",
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": object["metadata"]["name"],
            "namespace": object["metadata"].get("namespace").cloned().unwrap_or(Value::Null),
            "operation": operation,
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
            "object": new,
            "oldObject": old,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-client-side-apply", "fieldValidation": "Strict"}
        }
    });
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(body).unwrap();
    review.try_into().unwrap()
}

fn check(object: &Value) -> AdmissionResponse {
    let response = validate(&admission("CREATE", object));
    assert_eq!(response.uid, "2b752327-a529-4ffd-b2e2-478455e80a0d");
    response
}

fn assert_denied(object: &Value, fragments: &[&str]) {
    let response = check(object);
    assert!(!response.allowed, "expected a denial naming {fragments:?}");
    for fragment in fragments {
        assert!(
            response.result.message.contains(fragment),
            "{:?} lacks {fragment:?}",
            response.result.message
        );
    }
}

fn es() -> Value {
    fixture("v1/externalsecret-full.yaml")
}

#[test]
fn upstream_manifests_of_every_version_are_allowed() {
    for (path, object) in crate::apis_schemas::fixtures() {
        // As the apiserver sends it: defaulted by the CRD's schema.
        let schema = crate::apis_schemas::keyhook_schema(
            object["kind"].as_str().unwrap(),
            crate::apis_schemas::version_of(&object),
        );
        let stored = crate::support::schema::admit(&schema, &object)
            .unwrap()
            .stored;
        for operation in ["CREATE", "UPDATE"] {
            let response = validate(&admission(operation, &stored));
            assert!(
                response.allowed,
                "{} {operation}: {}",
                path.display(),
                response.result.message
            );
        }
    }
}

#[test]
fn deletion_policy_delete_needs_an_owned_secret() {
    for creation in ["Merge", "None", "CreateOrMerge"] {
        let mut object = es();
        object["spec"]["target"]["creationPolicy"] = json!(creation);
        object["spec"]["target"]["deletionPolicy"] = json!("Delete");
        assert_denied(&object, &["spec.target.deletionPolicy", creation]);
    }
    let mut owned = es();
    owned["spec"]["target"]["creationPolicy"] = json!("Owner");
    owned["spec"]["target"]["deletionPolicy"] = json!("Delete");
    assert!(check(&owned).allowed);
}

#[test]
fn deletion_policy_merge_needs_a_secret() {
    let mut object = es();
    object["spec"]["target"]["creationPolicy"] = json!("None");
    object["spec"]["target"]["deletionPolicy"] = json!("Merge");
    assert_denied(&object, &["spec.target.deletionPolicy", "None"]);
}

#[test]
fn data_or_data_from_is_required() {
    let mut object = es();
    object["spec"].as_object_mut().unwrap().remove("data");
    object["spec"]["dataFrom"] = json!([]);
    assert_denied(&object, &["spec.data", "spec.dataFrom"]);
}

#[test]
fn data_from_entry_has_exactly_one_source() {
    let mut both = es();
    both["spec"]["dataFrom"][0]["find"] = json!({"path": "p"});
    assert_denied(&both, &["spec.dataFrom[0]", "extract, find"]);

    let mut with_generator = es();
    with_generator["spec"]["dataFrom"][1]["sourceRef"] =
        json!({"generatorRef": {"kind": "Password", "name": "pw"}});
    assert_denied(
        &with_generator,
        &["spec.dataFrom[1]", "find, sourceRef.generatorRef"],
    );

    let mut none = es();
    none["spec"]["dataFrom"][1] = json!({"sourceRef": {"storeRef": {"name": "other"}}});
    assert_denied(
        &none,
        &[
            "spec.dataFrom[1]",
            "one of extract, find or sourceRef.generatorRef",
        ],
    );
}

#[test]
fn source_ref_names_a_store_or_a_generator() {
    let mut in_data = es();
    in_data["spec"]["data"][0]["sourceRef"] = json!({});
    assert_denied(
        &in_data,
        &["spec.data[0].sourceRef", "storeRef or generatorRef"],
    );

    let mut in_data_from = es();
    in_data_from["spec"]["dataFrom"][0]["sourceRef"] = json!({});
    assert_denied(
        &in_data_from,
        &["spec.dataFrom[0].sourceRef", "storeRef or generatorRef"],
    );
}

#[test]
fn secret_keys_are_unique() {
    let mut object = fixture("v1beta1/externalsecret-full.yaml");
    object["spec"]["data"][1]["secretKey"] = json!("username");
    assert_denied(
        &object,
        &["spec.data[1].secretKey", "`username`", "spec.data[0]"],
    );
}

#[test]
fn secret_keys_are_unique_in_v1alpha1_too() {
    let mut object = fixture("v1alpha1/externalsecret-template-v1.yaml");
    object["spec"]["data"][3]["secretKey"] = json!("password");
    assert_denied(&object, &["spec.data[3].secretKey", "spec.data[1]"]);
}

#[test]
fn bootstrap_token_secrets_are_refused() {
    let mut object = es();
    object["spec"]["target"]["template"]["type"] = json!("bootstrap.kubernetes.io/token");
    assert_denied(
        &object,
        &["spec.target.template.type", "bootstrap.kubernetes.io/token"],
    );
}

#[test]
fn refresh_interval_must_parse() {
    let mut object = es();
    object["spec"]["refreshInterval"] = json!("every hour");
    assert_denied(&object, &["spec.refreshInterval"]);

    let mut store = fixture("v1/secretstore-onepassword.yaml");
    store["spec"]["refreshInterval"] = json!("soon");
    assert_denied(&store, &["spec.refreshInterval"]);

    let mut negative = fixture("v1beta1/secretstore-kubernetes.yaml");
    negative["spec"]["refreshInterval"] = json!(-5);
    assert_denied(&negative, &["spec.refreshInterval", "negative"]);
}

#[test]
fn a_store_has_exactly_one_provider() {
    let mut none = fixture("v1/secretstore-onepassword.yaml");
    none["spec"]["provider"] = json!({});
    assert_denied(&none, &["spec.provider", "found none"]);

    let mut two = fixture("v1alpha1/clustersecretstore-aws.yaml");
    two["spec"]["provider"]["fake"] = json!({"data": []});
    assert_denied(&two, &["spec.provider", "aws, fake"]);

    let mut unknown_two = fixture("v1beta1/clustersecretstore-gcpsm.yaml");
    unknown_two["spec"]["provider"]["doppler"] = json!({"auth": {}});
    assert_denied(&unknown_two, &["spec.provider", "doppler, gcpsm"]);
}

#[test]
fn namespace_regexes_must_compile() {
    let mut object = fixture("v1/clustersecretstore-fake.yaml");
    object["spec"]["conditions"][0]["namespaceRegexes"] = json!(["^team-.*$", "([a-z"]);
    assert_denied(
        &object,
        &[
            "spec.conditions[0].namespaceRegexes[1]",
            "regular expression",
        ],
    );
}

#[test]
fn a_field_of_the_wrong_shape_is_named() {
    let mut object = es();
    object["spec"]["target"]["creationPolicy"] = json!("Sometimes");
    assert_denied(
        &object,
        &[
            "spec.target.creationPolicy",
            "unknown variant",
            "expected one of",
        ],
    );
}

#[test]
fn a_denial_never_echoes_a_provider_value() {
    let mut store = fixture("v1/clustersecretstore-fake.yaml");
    store["spec"]["provider"]["fake"]["data"][0]["value"] = json!(73_519_004);
    store["spec"]["provider"]["fake"]["data"][1]["value"] = json!({"password": "hunter2"});
    let response = check(&store);
    assert!(!response.allowed);
    let message = &response.result.message;
    assert!(
        message.contains("spec.provider.fake.data[0].value"),
        "{message}"
    );
    assert!(
        !message.contains("73519004") && !message.contains("hunter2"),
        "{message}"
    );
}

#[test]
fn every_violation_is_reported_at_once() {
    let mut object = es();
    object["spec"]["target"]["template"]["type"] = json!("bootstrap.kubernetes.io/token");
    object["spec"]["refreshInterval"] = json!("later");
    assert_denied(
        &object,
        &["spec.target.template.type", "spec.refreshInterval"],
    );
}

#[test]
fn delete_is_always_allowed() {
    let mut broken = es();
    broken["spec"] = json!({"target": {"creationPolicy": "None", "deletionPolicy": "Delete"}});
    let response = validate(&admission("DELETE", &broken));
    assert!(response.allowed);
    let mut store = fixture("v1/secretstore-onepassword.yaml");
    store["spec"]["provider"] = json!({});
    assert!(validate_secret_store(&admission("DELETE", &store)).allowed);
}

#[test]
fn per_kind_handlers_refuse_other_kinds() {
    let store = fixture("v1/secretstore-onepassword.yaml");
    assert!(validate_secret_store(&admission("CREATE", &store)).allowed);
    let response = validate_external_secret(&admission("CREATE", &store));
    assert!(!response.allowed && response.result.message.contains("ExternalSecret"));
    let cluster = fixture("v1/clustersecretstore-fake.yaml");
    assert!(validate_cluster_secret_store(&admission("CREATE", &cluster)).allowed);
}

#[test]
fn removed_template_helpers_are_admitted_with_a_warning() {
    let object = fixture("v1alpha1/externalsecret-template-v1.yaml");
    let response = check(&object);
    assert!(response.allowed, "{}", response.result.message);
    assert_eq!(
        response.warnings.unwrap_or_default(),
        [
            "spec.target.template.data[tls.crt] calls pemCertificate, which template engine v2 removed: rendering it will fail",
            "spec.target.template.data[tls.key] calls pemPrivateKey, which template engine v2 removed: rendering it will fail",
        ]
    );
    assert!(check(&es()).warnings.is_none());
}

#[test]
fn an_object_without_spec_is_refused_naming_what_it_lacks() {
    let mut object = es();
    object.as_object_mut().unwrap().remove("spec");
    assert_denied(
        &object,
        &["spec: either spec.data or spec.dataFrom must be set"],
    );
    let mut store = fixture("v1/secretstore-onepassword.yaml");
    store.as_object_mut().unwrap().remove("spec");
    assert_denied(&store, &["spec", "provider"]);
}
