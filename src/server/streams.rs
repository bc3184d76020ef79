//! HTTP/2 streams run by their connection's own task.
//!
//! hyper hands every HTTP/2 request (a stream) to an executor. Spawned on
//! tokio, each request is a task of its own that, once answered, wakes the
//! connection's task, and tokio runs a task woken that way next: the
//! connection writes every answer alone, one TLS record and one `writev`
//! each, and every request pays for a task's scheduling and wake-ups
//! (`docs/benchmarks.md` has the measurements).
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
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Waker},
};

use futures::{
    FutureExt, StreamExt,
    stream::FuturesUnordered,
    task::{ArcWake, AtomicWaker},
};

/// A stream's future, as hyper builds it: the request's service call and
/// the writing of its answer.
type Stream = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How many answers one pass writes at most before the connection flushes
/// them: all of a pass's answers in one write costs the least CPU, but a
/// client that sent many requests at once then waits for the last before it
/// reads the first. This measured best on one connection with many streams
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
        wakes: Arc<Wakes>,
        waker: Waker,
    }
}

/// The wake-ups of a connection and its streams.
///
/// An answered stream wakes the connection (it has an answer to write)
/// while the connection's task is still polling it. Woken that way, tokio
/// would poll the task once more after it returns, from the back of the
/// worker's queue, and rouse the other, parked worker to steal it: a
/// thread switch per request. A wake-up during the poll is only noted
/// here, and the poll goes round again instead.
#[derive(Default)]
struct Wakes {
    task: AtomicWaker,
    polling: AtomicBool,
    woken: AtomicBool,
}

impl ArcWake for Wakes {
    fn wake_by_ref(wakes: &Arc<Self>) {
        wakes.woken.store(true, Ordering::SeqCst);
        if !wakes.polling.load(Ordering::SeqCst) {
            wakes.task.wake();
        }
    }
}

impl<C> WithStreams<C> {
    /// Serves `connection`, whose executor is `queue`.
    pub fn new(connection: C, queue: StreamQueue) -> Self {
        let wakes = Arc::new(Wakes::default());
        Self {
            connection,
            queue,
            streams: FuturesUnordered::new(),
            waker: futures::task::waker(wakes.clone()),
            wakes,
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
        let this = self.project();
        this.wakes.task.register(cx.waker());
        this.wakes.polling.store(true, Ordering::SeqCst);
        let mut inner = Context::from_waker(this.waker);
        let polled = poll_passes(
            this.connection,
            this.queue,
            this.streams,
            this.wakes,
            &mut inner,
        );
        this.wakes.polling.store(false, Ordering::SeqCst);
        match polled {
            Poll::Ready(output) => Poll::Ready(output),
            Poll::Pending => {
                // Woken after the last pass looked, or out of passes.
                if this.wakes.woken.load(Ordering::SeqCst) {
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
        }
    }
}

/// Polls the connection and its streams in turn while either has work, for
/// at most [`PASSES_PER_POLL`] passes; `Pending` leaves `woken` set when
/// there is work left.
fn poll_passes<C: Future>(
    mut connection: Pin<&mut C>,
    queue: &StreamQueue,
    streams: &mut FuturesUnordered<Stream>,
    wakes: &Wakes,
    cx: &mut Context<'_>,
) -> Poll<C::Output> {
    for _ in 0..PASSES_PER_POLL {
        wakes.woken.store(false, Ordering::SeqCst);
        // Reads new frames, starts streams, writes the answers so far.
        if let Poll::Ready(output) = connection.as_mut().poll(cx) {
            return Poll::Ready(output);
        }
        streams.extend(queue.take());
        let mut answered = 0;
        while answered < ANSWERS_PER_WRITE {
            match streams.poll_next_unpin(cx) {
                Poll::Ready(Some(())) => answered += 1,
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        if !wakes.woken.load(Ordering::SeqCst) && answered < ANSWERS_PER_WRITE {
            // Nothing woke the connection or a stream since they were
            // polled: all wait on I/O, which will wake this task.
            return Poll::Pending;
        }
    }
    wakes.woken.store(true, Ordering::SeqCst);
    Poll::Pending
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
                match request.uri().path() {
                    "/panic" => panic!("a handler's bug"),
                    // Woken by the timer, from outside the connection's poll.
                    "/slow" => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                    // Woken by another thread.
                    "/elsewhere" => {
                        let (done, wait) = tokio::sync::oneshot::channel();
                        std::thread::spawn(move || done.send(()));
                        let _ = wait.await;
                    }
                    _ => {}
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
            let round = futures::future::join_all(calls);
            let round = tokio::time::timeout(std::time::Duration::from_secs(10), round).await;
            answers.push(round.expect("every request is answered within 10 s"));
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

    /// Streams that wait, woken from outside the connection's task, are
    /// answered, beside ones that do not wait.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_streams_are_woken_and_answered() {
        let paths: Vec<&'static str> = ["/slow", "/ok", "/elsewhere"]
            .into_iter()
            .cycle()
            .take(60)
            .collect();
        let answers = answers(&[&paths, &paths]).await;
        for round in answers {
            assert!(
                round.iter().all(|a| a.as_deref() == Ok("answered")),
                "{round:?}"
            );
        }
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
