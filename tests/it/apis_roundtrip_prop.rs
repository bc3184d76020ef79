//! Property tests: arbitrary valid objects of every kind and version survive
//! every round trip `A → B → A` unchanged, and every conversion yields an
//! object of the target version's typed shape.

use keyhook::apis::{CONVERSION_ANNOTATION, Version, convert_object, v1, v1alpha1, v1beta1};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

type S = BoxedStrategy<Value>;

/// An object whose optional fields are present or absent at random.
fn obj(fields: Vec<(&'static str, BoxedStrategy<Option<Value>>)>) -> S {
    let (names, strategies): (Vec<_>, Vec<_>) = fields.into_iter().unzip();
    strategies
        .prop_map(move |values| {
            let map: Map<String, Value> = names
                .iter()
                .zip(values)
                .filter_map(|(name, value)| value.map(|v| ((*name).to_owned(), v)))
                .collect();
            Value::Object(map)
        })
        .boxed()
}

fn req(s: S) -> BoxedStrategy<Option<Value>> {
    s.prop_map(Some).boxed()
}

fn opt(s: S) -> BoxedStrategy<Option<Value>> {
    option::of(s).boxed()
}

fn one_of(values: &'static [&'static str]) -> S {
    proptest::sample::select(values)
        .prop_map(Value::from)
        .boxed()
}

fn name() -> S {
    "[a-z][a-z0-9-]{0,10}[a-z0-9]".prop_map(Value::from).boxed()
}

fn key() -> S {
    "[a-zA-Z0-9._-]{1,12}".prop_map(Value::from).boxed()
}

fn text() -> S {
    ".{0,16}".prop_map(Value::from).boxed()
}

/// A template, sometimes using engine-v1 helpers that upstream renamed.
fn template_text() -> S {
    prop_oneof![
        text(),
        Just(json!("{{ .password | toString }}")),
        Just(json!("{{ .a | base64decode }} and {{ .b | base64encode }}")),
        Just(json!("{{ (.creds | fromJSON).user }}: {{ .x | toJSON }}")),
        Just(json!("{{ .k | pkcs12key | pemPrivateKey }}")),
    ]
    .boxed()
}

fn string_map(value: S) -> S {
    btree_map("[a-z.]{1,8}", value, 0..3)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
        .boxed()
}

/// A field no version models, to check it passes through.
fn unknown() -> (&'static str, BoxedStrategy<Option<Value>>) {
    (
        "x-keyhook-future",
        opt(prop_oneof![text(), Just(json!({"nested": [1, 2]}))].boxed()),
    )
}

fn metadata(namespaced: bool) -> S {
    obj(vec![
        ("name", req(name())),
        (
            "namespace",
            if namespaced {
                req(name())
            } else {
                Just(None).boxed()
            },
        ),
        (
            "uid",
            req("[0-9a-f]{8}-[0-9a-f]{4}".prop_map(Value::from).boxed()),
        ),
        (
            "resourceVersion",
            opt("[0-9]{1,6}".prop_map(Value::from).boxed()),
        ),
        ("generation", opt((1..50i64).prop_map(Value::from).boxed())),
        ("labels", opt(string_map(name()))),
        ("annotations", opt(string_map(text()))),
    ])
}

fn store_ref() -> S {
    obj(vec![
        ("name", opt(name())),
        ("kind", opt(one_of(&["SecretStore", "ClusterSecretStore"]))),
    ])
}

fn generator_ref() -> S {
    obj(vec![
        (
            "apiVersion",
            opt(Just(json!("generators.external-secrets.io/v1alpha1")).boxed()),
        ),
        (
            "kind",
            req(one_of(&[
                "Password",
                "ECRAuthorizationToken",
                "UUID",
                "Fake",
            ])),
        ),
        ("name", req(name())),
    ])
}

fn remote_ref(version: Version) -> S {
    let mut fields = vec![
        ("key", req(key())),
        ("property", opt(key())),
        ("version", opt(key())),
        ("conversionStrategy", opt(one_of(&["Default", "Unicode"]))),
    ];
    if version != Version::V1Alpha1 {
        fields.push(("metadataPolicy", opt(one_of(&["None", "Fetch"]))));
        fields.push((
            "decodingStrategy",
            opt(one_of(&["Auto", "Base64", "Base64URL", "None"])),
        ));
    }
    fields.push(unknown());
    obj(fields)
}

