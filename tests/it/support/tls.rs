//! A real TLS handshake, in memory, between a client trusting a given CA
//! bundle and a server presenting a `ServingCert`, at a chosen time.

use std::{sync::Arc, time::Duration};

use keyhook::{certs::ServingCert, server::listener};
use rustls::{
    ClientConfig, RootCertStore, crypto::ring::default_provider, time_provider::TimeProvider,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};
use tokio_rustls::{TlsAcceptor, TlsConnector};

#[derive(Debug)]
struct FixedTime(u64);

impl TimeProvider for FixedTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(Duration::from_secs(self.0)))
    }
}

/// Completes a handshake to `serving` as a client that trusts `bundle_pem`
/// and dials `name` at Unix time `now`. Returns the client's error, if any.
pub async fn handshake(
    serving: Arc<ServingCert>,
    bundle_pem: &str,
    name: &str,
    now: i64,
) -> Result<(), String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(bundle_pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("bundle: {e}"))?;
        roots.add(cert).map_err(|e| format!("bundle: {e}"))?;
    }
    let client = ClientConfig::builder_with_details(
        Arc::new(default_provider()),
        Arc::new(FixedTime(u64::try_from(now).unwrap())),
    )
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let server = listener::tls_config(serving).unwrap();

    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    let accept = async {
        // The server side fails too when the client rejects; the client's
        // error is the one that says why.
        let _ = TlsAcceptor::from(server).accept(server_io).await;
    };
    let connect = TlsConnector::from(Arc::new(client)).connect(server_name, client_io);
    let ((), connected) = tokio::join!(accept, connect);
    connected.map(|_| ()).map_err(|e| e.to_string())
}
