//! Shared helpers of the provider tests: real local backends on loopback
//! ports, and a 1Password Connect server written from the Connect API docs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// The tool's path, or `None` (test skips) — unless `KEYHOOK_REQUIRE_TOOLS=1`,
/// where a missing tool fails the test. Every test that drives an external
/// program checks for it here.
pub fn require_tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if super::tools_required() {
            panic!(
                "`{name}` is required (KEYHOOK_REQUIRE_TOOLS=1); run tests/tools/install-tools.sh"
            );
        }
        eprintln!("SKIPPED: `{name}` not on PATH; run tests/tools/install-tools.sh");
    }
    found
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral loopback port")
        .local_addr()
        .expect("local addr")
        .port()
}

pub fn http() -> reqwest::Client {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .expect("reqwest client")
}

/// Waits for a freshly started server to answer `url`. An error when the
/// process exits first (another test may have taken its port in between) or
/// after a minute (a loaded CI machine starts OpenBao slowly).
async fn wait_until_up(
    url: &str,
    client: &reqwest::Client,
    child: &mut Child,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        if client.get(url).send().await.is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "the server exited ({status}) before answering {url}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("{url} did not answer within 60 s"))
}

/// Starts a server with `start` (on a fresh port each time), three times at
/// most.
async fn start_with_retries<T, F, Fut>(what: &str, mut start: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let mut errors = Vec::new();
    for _ in 0..3 {
        match start().await {
            Ok(server) => return server,
            Err(e) => errors.push(e),
        }
    }
    panic!("{what} did not start: {}", errors.join("; "));
}