fn data_entry(version: Version) -> S {
    let mut fields = vec![
        ("secretKey", req(key())),
        ("remoteRef", req(remote_ref(version))),
    ];
    if version != Version::V1Alpha1 {
        let source = prop_oneof![
            obj(vec![("storeRef", req(store_ref()))]),
            obj(vec![("generatorRef", req(generator_ref()))]),
        ]
        .boxed();
        fields.push(("sourceRef", opt(source)));
    }
    obj(fields)
}

fn data_from_entry(version: Version) -> S {
    if version == Version::V1Alpha1 {
        return remote_ref(version);
    }
    let rewrite = prop_oneof![
        obj(vec![(
            "regexp",
            req(obj(vec![("source", req(text())), ("target", req(text()))]))
        )]),
        obj(vec![(
            "transform",
            req(obj(vec![("template", req(template_text()))]))
        )]),
    ]
    .boxed();
    let rewrites = opt(vec(rewrite, 0..3).prop_map(Value::from).boxed());
    let find = obj(vec![
        ("path", opt(key())),
        ("name", opt(obj(vec![("regexp", opt(text()))]))),
        ("tags", opt(string_map(text()))),
        ("conversionStrategy", opt(one_of(&["Default", "Unicode"]))),
        ("decodingStrategy", opt(one_of(&["Auto", "Base64", "None"]))),
    ]);
    prop_oneof![
        obj(vec![
            ("extract", req(remote_ref(version))),
            ("rewrite", rewrites.clone()),
            ("sourceRef", opt(obj(vec![("storeRef", req(store_ref()))]))),
        ]),
        obj(vec![
            ("find", req(find)),
            ("rewrite", rewrites),
            ("sourceRef", opt(obj(vec![("storeRef", req(store_ref()))]))),
        ]),
        obj(vec![(
            "sourceRef",
            req(obj(vec![("generatorRef", req(generator_ref()))]))
        )]),
    ]
    .boxed()
}

fn template(version: Version) -> S {
    let engines: &'static [&'static str] = match version {
        Version::V1 => &["v2"],
        _ => &["v1", "v2"],
    };
    let item = if version == Version::V1Alpha1 {
        obj(vec![("key", req(key()))])
    } else {
        obj(vec![
            ("key", req(key())),
            ("templateAs", opt(one_of(&["Values", "KeysAndValues"]))),
        ])
    };
    let template_ref = obj(vec![
        ("name", req(name())),
        ("items", req(vec(item, 1..3).prop_map(Value::from).boxed())),
    ]);
    let template_from = if version == Version::V1Alpha1 {
        prop_oneof![
            obj(vec![("configMap", req(template_ref.clone()))]),
            obj(vec![("secret", req(template_ref))]),
        ]
        .boxed()
    } else {
        prop_oneof![
            obj(vec![
                ("configMap", req(template_ref.clone())),
                ("target", opt(one_of(&["Data", "Annotations", "Labels"]))),
            ]),
            obj(vec![("secret", req(template_ref))]),
            obj(vec![
                ("literal", req(template_text())),
                ("target", opt(one_of(&["Data", "Labels"])))
            ]),
        ]
        .boxed()
    };
    let mut fields = vec![
        (
            "type",
            opt(one_of(&[
                "Opaque",
                "kubernetes.io/tls",
                "kubernetes.io/dockerconfigjson",
            ])),
        ),
        ("engineVersion", opt(one_of(engines))),
        (
            "metadata",
            opt(obj(vec![
                ("annotations", opt(string_map(text()))),
                ("labels", opt(string_map(name()))),
            ])),
        ),
        ("data", opt(string_map(template_text()))),
        (
            "templateFrom",
            opt(vec(template_from, 0..3).prop_map(Value::from).boxed()),
        ),
        unknown(),
    ];
    if version != Version::V1Alpha1 {
        fields.push(("mergePolicy", opt(one_of(&["Replace", "Merge"]))));
    }
    obj(fields)
}

