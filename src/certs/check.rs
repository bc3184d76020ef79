//! Parsing certificates and checking them the way the apiserver will:
//! validity window, a signature chain up to `ca.crt`, and SANs that cover
//! the name it dials.

use std::sync::Arc;

use rustls::{crypto::ring::default_provider, sign::CertifiedKey};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde::Serialize;
use x509_parser::{certificate::X509Certificate, extensions::GeneralName, prelude::FromDer};

use super::{Error, PemBundle, ServiceIdentity, SubjectAltName, generate::renewal_due};
use crate::readiness::Check;

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    /// Subject distinguished name.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Subject alternative names.
    pub sans: Vec<String>,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// Whether it is a CA certificate.
    pub is_ca: bool,
}

/// A parsed serving certificate chain and CA bundle.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The serving (leaf) certificate.
    pub leaf: CertInfo,
    /// The CAs in `ca.crt`.
    pub cas: Vec<CertInfo>,
    chain_ders: Vec<CertificateDer<'static>>,
    ca_ders: Vec<CertificateDer<'static>>,
}

impl Inspection {
    /// Parses `tls.crt` (leaf first, then intermediates) and `ca.crt`.
    pub fn parse(tls_crt: &str, ca_crt: &str) -> Result<Self, Error> {
        let chain_ders = parse_pem_certs("tls.crt", tls_crt)?;
        let ca_ders = parse_pem_certs("ca.crt", ca_crt)?;
        let leaf = cert_info("tls.crt", &chain_ders[0])?;
        let cas = ca_ders
            .iter()
            .map(|der| cert_info("ca.crt", der))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            leaf,
            cas,
            chain_ders,
            ca_ders,
        })
    }

    /// The leaf certificate and the intermediates after it, DER.
    pub fn chain(&self) -> (&CertificateDer<'static>, &[CertificateDer<'static>]) {
        // `parse` refuses a tls.crt without certificates, so there is a leaf.
        (&self.chain_ders[0], &self.chain_ders[1..])
    }

    /// Whether the leaf is inside its validity window at `now` (Unix seconds).
    pub fn validity(&self, now: i64) -> Result<String, String> {
        let leaf = &self.leaf;
        if now < leaf.not_before {
            Err(format!("not valid before {}", rfc3339(leaf.not_before)))
        } else if now >= leaf.not_after {
            Err(format!("expired at {}", rfc3339(leaf.not_after)))
        } else {
            Ok(format!("valid until {}", rfc3339(leaf.not_after)))
        }
    }

    /// Whether the leaf chains (through any intermediates in `tls.crt`) to a
    /// CA in `bundle_pem` that is itself valid at `now`.
    pub fn trusted_by(&self, bundle_pem: &str, now: i64) -> Result<String, String> {
        let roots = parse_pem_certs("CA bundle", bundle_pem).map_err(|e| e.to_string())?;
        self.chains_to(&roots, now)
    }

    fn chains_to(&self, roots: &[CertificateDer<'static>], now: i64) -> Result<String, String> {
        fn parse<'a>(der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, String> {
            X509Certificate::from_der(der)
                .map(|(_, c)| c)
                .map_err(|e| e.to_string())
        }
        let mut current = parse(&self.chain_ders[0])?;
        // A chain longer than the certificates on hand would revisit one.
        for _ in 0..self.chain_ders.len() {
            for root_der in roots {
                let root = parse(root_der)?;
                if current.issuer() == root.subject()
                    && current.verify_signature(Some(root.public_key())).is_ok()
                {
                    let valid = root.validity();
                    if now < valid.not_before.timestamp() || now >= valid.not_after.timestamp() {
                        return Err(format!(
                            "signed by CA `{}`, which is outside its validity window",
                            root.subject()
                        ));
                    }
                    return Ok(format!("signed by CA `{}`", root.subject()));
                }
            }
            let next = self.chain_ders[1..]
                .iter()
                .filter_map(|der| parse(der).ok())
                .find(|c| {
                    current.issuer() == c.subject()
                        && current.verify_signature(Some(c.public_key())).is_ok()
                });
            match next {
                Some(intermediate) => current = intermediate,
                None => break,
            }
        }
        Err(format!(
            "issuer `{}` is not a CA in the bundle, or its signature does not verify",
            current.issuer()
        ))
    }

    /// Whether the SANs cover `host`.
    pub fn covers(&self, host: &str) -> Result<String, String> {
        let sans: Vec<SubjectAltName> = self
            .leaf
            .sans
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        if sans.iter().any(|san| san.matches(host)) {
            Ok(format!("SANs cover {host}"))
        } else {
            Err(format!(
                "SANs [{}] do not cover {host}",
                self.leaf.sans.join(", ")
            ))
        }
    }

    /// The readiness checks of a served certificate against its own `ca.crt`.
    pub fn checks(&self, identity: &ServiceIdentity, now: i64) -> Vec<Check> {
        vec![
            Check::from_result("serving_cert_valid", self.validity(now)),
            Check::from_result("serving_cert_trusted", self.chains_to(&self.ca_ders, now)),
            Check::from_result(
                "serving_cert_covers_service",
                self.covers(&identity.apiserver_name()),
            ),
        ]
    }
}

