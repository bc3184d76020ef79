//! HTTP/2 streams run by their connection's own task.
//!
//! hyper hands every HTTP/2 request (a stream) to an executor. Spawned on
//! tokio, each request is a task of its own that, once answered, wakes the
//! connection's task, and tokio runs a task woken that way next: the
//! connection writes every answer alone, one TLS record and one `writev`
//! each, and every request pays for a task's scheduling and wake-ups. That
//! was a third of keyhook's CPU per review.
//!
//! Here the executor only queues a connection's streams; [`WithStreams`]
//! polls them in the connection's task, between polls of the connection, so
//! the answers ready in one pass leave in one write. A connection's requests
//! then run on one core at a time; an apiserver's webhook calls are short,
//! and the long ones (large bodies, conversions) already run on the CPU pool.

use std::{
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
};

use futures::{FutureExt, StreamExt, stream::FuturesUnordered};

/// A stream's future, as hyper builds it: the request's service call and
/// the writing of its answer.
type Stream = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How many answers one pass writes at most before the connection flushes
/// them: all of a pass's answers in one write costs the least CPU, but a
/// client that sent many requests at once then waits for the last before it
/// reads the first. Eight measured best on one connection with 64 streams
/// in flight, and costs nothing with fewer.
const ANSWERS_PER_WRITE: usize = 8;

/// How many passes (connection, streams, connection) one poll makes before
/// yielding to the other tasks of its worker.
const PASSES_PER_POLL: usize = 16;

/// The executor of one connection: queues the streams hyper starts, for
/// [`WithStreams`] to run.
#[derive(Clone, Default)]
pub struct StreamQueue(Arc<Mutex<Vec<Stream>>>);

impl StreamQueue {
    fn take(&self) -> Vec<Stream> {
        // Only this connection's task locks it, so it is never contended;
        // a push cannot panic midway, so a poisoned queue is still whole.
        let mut queued = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut *queued)
    }
}

impl<F> hyper::rt::Executor<F> for StreamQueue
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        // A panicking request ends its own stream (hyper resets it when its
        // future is dropped), not the connection's other requests.
        let stream = AssertUnwindSafe(stream).catch_unwind().map(|_| ());
        let mut queued = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        queued.push(Box::pin(stream));
    }
}

pin_project_lite::pin_project! {
    /// A connection and the streams it started, polled together: resolves
    /// when the connection does.
    pub struct WithStreams<C> {
        #[pin]
        connection: C,
        queue: StreamQueue,
        streams: FuturesUnordered<Stream>,
    }
}

impl<C> WithStreams<C> {
    /// Serves `connection`, whose executor is `queue`.
    pub fn new(connection: C, queue: StreamQueue) -> Self {
        Self {
            connection,
            queue,
            streams: FuturesUnordered::new(),
        }
    }

    /// The connection, to close it gracefully; its streams keep running
    /// for as long as this is polled.
    pub fn connection(self: Pin<&mut Self>) -> Pin<&mut C> {
        self.project().connection
    }
}

impl<C: Future> Future for WithStreams<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        for _ in 0..PASSES_PER_POLL {
            // Reads new frames, starts streams, writes the answers so far.
            if let Poll::Ready(output) = this.connection.as_mut().poll(cx) {
                return Poll::Ready(output);
            }
            let started = this.queue.take();
            let mut progressed = !started.is_empty();
            this.streams.extend(started);
            let mut answered = 0;
            while answered < ANSWERS_PER_WRITE {
                match this.streams.poll_next_unpin(cx) {
                    Poll::Ready(Some(())) => answered += 1,
                    Poll::Ready(None) | Poll::Pending => break,
                }
            }
            progressed |= answered > 0;
            if !progressed {
                // Every stream waits on the connection or on I/O of its
                // own, which wakes this task.
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty, Full};
    use hyper::{Request, Response, service::service_fn};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    use super::*;

    /// Serves one HTTP/2 connection whose `/panic` handler panics, and
    /// sends it each round of paths at once, one round after the other.
    async fn answers(rounds: &[&[&'static str]]) -> Vec<Vec<Result<String, String>>> {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let queue = StreamQueue::default();
        let server = hyper::server::conn::http2::Builder::new(queue.clone()).serve_connection(
            TokioIo::new(server_io),
            service_fn(|request: Request<hyper::body::Incoming>| async move {
                if request.uri().path() == "/panic" {
                    panic!("a handler's bug");
                }
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("answered"))))
            }),
        );
        tokio::spawn(WithStreams::new(server, queue));

        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client_io))
                .await
                .unwrap();
        tokio::spawn(connection);
        let mut answers = Vec::new();
        for paths in rounds {
            let calls = paths.iter().map(|path| {
                let mut sender = sender.clone();
                async move {
                    let request = Request::post(format!("http://keyhook{path}"))
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    let response = sender
                        .send_request(request)
                        .await
                        .map_err(|e| e.to_string())?;
                    let body = response
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
                }
            });
            answers.push(futures::future::join_all(calls).await);
        }
        answers
    }

    #[tokio::test]
    async fn every_stream_of_a_connection_is_answered() {
        let answers = answers(&[&["/ok"; 40]]).await;
        assert_eq!(answers[0].len(), 40);
        assert!(
            answers[0].iter().all(|a| a.as_deref() == Ok("answered")),
            "{answers:?}"
        );
    }

    #[tokio::test]
    async fn a_panicking_request_ends_only_its_own_stream() {
        let answers = answers(&[&["/ok", "/panic", "/ok"], &["/ok"]]).await;
        assert!(answers[0][1].is_err(), "{:?}", answers[0][1]);
        assert_eq!(answers[0][0].as_deref(), Ok("answered"));
        assert_eq!(answers[0][2].as_deref(), Ok("answered"));
        // The connection still serves requests after the panic.
        assert_eq!(answers[1][0].as_deref(), Ok("answered"));
    }
}
