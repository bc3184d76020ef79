//! The aws provider against a real `moto_server` (PyPI `moto[server]`):
//! GetSecretValue by name and ARN, VersionId / VersionStage, JSON
//! properties, not-found; keyhook's own identity (IRSA web identity, keys
//! from its environment) and `role` assumption through moto's STS, with
//! moto checking signatures and IAM policies; `auth.jwt` with the
//! in-cluster catalog against a fake apiserver issuing the token. Error
//! answers in the shapes moto does not send (XML, empty) come from a
//! loopback endpoint; the SDKs' endpoint variables are read in their order.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use keyhook::metrics::providers::ProviderMetrics;
use keyhook::providers::backends::aws::{AwsEnvironment, StaticKeys, WebIdentity};
use keyhook::providers::{
    ClusterCatalog, FileCatalog, ProviderError, ProviderSettings, Providers, RemoteRef,
    SecretValue, StoreRef,
};
use serde_json::{Value, json};
use support::backends::{Moto, secret_doc, xml_text};
use support::fake_apiserver::FakeApiServer;
use tokio::time::Instant;

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

#[tokio::test]
async fn secrets_manager_by_name_arn_version_and_property() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let created = moto
        .secretsmanager(
            "CreateSecret",
            json!({"Name": "app/db", "SecretString": "{\"password\":\"first\",\"port\":5432}"}),
        )
        .await;
    let arn = created["ARN"].as_str().unwrap().to_string();
    let first_version = created["VersionId"].as_str().unwrap().to_string();
    moto.secretsmanager(
        "PutSecretValue",
        json!({"SecretId": "app/db", "SecretString": "{\"password\":\"second\",\"port\":5432}"}),
    )
    .await;

    let yaml = [
        secret_doc("shop", "aws-creds", &[("access-key", "AKIDTEST"), ("secret-key", "not-a-real-secret")]),
        format!(
            "apiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata:\n  name: aws\n  namespace: shop\n  annotations:\n    keyhook.io/aws-endpoint: {}\nspec:\n  provider:\n    aws:\n      service: SecretsManager\n      region: us-east-1\n      auth:\n        secretRef:\n          accessKeyIDSecretRef:\n            name: aws-creds\n            key: access-key\n          secretAccessKeySecretRef:\n            name: aws-creds\n            key: secret-key\n",
            moto.endpoint
        ),
    ]
    .join("---\n");
    let catalog = Arc::new(FileCatalog::from_yaml(&yaml).unwrap());
    let providers = Providers::new(
        ProviderSettings::default(),
        catalog,
        Arc::new(ProviderMetrics::unregistered()),
    );
    let aws = providers
        .client(&StoreRef::secret_store("aws"), "shop", soon())
        .await
        .unwrap();

    let get = |r: RemoteRef| {
        let aws = aws.clone();
        async move { aws.get_secret(&r, soon()).await }
    };
    assert_eq!(
        get(RemoteRef::key("app/db").with_property("password"))
            .await
            .unwrap()
            .expose(),
        b"second"
    );
    assert_eq!(
        get(RemoteRef::key(&arn).with_property("password"))
            .await
            .unwrap()
            .expose(),
        b"second"
    );
    assert_eq!(
        get(RemoteRef::key("app/db")
            .with_property("password")
            .with_version(format!("uuid/{first_version}")))
        .await
        .unwrap()
        .expose(),
        b"first"
    );
    assert_eq!(
        get(RemoteRef::key("app/db")
            .with_property("password")
            .with_version("AWSPREVIOUS"))
        .await
        .unwrap()
        .expose(),
        b"first"
    );
    assert_eq!(
        get(RemoteRef::key("app/db").with_property("port"))
            .await
            .unwrap()
            .expose(),
        b"5432"
    );
    assert_eq!(
        get(RemoteRef::key("app/db")).await.unwrap().expose(),
        br#"{"password":"second","port":5432}"#
    );
    let map = aws
        .get_secret_map(&RemoteRef::key("app/db"), soon())
        .await
        .unwrap();
    assert_eq!(map["password"].expose(), b"second");
    aws.validate(soon()).await.unwrap();

    let err = get(RemoteRef::key("app/missing")).await.unwrap_err();
    assert!(matches!(err, ProviderError::NotFound { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("shop/aws")
            && text.contains("app/missing")
            && text.contains("ResourceNotFoundException"),
        "{text}"
    );
    assert!(!text.contains("not-a-real-secret"), "{text}");
}

const ACCOUNT: &str = "123456789012";

/// A role `reader` that may read every secret; `trusting` is the principal
/// its trust policy names.
async fn reader_role(moto: &Moto, trusting: Value) -> String {
    let trust = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": trusting, "Action": ["sts:AssumeRole", "sts:AssumeRoleWithWebIdentity"]}
    ]});
    let read = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}
    ]});
    moto.query(
        "iam",
        &[
            ("Action", "CreateRole"),
            ("RoleName", "reader"),
            ("AssumeRolePolicyDocument", &trust.to_string()),
        ],
    )
    .await;
    moto.query(
        "iam",
        &[
            ("Action", "PutRolePolicy"),
            ("RoleName", "reader"),
            ("PolicyName", "read-secrets"),
            ("PolicyDocument", &read.to_string()),
        ],
    )
    .await;
    format!("arn:aws:iam::{ACCOUNT}:role/reader")
}

