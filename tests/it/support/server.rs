//! An in-process keyhook on loopback, TLS clients that trust a given CA,
//! certificate fixtures, and external tools.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use keyhook::{
    certs::{CertificateAuthority, PemBundle, PrivateKeyPem, ServiceIdentity, SubjectAltName},
    config::ServeArgs,
    server::{Mode, Server},
};
use rustls::{ClientConfig, RootCertStore, crypto::ring::default_provider, pki_types::ServerName};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use time::OffsetDateTime;
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};
use tokio_util::sync::CancellationToken;

/// A real AdmissionReview for a pod created by a Deployment's ReplicaSet.
pub const POD_REVIEW: &str = include_str!("../../fixtures/admission/pod-create-deployment.json");
/// Its request uid.
pub const POD_REVIEW_UID: &str = "4b2e1f0a-8c3d-4e5f-9a6b-7c8d9e0f1a2b";

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    serve: ServeArgs,
}

/// Parses `keyhook serve` flags as the binary would.
pub fn serve_args(flags: &[&str]) -> ServeArgs {
    let argv = std::iter::once("keyhook").chain(flags.iter().copied());
    Flags::try_parse_from(argv)
        .unwrap_or_else(|e| panic!("bad test flags: {e}"))
        .serve
}

/// A keyhook running in this process on loopback ports.
pub struct Running {
    pub webhook: SocketAddr,
    pub health: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), keyhook::server::Error>>,
}

impl Running {
    /// Starts keyhook with `cert_dir` and extra flags, on ports picked by the OS.
    pub async fn start(mode: Mode, cert_dir: &Path, extra: &[&str]) -> Self {
        let dir = cert_dir.to_str().expect("utf-8 temp path");
        let mut flags = vec![
            "--webhook-addr",
            "127.0.0.1:0",
            "--health-addr",
            "127.0.0.1:0",
            "--cert-dir",
            dir,
        ];
        flags.extend_from_slice(extra);
        let server = Server::bind(serve_args(&flags), mode)
            .await
            .expect("keyhook binds");
        let (webhook, health) = (server.webhook_addr(), server.health_addr());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        Self {
            webhook,
            health,
            shutdown,
            task,
        }
    }

    /// GETs a path on the health listener: status and body.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let response = http_client()
            .get(format!("http://{}{path}", self.health))
            .send()
            .await
            .expect("health listener answers");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// Stops the server and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("keyhook stops within 30 s")
            .expect("server task did not panic")
            .expect("server exits cleanly");
    }
}

/// A plain-HTTP client (reqwest is built without a default TLS provider).
pub fn http_client() -> reqwest::Client {
    // Err means a provider is installed already, which is as good.
    let _ = default_provider().install_default();
    reqwest::Client::new()
}

/// The service identity of the default flags.
pub fn default_identity() -> ServiceIdentity {
    ServiceIdentity {
        name: "keyhook".into(),
        namespace: "keyhook".into(),
        cluster_domain: "cluster.local".into(),
    }
}

/// A CA for tests, and certificates it signs.
pub struct TestCa {
    pub ca: CertificateAuthority,
}

impl TestCa {
    pub fn new() -> Self {
        Self {
            ca: CertificateAuthority::generate(OffsetDateTime::now_utc()).expect("CA"),
        }
    }

    /// A serving bundle for the default identity plus localhost, valid from
    /// `now + offset` for `validity`.
    pub fn bundle_at(&self, offset: time::Duration, validity: Duration) -> PemBundle {
        let sans = default_identity().san_list(&[], true);
        let (tls_crt, tls_key) = self
            .ca
            .issue_serving(&sans, validity, OffsetDateTime::now_utc() + offset)
            .expect("leaf");
        PemBundle {
            tls_crt,
            tls_key,
            ca_crt: self.ca.cert_pem().to_string(),
            ca_key: None,
        }
    }

    /// A serving bundle valid now for a day.
    pub fn bundle(&self) -> PemBundle {
        self.bundle_at(time::Duration::ZERO, Duration::from_secs(86_400))
    }