fn external_secret(version: Version) -> S {
    let creation: &'static [&'static str] = match version {
        Version::V1Alpha1 => &["Owner", "Merge", "None"],
        Version::V1Beta1 => &["Owner", "Orphan", "Merge", "None"],
        Version::V1 => &["Owner", "Orphan", "Merge", "CreateOrMerge", "None"],
    };
    let mut target = vec![
        ("name", opt(name())),
        ("creationPolicy", opt(one_of(creation))),
        (
            "immutable",
            opt(any::<bool>().prop_map(Value::from).boxed()),
        ),
        ("template", opt(template(version))),
        unknown(),
    ];
    let mut spec = vec![
        ("secretStoreRef", req(store_ref())),
        (
            "refreshInterval",
            opt(one_of(&["1h", "1h0m0s", "15m", "0", "30s"])),
        ),
        (
            "data",
            opt(vec(data_entry(version), 0..3).prop_map(Value::from).boxed()),
        ),
        (
            "dataFrom",
            opt(vec(data_from_entry(version), 0..3)
                .prop_map(Value::from)
                .boxed()),
        ),
        unknown(),
    ];
    if version != Version::V1Alpha1 {
        target.push((
            "deletionPolicy",
            opt(one_of(&["Delete", "Merge", "Retain"])),
        ));
        spec.push((
            "refreshPolicy",
            opt(one_of(&["CreatedOnce", "Periodic", "OnChange"])),
        ));
    }
    spec.push(("target", req(obj(target))));
    let status = obj(vec![
        (
            "refreshTime",
            opt(Just(json!("2024-05-01T10:00:00Z")).boxed()),
        ),
        ("syncedResourceVersion", opt(key())),
        (
            "conditions",
            opt(vec(
                obj(vec![
                    ("type", req(Just(json!("Ready")).boxed())),
                    ("status", req(one_of(&["True", "False"]))),
                    (
                        "reason",
                        opt(one_of(&["SecretSynced", "SecretSyncedError"])),
                    ),
                ]),
                0..2,
            )
            .prop_map(Value::from)
            .boxed()),
        ),
    ]);
    object(version, "ExternalSecret", true, obj(spec), status)
}

/// A provider block of `version`; `v1alpha1` has its own Kubernetes
/// ServiceAccount nesting and fake `valueMap`.
fn provider(version: Version) -> S {
    let alpha = version == Version::V1Alpha1;
    let selector = obj(vec![("name", req(name())), ("key", req(key()))]);
    // An entry without `value` and `valueMap` passes upstream's v1alpha1
    // schema but its webhook refuses it, as keyhook's does.
    let fake_entry = if alpha {
        prop_oneof![
            obj(vec![
                ("key", req(key())),
                ("value", req(text())),
                ("valueMap", opt(string_map(text()))),
                ("version", opt(key())),
            ]),
            obj(vec![
                ("key", req(key())),
                ("valueMap", req(string_map(text()))),
                ("version", opt(key())),
            ]),
        ]
        .boxed()
    } else {
        obj(vec![
            ("key", req(key())),
            ("value", req(text())),
            ("version", opt(key())),
        ])
    };
    let service_account = obj(vec![("name", req(name()))]);
    let kubernetes_auth = if alpha {
        req(obj(vec![(
            "serviceAccount",
            req(obj(vec![("serviceAccount", req(service_account))])),
        )]))
    } else {
        opt(obj(vec![("serviceAccount", req(service_account))]))
    };
    prop_oneof![
        obj(vec![(
            "fake",
            req(obj(vec![(
                "data",
                req(vec(fake_entry, 0..3).prop_map(Value::from).boxed()),
            )])),
        )]),
        obj(vec![(
            "vault",
            req(obj(vec![
                (
                    "server",
                    req(Just(json!("https://vault.example.com:8200")).boxed())
                ),
                ("path", opt(key())),
                ("version", opt(one_of(&["v1", "v2"]))),
                (
                    "auth",
                    opt(obj(vec![("tokenSecretRef", req(selector.clone()))]))
                ),
            ])),
        )]),
        obj(vec![(
            "openBao",
            req(obj(vec![
                (
                    "server",
                    req(Just(json!("https://bao.example.com")).boxed())
                ),
                (
                    "auth",
                    opt(obj(vec![("tokenSecretRef", req(selector.clone()))]))
                ),
            ])),
        )]),
        obj(vec![(
            "aws",
            req(obj(vec![
                (
                    "service",
                    req(one_of(&["SecretsManager", "ParameterStore"]))
                ),
                ("region", req(one_of(&["eu-central-1", "us-east-1"]))),
                ("role", opt(text())),
            ])),
        )]),
        obj(vec![(
            "kubernetes",
            req(obj(vec![
                ("remoteNamespace", opt(name())),
                ("auth", kubernetes_auth),
            ])),
        )]),
        obj(vec![(
            "onepassword",
            req(obj(vec![
                (
                    "connectHost",
                    req(Just(json!("https://connect:8080")).boxed())
                ),
                (
                    "vaults",
                    req(btree_map("[a-z]{1,6}", 1..5i64, 1..3)
                        .prop_map(|m| Value::Object(
                            m.into_iter().map(|(k, v)| (k, Value::from(v))).collect()
                        ))
                        .boxed())
                ),
                (
                    "auth",
                    req(obj(vec![(
                        "secretRef",
                        req(obj(vec![("connectTokenSecretRef", req(selector))]))
                    )]))
                ),
            ])),
        )]),
        obj(vec![(
            "gcpsm",
            req(obj(vec![
                ("projectID", req(name())),
                ("anything", opt(text()))
            ]))
        )]),
        obj(vec![(
            "doppler",
            req(obj(vec![(
                "auth",
                req(Just(json!({"secretRef": {"dopplerToken": {"name": "t"}}})).boxed())
            )]))
        )]),
    ]
    .boxed()
}