fn cluster_store(name: &str, moto: &Moto, extra: &str) -> String {
    format!(
        "apiVersion: external-secrets.io/v1\nkind: ClusterSecretStore\nmetadata:\n  name: {name}\n  annotations:\n    keyhook.io/aws-endpoint: {}\nspec:\n  provider:\n    aws:\n      service: SecretsManager\n      region: us-east-1\n{extra}",
        moto.endpoint
    )
}

fn layer(yaml: &str, aws: AwsEnvironment) -> Providers {
    let settings = ProviderSettings {
        aws,
        ..Default::default()
    };
    support::providers::layer(yaml, settings).0
}

/// Reads `app/db` through the ClusterSecretStore `store`.
async fn read_app_db(providers: &Providers, store: &str) -> Result<SecretValue, ProviderError> {
    providers
        .client(&StoreRef::cluster_secret_store(store), "shop", soon())
        .await?
        .get_secret(&RemoteRef::key("app/db"), soon())
        .await
}

/// IRSA: a ClusterSecretStore without `auth` exchanges keyhook's projected
/// service account token for the role's credentials. moto checks every
/// signature and policy after the one unsigned STS call, so the read
/// succeeds only when signed with what STS issued.
#[tokio::test]
async fn a_cluster_store_without_auth_reads_with_keyhooks_web_identity() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    moto.secretsmanager(
        "CreateSecret",
        json!({"Name": "app/db", "SecretString": "irsa-value"}),
    )
    .await;
    let role_arn = reader_role(
        &moto,
        json!({"Federated": format!("arn:aws:iam::{ACCOUNT}:oidc-provider/oidc.eks.example")}),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6a2V5aG9vazprZXlob29rIn0.c2lnbmF0dXJl\n").unwrap();
    let aws = AwsEnvironment {
        web_identity: Some(WebIdentity {
            role_arn,
            token_file,
            session_name: None,
        }),
        sts_endpoint: Some(moto.endpoint.clone()),
        ..Default::default()
    };
    let yaml = [
        cluster_store("irsa", &moto, ""),
        secret_doc("keyhook", "bogus", &[("id", "AKIDBOGUS"), ("key", "not-a-real-secret")]),
        cluster_store(
            "bogus",
            &moto,
            "      auth:\n        secretRef:\n          accessKeyIDSecretRef: {name: bogus, namespace: keyhook, key: id}\n          secretAccessKeySecretRef: {name: bogus, namespace: keyhook, key: key}\n",
        ),
    ]
    .join("---\n");
    let providers = layer(&yaml, aws);
    moto.enforce_auth_after(1).await;

    let value = read_app_db(&providers, "irsa").await.unwrap();
    assert_eq!(value.expose(), b"irsa-value");

    // moto does check: keys it never issued are refused.
    let err = read_app_db(&providers, "bogus").await.unwrap_err();
    assert!(
        matches!(err, ProviderError::PermissionDenied { .. }),
        "{err:?}"
    );
}