    /// A bundle for arbitrary SANs.
    pub fn bundle_for(&self, sans: &[SubjectAltName]) -> PemBundle {
        let (tls_crt, tls_key) = self
            .ca
            .issue_serving(sans, Duration::from_secs(86_400), OffsetDateTime::now_utc())
            .expect("leaf");
        PemBundle {
            tls_crt,
            tls_key,
            ca_crt: self.ca.cert_pem().to_string(),
            ca_key: None,
        }
    }
}

/// A cert directory laid out the way the kubelet lays out a Secret volume:
/// a timestamped directory, a `..data` symlink to it, and file symlinks
/// through `..data`. [`KubeletDir::swap`] replaces the content atomically.
pub struct KubeletDir {
    pub path: PathBuf,
    generation: u32,
}

impl KubeletDir {
    pub fn new(path: &Path, bundle: &PemBundle) -> Self {
        let mut dir = Self {
            path: path.to_path_buf(),
            generation: 0,
        };
        dir.swap(bundle);
        for name in ["tls.crt", "tls.key", "ca.crt"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), path.join(name))
                .expect("file symlink");
        }
        dir
    }

    /// Writes `bundle` into a new timestamped directory and renames a new
    /// `..data` symlink over the old one, as the kubelet's atomic writer does.
    pub fn swap(&mut self, bundle: &PemBundle) {
        self.generation += 1;
        let versioned = format!("..2026_11_22_00_00_00.{:04}", self.generation);
        let target = self.path.join(&versioned);
        std::fs::create_dir_all(&target).expect("versioned dir");
        std::fs::write(target.join("tls.crt"), &bundle.tls_crt).expect("write");
        std::fs::write(target.join("tls.key"), bundle.tls_key.expose()).expect("write");
        std::fs::write(target.join("ca.crt"), &bundle.ca_crt).expect("write");
        let tmp_link = self.path.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp_link);
        std::os::unix::fs::symlink(&versioned, &tmp_link).expect("..data_tmp");
        std::fs::rename(&tmp_link, self.path.join("..data")).expect("rename ..data");
    }
}

/// A rustls client configuration trusting the CAs in `ca_pem`, offering `alpn`.
pub fn client_config(ca_pem: &str, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA cert");
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Opens a TLS connection to `addr` presenting `server_name` as SNI.
pub async fn tls_connect(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
    server_name: &str,
) -> Result<TlsStream<TcpStream>, std::io::Error> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(server_name.to_string()).expect("server name");
    TlsConnector::from(config).connect(name, tcp).await
}

/// The DER of the certificate the server presented on `stream`.
pub fn served_leaf(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default()
}

/// An HTTP/2 connection over TLS that trusts `ca_pem`.
pub struct H2Connection {
    pub sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    pub leaf: Vec<u8>,
}

impl H2Connection {
    pub async fn open(ca_pem: &str, addr: SocketAddr, server_name: &str) -> Result<Self, String> {
        let stream = tls_connect(client_config(ca_pem, &[b"h2"]), addr, server_name)
            .await
            .map_err(|e| e.to_string())?;
        let leaf = served_leaf(&stream);
        let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]), "server negotiates h2");
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        Ok(Self { sender, leaf })
    }

    /// POSTs a JSON body and returns status and body.
    pub async fn post(&mut self, path: &str, body: &str) -> Result<(u16, String), String> {
        let request = Request::post(format!("https://keyhook{path}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let response: Response<Incoming> = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// Whether external tools are mandatory (CI sets KEYHOOK_REQUIRE_TOOLS=1).
pub fn tools_required() -> bool {
    std::env::var("KEYHOOK_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

/// Whether `tool` is on PATH; when it is not, fails under CI and otherwise
/// prints why the check is skipped.
pub fn have_tool(tool: &str) -> bool {
    super::backends::require_tool(tool).is_some()
}

/// A key that parses but belongs to no certificate here.
pub fn unrelated_key() -> PrivateKeyPem {
    TestCa::new().bundle().tls_key
}
