//! `aws`: AWS Secrets Manager `GetSecretValue`, signed with SigV4.
//!
//! `key` is a secret name or ARN (after the store's `prefix`); `version`
//! `uuid/<id>` selects a `VersionId`, any other version a `VersionStage`
//! (upstream's convention); a property selects a field of a JSON
//! `SecretString`.
//!
//! Credentials come from `auth.secretRef`, or from `auth.jwt`: a token of the
//! named service account exchanged with STS for the role its
//! `eks.amazonaws.com/role-arn` annotation names (IRSA per store). A
//! ClusterSecretStore without `auth` uses keyhook's own identity from its
//! environment (static keys, or IRSA's web identity token exchanged with
//! STS), never a SecretStore: a namespace's store must not borrow keyhook's
//! access. With `role` set, that role is assumed on top. Temporary credentials are replaced before they
//! expire (the client is rebuilt at two thirds of their lifetime).
//!
//! The endpoint is `https://secretsmanager.<region>.amazonaws.com` unless the
//! store's `keyhook.io/aws-endpoint` annotation or the environment overrides
//! it, e.g. for a local test server: the AWS SDKs' service-specific
//! `AWS_ENDPOINT_URL_SECRETS_MANAGER`, upstream's
//! `AWS_SECRETSMANAGER_ENDPOINT`, then the SDKs' global `AWS_ENDPOINT_URL`.
//! STS is `https://sts.<region>.amazonaws.com` unless `AWS_ENDPOINT_URL_STS`
//! or `AWS_ENDPOINT_URL` says otherwise. `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`
//! turns the SDKs' variables off, as it does for the SDKs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use base64::Engine;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::http::{client, transport_error};
use super::sts::{RoleRequest, Sts};
use super::{BackendError, BuildContext, SecretsClient, json_map, json_property, json_to_secret};
use crate::apis::providers::{AwsJwtAuth, AwsProvider};
use crate::clock::Clock;
use crate::providers::{ProviderError, RemoteRef, SecretMap, SecretValue, StoreKind};

const TARGET: &str = "secretsmanager.GetSecretValue";
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// The service account annotation naming the IAM role of IRSA.
const ROLE_ARN_ANNOTATION: &str = "eks.amazonaws.com/role-arn";
/// The service account annotation overriding the token's audience.
const AUDIENCE_ANNOTATION: &str = "eks.amazonaws.com/audience";
/// The audience STS accepts by default.
const DEFAULT_AUDIENCE: &str = "sts.amazonaws.com";
/// The session name STS records for keyhook, unless `AWS_ROLE_SESSION_NAME`
/// gives another.
const SESSION_NAME: &str = "keyhook";

/// keyhook's own AWS identity, read from its environment at start, as the
/// AWS SDKs' default chain reads it: what a ClusterSecretStore without
/// `auth` uses.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AwsEnvironment {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`.
    pub static_keys: Option<StaticKeys>,
    /// `AWS_ROLE_ARN` and `AWS_WEB_IDENTITY_TOKEN_FILE` (IRSA: EKS's pod
    /// identity webhook sets them), with `AWS_ROLE_SESSION_NAME`.
    pub web_identity: Option<WebIdentity>,
    /// STS's endpoint instead of the region's: `AWS_ENDPOINT_URL_STS`, else
    /// `AWS_ENDPOINT_URL`.
    pub sts_endpoint: Option<String>,
    /// Secrets Manager's endpoint for stores without the annotation:
    /// `AWS_ENDPOINT_URL_SECRETS_MANAGER`, else `AWS_SECRETSMANAGER_ENDPOINT`
    /// (upstream's variable), else `AWS_ENDPOINT_URL`.
    pub secrets_manager_endpoint: Option<String>,
}

/// Long-lived keys from the environment.
#[derive(Clone, Debug, PartialEq)]
pub struct StaticKeys {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: SecretValue,
    /// A session token, for keys that are themselves temporary.
    pub session_token: Option<SecretValue>,
}

