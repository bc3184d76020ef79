//! Verifying a certificate the way a TLS client does: webpki path building
//! to a trust anchor, validity, and the name in the SAN list.

use std::sync::Arc;

use rustls::{
    RootCertStore,
    client::{WebPkiServerVerifier, danger::ServerCertVerifier},
    crypto::ring::default_provider,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};

use super::{Error, Inspection};

/// CA certificates a client trusts, e.g. a `ca.crt` or an injected caBundle.
#[derive(Debug, Clone)]
pub struct TrustRoots(Arc<WebPkiServerVerifier>);

impl TrustRoots {
    /// Trust every CA certificate in `pem`.
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| Error::parse("CA bundle", format!("not PEM: {e}")))?;
            roots.add(cert).map_err(|e| Error::parse("CA bundle", e))?;
        }
        if roots.is_empty() {
            return Err(Error::parse("CA bundle", "no CERTIFICATE block"));
        }
        let verifier = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(default_provider()),
        )
        .build()
        .map_err(|e| Error::parse("CA bundle", e))?;
        Ok(Self(verifier))
    }

    /// Whether a client trusting these roots accepts `served` when it dials
    /// `name`, at the current time.
    pub fn verify(&self, served: &Inspection, name: &str) -> Result<(), String> {
        self.verify_at(served, name, UnixTime::now())
    }

    /// Like [`TrustRoots::verify`], at `now` instead of the current time.
    pub fn verify_at(&self, served: &Inspection, name: &str, now: UnixTime) -> Result<(), String> {
        let server_name = ServerName::try_from(name)
            .map_err(|e| format!("`{name}` is not a server name: {e}"))?;
        let (leaf, intermediates) = served.chain();
        self.0
            .verify_server_cert(leaf, intermediates, &server_name, &[], now)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