/// A real OpenBao dev server on a free loopback port; stopped on drop.
pub struct Bao {
    /// Held so the server is killed on drop (`kill_on_drop`).
    _child: Child,
    pub addr: String,
    pub token: String,
    pub ca_pem: Option<Vec<u8>>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Bao {
    pub async fn start(tls: bool) -> Option<Self> {
        let bao = require_tool("bao")?;
        Some(start_with_retries("bao server -dev", || Self::start_once(&bao, tls)).await)
    }

    async fn start_once(bao: &std::path::Path, tls: bool) -> Result<Self, String> {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let token = format!("root-{port}");
        let mut command = Command::new(bao);
        command.args([
            "server",
            "-dev",
            &format!("-dev-listen-address=127.0.0.1:{port}"),
            &format!("-dev-root-token-id={token}"),
        ]);
        if tls {
            command.args([
                "-dev-tls",
                &format!("-dev-tls-cert-dir={}", dir.path().display()),
            ]);
        }
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start bao");
        let scheme = if tls { "https" } else { "http" };
        let addr = format!("{scheme}://127.0.0.1:{port}");
        let mut ca_pem = None;
        let http = if tls {
            let ca_path = dir.path().join("vault-ca.pem");
            for _ in 0..200 {
                if ca_path.exists()
                    && std::fs::metadata(&ca_path)
                        .map(|m| m.len() > 0)
                        .unwrap_or(false)
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let pem = std::fs::read(&ca_path)
                .map_err(|e| format!("bao -dev-tls wrote no CA to {}: {e}", ca_path.display()))?;
            let mut roots = rustls::RootCertStore::empty();
            use rustls_pki_types::pem::PemObject;
            for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
                roots.add(cert.expect("CA PEM")).expect("add CA");
            }
            ca_pem = Some(pem);
            let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
            reqwest::Client::builder()
                .use_preconfigured_tls(tls)
                .build()
                .expect("client")
        } else {
            http()
        };
        wait_until_up(&format!("{addr}/v1/sys/health"), &http, &mut child).await?;
        Ok(Self {
            _child: child,
            addr,
            token,
            ca_pem,
            http,
            _dir: dir,
        })
    }

    /// Writes a new version of `key` in the KV v2 engine mounted at
    /// `secret/` (in `namespace`, when given), as root.
    pub async fn put_kv(&self, namespace: Option<&str>, key: &str, data: Value) -> Value {
        let path = format!("secret/data/{key}");
        self.api(
            namespace,
            reqwest::Method::POST,
            &path,
            Some(json!({"data": data})),
        )
        .await
    }

    /// A raw API call as root; panics on failure (test setup).
    pub async fn api(
        &self,
        namespace: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let mut request = self
            .http
            .request(method, format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", &self.token);
        if let Some(ns) = namespace {
            request = request.header("X-Vault-Namespace", ns);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("bao request");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "bao {path}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

/// A real moto server (AWS mock) on a free loopback port; stopped on drop.
pub struct Moto {
    /// Held so the server is killed on drop (`kill_on_drop`).
    _child: Child,
    pub endpoint: String,
    http: reqwest::Client,
}

impl Moto {
    pub async fn start() -> Option<Self> {
        let moto = require_tool("moto_server")?;
        Some(start_with_retries("moto_server", || Self::start_once(&moto)).await)
    }

    async fn start_once(moto: &std::path::Path) -> Result<Self, String> {
        let port = free_port();
        let mut child = Command::new(moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start moto_server");
        let endpoint = format!("http://127.0.0.1:{port}");
        let http = http();
        wait_until_up(&format!("{endpoint}/moto-api/"), &http, &mut child).await?;
        Ok(Self {
            _child: child,
            endpoint,
            http,
        })
    }

    /// Calls a Secrets Manager action (moto routes by the credential scope;
    /// it does not check signatures).
    pub async fn secretsmanager(&self, action: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}/", self.endpoint))
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", format!("secretsmanager.{action}"))
            .header("authorization", "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/secretsmanager/aws4_request, SignedHeaders=host, Signature=0")
            .json(&body)
            .send()
            .await
            .expect("moto request");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "moto {action}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

impl Moto {
    /// Calls an action of a Query-protocol service (`iam`, `sts`) and
    /// returns the XML answer.
    pub async fn query(&self, service: &str, params: &[(&str, &str)]) -> String {
        let response = self
            .http
            .post(format!("{}/", self.endpoint))
            .header(
                "authorization",
                format!("AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"),
            )
            .form(params)
            .send()
            .await
            .expect("moto request");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "moto {service} {params:?}: {status}: {text}"
        );
        text
    }

    /// From now on moto checks signatures and IAM policies, after `free`
    /// more requests that it lets through unchecked.
    pub async fn enforce_auth_after(&self, free: u32) {
        let response = self
            .http
            .post(format!("{}/moto-api/reset-auth", self.endpoint))
            .body(free.to_string())
            .send()
            .await
            .expect("moto reset-auth");
        assert!(
            response.status().is_success(),
            "moto reset-auth: {}",
            response.status()
        );
    }
}

/// The text of the first `<tag>` element in `xml`.
pub fn xml_text<'a>(xml: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .map(|i| i + open.len())
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"));
    let end = xml[start..].find('<').map_or(xml.len(), |i| start + i);
    &xml[start..end]
}

/// One request the Connect server saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub filter: Option<String>,
    pub authorization: Option<String>,
}

#[derive(Default)]
pub struct ConnectState {
    pub token: String,
    /// `(id, name)`.
    pub vaults: Vec<(String, String)>,
    /// Items by vault id: full item JSON.
    pub items: HashMap<String, Vec<Value>>,
    pub seen: Mutex<Vec<Seen>>,
    pub item_reads: AtomicUsize,
    /// Answer the next N item reads with `fail_status`.
    pub fail_next: AtomicU32,
    pub fail_status: AtomicU32,
    /// Delay of every answer, in milliseconds.
    pub delay_ms: AtomicU32,
    /// Requests per whole second since start (for the rate-limit test).
    pub per_second: Mutex<HashMap<u64, u32>>,
    pub started: Mutex<Option<std::time::Instant>>,
}

/// A local 1Password Connect server answering with the documented shapes.
pub struct Connect {
    pub url: String,
    pub state: Arc<ConnectState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Connect {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn connect_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({ "status": status.as_u16(), "message": message })),
    )
        .into_response()
}

impl ConnectState {
    fn record(
        &self,
        headers: &HeaderMap,
        path: String,
        filter: Option<String>,
    ) -> Option<Response> {
        let authorization = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.seen.lock().unwrap().push(Seen {
            path,
            filter,
            authorization: authorization.clone(),
        });
        {
            let mut started = self.started.lock().unwrap();
            let start = *started.get_or_insert_with(std::time::Instant::now);
            *self
                .per_second
                .lock()
                .unwrap()
                .entry(start.elapsed().as_secs())
                .or_default() += 1;
        }
        if authorization.as_deref() != Some(&format!("Bearer {}", self.token)) {
            return Some(connect_error(
                StatusCode::UNAUTHORIZED,
                "Invalid token signature",
            ));
        }
        None
    }

    async fn pause(&self) {
        let delay = self.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay.into())).await;
        }
    }
}

