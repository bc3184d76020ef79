//! `aws`: AWS Secrets Manager `GetSecretValue`, signed with SigV4.
//!
//! `key` is a secret name or ARN (after the store's `prefix`); `version`
//! `uuid/<id>` selects a `VersionId`, any other version a `VersionStage`
//! (upstream's convention); a property selects a field of a JSON
//! `SecretString`. Credentials come from `auth.secretRef`. The endpoint is
//! `https://secretsmanager.<region>.amazonaws.com` unless the store's
//! `keyhook.io/aws-endpoint` annotation (or upstream's
//! `AWS_SECRETSMANAGER_ENDPOINT` variable) overrides it, e.g. for a local
//! test server.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use base64::Engine;
use serde_json::{Value, json};

use super::http::{client, transport_error};
use super::{BackendError, BuildContext, SecretsClient, json_map, json_property, json_to_secret};
use crate::providers::spec::AwsProvider;
use crate::providers::{ProviderError, RemoteRef, SecretMap, SecretValue};

/// Environment variable upstream reads for the endpoint override.
const ENDPOINT_ENV: &str = "AWS_SECRETSMANAGER_ENDPOINT";
const TARGET: &str = "secretsmanager.GetSecretValue";
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// A client for one region and one set of credentials.
pub struct AwsClient {
    http: reqwest::Client,
    endpoint: String,
    region: String,
    prefix: String,
    credentials: Credentials,
}

impl std::fmt::Debug for AwsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsClient")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

fn utf8(value: &SecretValue, what: &str, ctx: &BuildContext<'_>) -> Result<String, ProviderError> {
    std::str::from_utf8(value.expose())
        .map(|s| s.trim().to_string())
        .map_err(|_| ctx.build_error(format!("{what} is not UTF-8")))
}

impl AwsClient {
    pub(crate) async fn build(
        ctx: &BuildContext<'_>,
        config: &AwsProvider,
    ) -> Result<Self, ProviderError> {
        if config.region.is_empty() {
            return Err(ctx.build_error("spec.provider.aws.region is required"));
        }
        let Some(secret_ref) = &config.auth.secret_ref else {
            return Err(ctx.build_error("keyhook reads AWS credentials from auth.secretRef only"));
        };
        let access_key = utf8(
            &ctx.secret_key(&secret_ref.access_key_id).await?,
            "accessKeyIDSecretRef",
            ctx,
        )?;
        let secret_key = utf8(
            &ctx.secret_key(&secret_ref.secret_access_key).await?,
            "secretAccessKeySecretRef",
            ctx,
        )?;
        let session_token = match &secret_ref.session_token {
            Some(r) => Some(utf8(
                &ctx.secret_key(r).await?,
                "sessionTokenSecretRef",
                ctx,
            )?),
            None => None,
        };
        let endpoint = config
            .endpoint
            .clone()
            .or_else(|| std::env::var(ENDPOINT_ENV).ok().filter(|e| !e.is_empty()))
            .unwrap_or_else(|| format!("https://secretsmanager.{}.amazonaws.com", config.region));
        let endpoint = format!("{}/", endpoint.trim_end_matches('/'));
        Ok(Self {
            http: client(None, None).map_err(|e| ctx.build_error(e))?,
            endpoint,
            region: config.region.clone(),
            prefix: config.prefix.clone(),
            credentials: Credentials::new(
                access_key,
                secret_key,
                session_token,
                None,
                "keyhook-secret-ref",
            ),
        })
    }

