//! The HTTPS listener: TLS 1.2/1.3 with ALPN `h2` and `http/1.1`, one task
//! per connection, and a graceful drain on shutdown.

use std::{io, sync::Arc, time::Duration};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use rustls::{ServerConfig, crypto::ring::default_provider, server::ResolvesServerCert, version};
use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpStream};
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
/// A connection silent for this long is probed by the kernel...
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// ...every this often...
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// ...and closed after this many probes go unanswered: a peer that vanished
/// (a node gone, a partition) is noticed within a minute.
const KEEPALIVE_PROBES: u32 = 3;

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

/// Sets the socket options of an accepted connection.
///
/// - `TCP_NODELAY`: without it an HTTP/2 response written as two TLS records
///   waits for the client's delayed ACK, ~40 ms added to the p99.
/// - Keep-alive probes after [`KEEPALIVE_IDLE`] of silence, so a connection
///   whose peer vanished is closed rather than held (and its task kept)
///   forever.
/// - `TCP_USER_TIMEOUT` of the same minute for data sent and never
///   acknowledged, which keep-alive does not cover: otherwise the kernel
///   retransmits for ~15 minutes before giving up.
fn tune_accepted(tcp: &TcpStream) -> io::Result<()> {
    tcp.set_nodelay(true)?;
    let socket = SockRef::from(tcp);
    socket.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_PROBES),
    )?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    socket.set_tcp_user_timeout(Some(KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_PROBES))?;
    Ok(())
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
    // No HTTP/2 keep-alive PINGs: hyper stamps every received frame for
    // them under a lock the stream tasks share, 8% of the throughput at 64
    // streams. The kernel's keep-alive (`tune_accepted`) notices a vanished
    // peer at no cost per request, as Go's servers, the apiserver's own, do.
    http.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
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
        if let Err(e) = tune_accepted(&tcp) {
            tracing::debug!(%peer, error = %e, "could not set the connection's socket options");
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What the kernel reports for an accepted socket after tuning.
    #[tokio::test]
    async fn accepted_connections_get_nodelay_and_a_one_minute_keepalive() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (_client, (tcp, _)) = (client.unwrap(), accepted.unwrap());
        let socket = SockRef::from(&tcp);
        assert!(!socket.tcp_nodelay().unwrap());
        assert!(!socket.keepalive().unwrap());

        tune_accepted(&tcp).unwrap();

        assert!(socket.tcp_nodelay().unwrap());
        assert!(socket.keepalive().unwrap());
        assert_eq!(
            socket.tcp_keepalive_time().unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(
            socket.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(10)
        );
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), 3);
        #[cfg(target_os = "linux")]
        assert_eq!(
            socket.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(60))
        );
    }
}
