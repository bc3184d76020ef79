//! The HTTPS listener: TLS 1.2/1.3 with ALPN `h2` and `http/1.1`, one task
//! per connection, and a graceful drain on shutdown.

use std::{sync::Arc, time::Duration};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use rustls::{ServerConfig, crypto::ring::default_provider, server::ResolvesServerCert, version};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::routes::WebhookService;
use crate::metrics::CertMetrics;

/// A client that connects and stalls is cut off after this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/1.1 request headers must arrive within this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent HTTP/2 streams per connection. The apiserver multiplexes every
/// webhook call over few connections; past this, its calls queue on its side.
pub const MAX_CONCURRENT_STREAMS: u32 = 256;

/// A rustls server configuration that asks `resolver` for the certificate
/// of every handshake.
pub fn tls_config(
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts TLS connections on `listener` and serves `service` on them until
/// `shutdown` is cancelled; then stops accepting and lets in-flight requests
/// finish for up to `grace`. Returns whether every connection drained.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    service: WebhookService,
    metrics: CertMetrics,
    shutdown: CancellationToken,
    grace: Duration,
) -> bool {
    let acceptor = TlsAcceptor::from(tls);
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    http.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    let graceful = GracefulShutdown::new();

    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Per-connection errors (e.g. the peer reset before we
                    // accepted, or EMFILE): back off briefly and go on.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Without TCP_NODELAY an HTTP/2 response written as two TLS records
        // waits for the client's delayed ACK: ~40 ms added to the p99.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
        let acceptor = acceptor.clone();
        let http = http.clone();
        let service = TowerToHyperService::new(service.clone());
        let watcher = graceful.watcher();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    metrics.handshake_failures.inc();
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    metrics.handshake_failures.inc();
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let connection = http
                .serve_connection(TokioIo::new(tls), service)
                .into_owned();
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }

    // Dropping the listener closes the socket: new connections are refused.
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        ?grace,
        "draining in-flight webhook requests"
    );
    tokio::select! {
        () = graceful.shutdown() => true,
        () = tokio::time::sleep(grace) => {
            tracing::warn!(?grace, "shutdown grace period over; abandoning the remaining requests");
            false
        }
    }
}
