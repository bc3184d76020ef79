//! Conversion of real manifests (after upstream's documentation) and of
//! ConversionReviews shaped as the kube-apiserver sends them.

use std::path::PathBuf;

use keyhook::apis::{CONVERSION_ANNOTATION, Version, convert_object, convert_review};
use kube::core::conversion::{ConversionRequest, ConversionReview};
use serde_json::{Value, json};

fn fixture(path: &str) -> Value {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(if path.starts_with("conversion/") {
            path.to_owned()
        } else {
            format!("apis/{path}")
        });
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn version_of(object: &Value) -> Version {
    Version::from_api_version(object["apiVersion"].as_str().unwrap()).unwrap()
}

fn stash(object: &Value) -> Value {
    let text = object["metadata"]["annotations"][CONVERSION_ANNOTATION]
        .as_str()
        .expect("stash annotation");
    serde_json::from_str(text).unwrap()
}

#[test]
fn every_fixture_round_trips_through_every_version() {
    for (path, original) in crate::apis_schemas::fixtures() {
        let path = path.display();
        for target in Version::ALL {
            let there = convert_object(original.clone(), target).unwrap();
            assert_eq!(there["apiVersion"], target.api_version(), "{path}");
            let back = convert_object(there, version_of(&original)).unwrap();
            assert_eq!(back, original, "{path} via {target}");
        }
    }
}

#[test]
fn v1alpha1_external_secret_becomes_v1_as_upstream_maps_it() {
    let original = fixture("v1alpha1/externalsecret-template-v1.yaml");
    let v1 = convert_object(original.clone(), Version::V1).unwrap();

    assert_eq!(v1["apiVersion"], "external-secrets.io/v1");
    // dataFrom's flat references become dataFrom[].extract.
    assert_eq!(
        v1["spec"]["dataFrom"],
        json!([
            {"extract": {"key": "/shared/payments"}},
            {"extract": {"key": "/shared/common", "version": "2", "property": "config"}}
        ])
    );
    // Engine v1 (v1alpha1's default) becomes v2 with upstream's renames.
    let template = &v1["spec"]["target"]["template"];
    assert_eq!(template["engineVersion"], "v2");
    assert_eq!(
        template["data"]["config"],
        "password: \"{{ .password | toString }}\"\ntoken: \"{{ .token | b64dec | toString }}\"\nuser: \"{{ (.creds | fromJson).user }}\"\n"
    );
    // Helpers removed upstream without a replacement are left as written.
    assert_eq!(
        template["data"]["tls.key"],
        "{{ .mysecret | pkcs12key | pemPrivateKey }}"
    );
    // Metadata is preserved; the original engine and templates are stashed.
    for field in ["name", "namespace", "uid", "resourceVersion", "labels"] {
        assert_eq!(
            v1["metadata"][field], original["metadata"][field],
            "{field}"
        );
    }
    assert_eq!(v1["metadata"]["annotations"]["acme.org/sha"], "1234");
    let stash = stash(&v1);
    assert_eq!(
        stash["v1alpha1"][0],
        json!({"path": "/spec/target/template/engineVersion", "as": "v2"})
    );
    assert_eq!(v1["status"], original["status"]);
}

#[test]
fn v1_external_secret_in_v1alpha1_keeps_what_alpha_cannot_say_in_the_annotation() {
    let original = fixture("v1/externalsecret-full.yaml");
    let alpha = convert_object(original.clone(), Version::V1Alpha1).unwrap();
    let spec = &alpha["spec"];

    assert_eq!(
        spec["target"]["creationPolicy"], "Merge",
        "CreateOrMerge maps to Merge"
    );
    assert!(spec["target"].get("deletionPolicy").is_none());
    assert!(spec.get("refreshPolicy").is_none());
    assert!(spec["target"]["template"].get("mergePolicy").is_none());
    // Only the extract entry has a v1alpha1 form, flattened as upstream did.
    assert_eq!(
        spec["dataFrom"],
        json!([{"key": "database-credentials", "version": "v1", "property": "data", "conversionStrategy": "Default"}])
    );
    assert!(spec["data"][0].get("sourceRef").is_none());
    assert!(
        spec["data"][0]["remoteRef"]
            .get("decodingStrategy")
            .is_none()
    );
    // Fields keyhook does not model pass through untouched.
    assert_eq!(spec["syncWindows"], original["spec"]["syncWindows"]);
    assert_eq!(spec["data"][0]["remoteRef"]["nullBytePolicy"], "Ignore");
    let stash = stash(&alpha);
    let stashed: Vec<&str> = stash["v1"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        stashed,
        [
            "/spec/target/creationPolicy",
            "/spec/target/deletionPolicy",
            "/spec/refreshPolicy",
            "/spec/target/template/mergePolicy",
            "/spec/data",
            "/spec/dataFrom"
        ]
    );
}

#[test]
fn an_edit_made_in_the_old_version_wins_over_the_stash() {
    let original = fixture("v1/externalsecret-full.yaml");
    let mut alpha = convert_object(original, Version::V1Alpha1).unwrap();
    // A v1alpha1 client changes the creation policy it can see.
    alpha["spec"]["target"]["creationPolicy"] = json!("Owner");
    let v1 = convert_object(alpha, Version::V1).unwrap();
    assert_eq!(v1["spec"]["target"]["creationPolicy"], "Owner");
    // What it could not see comes back.
    assert_eq!(v1["spec"]["target"]["deletionPolicy"], "Retain");
    assert_eq!(v1["spec"]["refreshPolicy"], "Periodic");
    assert!(
        v1["metadata"]["annotations"]
            .get(CONVERSION_ANNOTATION)
            .is_none()
    );
}

#[test]
fn store_refresh_interval_maps_between_duration_and_seconds() {
    let v1 = fixture("v1/secretstore-onepassword.yaml");
    let beta = convert_object(v1.clone(), Version::V1Beta1).unwrap();
    assert_eq!(beta["spec"]["refreshInterval"], 300);
    let alpha = convert_object(v1.clone(), Version::V1Alpha1).unwrap();
    assert!(alpha["spec"].get("refreshInterval").is_none());

    let beta = fixture("v1beta1/secretstore-kubernetes.yaml");
    let hub = convert_object(beta.clone(), Version::V1).unwrap();
    assert_eq!(hub["spec"]["refreshInterval"], 300);
    assert_eq!(hub["spec"]["provider"], beta["spec"]["provider"]);
}

#[test]
fn providers_keyhook_does_not_model_pass_through_every_version() {
    for path in [
        "v1beta1/clustersecretstore-gcpsm.yaml",
        "v1/secretstore-doppler.yaml",
    ] {
        let original = fixture(path);
        for target in Version::ALL {
            let converted = convert_object(original.clone(), target).unwrap();
            assert_eq!(
                converted["spec"]["provider"], original["spec"]["provider"],
                "{path} -> {target}"
            );
        }
    }
}

#[test]
fn v1alpha1_data_from_already_in_the_later_shape_is_never_nested() {
    let original = fixture("conversion/v1alpha1-externalsecret-datafrom-later-shape.yaml");
    let v1 = convert_object(original.clone(), Version::V1).unwrap();
    assert_eq!(
        v1["spec"]["dataFrom"],
        json!([
            {"extract": {"key": "/team-c/flat"}},
            {"extract": {"key": "/team-c/extracted", "property": "settings"}},
            original["spec"]["dataFrom"][2],
        ])
    );
    // Back in v1alpha1 the entries take its own flat shape; the search has
    // none and is kept in the stash.
    let alpha = convert_object(v1, Version::V1Alpha1).unwrap();
    assert_eq!(
        alpha["spec"]["dataFrom"],
        json!([
            {"key": "/team-c/flat"},
            {"key": "/team-c/extracted", "property": "settings"}
        ])
    );
}

#[test]
fn a_v1alpha1_data_from_entry_mixing_both_shapes_is_refused_naming_it() {
    let mut object = fixture("conversion/v1alpha1-externalsecret-datafrom-later-shape.yaml");
    object["spec"]["dataFrom"][1]["key"] = json!("/team-c/also-flat");
    let error = convert_object(object, Version::V1).unwrap_err().to_string();
    assert!(
        error.starts_with("spec.dataFrom[1]: mixes v1alpha1's flat remote reference (key)")
            && error.contains("(extract)"),
        "{error}"
    );
}

#[test]
fn v1alpha1_kubernetes_service_account_loses_its_extra_wrapper_in_v1() {
    let original = fixture("v1alpha1/secretstore-kubernetes-serviceaccount.yaml");
    let v1 = convert_object(original.clone(), Version::V1).unwrap();
    assert_eq!(
        v1["spec"]["provider"]["kubernetes"]["auth"]["serviceAccount"],
        original["spec"]["provider"]["kubernetes"]["auth"]["serviceAccount"]["serviceAccount"]
    );
    assert!(
        v1["metadata"].get("annotations").is_none(),
        "an exact inverse needs no stash"
    );
    let beta = convert_object(v1, Version::V1Beta1).unwrap();
    assert_eq!(
        beta["spec"]["provider"]["kubernetes"]["auth"]["serviceAccount"]["name"],
        "secret-reader"
    );
}

#[test]
fn v1alpha1_fake_value_map_becomes_a_json_value() {
    let original = fixture("v1alpha1/clustersecretstore-fake-valuemap.yaml");
    let v1 = convert_object(original.clone(), Version::V1).unwrap();
    let entry = &v1["spec"]["provider"]["fake"]["data"][2];
    assert_eq!(entry.get("valueMap"), None);
    let value: Value = serde_json::from_str(entry["value"].as_str().unwrap()).unwrap();
    assert_eq!(value, json!({"colour": "teal", "size": "large"}));
    assert_eq!(
        v1["spec"]["provider"]["fake"]["data"][0],
        original["spec"]["provider"]["fake"]["data"][0]
    );
    assert_eq!(
        stash(&v1)["v1alpha1"][0]["path"],
        "/spec/provider/fake/data/2"
    );
}

/// A ConversionReview as the kube-apiserver posts it.
fn review(desired: &str, objects: Vec<Value>) -> ConversionRequest {
    let body = json!({
        "kind": "ConversionReview",
        "apiVersion": "apiextensions.k8s.io/v1",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "desiredAPIVersion": desired,
            "objects": objects
        }
    });
    let review: ConversionReview = serde_json::from_value(body).unwrap();
    ConversionRequest::from_review(review).unwrap()
}

