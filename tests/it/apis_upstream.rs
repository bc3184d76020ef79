//! keyhook against upstream External Secrets Operator itself: its CRD
//! schemas at the newest tag serving each version, and the manifests in its
//! docs, e2e and config directories. Nothing of upstream is in this
//! repository; these tests read a clone given as `KEYHOOK_UPSTREAM_REPO`
//! (a git directory of external-secrets/external-secrets with its tags) and
//! are ignored without one:
//!
//! `KEYHOOK_UPSTREAM_REPO=/path/to/external-secrets.git cargo test --test it apis_upstream -- --ignored`

use std::collections::BTreeSet;
use std::process::Command;

use keyhook::apis::{OfflineError, Version, convert_documents, convert_object, convert_review};
use kube::core::conversion::{ConversionRequest, ConversionReview};
use serde_json::Value;

use crate::apis_schemas::{fixtures, keyhook_schema, version_of};
use crate::support::schema::admit;

const NEEDS_UPSTREAM: &str = "needs a clone of upstream: set KEYHOOK_UPSTREAM_REPO";

/// The last tag that serves `v1alpha1`; `v1beta1` and `v1` are compared at
/// the newest.
const LAST_V1ALPHA1_TAG: &str = "v0.15.1";
const NEWEST_TAG: &str = "v2.9.0";

/// Where keyhook's schema requires less than upstream's, and why. Each is
/// a type keyhook shares between versions that upstream tightened in one.
const RELAXED: [(&str, &str); 11] = [
    // v1 objects that authenticate otherwise have no auth to show there.
    ("v1alpha1 .spec.provider.kubernetes", "auth"),
    ("v1alpha1 .spec.provider.vault", "auth"),
    ("v1alpha1 .spec.provider.vault.auth.appRole", "roleId"),
    // v1beta1 stores, converted, must pass v1's webhook.
    ("v1 .spec.provider.kubernetes.auth.cert", "clientCert"),
    ("v1 .spec.provider.kubernetes.auth.cert", "clientKey"),
    ("v1 .spec.provider.kubernetes.auth.token", "bearerToken"),
    // Opaque blocks keyhook carries without modelling.
    ("v1beta1 .spec.provider.vault.auth.iam", "vaultRole"),
    ("v1 .spec.provider.vault.auth.iam", "vaultRole"),
    ("v1 .spec.provider.vault.auth.gcp", "role"),
    ("v1 .spec.provider.openBao.auth.appRole", "path"),
    ("v1 .spec.provider.openBao.auth.userPass", "path"),
];

/// Where keyhook leaves a field absent that upstream defaults, and why.
const UNDEFAULTED: [&str; 1] = [
    // Shared with the versions that lack the field; absent means `None`.
    "v1 .spec.provider.aws.sessionTagsPolicy",
];

fn repo() -> String {
    std::env::var("KEYHOOK_UPSTREAM_REPO").expect(NEEDS_UPSTREAM)
}

fn git(args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("--git-dir")
        .arg(repo())
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Upstream's `openAPIV3Schema` for `kind` in `version`, at the newest tag
/// serving it.
fn upstream_schema(kind: &str, version: Version) -> Value {
    let tag = if version == Version::V1Alpha1 {
        LAST_V1ALPHA1_TAG
    } else {
        NEWEST_TAG
    };
    schema_at(tag, kind, version)
}

/// Whether upstream stores `object` as written: at the newest tag serving
/// its version or, for `v1beta1`, also at the last that served `v1alpha1`
/// (`v1beta1` lost template engine `v1` after it).
fn upstream_admits(kind: &str, version: Version, object: &Value) -> Result<(), Vec<String>> {
    let newest = admit(&upstream_schema(kind, version), object);
    let older = (version == Version::V1Beta1)
        .then(|| admit(&schema_at(LAST_V1ALPHA1_TAG, kind, version), object));
    let clean = |r: &Result<crate::support::schema::Admitted, Vec<String>>| {
        r.as_ref().is_ok_and(|a| a.pruned.is_empty())
    };
    if clean(&newest) || older.as_ref().is_some_and(clean) {
        return Ok(());
    }
    match newest {
        Err(errors) => Err(errors),
        Ok(admitted) => Err(admitted
            .pruned
            .iter()
            .map(|p| format!("{p}: pruned"))
            .collect()),
    }
}

fn schema_at(tag: &str, kind: &str, version: Version) -> Value {
    let plural = format!("{}s", kind.to_lowercase());
    let text = git(&[
        "show",
        &format!("{tag}:config/crds/bases/external-secrets.io_{plural}.yaml"),
    ]);
    let crd: Value = serde_saphyr::from_str(&text).unwrap();
    crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == version.as_str())
        .map(|v| v["schema"]["openAPIV3Schema"].clone())
        .unwrap_or_else(|| panic!("{tag} does not serve {kind} {version}"))
}

const KINDS: [&str; 3] = ["ExternalSecret", "SecretStore", "ClusterSecretStore"];