/// `role`: keyhook's own keys assume the role, and only the role may read.
#[tokio::test]
async fn role_is_assumed_with_the_base_credentials() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    moto.secretsmanager(
        "CreateSecret",
        json!({"Name": "app/db", "SecretString": "role-value"}),
    )
    .await;
    moto.query("iam", &[("Action", "CreateUser"), ("UserName", "keyhook")])
        .await;
    let may_assume = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}
    ]});
    moto.query(
        "iam",
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", "keyhook"),
            ("PolicyName", "assume"),
            ("PolicyDocument", &may_assume.to_string()),
        ],
    )
    .await;
    let keys = moto
        .query(
            "iam",
            &[("Action", "CreateAccessKey"), ("UserName", "keyhook")],
        )
        .await;
    let role_arn = reader_role(
        &moto,
        json!({"AWS": format!("arn:aws:iam::{ACCOUNT}:user/keyhook")}),
    )
    .await;
    let aws = AwsEnvironment {
        static_keys: Some(StaticKeys {
            access_key_id: xml_text(&keys, "AccessKeyId").to_string(),
            secret_access_key: SecretValue::from(xml_text(&keys, "SecretAccessKey")),
            session_token: None,
        }),
        sts_endpoint: Some(moto.endpoint.clone()),
        ..Default::default()
    };
    let yaml = [
        cluster_store("as-role", &moto, &format!("      role: {role_arn}\n")),
        cluster_store("as-user", &moto, ""),
    ]
    .join("---\n");
    let providers = layer(&yaml, aws);
    moto.enforce_auth_after(0).await;

    let value = read_app_db(&providers, "as-role").await.unwrap();
    assert_eq!(value.expose(), b"role-value");

    // The user itself may only assume the role.
    let err = read_app_db(&providers, "as-user").await.unwrap_err();
    assert!(
        matches!(err, ProviderError::PermissionDenied { .. }),
        "{err:?}"
    );

    // Keys that may not assume the role: STS's refusal names the role and
    // its code, never a key.
    let nobody = [("Action", "CreateAccessKey"), ("UserName", "nobody")];
    moto.enforce_auth_after(2).await;
    moto.query("iam", &[("Action", "CreateUser"), ("UserName", "nobody")])
        .await;
    let nobody = moto.query("iam", &nobody).await;
    let secret = xml_text(&nobody, "SecretAccessKey").to_string();
    let aws = AwsEnvironment {
        static_keys: Some(StaticKeys {
            access_key_id: xml_text(&nobody, "AccessKeyId").to_string(),
            secret_access_key: SecretValue::from(secret.as_str()),
            session_token: None,
        }),
        sts_endpoint: Some(moto.endpoint.clone()),
        ..Default::default()
    };
    let err = layer(&yaml, aws)
        .client(&StoreRef::cluster_secret_store("as-role"), "shop", soon())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("STS AssumeRole")
            && text.contains(&role_arn)
            && text.contains("AccessDenied"),
        "{text}"
    );
    assert!(!text.contains(&secret), "{text}");
}

/// keyhook's own identity is never lent to a namespace's SecretStore, and
/// without one the error says where credentials may come from.
#[tokio::test]
async fn ambient_credentials_serve_cluster_stores_only() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let namespaced = format!(
        "apiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata:\n  name: aws\n  namespace: shop\n  annotations:\n    keyhook.io/aws-endpoint: {}\nspec:\n  provider:\n    aws:\n      service: SecretsManager\n      region: us-east-1\n",
        moto.endpoint
    );
    let yaml = [namespaced, cluster_store("shared", &moto, "")].join("---\n");
    let keys = AwsEnvironment {
        static_keys: Some(StaticKeys {
            access_key_id: "AKIDKEYHOOK".into(),
            secret_access_key: SecretValue::from("keyhooks-own-secret"),
            session_token: None,
        }),
        ..Default::default()
    };
    let err = layer(&yaml, keys)
        .client(&StoreRef::secret_store("aws"), "shop", soon())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("ClusterSecretStores only") && text.contains("shop/aws"),
        "{text}"
    );
    assert!(!text.contains("keyhooks-own-secret"), "{text}");

    let err = layer(&yaml, AwsEnvironment::default())
        .client(&StoreRef::cluster_secret_store("shared"), "shop", soon())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("AWS_ROLE_ARN") && text.contains("auth.secretRef"),
        "{text}"
    );
}

/// A web identity token that cannot be read is named by its file.
#[tokio::test]
async fn an_unreadable_web_identity_token_names_the_file() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-token");
    let aws = AwsEnvironment {
        web_identity: Some(WebIdentity {
            role_arn: format!("arn:aws:iam::{ACCOUNT}:role/reader"),
            token_file: missing.clone(),
            session_name: None,
        }),
        sts_endpoint: Some(moto.endpoint.clone()),
        ..Default::default()
    };
    let yaml = cluster_store("irsa", &moto, "");
    let err = layer(&yaml, aws)
        .client(&StoreRef::cluster_secret_store("irsa"), "shop", soon())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("web identity token") && text.contains("no-such-token"),
        "{text}"
    );
}