fn answer(request: ConversionRequest) -> Value {
    serde_json::to_value(convert_review(request).into_review()).unwrap()
}

#[test]
fn review_of_many_objects_converts_each_in_order_and_echoes_the_uid() {
    let base = fixture("v1alpha1/externalsecret-template-v1.yaml");
    let objects: Vec<Value> = (0..100)
        .map(|i| {
            let mut object = base.clone();
            object["metadata"]["name"] = json!(format!("es-{i}"));
            object
        })
        .collect();
    let body = answer(review("external-secrets.io/v1", objects));

    assert_eq!(body["apiVersion"], "apiextensions.k8s.io/v1");
    assert_eq!(body["kind"], "ConversionReview");
    let response = &body["response"];
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(response["result"]["status"], "Success");
    let converted = response["convertedObjects"].as_array().unwrap();
    assert_eq!(converted.len(), 100);
    for (i, object) in converted.iter().enumerate() {
        assert_eq!(object["apiVersion"], "external-secrets.io/v1");
        assert_eq!(object["metadata"]["name"], format!("es-{i}"));
        assert_eq!(object["metadata"]["uid"], base["metadata"]["uid"]);
        assert_eq!(object["metadata"]["resourceVersion"], "4815");
    }
}

#[test]
fn review_mixing_kinds_and_source_versions_converts_each() {
    let objects = vec![
        fixture("v1alpha1/secretstore-vault.yaml"),
        fixture("v1/secretstore-onepassword.yaml"),
        fixture("v1beta1/secretstore-kubernetes.yaml"),
    ];
    let body = answer(review("external-secrets.io/v1beta1", objects));
    let converted = body["response"]["convertedObjects"].as_array().unwrap();
    let names: Vec<&str> = converted
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["vault-backend", "staging", "k8s-store-default-ns"]);
    assert!(
        converted
            .iter()
            .all(|o| o["apiVersion"] == "external-secrets.io/v1beta1")
    );
}