/// A role assumed with a projected service account token.
#[derive(Clone, Debug, PartialEq)]
pub struct WebIdentity {
    /// The role's ARN.
    pub role_arn: String,
    /// The token file, read again at every login (the kubelet rotates it).
    pub token_file: PathBuf,
    /// The session name, `keyhook` unless set.
    pub session_name: Option<String>,
}

impl AwsEnvironment {
    /// Reads the variables `var` returns (empty ones count as unset); the
    /// flags' parser gives them (`config::AwsArgs`).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let static_keys = match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key_id), Some(secret)) => Some(StaticKeys {
                access_key_id,
                secret_access_key: SecretValue::from(secret.as_str()),
                session_token: var("AWS_SESSION_TOKEN").map(|t| SecretValue::from(t.as_str())),
            }),
            _ => None,
        };
        let web_identity = match (var("AWS_ROLE_ARN"), var("AWS_WEB_IDENTITY_TOKEN_FILE")) {
            (Some(role_arn), Some(file)) => Some(WebIdentity {
                role_arn,
                token_file: PathBuf::from(file),
                session_name: var("AWS_ROLE_SESSION_NAME"),
            }),
            _ => None,
        };
        // The SDKs' endpoint variables, unless told to ignore them.
        let ignore_sdk_endpoints = var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let sdk_endpoint = |name: &str| var(name).filter(|_| !ignore_sdk_endpoints);
        Self {
            static_keys,
            web_identity,
            sts_endpoint: sdk_endpoint("AWS_ENDPOINT_URL_STS")
                .or_else(|| sdk_endpoint("AWS_ENDPOINT_URL")),
            secrets_manager_endpoint: sdk_endpoint("AWS_ENDPOINT_URL_SECRETS_MANAGER")
                .or_else(|| var("AWS_SECRETSMANAGER_ENDPOINT"))
                .or_else(|| sdk_endpoint("AWS_ENDPOINT_URL")),
        }
    }
}

/// A client for one region and one set of credentials.
pub struct AwsClient {
    http: reqwest::Client,
    endpoint: String,
    region: String,
    prefix: String,
    credentials: Credentials,
    /// How long `credentials` were valid when the client was built, for
    /// temporary ones.
    lifetime: Option<Duration>,
    /// The time requests are signed at.
    clock: Arc<dyn Clock>,
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
        let http = client(None, None).map_err(|e| ctx.build_error(e))?;
        let sts_endpoint = ctx.aws.sts_endpoint.as_ref().map_or_else(
            || format!("https://sts.{}.amazonaws.com/", config.region),
            |e| format!("{}/", e.trim_end_matches('/')),
        );
        let sts = Sts {
            http: &http,
            endpoint: &sts_endpoint,
            region: &config.region,
            clock: ctx.clock.as_ref(),
        };
        let mut credentials = base_credentials(ctx, config, &sts).await?;
        if let Some(role_arn) = config.role.as_deref().filter(|role| !role.is_empty()) {
            let role = RoleRequest {
                role_arn,
                session_name: SESSION_NAME,
                external_id: config.external_id.as_deref().filter(|id| !id.is_empty()),
            };
            credentials = sts
                .assume_role(role, &credentials)
                .await
                .map_err(|e| ctx.build_error(e))?;
        }
        let lifetime = credentials.expiry().map(|expiry| {
            expiry
                .duration_since(SystemTime::from(ctx.clock.now()))
                .unwrap_or_default()
        });
        let endpoint = ctx
            .store
            .aws_endpoint
            .clone()
            .or_else(|| ctx.aws.secrets_manager_endpoint.clone())
            .unwrap_or_else(|| format!("https://secretsmanager.{}.amazonaws.com", config.region));
        let endpoint = format!("{}/", endpoint.trim_end_matches('/'));
        Ok(Self {
            http,
            endpoint,
            region: config.region.clone(),
            prefix: config.prefix.clone().unwrap_or_default(),
            credentials,
            lifetime,
            clock: ctx.clock.clone(),
        })
    }

    /// How long the credentials were valid when the client was built;
    /// `None` for long-lived keys.
    pub fn credentials_lifetime(&self) -> Option<Duration> {
        self.lifetime
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
            .time(SystemTime::from(self.clock.now()))
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
        let error_type = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = Zeroizing::new(response.text().await.unwrap_or_default());
        if status == 200 {
            return serde_json::from_str(&text).map_err(|_| {
                BackendError::Other(
                    "HTTP 200, but the answer is not a GetSecretValue JSON object".into(),
                )
            });
        }
        let error = ErrorAnswer::parse(status, error_type.as_deref(), &text);
        let message = error.to_string();
        Err(match error.code.as_str() {
            "ResourceNotFoundException" => BackendError::NotFound(message),
            "AccessDeniedException"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "SignatureDoesNotMatch"
            | "InvalidClientTokenId"
            | "ExpiredTokenException"
            | "ExpiredToken" => BackendError::Denied(message),
            "ThrottlingException"
            | "Throttling"
            | "TooManyRequestsException"
            | "RequestLimitExceeded" => BackendError::Throttled(message),
            "InternalServiceError" | "InternalFailure" | "ServiceUnavailable" => {
                BackendError::Transient(message)
            }
            _ => BackendError::from_status(status, message),
        })
    }
}