#[test]
fn the_environment_is_read_as_the_aws_sdks_read_it() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    };
    let irsa = AwsEnvironment::from_vars(vars(&[
        ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/keyhook"),
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
        ),
        ("AWS_ACCESS_KEY_ID", ""),
    ]));
    assert_eq!(irsa.static_keys, None, "an empty variable is unset");
    let identity = irsa.web_identity.unwrap();
    assert_eq!(identity.role_arn, "arn:aws:iam::123456789012:role/keyhook");
    assert_eq!(identity.session_name, None);

    let keys = AwsEnvironment::from_vars(vars(&[
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI"),
        ("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:5000"),
        ("AWS_SECRETSMANAGER_ENDPOINT", "http://127.0.0.1:5001"),
    ]));
    let static_keys = keys.static_keys.unwrap();
    assert_eq!(static_keys.access_key_id, "AKIDEXAMPLE");
    assert!(
        !format!("{static_keys:?}").contains("wJalrXUtnFEMI"),
        "Debug redacts"
    );
    assert_eq!(keys.sts_endpoint.as_deref(), Some("http://127.0.0.1:5000"));
    assert_eq!(
        keys.secrets_manager_endpoint.as_deref(),
        Some("http://127.0.0.1:5001")
    );
    assert_eq!(keys.web_identity, None);
}

fn service_account(name: &str, role_arn: Option<&str>) -> Value {
    let annotations = match role_arn {
        Some(arn) => json!({ "eks.amazonaws.com/role-arn": arn }),
        None => json!({}),
    };
    json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": "shop", "annotations": annotations},
    })
}

fn jwt_store(name: &str, account: &str, moto: &Moto) -> Value {
    json!({
        "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
        "metadata": {
            "name": name, "namespace": "shop", "generation": 1,
            "annotations": {"keyhook.io/aws-endpoint": moto.endpoint},
        },
        "spec": {"provider": {"aws": {
            "service": "SecretsManager", "region": "us-east-1",
            "auth": {"jwt": {"serviceAccountRef": {"name": account}}},
        }}},
    })
}

/// `auth.jwt`: a SecretStore reads as the role its service account's
/// `eks.amazonaws.com/role-arn` names, with a token the apiserver issued to
/// that account for STS's audience. The catalog is the in-cluster one,
/// against an apiserver; moto checks every signature after the STS call.
#[tokio::test]
async fn a_secret_store_reads_as_its_service_accounts_role() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    moto.secretsmanager(
        "CreateSecret",
        json!({"Name": "app/db", "SecretString": "jwt-value"}),
    )
    .await;
    let role_arn = reader_role(
        &moto,
        json!({"Federated": format!("arn:aws:iam::{ACCOUNT}:oidc-provider/oidc.eks.example")}),
    )
    .await;
    let api = FakeApiServer::new();
    api.seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}));
    api.seed(service_account("reader", Some(&role_arn)));
    api.seed(service_account("plain", None));
    api.seed(jwt_store("aws", "reader", &moto));
    api.seed(jwt_store("unannotated", "plain", &moto));
    let catalog = ClusterCatalog::start(api.client("keyhook"));
    tokio::time::timeout(Duration::from_secs(10), catalog.ready())
        .await
        .expect("reflectors list everything");
    let providers = Providers::new(
        ProviderSettings {
            aws: AwsEnvironment {
                sts_endpoint: Some(moto.endpoint.clone()),
                ..Default::default()
            },
            ..Default::default()
        },
        Arc::new(catalog),
        Arc::new(ProviderMetrics::unregistered()),
    );
    moto.enforce_auth_after(1).await;

    let value = providers
        .client(&StoreRef::secret_store("aws"), "shop", soon())
        .await
        .unwrap()
        .get_secret(&RemoteRef::key("app/db"), soon())
        .await
        .unwrap();
    assert_eq!(value.expose(), b"jwt-value");
    let tokens = api.token_requests();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(tokens[0].0, "shop/reader");
    assert_eq!(tokens[0].1["audiences"], json!(["sts.amazonaws.com"]));

    let err = providers
        .client(&StoreRef::secret_store("unannotated"), "shop", soon())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("`plain`") && text.contains("eks.amazonaws.com/role-arn"),
        "{text}"
    );
    assert_eq!(
        api.token_requests().len(),
        1,
        "no token is asked for a role-less account"
    );
}