    /// Calls `GetSecretValue` and returns its answer object.
    async fn get_secret_value(&self, reference: &RemoteRef) -> Result<Value, BackendError> {
        let mut request = json!({ "SecretId": format!("{}{}", self.prefix, reference.key) });
        match reference.version.as_deref() {
            Some(v) if v.starts_with("uuid/") => request["VersionId"] = json!(&v["uuid/".len()..]),
            Some(stage) => request["VersionStage"] = json!(stage),
            None => {}
        }
        let body = request.to_string().into_bytes();
        let identity = self.credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("secretsmanager")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| BackendError::Other(format!("signing: {e}")))?
            .into();
        let headers = [("content-type", CONTENT_TYPE), ("x-amz-target", TARGET)];
        let signable = SignableRequest::new(
            "POST",
            self.endpoint.as_str(),
            headers.iter().copied(),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| BackendError::Other(format!("signing: {e}")))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| BackendError::Other(format!("signing: {e}")))?
            .into_parts();
        let mut http = self
            .http
            .post(&self.endpoint)
            .header("content-type", CONTENT_TYPE)
            .header("x-amz-target", TARGET);
        for (name, value) in instructions.headers() {
            http = http.header(name, value);
        }
        let response = http.body(body).send().await.map_err(transport_error)?;
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if status == 200 {
            return Ok(answer);
        }
        // `__type` may carry a namespace prefix: `com.amazonaws...#ThrottlingException`.
        let kind = answer
            .get("__type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .rsplit('#')
            .next()
            .unwrap_or("")
            .to_string();
        let message = answer
            .get("message")
            .or_else(|| answer.get("Message"))
            .and_then(Value::as_str)
            .unwrap_or("no message");
        let text = format!("{kind}: {message}");
        Err(match kind.as_str() {
            "ResourceNotFoundException" => BackendError::NotFound(text),
            "AccessDeniedException"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "ExpiredTokenException" => BackendError::Denied(text),
            "ThrottlingException" | "TooManyRequestsException" | "RequestLimitExceeded" => {
                BackendError::Throttled(text)
            }
            "InternalServiceError" | "ServiceUnavailable" => BackendError::Transient(text),
            _ => BackendError::from_status(status, text),
        })
    }
}

fn secret_payload(answer: &Value) -> Result<SecretValue, BackendError> {
    if let Some(text) = answer.get("SecretString").and_then(Value::as_str) {
        return Ok(SecretValue::from(text));
    }
    if let Some(binary) = answer.get("SecretBinary").and_then(Value::as_str) {
        return base64::engine::general_purpose::STANDARD
            .decode(binary)
            .map(SecretValue::new)
            .map_err(|_| BackendError::Other("SecretBinary is not base64".into()));
    }
    Err(BackendError::NotFound(
        "the version has neither SecretString nor SecretBinary".into(),
    ))
}

fn secret_json(answer: &Value) -> Result<Value, BackendError> {
    let text = answer
        .get("SecretString")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            BackendError::Other("the secret has no SecretString to select a property from".into())
        })?;
    serde_json::from_str(text).map_err(|_| {
        BackendError::Other("SecretString is not JSON, so it has no properties".into())
    })
}

impl SecretsClient for AwsClient {
    async fn get_secret(&self, reference: &RemoteRef) -> Result<SecretValue, BackendError> {
        let answer = self.get_secret_value(reference).await?;
        match &reference.property {
            None => secret_payload(&answer),
            Some(property) => {
                let object = secret_json(&answer)?;
                json_property(&object, property)
                    .map(json_to_secret)
                    .ok_or_else(|| BackendError::NotFound(format!("no property `{property}`")))
            }
        }
    }

    async fn get_secret_map(&self, reference: &RemoteRef) -> Result<SecretMap, BackendError> {
        let answer = self.get_secret_value(reference).await?;
        let object = secret_json(&answer)?;
        let selected = match &reference.property {
            Some(property) => json_property(&object, property)
                .ok_or_else(|| BackendError::NotFound(format!("no property `{property}`")))?,
            None => &object,
        };
        json_map(selected)
            .ok_or_else(|| BackendError::Other("the selected value is not a JSON object".into()))
    }

    async fn validate(&self) -> Result<(), BackendError> {
        // Any answer other than a credentials failure proves the store works.
        match self
            .get_secret_value(&RemoteRef::key("keyhook-validation-probe"))
            .await
        {
            Ok(_) | Err(BackendError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