#[test]
#[ignore = "needs a clone of upstream: set KEYHOOK_UPSTREAM_REPO"]
fn keyhooks_schemas_accept_everything_upstreams_accept() {
    let mut findings = Vec::new();
    for kind in KINDS {
        for version in Version::ALL {
            compare(
                &keyhook_schema(kind, version),
                &upstream_schema(kind, version),
                version,
                "",
                &mut findings,
            );
        }
    }
    findings.sort();
    findings.dedup();
    assert!(findings.is_empty(), "{findings:#?}");
}

/// Where keyhook's schema would refuse what upstream's takes, or defaults
/// differently; recurses wherever both have a schema.
fn compare(ours: &Value, theirs: &Value, version: Version, path: &str, findings: &mut Vec<String>) {
    let at = format!("{version} {path}");
    let int_or_string = |s: &Value| s.get("x-kubernetes-int-or-string").is_some();
    if int_or_string(ours) != int_or_string(theirs)
        || (!int_or_string(ours)
            && ours.get("type") != theirs.get("type")
            && ours.get("type").is_some())
    {
        findings.push(format!(
            "{at}: type {:?}, upstream {:?}",
            ours.get("type"),
            theirs.get("type")
        ));
    }
    if let Some(Value::Array(our_enum)) = ours.get("enum") {
        match theirs.get("enum") {
            Some(Value::Array(their_enum)) => {
                for value in their_enum.iter().filter(|v| !our_enum.contains(v)) {
                    findings.push(format!("{at}: enum lacks {value}"));
                }
            }
            _ => findings.push(format!("{at}: an enum where upstream takes any value")),
        }
    }
    if ours.get("default") != theirs.get("default") && !UNDEFAULTED.contains(&at.as_str()) {
        findings.push(format!(
            "{at}: default {:?}, upstream {:?}",
            ours.get("default"),
            theirs.get("default")
        ));
    }
    let required = |s: &Value| -> BTreeSet<String> {
        s.get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    let (our_required, their_required) = (required(ours), required(theirs));
    for field in our_required.difference(&their_required) {
        findings.push(format!("{at}: requires {field}, upstream does not"));
    }
    for field in their_required.difference(&our_required) {
        if !RELAXED.contains(&(at.as_str(), field.as_str())) {
            findings.push(format!("{at}: does not require {field}"));
        }
    }
    for constraint in [
        "pattern",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
    ] {
        if let Some(ours) = ours.get(constraint)
            && theirs.get(constraint) != Some(ours)
        {
            findings.push(format!(
                "{at}: {constraint} {ours}, upstream {:?}",
                theirs.get(constraint)
            ));
        }
    }
    if let (Some(Value::Object(our_props)), Some(Value::Object(their_props))) =
        (ours.get("properties"), theirs.get("properties"))
    {
        for (name, their_child) in their_props {
            match our_props.get(name) {
                Some(our_child) => compare(
                    our_child,
                    their_child,
                    version,
                    &format!("{path}.{name}"),
                    findings,
                ),
                // Providers keyhook does not model are kept opaque.
                None if path == ".spec.provider" => {}
                None if path.is_empty() => {}
                None => findings.push(format!("{at}: does not know field {name}")),
            }
        }
    }
    for nested in ["items", "additionalProperties"] {
        if let (Some(our_child @ Value::Object(_)), Some(their_child @ Value::Object(_))) =
            (ours.get(nested), theirs.get(nested))
        {
            compare(
                our_child,
                their_child,
                version,
                &format!("{path}[]"),
                findings,
            );
        }
    }
}

/// Fixtures using what an older version has no word for, and that version:
/// conversion carries such values over, and upstream's schema for it
/// refuses them. (Fields it merely prunes are no refusal.)
const NO_FORM_IN: [(&str, Version); 6] = [
    // Generator kinds added after v1beta1 froze.
    ("v1/externalsecret-new-generators.yaml", Version::V1Beta1),
    ("v1/externalsecret-new-generators.yaml", Version::V1Alpha1),
    // Providers that did not exist in v1alpha1 (or v1beta1).
    ("v1/secretstore-doppler.yaml", Version::V1Alpha1),
    ("v1/secretstore-onepassword.yaml", Version::V1Alpha1),
    ("v1/secretstore-openbao.yaml", Version::V1Alpha1),
    ("v1/secretstore-openbao.yaml", Version::V1Beta1),
];

#[test]
#[ignore = "needs a clone of upstream: set KEYHOOK_UPSTREAM_REPO"]
fn every_fixture_is_valid_for_upstream_and_so_is_what_keyhook_emits() {
    let mut refused = Vec::new();
    for (path, object) in fixtures() {
        let kind = object["kind"].as_str().unwrap();
        let version = version_of(&object);
        if let Err(errors) = upstream_admits(kind, version, &object) {
            panic!("{}: upstream refuses it: {errors:#?}", path.display());
        }
        // keyhook's defaults give an object upstream stores as it is.
        let stored = admit(&keyhook_schema(kind, version), &object)
            .unwrap()
            .stored;
        if let Err(errors) = upstream_admits(kind, version, &stored) {
            panic!(
                "{}: upstream refuses keyhook's defaults: {errors:#?}",
                path.display()
            );
        }
        if let Ok(again) = admit(&upstream_schema(kind, version), &stored) {
            assert_eq!(again.stored, stored, "{}: defaults differ", path.display());
        }
        for to in Version::ALL {
            if NO_FORM_IN
                .iter()
                .any(|(p, v)| path.ends_with(p) && *v == to)
            {
                continue;
            }
            let emitted = convert_object(stored.clone(), to).unwrap();
            let admitted = admit(&upstream_schema(kind, to), &emitted).or_else(|newest| {
                if to == Version::V1Beta1 {
                    admit(&schema_at(LAST_V1ALPHA1_TAG, kind, to), &emitted)
                } else {
                    Err(newest)
                }
            });
            if let Err(errors) = admitted {
                refused.push(format!("{} as {to}: {errors:?}", path.display()));
            }
        }
    }
    assert!(
        refused.is_empty(),
        "upstream refuses what keyhook emits: {refused:#?}"
    );
}

/// Every YAML file in upstream's docs, e2e and config directories at `tag`
/// that holds one of the three kinds, with mkdocs' raw markers removed.
fn upstream_manifests(tag: &str) -> Vec<(String, String)> {
    git(&[
        "ls-tree",
        "-r",
        "--name-only",
        tag,
        "--",
        "docs",
        "e2e",
        "config",
    ])
    .lines()
    .filter(|p| (p.ends_with(".yaml") || p.ends_with(".yml")) && !p.starts_with("config/crds"))
    .filter_map(|p| {
        let mut text = git(&["show", &format!("{tag}:{p}")]);
        for marker in ["{% raw %}", "{%- raw %}", "{% endraw %}", "{%- endraw %}"] {
            text = text.replace(marker, "");
        }
        let ours = [
            "kind: ExternalSecret",
            "kind: SecretStore",
            "kind: ClusterSecretStore",
        ]
        .iter()
        .any(|k| text.contains(k))
            && text.contains("external-secrets.io/v1");
        ours.then(|| (p.to_owned(), text))
    })
    .collect()
}

#[test]
#[ignore = "needs a clone of upstream: set KEYHOOK_UPSTREAM_REPO"]
fn upstreams_manifests_convert_and_come_back() {
    let (mut objects, mut not_yaml) = (Vec::new(), Vec::new());
    for tag in [LAST_V1ALPHA1_TAG, NEWEST_TAG] {
        for (path, text) in upstream_manifests(tag) {
            // A few snippets are not YAML at all (quotes nested in quotes);
            // kubectl refuses them too.
            if let Err(OfflineError::Parse { .. }) = convert_documents(&text, Version::V1) {
                not_yaml.push(format!("{tag}:{path}"));
                continue;
            }
            for to in Version::ALL {
                let converted = convert_documents(&text, to)
                    .unwrap_or_else(|e| panic!("{tag}:{path} to {to}: {e}"));
                assert!(
                    converted
                        .warnings
                        .iter()
                        .all(|w| !w.message.contains("anew")),
                    "{tag}:{path} to {to}: {:?}",
                    converted.warnings
                );
            }
            // serde-saphyr refuses what YAML forbids (repeated keys), which
            // `keyhook convert` takes with a warning: such files are checked above.
            let Ok(documents) = serde_saphyr::from_multiple::<Value>(&text) else {
                continue;
            };
            for object in documents.iter().filter(|d| {
                d["apiVersion"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("external-secrets.io/"))
                    && KINDS.contains(&d["kind"].as_str().unwrap_or_default())
            }) {
                let version = version_of(object);
                let kind = object["kind"].as_str().unwrap();
                // Lossless for what upstream's schema takes as written.
                let Ok(stored) = admit(&upstream_schema(kind, version), object) else {
                    continue;
                };
                if !stored.pruned.is_empty() {
                    continue;
                }
                objects.push(object.clone());
                for to in Version::ALL {
                    let there = convert_object(object.clone(), to).unwrap();
                    let back = convert_object(there, version).unwrap();
                    assert_eq!(&back, object, "{tag}:{path} via {to}");
                }
            }
        }
    }
    assert!(
        objects.len() > 100,
        "only {} objects checked",
        objects.len()
    );
    // All of them in one ConversionReview, as the apiserver may send a list.
    for to in Version::ALL {
        let body = serde_json::json!({
            "kind": "ConversionReview",
            "apiVersion": "apiextensions.k8s.io/v1",
            "request": {"uid": "0f0e", "desiredAPIVersion": to.api_version(), "objects": objects}
        });
        let review: ConversionReview = serde_json::from_value(body).unwrap();
        let response = convert_review(ConversionRequest::from_review(review).unwrap());
        let answer = serde_json::to_value(response.into_review()).unwrap();
        assert_eq!(answer["response"]["result"]["status"], "Success", "to {to}");
        let converted = answer["response"]["convertedObjects"].as_array().unwrap();
        assert_eq!(converted.len(), objects.len());
        for (object, converted) in objects.iter().zip(converted) {
            assert_eq!(converted, &convert_object(object.clone(), to).unwrap());
        }
    }
    assert!(not_yaml.len() < 10, "not YAML: {not_yaml:#?}");
}