/// Parses a SCIM `field eq "value"` filter.
fn eq_filter(filter: &str, field: &str) -> Option<String> {
    let rest = filter
        .strip_prefix(field)?
        .trim_start()
        .strip_prefix("eq")?
        .trim();
    Some(rest.strip_prefix('"')?.strip_suffix('"')?.to_string())
}

async fn list_vaults(
    State(state): State<Arc<ConnectState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let filter = query.get("filter").cloned();
    if let Some(denied) = state.record(&headers, "/v1/vaults".into(), filter.clone()) {
        return denied;
    }
    let name = filter.as_deref().and_then(|f| eq_filter(f, "name"));
    let vaults: Vec<Value> = state
        .vaults
        .iter()
        .filter(|(_, n)| name.as_ref().is_none_or(|want| want == n))
        .map(|(id, n)| json!({ "id": id, "name": n, "type": "USER_CREATED" }))
        .collect();
    Json(vaults).into_response()
}

async fn get_vault(
    State(state): State<Arc<ConnectState>>,
    headers: HeaderMap,
    Path(vault): Path<String>,
) -> Response {
    if let Some(denied) = state.record(&headers, format!("/v1/vaults/{vault}"), None) {
        return denied;
    }
    match state.vaults.iter().find(|(id, _)| *id == vault) {
        Some((id, name)) => Json(json!({ "id": id, "name": name })).into_response(),
        None => connect_error(StatusCode::NOT_FOUND, "vault not found"),
    }
}

async fn list_items(
    State(state): State<Arc<ConnectState>>,
    headers: HeaderMap,
    Path(vault): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let filter = query.get("filter").cloned();
    if let Some(denied) = state.record(
        &headers,
        format!("/v1/vaults/{vault}/items"),
        filter.clone(),
    ) {
        return denied;
    }
    state.pause().await;
    let Some(items) = state.items.get(&vault) else {
        return connect_error(StatusCode::NOT_FOUND, "vault not found");
    };
    let title = filter.as_deref().and_then(|f| eq_filter(f, "title"));
    let summaries: Vec<Value> = items
        .iter()
        .filter(|item| title.as_ref().is_none_or(|t| item["title"] == *t))
        .map(|item| json!({ "id": item["id"], "title": item["title"], "vault": { "id": vault }, "category": item["category"] }))
        .collect();
    Json(summaries).into_response()
}

async fn get_item(
    State(state): State<Arc<ConnectState>>,
    headers: HeaderMap,
    Path((vault, item)): Path<(String, String)>,
) -> Response {
    if let Some(denied) = state.record(&headers, format!("/v1/vaults/{vault}/items/{item}"), None) {
        return denied;
    }
    state.item_reads.fetch_add(1, Ordering::SeqCst);
    if state.fail_next.load(Ordering::SeqCst) > 0 {
        state.fail_next.fetch_sub(1, Ordering::SeqCst);
        let status = StatusCode::from_u16(state.fail_status.load(Ordering::SeqCst) as u16).unwrap();
        return connect_error(status, "try again later");
    }
    state.pause().await;
    match state
        .items
        .get(&vault)
        .and_then(|items| items.iter().find(|i| i["id"] == *item))
    {
        Some(found) => Json(found.clone()).into_response(),
        None => connect_error(StatusCode::NOT_FOUND, "item not found"),
    }
}

/// A full item with fields `label → value`.
pub fn item(id: &str, title: &str, vault: &str, fields: &[(&str, &str)]) -> Value {
    let fields: Vec<Value> = fields.iter().enumerate().map(|(i, (label, value))| json!({ "id": format!("f{i}"), "label": label, "value": value, "type": "CONCEALED" })).collect();
    json!({ "id": id, "title": title, "vault": { "id": vault }, "category": "LOGIN", "fields": fields })
}

impl Connect {
    pub async fn start(state: ConnectState) -> Self {
        let state = Arc::new(state);
        let router = Router::new()
            .route("/v1/vaults", get(list_vaults))
            .route("/v1/vaults/{vault}", get(get_vault))
            .route("/v1/vaults/{vault}/items", get(list_items))
            .route("/v1/vaults/{vault}/items/{item}", get(get_item))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("serve");
        });
        Self {
            url: format!("http://{addr}"),
            state,
            task,
        }
    }
}

/// A `v1` Secret document with string data.
pub fn secret_doc(namespace: &str, name: &str, data: &[(&str, &str)]) -> String {
    let mut doc = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\nstringData:\n"
    );
    for (k, v) in data {
        doc.push_str(&format!("  {k}: {v:?}\n"));
    }
    doc
}
