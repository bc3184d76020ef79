//! The benchmark's floor: the least a Rust HTTPS server can do for a review,
//! a bare hyper + rustls server that reads the body and answers fixed bytes.
//! `tests/bench/serve.sh` drives it beside keyhook; keyhook's throughput is
//! reported as a ratio of this one's.
//!
//! With `--echo-uid` it is the least a *webhook* can do: the apiserver
//! refuses an answer whose `response.uid` is not its request's, so this
//! floor checks the body is JSON and reads `request.uid` from it (serde_json,
//! everything else skipped), and answers the same bytes with that uid.
//!
//! Usage: floor_server <addr> <cert-dir> <response-file> [--echo-uid]

use std::{convert::Infallible, net::SocketAddr, path::PathBuf, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use rustls::{ServerConfig, crypto::ring::default_provider};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: floor_server <addr> <cert-dir> <response-file>";
    let addr: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let response = Bytes::from(std::fs::read(args.next().ok_or(usage)?)?);
    let answer = Arc::new(match args.next().as_deref() {
        None => Answer::Fixed(response),
        Some("--echo-uid") => Answer::echoing(&response).ok_or("the response has no uid")?,
        Some(other) => return Err(format!("unknown argument {other}; {usage}").into()),
    });

    let certs =
        CertificateDer::pem_file_iter(dir.join("tls.crt"))?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(dir.join("tls.key"))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(addr).await?;
    println!("floor server on https://{addr}");

    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let (acceptor, answer) = (acceptor.clone(), answer.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = service_fn(move |request: Request<Incoming>| {
                let answer = answer.clone();
                async move {
                    // Read the whole review, as a webhook must.
                    let body = match request.into_body().collect().await {
                        Ok(body) => body.to_bytes(),
                        Err(_) => Bytes::new(),
                    };
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(answer.to(&body)))
                            .unwrap_or_default(),
                    )
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

/// What the floor answers.
enum Answer {
    /// The same bytes to every request.
    Fixed(Bytes),
    /// The response's bytes around its uid, the request's uid between.
    Echoing { before: Vec<u8>, after: Vec<u8> },
}

impl Answer {
    fn echoing(response: &[u8]) -> Option<Self> {
        const UID: &[u8] = b"\"uid\":";
        let start = response.windows(UID.len()).position(|w| w == UID)? + UID.len();
        let quoted = response[start + 1..].iter().position(|&b| b == b'"')? + 2;
        Some(Self::Echoing {
            before: response[..start].to_vec(),
            after: response[start + quoted..].to_vec(),
        })
    }

    fn to(&self, review: &[u8]) -> Bytes {
        #[derive(Deserialize)]
        struct Review<'a> {
            #[serde(borrow)]
            request: Request<'a>,
        }
        #[derive(Deserialize)]
        struct Request<'a> {
            #[serde(borrow)]
            uid: std::borrow::Cow<'a, str>,
        }
        match self {
            Answer::Fixed(bytes) => bytes.clone(),
            Answer::Echoing { before, after } => {
                let Ok(review) = serde_json::from_slice::<Review>(review) else {
                    return Bytes::from_static(b"not an AdmissionReview\n");
                };
                let mut answer = Vec::with_capacity(before.len() + after.len() + 64);
                answer.extend_from_slice(before);
                let _ = serde_json::to_writer(&mut answer, &review.request.uid);
                answer.extend_from_slice(after);
                Bytes::from(answer)
            }
        }
    }
}
