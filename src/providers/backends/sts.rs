//! AWS STS: temporary credentials for the `aws` provider, from a web
//! identity token (IRSA) or by assuming a role with other credentials.
//!
//! STS speaks the AWS Query protocol: a form-encoded POST and an XML
//! answer. `AssumeRoleWithWebIdentity` is not signed (the token is the
//! proof); `AssumeRole` is signed with the credentials it starts from.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use serde::Deserialize;
use zeroize::Zeroizing;

const VERSION: &str = "2011-06-15";
const FORM: &str = "application/x-www-form-urlencoded";
/// What STS credentials are labelled with inside the AWS SDK types.
const PROVIDER_NAME: &str = "keyhook-sts";

/// The role a call to STS asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoleRequest<'a> {
    /// The role's ARN.
    pub role_arn: &'a str,
    /// Names the session in the role's CloudTrail entries.
    pub session_name: &'a str,
    /// `sts:ExternalId`, when the role's trust policy asks for one.
    pub external_id: Option<&'a str>,
}

/// Where STS is and how to reach it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sts<'a> {
    pub http: &'a reqwest::Client,
    /// `https://sts.<region>.amazonaws.com/`, or an override.
    pub endpoint: &'a str,
    pub region: &'a str,
    /// The time requests are signed at.
    pub clock: &'a dyn crate::clock::Clock,
}

impl Sts<'_> {
    /// `AssumeRoleWithWebIdentity`: exchanges a service account token for
    /// the role's temporary credentials.
    pub(crate) async fn assume_role_with_web_identity(
        &self,
        role: RoleRequest<'_>,
        token: &str,
    ) -> Result<Credentials, String> {
        let form = Zeroizing::new(form_body(
            "AssumeRoleWithWebIdentity",
            role,
            &[("WebIdentityToken", token)],
        ));
        let request = self
            .http
            .post(self.endpoint)
            .header("content-type", FORM)
            .body(form.as_bytes().to_vec());
        self.call("AssumeRoleWithWebIdentity", role, request).await
    }

    /// `AssumeRole`: the role's temporary credentials, asked for with
    /// `credentials`.
    pub(crate) async fn assume_role(
        &self,
        role: RoleRequest<'_>,
        credentials: &Credentials,
    ) -> Result<Credentials, String> {
        let form = form_body("AssumeRole", role, &[]);
        let identity = credentials.clone().into();
        let signing = v4::SigningParams::builder()
            .identity(&identity)
            .region(self.region)
            .name("sts")
            .time(SystemTime::from(self.clock.now()))
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| format!("signing AssumeRole: {e}"))?
            .into();
        let headers = [("content-type", FORM)];
        let signable = SignableRequest::new(
            "POST",
            self.endpoint,
            headers.iter().copied(),
            SignableBody::Bytes(form.as_bytes()),
        )
        .map_err(|e| format!("signing AssumeRole: {e}"))?;
        let (instructions, _) = sign(signable, &signing)
            .map_err(|e| format!("signing AssumeRole: {e}"))?
            .into_parts();
        let mut request = self.http.post(self.endpoint).header("content-type", FORM);
        for (name, value) in instructions.headers() {
            request = request.header(name, value);
        }
        self.call("AssumeRole", role, request.body(form.into_bytes()))
            .await
    }

    async fn call(
        &self,
        action: &str,
        role: RoleRequest<'_>,
        request: reqwest::RequestBuilder,
    ) -> Result<Credentials, String> {
        let failed =
            |reason: String| format!("STS {action} for role `{}`: {reason}", role.role_arn);
        let response = request
            .send()
            .await
            .map_err(|e| failed(format!("STS did not answer: {e}")))?;
        let status = response.status();
        let text = Zeroizing::new(
            response
                .text()
                .await
                .map_err(|e| failed(format!("reading the answer: {e}")))?,
        );
        if !status.is_success() {
            let error = xml_error(&text);
            return Err(failed(match error {
                Some(error) => format!("{}: {}", error.code, error.message),
                None => format!("HTTP {status}"),
            }));
        }
        // The parser's own message could quote the answer, which holds the
        // credentials: it is not passed on.
        let answer: AssumeRoleResponse = quick_xml::de::from_str(&text).map_err(|_| {
            failed(format!(
                "HTTP {status}, but the answer is not an STS {action} response with Credentials"
            ))
        })?;
        let issued = answer.result.credentials;
        let expires = humantime::parse_rfc3339_weak(issued.expiration.trim_end_matches('Z'))
            .map_err(|e| failed(format!("Expiration `{}`: {e}", issued.expiration)))?;
        // Moved, not copied: the SDK's type wipes them when dropped.
        Ok(Credentials::new(
            issued.access_key_id,
            issued.secret_access_key,
            Some(issued.session_token),
            Some(expires),
            PROVIDER_NAME,
        ))
    }
}