fn store(version: Version, kind: &'static str) -> S {
    let mut spec = vec![
        ("controller", opt(name())),
        ("provider", req(provider(version))),
        (
            "retrySettings",
            opt(obj(vec![
                ("maxRetries", opt((0..10i64).prop_map(Value::from).boxed())),
                ("retryInterval", opt(one_of(&["10s", "1m"]))),
            ])),
        ),
        unknown(),
    ];
    let condition = obj(vec![
        (
            "namespaceSelector",
            opt(obj(vec![("matchLabels", opt(string_map(name())))])),
        ),
        (
            "namespaces",
            opt(vec(name(), 0..3).prop_map(Value::from).boxed()),
        ),
        (
            "namespaceRegexes",
            opt(vec(one_of(&["^team-.*$", "prod", "[a-z]+"]), 0..2)
                .prop_map(Value::from)
                .boxed()),
        ),
    ]);
    match version {
        Version::V1Alpha1 => {}
        Version::V1Beta1 => {
            spec.push((
                "refreshInterval",
                opt((0..7200i64).prop_map(Value::from).boxed()),
            ));
            spec.push((
                "conditions",
                opt(vec(condition, 0..2).prop_map(Value::from).boxed()),
            ));
        }
        Version::V1 => {
            let interval = prop_oneof![
                (0..7200i64).prop_map(Value::from),
                proptest::sample::select(&["5m", "1h30m", "1.5s", "0"][..]).prop_map(Value::from),
            ]
            .boxed();
            spec.push(("refreshInterval", opt(interval)));
            spec.push((
                "conditions",
                opt(vec(condition, 0..2).prop_map(Value::from).boxed()),
            ));
        }
    }
    let mut status = vec![(
        "conditions",
        opt(vec(
            obj(vec![
                ("type", req(Just(json!("Ready")).boxed())),
                ("status", req(one_of(&["True", "False"]))),
            ]),
            0..2,
        )
        .prop_map(Value::from)
        .boxed()),
    )];
    if version != Version::V1Alpha1 {
        status.push(("capabilities", opt(one_of(&["ReadOnly", "ReadWrite"]))));
    }
    object(version, kind, kind == "SecretStore", obj(spec), obj(status))
}

