//! The HTTP client each backend client owns: reqwest over rustls with the
//! ring provider, trusting the store's `caBundle` (or the system roots).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::BackendError;

/// Decodes a CRD `caBundle` (base64 of PEM, as `[]byte` fields serialize);
/// raw PEM is accepted too.
pub(crate) fn decode_pem_field(field: &str) -> Vec<u8> {
    let trimmed = field.trim();
    if trimmed.starts_with("-----BEGIN") {
        return trimmed.as_bytes().to_vec();
    }
    base64::engine::general_purpose::STANDARD
        .decode(trimmed)
        .unwrap_or_else(|_| trimmed.as_bytes().to_vec())
}

/// Builds a client trusting `ca_pem` (all certificates in it) or, when
/// `None`, the platform's roots; with a client certificate when given.
pub(crate) fn client(
    ca_pem: Option<&[u8]>,
    identity: Option<(&[u8], &[u8])>,
) -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            let mut added = 0;
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("caBundle: {e}"))?;
                roots.add(cert).map_err(|e| format!("caBundle: {e}"))?;
                added += 1;
            }
            if added == 0 {
                return Err("caBundle holds no PEM certificate".into());
            }
        }
        None => {
            // Unreadable system certificates only shrink the trusted set.
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut tls = match identity {
        None => builder.with_no_client_auth(),
        Some((cert_pem, key_pem)) => {
            let chain = CertificateDer::pem_slice_iter(cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("client certificate: {e}"))?;
            let key =
                PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("client key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))?
        }
    };
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| e.to_string())
}

/// Classifies a transport failure: connection trouble and timeouts retry.
pub(crate) fn transport_error(error: reqwest::Error) -> BackendError {
    // Strip the URL: it can hold a key name, which is fine, but never a value;
    // the shorter message reads better next to the store and key the layer adds.
    let retryable =
        error.is_connect() || error.is_timeout() || error.is_request() || error.is_body();
    let message = error.without_url().to_string();
    if retryable {
        BackendError::Transient(message)
    } else {
        BackendError::Other(message)
    }
}