/// An AWS error answer, whichever shape it came in: the JSON protocol's
/// `__type` and `message`, the query protocol's XML `<Error><Code>` and
/// `<Message>` (what query endpoints and local emulators send), or only the
/// `x-amzn-ErrorType` header and the status. Never the request's values: AWS
/// messages name the secret, not its content.
#[derive(Debug, PartialEq)]
struct ErrorAnswer {
    status: u16,
    /// e.g. `AccessDeniedException`; empty when the answer names none.
    code: String,
    /// AWS's message; empty when it gave none.
    message: String,
}

impl ErrorAnswer {
    fn parse(status: u16, error_type: Option<&str>, body: &str) -> Self {
        // `__type` and the header may carry a namespace prefix
        // (`com.amazonaws...#ThrottlingException`) or a suffix (`:http://...`).
        let bare = |code: &str| {
            let code = code.rsplit('#').next().unwrap_or(code);
            code.split(':').next().unwrap_or(code).trim().to_string()
        };
        let (code, message) = if let Ok(json) = serde_json::from_str::<Value>(body) {
            let field = |names: &[&str]| {
                names
                    .iter()
                    .find_map(|n| json.get(n).and_then(Value::as_str))
                    .unwrap_or_default()
                    .to_string()
            };
            (
                bare(&field(&["__type", "code", "Code"])),
                field(&["message", "Message"]),
            )
        } else if let Some(error) = super::sts::xml_error(body) {
            (error.code, error.message)
        } else {
            (String::new(), String::new())
        };
        let code = if code.is_empty() {
            error_type.map(bare).unwrap_or_default()
        } else {
            code
        };
        Self {
            status,
            code,
            message,
        }
    }
}

