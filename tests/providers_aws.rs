//! The aws provider against a real `moto_server` (PyPI `moto[server]`):
//! GetSecretValue by name and ARN, VersionId / VersionStage, JSON
//! properties, not-found.

mod support;

use std::sync::Arc;
use std::time::Duration;

use keyhook::metrics::providers::ProviderMetrics;
use keyhook::providers::{
    FileCatalog, ProviderError, ProviderSettings, Providers, RemoteRef, StoreRef,
};
use serde_json::json;
use support::backends::{Moto, secret_doc};
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
