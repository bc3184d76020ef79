//! The listeners' accept loop: a cap on open connections, TLS 1.2/1.3 with
//! ALPN `h2` and `http/1.1` on the webhook port, one task per connection,
//! and a graceful drain on shutdown.

use std::{io, net::SocketAddr, num::NonZeroU32, sync::Arc, time::Duration};

use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::counter::Counter;
use rustls::{ServerConfig, crypto::ring::default_provider, server::ResolvesServerCert, version};
use socket2::{SockRef, TcpKeepalive};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    connection::{self, ConnectionContext, ConnectionTimeouts, ShedCalls, ShedSignal},
    throttle::Throttle,
};
use crate::metrics::{CloseReason, ConnectionMetrics};
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

/// Connections of the health listener: the kubelet's probes and
/// Prometheus need a handful; this many leaves room for a burst.
pub const HEALTH_MAX_CONNECTIONS: usize = 64;

/// File descriptors kept back from the webhook listener's share of the
/// open-file limit: the health listener's connections, the cluster and
/// backend clients, watched and read files.
const RESERVED_FDS: u64 = HEALTH_MAX_CONNECTIONS as u64 + 192;

/// The most webhook connections keyhook holds by default, whatever the
/// open-file limit: apiservers hold a handful each, and each connection may
/// hold up to [`connection::CONNECTION_WINDOW`] of body data keyhook has not
/// read yet.
const DEFAULT_MAX_CONNECTIONS: u64 = 1024;

/// The webhook listener's connection cap: `configured`, or derived from
/// the open-file limit, whose soft value is first raised to the hard one.
pub fn webhook_max_connections(configured: Option<u32>) -> usize {
    let nofile = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit; assuming 1024");
            1024
        }
    };
    let available = nofile.saturating_sub(RESERVED_FDS);
    let limit = match configured {
        Some(n) => {
            if u64::from(n) > available {
                tracing::warn!(
                    max_connections = n,
                    open_file_limit = nofile,
                    "--max-connections is above what the open-file limit leaves for connections; past it, accepts fail and back off"
                );
            }
            u64::from(n)
        }
        None => available.clamp(16, DEFAULT_MAX_CONNECTIONS),
    };
    usize::try_from(limit).unwrap_or(usize::MAX)
}

/// How one listener treats its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Connections open at once. A connection accepted past it waits for
    /// room, and idle ones (and ones still in their handshake) are closed
    /// to make it; later ones wait in the kernel's accept queue.
    pub max_connections: usize,
    /// The timeouts of each connection's phases.
    pub timeouts: ConnectionTimeouts,
}

/// What a listener serves, and how.
pub struct Listener<S> {
    /// The bound socket.
    pub tcp: TcpListener,
    /// TLS for the webhook port; `None` serves plain HTTP (the health port).
    pub tls: Option<Arc<ServerConfig>>,
    /// Makes the service of each connection.
    pub service: S,
    /// Caps and timeouts.
    pub limits: ListenerLimits,
    /// Connection counts, by outcome.
    pub metrics: ConnectionMetrics,
    /// Counts failed TLS handshakes (the webhook port's alert watches it).
    pub handshake_failures: Counter,
}

/// Makes the service of each new connection.
pub trait ConnectionService: Send + Sync + 'static {
    /// The service of one connection; cloned for each of its requests.
    type Service: tower::Service<
            http::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static;

    /// The service for a connection just accepted.
    fn for_connection(&self) -> Self::Service;
}

impl ConnectionService for axum::Router {
    type Service = axum::Router;

    /// The health listener's router, shared: its requests are few.
    fn for_connection(&self) -> axum::Router {
        self.clone()
    }
}

impl<S: ConnectionService> Listener<S> {
    /// Accepts connections and serves them until `shutdown` is cancelled;
    /// then stops accepting and lets in-flight requests finish for up to
    /// `grace`. Returns whether every connection drained.
    pub async fn serve(self, shutdown: CancellationToken, grace: Duration) -> bool {
        let Listener {
            tcp,
            tls,
            service,
            limits,
            metrics,
            handshake_failures,
        } = self;
        let context = ConnectionContext {
            timeouts: limits.timeouts,
            shutdown: shutdown.clone(),
            shed: ShedSignal::default(),
            metrics: metrics.clone(),
            refusals: Throttle::default(),
        };
        let handshake = Handshake {
            tls: tls.map(TlsAcceptor::from),
            timeout: limits.timeouts.handshake,
            failures: handshake_failures,
            log: Throttle::default(),
        };
        let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        let connections = TaskTracker::new();
        let mut accept_errors = AcceptErrors::default();
        let at_limit_log = Throttle::default();

        loop {
            let (tcp_stream, peer) = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = tcp.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        metrics.accept_error();
                        accept_errors.back_off(&e).await;
                        continue;
                    }
                },
            };
            accept_errors.reset();
            let slot = match slots.clone().try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => {
                    metrics.at_limit();
                    if let Some(suppressed) = at_limit_log.admit() {
                        tracing::warn!(
                            max = limits.max_connections,
                            suppressed,
                            "at --max-connections: closing idle connections; new ones wait"
                        );
                    }
                    context.shed.call();
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        // The semaphore is never closed.
                        Ok(slot) = slots.clone().acquire_owned() => slot,
                    }
                }
            };
            let accepted = Instant::now();
            if let Err(e) = tune_accepted(&tcp_stream) {
                tracing::debug!(%peer, error = %e, "could not set the connection's socket options");
            }
            metrics.opened();
            let (context, handshake) = (context.clone(), handshake.clone());
            let place = Place {
                _slot: slot,
                shed: context.shed.calls(),
            };
            let service = TowerToHyperService::new(service.for_connection());
            connections.spawn(async move {
                serve_one(
                    tcp_stream, peer, accepted, place, handshake, service, context,
                )
                .await;
            });
        }

        // Dropping the listener closes the socket: new connections are refused.
        drop(tcp);
        connections.close();
        tracing::info!(
            connections = connections.len(),
            ?grace,
            "draining in-flight requests"
        );
        tokio::select! {
            () = connections.wait() => true,
            () = tokio::time::sleep(grace) => {
                tracing::warn!(?grace, "shutdown grace period over; abandoning the remaining requests");
                false
            }
        }
    }
}

