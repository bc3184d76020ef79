//! One accepted connection, from its handshake to its close.
//!
//! Every phase of a connection is bounded, so that no client can hold a
//! connection (a file descriptor, buffers, a task) without using it:
//!
//! - the TLS handshake must finish within `--tls-handshake-timeout`;
//! - the first request must arrive within `--first-request-timeout` of the
//!   connection being accepted;
//! - a connection with no request in flight is closed after
//!   `--idle-timeout`;
//! - HTTP/1.1 request headers must arrive within `--header-read-timeout`.
//!
//! A connection is closed gracefully: HTTP/2 gets a GOAWAY, announced first
//! with the largest stream id and confirmed after a PING round trip, so a
//! request the client sent meanwhile is either served or known unprocessed
//! and retried; HTTP/1.1 closes after the response in progress. A
//! connection that has not closed [`CLOSE_GRACE`] later is dropped.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use hyper::{body::Incoming, service::Service};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::{oneshot, watch},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::{
    streams::{StreamQueue, WithStreams},
    throttle::Throttle,
};
pub use crate::config::ConnectionTimeouts;
use crate::metrics::{CloseReason, ConnectionMetrics};

/// How long a connection closed for idleness may take to finish what it
/// has in flight (a request that crossed the GOAWAY) before it is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// How long a connection that never sent a request may take to read its
/// GOAWAY before it is dropped: it has nothing in flight to finish.
const NO_REQUEST_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What a connection's requests tell its watchdog. Updated twice per
/// request, by the connection's own tasks only: no other connection
/// touches these cache lines.
#[derive(Debug)]
struct Activity {
    /// When the connection was accepted; times below count from it.
    accepted: Instant,
    /// Requests being answered now.
    in_flight: AtomicUsize,
    /// Requests received so far.
    received: AtomicU64,
    /// When the last request in flight finished, in milliseconds since
    /// `accepted`.
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new(accepted: Instant) -> Self {
        Self {
            accepted,
            in_flight: AtomicUsize::new(0),
            received: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    fn started(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    fn finished(&self) {
        // Stamp before the count drops, so a watchdog that sees the
        // connection idle also sees since when.
        let elapsed = u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.idle_since_ms.store(elapsed, Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// Resolves when the connection should be closed for want of use.
    async fn unused(&self, timeouts: ConnectionTimeouts) -> CloseReason {
        tokio::time::sleep_until(self.accepted + timeouts.first_request).await;
        if self.received.load(Ordering::Relaxed) == 0 {
            return CloseReason::NoRequest;
        }
        loop {
            let due = if self.is_idle() {
                let since = self.idle_since_ms.load(Ordering::Acquire);
                self.accepted + Duration::from_millis(since) + timeouts.idle
            } else {
                // A request in flight ends within the request deadline,
                // well before this.
                Instant::now() + timeouts.idle
            };
            if due <= Instant::now() {
                return CloseReason::Idle;
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

/// Counts a request in and out of [`Activity`], also when its future is
/// dropped unfinished.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.started();
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.finished();
    }
}

/// A service whose requests are counted in the connection's [`Activity`],
/// and whose refused requests are logged with the client's address.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    peer: SocketAddr,
    refusals: Throttle,
}

impl<S, B> Service<http::Request<Incoming>> for Tracked<S>
where
    S: Service<http::Request<Incoming>, Response = http::Response<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        TrackedFuture {
            in_flight: InFlight::start(&self.activity),
            peer: self.peer,
            refusals: self.refusals.clone(),
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// A response on its way; the request counts as in flight until it is
    /// ready or dropped.
    struct TrackedFuture<F> {
        #[pin]
        inner: F,
        in_flight: InFlight,
        peer: SocketAddr,
        refusals: Throttle,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Ok(response) = &result
            && let Some(Refused(reason)) = response.extensions().get::<Refused>()
            && let Some(suppressed) = this.refusals.admit()
        {
            tracing::info!(
                peer = %this.peer,
                status = response.status().as_u16(),
                suppressed,
                "refused a request: {reason}"
            );
        }
        Poll::Ready(result)
    }
}

/// Marks a response that refused its request (HTTP 4xx or 503), with what
/// the log may say about why: never a part of the request's content.
#[derive(Debug, Clone)]
pub struct Refused(pub String);

/// Concurrent HTTP/2 streams per connection. The apiserver multiplexes every
/// webhook call over few connections; past this, its calls queue on its side.
pub const MAX_CONCURRENT_STREAMS: u32 = 256;

/// HTTP/2 receive windows. Body data a client sends before keyhook reads
/// it (while its request waits for `--max-inflight-bytes`, say) is held in
/// these, outside the budget: the connection's window bounds it per
/// connection, and a stream's window is smaller so that one waiting stream
/// cannot stall the others.
pub const CONNECTION_WINDOW: u32 = 512 * 1024;
/// See [`CONNECTION_WINDOW`].
pub const STREAM_WINDOW: u32 = 256 * 1024;

/// What every connection of a listener shares.
#[derive(Clone)]
pub struct ConnectionContext {
    /// The phases' timeouts.
    pub timeouts: ConnectionTimeouts,
    /// Cancelled when the server drains: every connection closes gracefully.
    pub shutdown: CancellationToken,
    /// Called when the listener is at its connection cap and a new
    /// connection waits: idle connections close to make room.
    pub shed: ShedSignal,
    /// Counts of connections closed, by reason.
    pub metrics: ConnectionMetrics,
    /// Throttles the log lines of refused requests.
    pub refusals: Throttle,
}

/// Serves HTTP on `io` until the client closes it or it is closed for one
/// of the reasons above. `accepted` is when the TCP connection was accepted.
pub async fn serve<I, S, B>(
    io: I,
    peer: SocketAddr,
    service: S,
    accepted: Instant,
    shed: ShedCalls,
    context: &ConnectionContext,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<http::Request<Incoming>, Response = http::Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = Arc::new(Activity::new(accepted));
    let tracked = Tracked {
        inner: service,
        activity: activity.clone(),
        peer,
        refusals: context.refusals.clone(),
    };
    let streams = StreamQueue::default();
    let http = http_builder(streams.clone(), context.timeouts);
    let connection = WithStreams::new(http.serve_connection(TokioIo::new(io), tracked), streams);
    tokio::pin!(connection);
    let (close, mut closing) = oneshot::channel();
    tokio::spawn(watch(
        activity,
        context.timeouts,
        context.shutdown.clone(),
        shed,
        close,
    ));
    let reason = tokio::select! {
        result = connection.as_mut() => {
            let reason = match result {
                Ok(()) => CloseReason::Client,
                Err(e) => {
                    tracing::debug!(error = %e, "connection ended with an error");
                    CloseReason::Error
                }
            };
            context.metrics.closed(reason);
            return;
        }
        Ok(reason) = &mut closing => reason,
    };
    context.metrics.closed(reason);
    connection.as_mut().connection().graceful_shutdown();
    let grace = match reason {
        // The server's drain bounds this wait.
        CloseReason::Shutdown => None,
        CloseReason::NoRequest => Some(NO_REQUEST_CLOSE_GRACE),
        _ => Some(CLOSE_GRACE),
    };
    let Some(grace) = grace else {
        let _ = connection.await;
        return;
    };
    if tokio::time::timeout(grace, connection).await.is_err() {
        tracing::debug!(
            ?reason,
            "a closing connection did not finish in time; dropped"
        );
    }
}

/// The HTTP/1.1 and HTTP/2 settings of every connection, whose HTTP/2
/// streams go to `streams`.
fn http_builder(streams: StreamQueue, timeouts: ConnectionTimeouts) -> auto::Builder<StreamQueue> {
    let mut http = auto::Builder::new(streams);
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read);
    // No HTTP/2 keep-alive PINGs: hyper stamps every received frame for
    // them under a lock the stream tasks share. The kernel's keep-alive
    // (the listener's `tune_accepted`) notices a vanished peer at no cost per request, as
    // Go's servers, the apiserver's own, do.
    http.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .initial_stream_window_size(STREAM_WINDOW);
    http
}

/// A connection's watchdog, its own task: sends why the connection should
/// close, or ends when the connection has closed by itself.
///
/// Kept out of the connection's task because that task wakes for every
/// frame, and polling the shutdown token and the shed signal takes locks
/// every connection shares: on several cores, those locks would be
/// contended by every request.
async fn watch(
    activity: Arc<Activity>,
    timeouts: ConnectionTimeouts,
    shutdown: CancellationToken,
    mut shed: ShedCalls,
    mut close: oneshot::Sender<CloseReason>,
) {
    let reason = tokio::select! {
        () = close.closed() => return,
        reason = activity.unused(timeouts) => reason,
        reason = shed_when_idle(&mut shed, &activity) => reason,
        () = shutdown.cancelled() => CloseReason::Shutdown,
    };
    let _ = close.send(reason);
}

/// Resolves when the listener asks for room while this connection has
/// nothing in flight.
async fn shed_when_idle(shed: &mut ShedCalls, activity: &Activity) -> CloseReason {
    loop {
        shed.next().await;
        if activity.is_idle() {
            return CloseReason::Shed;
        }
    }
}

/// The listener's calls for room, made when it is at its connection cap.
#[derive(Debug, Clone)]
pub struct ShedSignal(Arc<watch::Sender<u64>>);

impl Default for ShedSignal {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(0)))
    }
}

impl ShedSignal {
    /// Asks every idle connection, and every one still in its handshake,
    /// to close.
    pub fn call(&self) {
        self.0.send_modify(|calls| *calls += 1);
    }

    /// The calls one connection hears: those made from now on. Taken when
    /// the connection is accepted, so that a call made before its task
    /// first runs is heard too.
    pub fn calls(&self) -> ShedCalls {
        ShedCalls(self.0.subscribe())
    }
}

/// The calls for room one connection hears; see [`ShedSignal`].
#[derive(Debug)]
pub struct ShedCalls(watch::Receiver<u64>);

impl ShedCalls {
    /// Resolves at the next call.
    pub async fn next(&mut self) {
        if self.0.changed().await.is_err() {
            // The listener is gone: no call will come.
            std::future::pending::<()>().await;
        }
    }
}