#[test]
fn review_failure_names_the_object_and_the_field() {
    let mut broken = fixture("v1/secretstore-onepassword.yaml");
    broken["spec"]["refreshInterval"] = json!("every hour");
    let objects = vec![fixture("v1/clustersecretstore-fake.yaml"), broken];
    let body = answer(review("external-secrets.io/v1beta1", objects));
    let response = &body["response"];

    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(response["result"]["status"], "Failure");
    let message = response["result"]["message"].as_str().unwrap();
    assert!(
        message.contains("object 1 (SecretStore team-a/staging)"),
        "{message}"
    );
    assert!(message.contains("spec.refreshInterval"), "{message}");
    assert!(
        response["convertedObjects"]
            .as_array()
            .is_none_or(Vec::is_empty)
    );
}

#[test]
fn review_for_an_unknown_version_or_kind_fails() {
    let body = answer(review(
        "external-secrets.io/v2",
        vec![fixture("v1/secretstore-openbao.yaml")],
    ));
    assert_eq!(body["response"]["result"]["status"], "Failure");
    assert!(
        body["response"]["result"]["message"]
            .as_str()
            .unwrap()
            .contains("desiredAPIVersion")
    );

    let mut push = fixture("v1/secretstore-openbao.yaml");
    push["kind"] = json!("PushSecret");
    let body = answer(review("external-secrets.io/v1beta1", vec![push]));
    let message = body["response"]["result"]["message"].as_str().unwrap();
    assert!(
        message.contains("object 0 (PushSecret team-a/openbao-backend)")
            && message.contains("kind"),
        "{message}"
    );
}

#[test]
fn a_tampered_conversion_annotation_is_reported_not_trusted() {
    let mut object = fixture("v1alpha1/secretstore-vault.yaml");
    object["metadata"]["annotations"] = json!({ CONVERSION_ANNOTATION: "{not json" });
    let error = convert_object(object, Version::V1).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("metadata.annotations[keyhook.io/conversion-data]"),
        "{error}"
    );
}
