//! Generating a CA and the serving certificates it signs (rcgen, ECDSA P-256).

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use time::OffsetDateTime;

use super::{Error, PrivateKeyPem, SubjectAltName};

/// A CA lives ten years; it is renewed (with an overlap) long before that.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Certificates start a little in the past so that a node whose clock lags
/// behind does not see them as not yet valid.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// A CA that can sign serving certificates: its certificate and its key.
pub struct CertificateAuthority {
    cert_pem: String,
    key_pem: PrivateKeyPem,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Generates a new CA valid from `now` for [`CA_VALIDITY`].
    pub fn generate(now: OffsetDateTime) -> Result<Self, Error> {
        Self::generate_valid_for(now, CA_VALIDITY)
    }

    /// Generates a new CA valid from `now` for `validity`.
    pub fn generate_valid_for(now: OffsetDateTime, validity: Duration) -> Result<Self, Error> {
        let gen_err = |source| Error::Generate {
            what: "CA certificate",
            source,
        };
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
        let mut params = CertificateParams::default();
        // A distinct subject per CA keeps old and new CAs apart in a bundle
        // during a rotation.
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "keyhook");
        name.push(
            DnType::CommonName,
            format!("keyhook CA {}", now.unix_timestamp()),
        );
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - BACKDATE;
        params.not_after = now + validity;
        let cert = params.self_signed(&key).map_err(gen_err)?;
        let key_pem = PrivateKeyPem::new(key.serialize_pem());
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads an existing CA from its certificate and key.
    pub fn from_pem(cert_pem: &str, key_pem: &PrivateKeyPem) -> Result<Self, Error> {
        let key = KeyPair::from_pem(key_pem.expose()).map_err(|e| Error::parse("ca.key", e))?;
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| Error::parse("ca.crt", e))?;
        Ok(Self {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.clone(),
            issuer,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA key, PEM.
    pub fn key_pem(&self) -> &PrivateKeyPem {
        &self.key_pem
    }

    /// Issues a serving certificate for `sans`, valid from `now` for
    /// `validity`, with the `serverAuth` extended key usage. The first SAN is
    /// also the subject's common name. Returns the certificate and key, PEM.
    pub fn issue_serving(
        &self,
        sans: &[SubjectAltName],
        validity: Duration,
        now: OffsetDateTime,
    ) -> Result<(String, PrivateKeyPem), Error> {
        let gen_err = |source| Error::Generate {
            what: "serving certificate",
            source,
        };
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans
            .iter()
            .map(|san| match san {
                SubjectAltName::Dns(name) => name.as_str().try_into().map(SanType::DnsName),
                SubjectAltName::Ip(ip) => Ok(SanType::IpAddress(*ip)),
            })
            .collect::<Result<_, _>>()
            .map_err(gen_err)?;
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "keyhook");
        if let Some(first) = sans.first() {
            name.push(DnType::CommonName, first.to_string());
        }
        params.distinguished_name = name;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - BACKDATE;
        params.not_after = now + validity;
        let cert = params.signed_by(&key, &self.issuer).map_err(gen_err)?;
        Ok((cert.pem(), PrivateKeyPem::new(key.serialize_pem())))
    }
}

/// Whether a certificate valid from `not_before` to `not_after` (Unix
/// seconds) is due for renewal at `now`: when less than a third of its
/// lifetime is left.
pub fn renewal_due(not_before: i64, not_after: i64, now: i64) -> bool {
    now >= renewal_time(not_before, not_after)
}

/// The Unix time at which a certificate has a third of its lifetime left.
pub fn renewal_time(not_before: i64, not_after: i64) -> i64 {
    let lifetime = (not_after - not_before).max(0);
    not_after - lifetime / 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_with_a_third_of_the_lifetime_left() {
        assert!(!renewal_due(0, 300, 199));
        assert!(renewal_due(0, 300, 200));
        assert!(renewal_due(0, 300, 301));
        assert_eq!(renewal_time(1000, 1900), 1600);
    }

    #[test]
    fn a_loaded_ca_signs_like_the_generated_one() {
        let now = OffsetDateTime::now_utc();
        let ca = CertificateAuthority::generate(now).unwrap();
        let reloaded = CertificateAuthority::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        let sans = [SubjectAltName::Dns("keyhook.keyhook.svc".into())];
        let (cert, _key) = reloaded
            .issue_serving(&sans, Duration::from_secs(3600), now)
            .unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(format!("{:?}", ca.key_pem()), "PrivateKeyPem([redacted])");
    }

    #[test]
    fn a_key_that_is_not_pem_is_named_in_the_error() {
        let now = OffsetDateTime::now_utc();
        let ca = CertificateAuthority::generate(now).unwrap();
        let err =
            CertificateAuthority::from_pem(ca.cert_pem(), &PrivateKeyPem::new("garbage".into()))
                .unwrap_err();
        assert!(err.to_string().starts_with("ca.key:"), "{err}");
    }
}