/// A connection's place under the connection cap: held while the
/// connection is open, and given up when the listener calls for room.
struct Place {
    _slot: OwnedSemaphorePermit,
    shed: ShedCalls,
}

/// One connection: its handshake, then HTTP until it closes. Holds its
/// `place` throughout.
async fn serve_one<S>(
    tcp: TcpStream,
    peer: SocketAddr,
    accepted: Instant,
    mut place: Place,
    handshake: Handshake,
    service: S,
    context: ConnectionContext,
) where
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
        > + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Some(tls) = &handshake.tls else {
        connection::serve(tcp, peer, service, accepted, place.shed, &context).await;
        return;
    };
    let handshake = tokio::select! {
        outcome = handshake.run(tls, tcp, peer) => outcome,
        // Shed too when the listener needs room: a client that means to talk
        // finishes its handshake in milliseconds, so one still in it most
        // likely stalls, and one cut off by mistake simply reconnects.
        () = place.shed.next() => Err(CloseReason::Shed),
    };
    match handshake {
        Ok(stream) => {
            connection::serve(stream, peer, service, accepted, place.shed, &context).await
        }
        Err(reason) => context.metrics.closed(reason),
    }
}

/// The TLS handshake of the webhook port.
#[derive(Clone)]
struct Handshake {
    tls: Option<TlsAcceptor>,
    timeout: Duration,
    failures: Counter,
    log: Throttle,
}

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What a client that speaks plain HTTP to the HTTPS port is told, as Go's
/// servers tell it.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server: keyhook's webhook port speaks HTTPS only.\n";

impl Handshake {
    async fn run(
        &self,
        tls: &TlsAcceptor,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> Result<tokio_rustls::server::TlsStream<TcpStream>, CloseReason> {
        let outcome = tokio::time::timeout(self.timeout, async {
            let mut first = [0u8; 1];
            match tcp.peek(&mut first).await {
                Ok(0) => return Err(CloseReason::Client),
                Ok(_) if first[0] != TLS_HANDSHAKE_RECORD && first[0].is_ascii_alphabetic() => {
                    return Err(self.refuse_plain_http(tcp, peer).await);
                }
                Ok(_) => {}
                Err(_) => return Err(CloseReason::Error),
            }
            tls.accept(tcp).await.map_err(|e| {
                self.failed(peer, &e.to_string());
                CloseReason::Handshake
            })
        })
        .await;
        outcome.unwrap_or_else(|_| {
            self.failed(peer, "it did not finish within --tls-handshake-timeout");
            Err(CloseReason::Handshake)
        })
    }

    fn failed(&self, peer: SocketAddr, reason: &str) {
        self.failures.inc();
        if let Some(suppressed) = self.log.admit() {
            tracing::info!(%peer, suppressed, "TLS handshake refused: {reason}");
        }
    }

    async fn refuse_plain_http(&self, mut tcp: TcpStream, peer: SocketAddr) -> CloseReason {
        if let Some(suppressed) = self.log.admit() {
            tracing::info!(
                %peer,
                suppressed,
                "plain HTTP on the HTTPS webhook port: answered 400; clients must use https://"
            );
        }
        // Best effort: the client may already be gone.
        let _ = tcp.write_all(PLAIN_HTTP_ANSWER).await;
        let _ = tcp.shutdown().await;
        CloseReason::PlainHttp
    }
}

/// Backs off after failed accepts (out of file descriptors, say) instead of
/// spinning, and logs them at most once a second, with a count.
struct AcceptErrors {
    consecutive: u32,
    log: Throttle,
}

impl Default for AcceptErrors {
    fn default() -> Self {
        Self {
            consecutive: 0,
            log: Throttle::per_second(NonZeroU32::MIN),
        }
    }
}

/// The first and the longest wait after a failed accept.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

impl AcceptErrors {
    async fn back_off(&mut self, error: &io::Error) {
        let (first, longest) = ACCEPT_BACKOFF;
        let wait = first
            .saturating_mul(1 << self.consecutive.min(10))
            .min(longest);
        self.consecutive = self.consecutive.saturating_add(1);
        if let Some(suppressed) = self.log.admit() {
            tracing::warn!(%error, suppressed, ?wait, "accepting a connection failed; backing off");
        }
        tokio::time::sleep(wait).await;
    }

    fn reset(&mut self) {
        self.consecutive = 0;
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