/// An AWS endpoint on loopback that answers every call with `status`, the
/// `x-amzn-ErrorType` header `error_type` (when given) and `body`.
async fn refusing_endpoint(
    status: u16,
    error_type: Option<&'static str>,
    body: &'static str,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(move || async move {
        let mut response = axum::response::Response::builder()
            .status(status)
            .header("content-type", "text/xml");
        if let Some(error_type) = error_type {
            response = response.header("x-amzn-ErrorType", error_type);
        }
        response.body(axum::body::Body::from(body)).unwrap()
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Query-protocol endpoints and local emulators answer errors in XML, some
/// with no body at all: the denial then says the status and AWS's code and
/// message instead of `: no message`.
#[tokio::test]
async fn xml_and_empty_error_answers_name_status_code_and_message() {
    let cases = [
        (
            refusing_endpoint(
                403,
                None,
                "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>User: arn:aws:iam::123456789012:user/ci is not authorized to perform: secretsmanager:GetSecretValue</Message></Error><RequestId>1</RequestId></ErrorResponse>",
            )
            .await,
            "store `xml`: permission denied for key `app/db`: HTTP 403 AccessDenied: User: arn:aws:iam::123456789012:user/ci is not authorized to perform: secretsmanager:GetSecretValue",
        ),
        (
            refusing_endpoint(
                400,
                None,
                "<Error><Code>ResourceNotFoundException</Code><Message>Secrets Manager can't find the specified secret.</Message></Error>",
            )
            .await,
            "store `xml`: key `app/db` not found: HTTP 400 ResourceNotFoundException: Secrets Manager can't find the specified secret.",
        ),
        (
            refusing_endpoint(403, Some("UnrecognizedClientException:http://internal.amazon.com/coral/com.amazon.coral.service/"), "").await,
            "store `xml`: permission denied for key `app/db`: HTTP 403 UnrecognizedClientException",
        ),
        (
            refusing_endpoint(403, None, "").await,
            "store `xml`: permission denied for key `app/db`: HTTP 403",
        ),
    ];
    for (endpoint, expected) in cases {
        let yaml = format!(
            "apiVersion: external-secrets.io/v1\nkind: ClusterSecretStore\nmetadata:\n  name: xml\n  annotations:\n    keyhook.io/aws-endpoint: {endpoint}\nspec:\n  provider:\n    aws:\n      service: SecretsManager\n      region: us-east-1\n"
        );
        let providers = layer(
            &yaml,
            AwsEnvironment::from_vars(|name| match name {
                "AWS_ACCESS_KEY_ID" => Some("AKIDEXAMPLE".into()),
                "AWS_SECRET_ACCESS_KEY" => Some("not-a-real-secret".into()),
                _ => None,
            }),
        );
        let error = read_app_db(&providers, "xml").await.unwrap_err();
        assert_eq!(error.to_string(), expected);
    }
}

#[test]
fn the_sdks_endpoint_variables_are_honoured_in_their_order() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        AwsEnvironment::from_vars(move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    };
    // The global variable serves every service.
    let global = env(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")]);
    assert_eq!(
        global.secrets_manager_endpoint.as_deref(),
        Some("http://127.0.0.1:4566")
    );
    assert_eq!(
        global.sts_endpoint.as_deref(),
        Some("http://127.0.0.1:4566")
    );
    // A service's own variable wins, then upstream's, then the global one.
    let specific = env(&[
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
        ("AWS_SECRETSMANAGER_ENDPOINT", "http://127.0.0.1:5001"),
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", "http://127.0.0.1:5002"),
        ("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:5003"),
    ]);
    assert_eq!(
        specific.secrets_manager_endpoint.as_deref(),
        Some("http://127.0.0.1:5002")
    );
    assert_eq!(
        specific.sts_endpoint.as_deref(),
        Some("http://127.0.0.1:5003")
    );
    let upstream = env(&[
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
        ("AWS_SECRETSMANAGER_ENDPOINT", "http://127.0.0.1:5001"),
    ]);
    assert_eq!(
        upstream.secrets_manager_endpoint.as_deref(),
        Some("http://127.0.0.1:5001")
    );
    // As for the SDKs, AWS_IGNORE_CONFIGURED_ENDPOINT_URLS turns theirs off.
    let ignored = env(&[
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
        ("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:5003"),
        ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true"),
    ]);
    assert_eq!(ignored.secrets_manager_endpoint, None);
    assert_eq!(ignored.sts_endpoint, None);
}