fn object(version: Version, kind: &'static str, namespaced: bool, spec: S, status: S) -> S {
    (metadata(namespaced), spec, option::of(status))
        .prop_map(move |(metadata, spec, status)| {
            let mut object = json!({
                "apiVersion": version.api_version(),
                "kind": kind,
                "metadata": metadata,
                "spec": spec,
            });
            if let Some(status) = status {
                object["status"] = status;
            }
            object
        })
        .boxed()
}

fn any_object() -> S {
    let mut all = Vec::new();
    for version in Version::ALL {
        all.push(external_secret(version));
        all.push(store(version, "SecretStore"));
        all.push(store(version, "ClusterSecretStore"));
    }
    proptest::strategy::Union::new(all).boxed()
}

/// The converted object has the typed shape of its version.
fn assert_typed(object: &Value) {
    let version = Version::from_api_version(object["apiVersion"].as_str().unwrap()).unwrap();
    let kind = object["kind"].as_str().unwrap();
    let result = match (version, kind) {
        (Version::V1Alpha1, "ExternalSecret") => {
            serde_json::from_value::<v1alpha1::ExternalSecret>(object.clone()).map(drop)
        }
        (Version::V1Beta1, "ExternalSecret") => {
            serde_json::from_value::<v1beta1::ExternalSecret>(object.clone()).map(drop)
        }
        (Version::V1, "ExternalSecret") => {
            serde_json::from_value::<v1::ExternalSecret>(object.clone()).map(drop)
        }
        (Version::V1Alpha1, "SecretStore") => {
            serde_json::from_value::<v1alpha1::SecretStore>(object.clone()).map(drop)
        }
        (Version::V1Beta1, "SecretStore") => {
            serde_json::from_value::<v1beta1::SecretStore>(object.clone()).map(drop)
        }
        (Version::V1, "SecretStore") => {
            serde_json::from_value::<v1::SecretStore>(object.clone()).map(drop)
        }
        (Version::V1Alpha1, _) => {
            serde_json::from_value::<v1alpha1::ClusterSecretStore>(object.clone()).map(drop)
        }
        (Version::V1Beta1, _) => {
            serde_json::from_value::<v1beta1::ClusterSecretStore>(object.clone()).map(drop)
        }
        (Version::V1, _) => {
            serde_json::from_value::<v1::ClusterSecretStore>(object.clone()).map(drop)
        }
    };
    if let Err(e) = result {
        panic!("{version} {kind} does not fit its type: {e}\n{object:#}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_round_trip_is_lossless(original in any_object()) {
        assert_typed(&original);
        for target in Version::ALL {
            let there = convert_object(original.clone(), target).unwrap();
            prop_assert_eq!(there["apiVersion"].as_str(), Some(target.api_version()));
            assert_typed(&there);
            let from = Version::from_api_version(original["apiVersion"].as_str().unwrap()).unwrap();
            let back = convert_object(there, from).unwrap();
            prop_assert_eq!(&back, &original);
        }
    }

    #[test]
    fn conversions_compose_through_any_path(original in any_object()) {
        // A → B → C → A also restores the original: every stash is keyed by
        // the version it belongs to.
        let from = Version::from_api_version(original["apiVersion"].as_str().unwrap()).unwrap();
        for b in Version::ALL {
            for c in Version::ALL {
                let mut object = original.clone();
                for step in [b, c, from] {
                    object = convert_object(object, step).unwrap();
                }
                prop_assert_eq!(&object, &original, "path {} -> {} -> {} -> {}", from, b, c, from);
            }
        }
    }

    #[test]
    fn conversion_keeps_metadata_apart_from_its_annotation(original in any_object()) {
        for target in Version::ALL {
            let mut converted = convert_object(original.clone(), target).unwrap();
            if let Some(annotations) = converted["metadata"].get_mut("annotations").and_then(Value::as_object_mut) {
                annotations.remove(CONVERSION_ANNOTATION);
            }
            let mut expected = original["metadata"].clone();
            if expected.get("annotations").is_none()
                && converted["metadata"].get("annotations").is_some_and(|a| a.as_object().is_some_and(Map::is_empty))
            {
                expected["annotations"] = json!({});
            }
            prop_assert_eq!(&converted["metadata"], &expected);
        }
    }
}