/// A certificate ready to serve: the rustls key pair plus what was parsed
/// from it.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    /// What rustls presents in handshakes.
    pub certified_key: Arc<CertifiedKey>,
    /// The parsed certificates.
    pub inspection: Inspection,
    /// The PEM it was loaded from; compared to skip reloading unchanged files.
    pub bundle: PemBundle,
}

impl LoadedCert {
    /// Parses a bundle and checks that the key belongs to the certificate.
    /// Validity, trust and SANs are not required here: [`Inspection::checks`]
    /// reports them, and the caller decides whether to serve.
    pub fn load(bundle: PemBundle) -> Result<Self, Error> {
        let inspection = Inspection::parse(&bundle.tls_crt, &bundle.ca_crt)?;
        let key = PrivateKeyDer::from_pem_slice(bundle.tls_key.expose().as_bytes())
            .map_err(|e| Error::parse("tls.key", format!("no private key: {e}")))?;
        let certified_key =
            CertifiedKey::from_der(inspection.chain_ders.clone(), key, &default_provider())
                .map_err(|e| match e {
                    rustls::Error::InconsistentKeys(_) => Error::KeyMismatch,
                    other => Error::parse("tls.key", other),
                })?;
        Ok(Self {
            certified_key: Arc::new(certified_key),
            inspection,
            bundle,
        })
    }

    /// The failed checks at `now`, as human-readable reasons.
    pub fn problems(&self, identity: &ServiceIdentity, now: i64) -> Vec<String> {
        self.inspection
            .checks(identity, now)
            .into_iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect()
    }
}

/// Every certificate in a PEM text, or an error naming the input.
fn parse_pem_certs(what: &str, pem: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::parse(what, format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::parse(what, "no CERTIFICATE block"));
    }
    Ok(certs)
}

fn cert_info(what: &str, der: &CertificateDer<'_>) -> Result<CertInfo, Error> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| Error::parse(what, format!("not X.509: {e}")))?;
    let sans = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some(dns.to_string()),
                GeneralName::IPAddress(bytes) => ip_from_bytes(bytes).map(|ip| ip.to_string()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(Error::parse(what, format!("subjectAltName: {e}"))),
    };
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        sans,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        is_ca: cert.is_ca(),
    })
}

fn ip_from_bytes(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(Into::into),
        16 => <[u8; 16]>::try_from(bytes).ok().map(Into::into),
        _ => None,
    }
}

/// Formats Unix seconds as RFC 3339, for messages.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// Why the serving certificate in `bundle` must be reissued by the CA in
/// `ca_pem` for `sans`, if it must: unusable, outside its validity window,
/// signed by another CA, missing a SAN, or with a third of its life left.
pub(crate) fn reissue_reason(
    bundle: &PemBundle,
    ca_pem: &str,
    sans: &[SubjectAltName],
    now: i64,
) -> Option<String> {
    let loaded = match LoadedCert::load(bundle.clone()) {
        Ok(loaded) => loaded,
        Err(e) => return Some(e.to_string()),
    };
    let inspection = &loaded.inspection;
    if let Err(e) = inspection.validity(now) {
        return Some(format!("serving certificate {e}"));
    }
    if let Err(e) = inspection.trusted_by(ca_pem, now) {
        return Some(format!(
            "serving certificate not signed by the current CA: {e}"
        ));
    }
    let missing: Vec<String> = sans
        .iter()
        .map(ToString::to_string)
        .filter(|san| !inspection.leaf.sans.contains(san))
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "serving certificate lacks SANs {}",
            missing.join(", ")
        ));
    }
    let leaf = &inspection.leaf;
    renewal_due(leaf.not_before, leaf.not_after, now)
        .then(|| "serving certificate has less than a third of its lifetime left".to_string())
}