fn form_body(action: &str, role: RoleRequest<'_>, extra: &[(&str, &str)]) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("Action", action)
        .append_pair("Version", VERSION)
        .append_pair("RoleArn", role.role_arn)
        .append_pair("RoleSessionName", role.session_name);
    if let Some(id) = role.external_id {
        form.append_pair("ExternalId", id);
    }
    for (name, value) in extra {
        form.append_pair(name, value);
    }
    form.finish()
}

/// `<AssumeRoleResponse>` and `<AssumeRoleWithWebIdentityResponse>` share
/// this shape; the root element's name is not checked.
#[derive(Deserialize)]
struct AssumeRoleResponse {
    #[serde(alias = "AssumeRoleResult", rename = "AssumeRoleWithWebIdentityResult")]
    result: AssumeRoleResult,
}

#[derive(Deserialize)]
struct AssumeRoleResult {
    #[serde(rename = "Credentials")]
    credentials: IssuedCredentials,
}

#[derive(Deserialize)]
struct IssuedCredentials {
    #[serde(rename = "AccessKeyId")]
    access_key_id: String,
    #[serde(rename = "SecretAccessKey")]
    secret_access_key: String,
    #[serde(rename = "SessionToken")]
    session_token: String,
    #[serde(rename = "Expiration")]
    expiration: String,
}

/// The code and message of an AWS error answered in XML: STS answers
/// `<ErrorResponse><Error>`, other query services and local emulators nest
/// it in `<Errors>` or send `<Error>` alone.
pub(super) fn xml_error(body: &str) -> Option<StsError> {
    quick_xml::de::from_str::<ErrorResponse>(body)
        .ok()
        .and_then(ErrorResponse::into_error)
        .or_else(|| quick_xml::de::from_str::<StsError>(body).ok())
        .filter(|error| !error.code.is_empty())
}

#[derive(Deserialize)]
struct ErrorResponse {
    #[serde(rename = "Error")]
    error: Option<StsError>,
    #[serde(rename = "Errors")]
    errors: Option<Errors>,
}

#[derive(Deserialize)]
struct Errors {
    #[serde(rename = "Error")]
    error: StsError,
}

impl ErrorResponse {
    fn into_error(self) -> Option<StsError> {
        self.error.or(self.errors.map(|e| e.error))
    }
}

/// An error an AWS query endpoint answered.
#[derive(Deserialize)]
pub(super) struct StsError {
    /// e.g. `AccessDenied`.
    #[serde(rename = "Code")]
    pub(super) code: String,
    /// AWS's explanation.
    #[serde(rename = "Message", default)]
    pub(super) message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer STS documents for AssumeRoleWithWebIdentity (values
    /// shortened), and its error shape.
    const ANSWER: &str = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:keyhook:keyhook</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/reader/keyhook</Arn>
      <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:keyhook</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>AQoDYXdzEE0a8ANXXXXXXXXNO1ewxE5TijQyp+IEXAMPLE</SessionToken>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>
      <Expiration>2026-11-22T12:00:00Z</Expiration>
      <AccessKeyId>ASgeIAIOSFODNN7EXAMPLE</AccessKeyId>
    </Credentials>
    <Provider>arn:aws:iam::123456789012:oidc-provider/oidc.eks.example</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#;

    #[test]
    fn an_sts_answer_gives_credentials_and_their_expiry() {
        let answer: AssumeRoleResponse = quick_xml::de::from_str(ANSWER).unwrap();
        let issued = answer.result.credentials;
        assert_eq!(issued.access_key_id, "ASgeIAIOSFODNN7EXAMPLE");
        assert_eq!(issued.expiration, "2026-11-22T12:00:00Z");
        assert!(issued.session_token.starts_with("AQoDYXdz"));
    }

    #[test]
    fn an_sts_error_names_its_code() {
        let text = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>Couldn't retrieve verification key from your identity provider</Message></Error><RequestId>1</RequestId></ErrorResponse>"#;
        let error = quick_xml::de::from_str::<ErrorResponse>(text)
            .unwrap()
            .into_error()
            .unwrap();
        assert_eq!(error.code, "InvalidIdentityToken");
        assert!(error.message.contains("verification key"));

        let nested = r#"<ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message>User: arn:aws:iam::123456789012:user/nobody is not authorized to perform: sts:AssumeRole</Message></Error></Errors></ErrorResponse>"#;
        let error = quick_xml::de::from_str::<ErrorResponse>(nested)
            .unwrap()
            .into_error()
            .unwrap();
        assert_eq!(error.code, "AccessDenied");
    }

    #[test]
    fn the_form_encodes_every_field() {
        let role = RoleRequest {
            role_arn: "arn:aws:iam::123456789012:role/reader",
            session_name: "keyhook",
            external_id: Some("a b&c"),
        };
        let form = form_body("AssumeRole", role, &[]);
        assert_eq!(
            form,
            "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Freader&RoleSessionName=keyhook&ExternalId=a+b%26c"
        );
    }
}