impl std::fmt::Display for ErrorAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if !self.code.is_empty() {
            write!(f, " {}", self.code)?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

/// IRSA for one store: the role its service account's annotation names,
/// assumed with a token issued to that account (upstream's `auth.jwt`).
async fn service_account_credentials(
    ctx: &BuildContext<'_>,
    jwt: &AwsJwtAuth,
    sts: &Sts<'_>,
) -> Result<Credentials, ProviderError> {
    let account = jwt
        .service_account_ref
        .as_ref()
        .ok_or_else(|| ctx.build_error("auth.jwt.serviceAccountRef is required"))?;
    let namespace = account.namespace.as_deref();
    let annotations = ctx
        .service_account_annotations(namespace, &account.name)
        .await?;
    let role_arn = annotations.get(ROLE_ARN_ANNOTATION).ok_or_else(|| {
        ctx.build_error(format!(
            "service account `{}` has no `{ROLE_ARN_ANNOTATION}` annotation naming the role to assume",
            account.name
        ))
    })?;
    let audiences = match account.audiences.as_deref() {
        None | Some([]) => vec![
            annotations
                .get(AUDIENCE_ANNOTATION)
                .cloned()
                .unwrap_or_else(|| DEFAULT_AUDIENCE.to_string()),
        ],
        Some(audiences) => audiences.to_vec(),
    };
    let token = ctx
        .service_account_token(namespace, &account.name, &audiences)
        .await?;
    let token = utf8(&token, "the service account token", ctx)?;
    let role = RoleRequest {
        role_arn,
        session_name: SESSION_NAME,
        external_id: None,
    };
    sts.assume_role_with_web_identity(role, &token)
        .await
        .map_err(|e| ctx.build_error(e))
}

/// The credentials `auth` names, or keyhook's own for a ClusterSecretStore
/// without `auth`.
async fn base_credentials(
    ctx: &BuildContext<'_>,
    config: &AwsProvider,
    sts: &Sts<'_>,
) -> Result<Credentials, ProviderError> {
    let auth = config.auth.as_ref();
    if let Some(secret_ref) = auth.and_then(|a| a.secret_ref.as_ref()) {
        let access_key = ctx
            .required_secret_key(
                secret_ref.access_key_id.as_ref(),
                "auth.secretRef.accessKeyIDSecretRef",
            )
            .await?;
        let access_key = utf8(&access_key, "accessKeyIDSecretRef", ctx)?;
        let secret_key = ctx
            .required_secret_key(
                secret_ref.secret_access_key.as_ref(),
                "auth.secretRef.secretAccessKeySecretRef",
            )
            .await?;
        let secret_key = utf8(&secret_key, "secretAccessKeySecretRef", ctx)?;
        let session_token = match &secret_ref.session_token {
            Some(r) => Some(utf8(
                &ctx.secret_key(r).await?,
                "sessionTokenSecretRef",
                ctx,
            )?),
            None => None,
        };
        return Ok(Credentials::new(
            access_key,
            secret_key,
            session_token,
            None,
            "keyhook-secret-ref",
        ));
    }
    if let Some(jwt) = auth.and_then(|a| a.jwt.as_ref()) {
        return service_account_credentials(ctx, jwt, sts).await;
    }
    if ctx.store.kind == StoreKind::SecretStore {
        return Err(ctx.build_error(
            "a SecretStore must name its credentials in auth.secretRef: keyhook's own AWS identity serves ClusterSecretStores only",
        ));
    }
    let env = ctx.aws;
    if let Some(keys) = &env.static_keys {
        let text = |v: &SecretValue, what: &str| utf8(v, what, ctx);
        return Ok(Credentials::new(
            keys.access_key_id.clone(),
            text(&keys.secret_access_key, "AWS_SECRET_ACCESS_KEY")?,
            match &keys.session_token {
                Some(token) => Some(text(token, "AWS_SESSION_TOKEN")?),
                None => None,
            },
            None,
            "keyhook-environment",
        ));
    }
    let Some(identity) = &env.web_identity else {
        return Err(ctx.build_error(
            "no AWS credentials: set auth.secretRef, or give keyhook its own identity (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or IRSA's AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE)",
        ));
    };
    let token = tokio::fs::read_to_string(&identity.token_file)
        .await
        .map(Zeroizing::new)
        .map_err(|e| {
            ctx.build_error(format!(
                "reading the web identity token {}: {e}",
                identity.token_file.display()
            ))
        })?;
    let role = RoleRequest {
        role_arn: &identity.role_arn,
        session_name: identity.session_name.as_deref().unwrap_or(SESSION_NAME),
        external_id: None,
    };
    sts.assume_role_with_web_identity(role, token.trim())
        .await
        .map_err(|e| ctx.build_error(e))
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
