//! An in-memory kube-apiserver for scenarios with several replicas, many
//! hours of (paused) time and cluster-sized object counts, where scripting
//! every request would drown the behaviour under test.
//!
//! Each object is kept as its serialized JSON (40,000 Secrets cost their
//! bytes, not a tree of values), indexed by resource, namespace and name. It
//! answers GET (one object, or a list filtered by label and field selectors
//! and paginated with `limit`/`continue`), watches (events after a
//! resourceVersion, a bookmark before `timeoutSeconds` ends the stream, `410
//! Gone` for a version older than its history), POST, PUT (409 on a stale
//! resourceVersion), server-side apply (creating, or merging list maps by
//! `name`) and
//! DELETE, with the Status bodies of the real apiserver. Metadata-only
//! requests (`Accept: …;as=PartialObjectMetadata…`) get
//! `PartialObjectMetadata(List)`. Every request is recorded by verb, resource
//! and selectors, with the replica that made it.
//!
//! The same file is built into `examples/scale_apiserver.rs`, which serves
//! it over HTTP to a `keyhook` process; it therefore reads its fixtures
//! itself and needs nothing else from `support`.

#![allow(dead_code)] // each user (the test crate, the bench example) uses a part

use std::{
    collections::{BTreeMap, VecDeque},
    convert::Infallible,
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::watch;

pub type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

/// How many events the apiserver remembers; a watch from an older
/// resourceVersion gets `410 Gone` (the watch cache's window).
const HISTORY: usize = 10_000;

/// A write the fake apiserver accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The replica whose client made it.
    pub replica: String,
    pub method: String,
    pub path: String,
}

/// The verb of a request, as RBAC and the apiserver's metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
}

/// One request, by verb, resource and selectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    /// The replica whose client made it (over HTTP: the bearer token).
    pub replica: String,
    pub verb: Verb,
    /// The resource's plural, e.g. `secrets`.
    pub resource: &'static str,
    /// `None` for a cluster-wide request.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    /// Asked for `PartialObjectMetadata` only.
    pub metadata_only: bool,
    /// A later page of a list (`continue` set).
    pub continued: bool,
    /// A watch answered `410 Gone`: its resourceVersion was too old.
    pub gone: bool,
    /// Path and query, as sent.
    pub uri: String,
}

impl ApiRequest {
    /// A LIST or WATCH of every object of its resource in the cluster.
    pub fn is_unfiltered_cluster_wide(&self) -> bool {
        matches!(self.verb, Verb::List | Verb::Watch)
            && self.namespace.is_none()
            && self.label_selector.is_none()
            && self.field_selector.is_none()
    }

    /// The first page of a LIST: a list as a client starts it.
    pub fn starts_list(&self) -> bool {
        self.verb == Verb::List && !self.continued
    }

    /// What a request is about, without the replica: verb, resource,
    /// scope and selectors (the key requests are counted by).
    pub fn shape(&self) -> String {
        let mut shape = format!("{:?} {}", self.verb, self.resource).to_uppercase();
        match (&self.namespace, &self.name) {
            (Some(ns), Some(name)) => shape.push_str(&format!(" {ns}/{name}")),
            (Some(ns), None) => shape.push_str(&format!(" in {ns}")),
            (None, Some(name)) => shape.push_str(&format!(" {name}")),
            (None, None) => shape.push_str(" (all namespaces)"),
        }
        if let Some(labels) = &self.label_selector {
            shape.push_str(&format!(" labels {labels}"));
        }
        if let Some(fields) = &self.field_selector {
            shape.push_str(&format!(" fields {fields}"));
        }
        if self.metadata_only {
            shape.push_str(" [metadata]");
        }
        if self.continued {
            shape.push_str(" (next page)");
        }
        shape
    }
}

impl fmt::Display for ApiRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} by {}", self.shape(), self.replica)
    }
}

/// The resources served: plural, kind, apiVersion, namespaced.
const RESOURCES: [(&str, &str, &str, bool); 10] = [
    ("secrets", "Secret", "v1", true),
    ("pods", "Pod", "v1", true),
    ("serviceaccounts", "ServiceAccount", "v1", true),
    ("namespaces", "Namespace", "v1", false),
    (
        "secretstores",
        "SecretStore",
        "external-secrets.io/v1",
        true,
    ),
    (
        "clustersecretstores",
        "ClusterSecretStore",
        "external-secrets.io/v1",
        false,
    ),
    ("leases", "Lease", "coordination.k8s.io/v1", true),
    (
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        "admissionregistration.k8s.io/v1",
        false,
    ),
    (
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        "admissionregistration.k8s.io/v1",
        false,
    ),
    (
        "customresourcedefinitions",
        "CustomResourceDefinition",
        "apiextensions.k8s.io/v1",
        false,
    ),
];

#[derive(Debug, Clone, Copy)]
struct Resource {
    plural: &'static str,
    kind: &'static str,
    api_version: &'static str,
}

fn resource_of_kind(kind: &str) -> Resource {
    let (plural, kind, api_version, _) = RESOURCES
        .iter()
        .find(|(_, k, _, _)| *k == kind)
        .unwrap_or_else(|| panic!("the fake apiserver does not serve kind {kind}"));
    Resource {
        plural,
        kind,
        api_version,
    }
}

/// `(resource plural, namespace or "", name)`.
type Key = (&'static str, String, String);

/// One object, as the apiserver would send it.
#[derive(Debug)]
struct Stored {
    labels: BTreeMap<String, String>,
    json: Bytes,
}

impl Stored {
    fn new(object: &Value) -> Self {
        let labels = object["metadata"]["labels"]
            .as_object()
            .map(|labels| {
                labels
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            labels,
            json: Bytes::from(serde_json::to_vec(object).unwrap()),
        }
    }

    fn value(&self) -> Value {
        serde_json::from_slice(&self.json).unwrap()
    }

    /// The object, or its `PartialObjectMetadata` when `metadata_only`.
    fn body(&self, metadata_only: bool) -> Bytes {
        if !metadata_only {
            return self.json.clone();
        }
        let object = self.value();
        Bytes::from(
            serde_json::to_vec(&json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": object["metadata"],
            }))
            .unwrap(),
        )
    }
}

#[derive(Debug, Clone)]
struct Event {
    rv: u64,
    key: Key,
    kind: &'static str,
    object: Arc<Stored>,
}

/// An answer held back: `replica`'s `verb` on `path` is answered `by` late
/// (with the data as it was when the request arrived).
#[derive(Debug, Clone)]
struct Delay {
    replica: String,
    verb: Verb,
    path: String,
    by: Duration,
}

#[derive(Debug, Default)]
struct State {
    rv: u64,
    objects: BTreeMap<Key, Arc<Stored>>,
    history: VecDeque<Event>,
    /// Watches from an older resourceVersion get 410 Gone.
    compacted: u64,
    writes: Vec<Write>,
    requests: Vec<ApiRequest>,
    /// Collections whose writes fail with HTTP 500, to hold a scenario still.
    failing: Vec<String>,
    delays: Vec<Delay>,
    /// TokenRequests created: (namespace/name of the account, spec).
    token_requests: Vec<(String, Value)>,
}

/// The in-memory apiserver.
#[derive(Clone)]
pub struct FakeApiServer {
    state: Arc<Mutex<State>>,
    /// The newest resourceVersion, for watches to wake on.
    changed: Arc<watch::Sender<u64>>,
    /// Moves to end every open watch (as an apiserver restart does).
    disconnect: Arc<watch::Sender<u64>>,
}

impl Default for FakeApiServer {
    fn default() -> Self {
        Self::new()
    }
}

/// A fixture under `tests/fixtures/kube/`, parsed.
pub fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kube")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// A fixture as a client creates it: without what the apiserver sets.
pub fn fixture_as_created(name: &str) -> Value {
    let mut object = fixture(name);
    let metadata = object["metadata"].as_object_mut().unwrap();
    for server_set in [
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "managedFields",
        "generation",
    ] {
        metadata.remove(server_set);
    }
    object.as_object_mut().unwrap().remove("status");
    object
}

fn status(code: u16, reason: &str, message: &str, plural: &str, name: &str) -> Value {
    let mut status = match code {
        404 => fixture("status-404-notfound.json"),
        409 if reason == "Conflict" => fixture("status-409-conflict.json"),
        410 => fixture("status-410-expired.json"),
        _ => {
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": code})
        }
    };
    status["message"] = message.into();
    status["reason"] = reason.into();
    if code != 410 {
        status["details"] = json!({ "name": name, "kind": plural });
    }
    status
}

impl FakeApiServer {
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
            disconnect: Arc::new(watch::channel(0).0),
        }
    }

    /// The apiserver as a tower service for `replica`'s client; its requests
    /// are recorded under that name.
    pub fn service(
        &self,
        replica: &str,
    ) -> tower::util::BoxCloneService<Request<kube::client::Body>, Response<ResponseBody>, Infallible>
    {
        let server = self.clone();
        let replica = replica.to_string();
        tower::util::BoxCloneService::new(tower::service_fn(
            move |request: Request<kube::client::Body>| {
                let server = server.clone();
                let replica = replica.clone();
                async move {
                    let (parts, body) = request.into_parts();
                    let bytes = body.collect_bytes().await.unwrap();
                    Ok::<_, Infallible>(
                        server
                            .handle(&replica, &parts.method, &parts.uri, &parts.headers, bytes)
                            .await,
                    )
                }
            },
        ))
    }

    /// A client for `replica`.
    pub fn client(&self, replica: &str) -> kube::Client {
        kube::Client::new(self.service(replica), "keyhook")
    }

    /// Serves the apiserver over plain HTTP/1.1 on `listener` until the
    /// task is aborted; a request's replica is its bearer token.
    pub fn serve(&self, listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
        let server = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let server = server.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: Request<hyper::body::Incoming>| {
                            let server = server.clone();
                            async move {
                                let (parts, body) = request.into_parts();
                                let bytes = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let replica = parts
                                    .headers
                                    .get(http::header::AUTHORIZATION)
                                    .and_then(|v| v.to_str().ok())
                                    .and_then(|v| v.strip_prefix("Bearer "))
                                    .unwrap_or("anonymous")
                                    .to_string();
                                Ok::<_, Infallible>(
                                    server
                                        .handle(
                                            &replica,
                                            &parts.method,
                                            &parts.uri,
                                            &parts.headers,
                                            bytes,
                                        )
                                        .await,
                                )
                            }
                        },
                    );
                    // A client going away mid-watch ends the connection; nothing to report.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        })
    }

    /// Stores `object` as if someone else created or replaced it (an event
    /// watches see).
    pub fn seed(&self, object: Value) {
        let mut state = self.state.lock().unwrap();
        let (key, _) = key_of(&object);
        let kind = if state.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        Self::store(&mut state, key, object, kind);
        let rv = state.rv;
        drop(state);
        self.changed.send_replace(rv);
    }

    /// Stores many objects at once without remembering them as events, as
    /// a cluster that existed before anyone watched: a watch from an older
    /// resourceVersion gets 410 Gone and lists again.
    pub fn seed_many(&self, objects: impl IntoIterator<Item = Value>) {
        let mut state = self.state.lock().unwrap();
        for mut object in objects {
            let (key, _) = key_of(&object);
            state.rv += 1;
            object["metadata"]["resourceVersion"] = state.rv.to_string().into();
            state.objects.insert(key, Arc::new(Stored::new(&object)));
        }
        state.compacted = state.rv;
        let rv = state.rv;
        drop(state);
        self.changed.send_replace(rv);
        self.drop_watches();
    }

    /// Forgets every event so far, as etcd's compaction does: a watch that
    /// resumes from before now gets 410 Gone.
    pub fn compact(&self) {
        let mut state = self.state.lock().unwrap();
        state.history.clear();
        state.compacted = state.rv;
    }

    /// Ends every open watch (an apiserver restart); clients resume from
    /// the resourceVersion they last saw.
    pub fn drop_watches(&self) {
        self.disconnect.send_modify(|n| *n += 1);
    }

    /// How many objects of `plural` are stored.
    pub fn count(&self, plural: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .objects
            .keys()
            .filter(|(p, _, _)| *p == plural)
            .count()
    }

    /// An object, as stored; `None` when absent.
    pub fn object(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let state = self.state.lock().unwrap();
        let (plural, ..) = RESOURCES.iter().find(|(p, ..)| *p == plural)?;
        state
            .objects
            .get(&(*plural, namespace.to_string(), name.to_string()))
            .map(|o| o.value())
    }

    /// Every write accepted so far.
    pub fn writes(&self) -> Vec<Write> {
        self.state.lock().unwrap().writes.clone()
    }

    /// Every request received so far: method and path with query.
    pub fn requests(&self) -> Vec<(Method, String)> {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .map(|r| {
                let method = match r.verb {
                    Verb::Get | Verb::List | Verb::Watch => Method::GET,
                    Verb::Create => Method::POST,
                    Verb::Update => Method::PUT,
                    Verb::Patch => Method::PATCH,
                    Verb::Delete => Method::DELETE,
                };
                (method, r.uri.clone())
            })
            .collect()
    }

    /// Every request received so far, by verb, resource and selectors.
    pub fn api_requests(&self) -> Vec<ApiRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The TokenRequests created so far: the account (`namespace/name`) and
    /// the request's spec.
    pub fn token_requests(&self) -> Vec<(String, Value)> {
        self.state.lock().unwrap().token_requests.clone()
    }

    /// Makes writes to `collection` fail (true) or succeed again (false).
    pub fn fail_writes_to(&self, collection: &str, fail: bool) {
        let mut state = self.state.lock().unwrap();
        state.failing.retain(|c| c != collection);
        if fail {
            state.failing.push(collection.to_string());
        }
    }

    /// Answers `replica`'s `verb` requests on `path` `by` late, with the
    /// data as it was when each request arrived (`Duration::ZERO` ends it).
    pub fn delay(&self, replica: &str, verb: Verb, path: &str, by: Duration) {
        let mut state = self.state.lock().unwrap();
        state
            .delays
            .retain(|d| !(d.replica == replica && d.verb == verb && d.path == path));
        if !by.is_zero() {
            state.delays.push(Delay {
                replica: replica.to_string(),
                verb,
                path: path.to_string(),
                by,
            });
        }
    }

    /// Stores `object` under `key` with the next resourceVersion and
    /// remembers the event.
    fn store(state: &mut State, key: Key, mut object: Value, kind: &'static str) -> Arc<Stored> {
        state.rv += 1;
        object["metadata"]["resourceVersion"] = state.rv.to_string().into();
        let stored = Arc::new(Stored::new(&object));
        state.objects.insert(key.clone(), stored.clone());
        Self::remember(state, key, kind, stored.clone());
        stored
    }

    fn remember(state: &mut State, key: Key, kind: &'static str, object: Arc<Stored>) {
        let rv = state.rv;
        state.history.push_back(Event {
            rv,
            key,
            kind,
            object,
        });
        while state.history.len() > HISTORY {
            if let Some(oldest) = state.history.pop_front() {
                state.compacted = oldest.rv;
            }
        }
    }

    /// Answers one request.
    pub async fn handle(
        &self,
        replica: &str,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Response<ResponseBody> {
        let path = uri.path();
        let query = parse_query(uri.query().unwrap_or(""));
        let target = Target::parse(path);
        let metadata_only = headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("as=PartialObjectMetadata"));
        let verb = match (method.as_str(), &target.name) {
            ("GET", Some(_)) => Verb::Get,
            ("GET", None) if query.get("watch").map(String::as_str) == Some("true") => Verb::Watch,
            ("GET", None) => Verb::List,
            ("POST", _) => Verb::Create,
            ("PUT", _) => Verb::Update,
            ("PATCH", _) => Verb::Patch,
            ("DELETE", _) => Verb::Delete,
            (other, _) => panic!("the fake apiserver does not implement {other}"),
        };
        let mut request = ApiRequest {
            replica: replica.to_string(),
            verb,
            resource: target.resource.plural,
            namespace: target.namespace.clone(),
            name: target.name.clone(),
            label_selector: query.get("labelSelector").cloned(),
            field_selector: query.get("fieldSelector").cloned(),
            metadata_only,
            continued: query.contains_key("continue"),
            gone: false,
            uri: uri.to_string(),
        };
        let delay = {
            let state = self.state.lock().unwrap();
            state
                .delays
                .iter()
                .find(|d| d.replica == replica && d.verb == verb && d.path == path)
                .map(|d| d.by)
        };
        let body: Option<Value> =
            (!body.is_empty()).then(|| serde_json::from_slice(&body).unwrap());
        let response = match verb {
            Verb::Watch => self.watch(&mut request, &target, &query),
            Verb::List => self.list(&target, &query, metadata_only),
            _ if target.subresource.as_deref() == Some("token") => {
                self.token_request(&target, body)
            }
            _ => {
                let apply = headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("application/apply-patch"));
                self.object_request(replica, method, apply, &target, body, metadata_only)
            }
        };
        self.state.lock().unwrap().requests.push(request);
        if let Some(by) = delay {
            tokio::time::sleep(by).await;
        }
        response
    }

    fn list(
        &self,
        target: &Target,
        query: &BTreeMap<String, String>,
        metadata_only: bool,
    ) -> Response<ResponseBody> {
        let state = self.state.lock().unwrap();
        let limit: usize = query
            .get("limit")
            .and_then(|l| l.parse().ok())
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        // A continue token carries the list's resourceVersion and the last
        // key returned: `rv/namespace/name`.
        let (list_rv, after) = match query.get("continue").and_then(|t| {
            let (rv, rest) = t.split_once('/')?;
            let (namespace, name) = rest.split_once('/')?;
            Some((
                rv.parse::<u64>().ok()?,
                (namespace.to_string(), name.to_string()),
            ))
        }) {
            Some((rv, after)) => (rv, Some(after)),
            None => (state.rv, None),
        };
        let plural = target.resource.plural;
        let start = match &after {
            Some((namespace, name)) => {
                std::ops::Bound::Excluded((plural, namespace.clone(), name.clone()))
            }
            None => std::ops::Bound::Included((
                plural,
                target.namespace.clone().unwrap_or_default(),
                String::new(),
            )),
        };
        let mut items = Vec::new();
        let mut last = None;
        let mut more = false;
        for ((p, namespace, name), object) in
            state.objects.range((start, std::ops::Bound::Unbounded))
        {
            if *p != plural || target.namespace.as_ref().is_some_and(|ns| ns != namespace) {
                break;
            }
            if !selected(object, namespace, name, query) {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(object.body(metadata_only));
            last = Some((namespace.clone(), name.clone()));
        }
        let (api_version, kind) = if metadata_only {
            (
                "meta.k8s.io/v1".to_string(),
                "PartialObjectMetadataList".to_string(),
            )
        } else {
            (
                target.resource.api_version.to_string(),
                format!("{}List", target.resource.kind),
            )
        };
        let mut meta = json!({ "resourceVersion": list_rv.to_string() });
        if let (true, Some((namespace, name))) = (more, last) {
            meta["continue"] = format!("{list_rv}/{namespace}/{name}").into();
        }
        let mut out = format!(
            r#"{{"apiVersion":"{api_version}","kind":"{kind}","metadata":{meta},"items":["#
        )
        .into_bytes();
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(item);
        }
        out.extend_from_slice(b"]}");
        bytes_response(200, Bytes::from(out))
    }

    fn watch(
        &self,
        request: &mut ApiRequest,
        target: &Target,
        query: &BTreeMap<String, String>,
    ) -> Response<ResponseBody> {
        let bookmarks = query.get("allowWatchBookmarks").map(String::as_str) == Some("true");
        let timeout = query
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map(Duration::from_secs);
        let cursor = {
            let state = self.state.lock().unwrap();
            let since = query
                .get("resourceVersion")
                .and_then(|rv| rv.parse::<u64>().ok())
                .filter(|rv| *rv > 0)
                .unwrap_or(state.rv);
            if since < state.compacted {
                request.gone = true;
                let status = status(
                    410,
                    "Expired",
                    &format!("too old resource version: {since} ({})", state.compacted),
                    "",
                    "",
                );
                let mut line =
                    serde_json::to_vec(&json!({"type": "ERROR", "object": status})).unwrap();
                line.push(b'\n');
                return bytes_response(200, Bytes::from(line));
            }
            since
        };
        let watching = Watching {
            server: self.clone(),
            plural: target.resource.plural,
            kind: target.resource.kind,
            api_version: target.resource.api_version,
            namespace: target.namespace.clone(),
            query: query.clone(),
            metadata_only: request.metadata_only,
            bookmarks,
            deadline: timeout.map(|t| tokio::time::Instant::now() + t),
            cursor,
            changed: self.changed.subscribe(),
            disconnect: self.disconnect.subscribe(),
            done: false,
        };
        let stream = futures::stream::unfold(watching, |mut watching| async move {
            let chunk = watching.next_chunk().await?;
            Some((Ok::<_, Infallible>(Frame::data(chunk)), watching))
        });
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(StreamBody::new(stream.boxed()).boxed_unsync())
            .unwrap()
    }

    fn object_request(
        &self,
        replica: &str,
        method: &Method,
        apply: bool,
        target: &Target,
        body: Option<Value>,
        metadata_only: bool,
    ) -> Response<ResponseBody> {
        let Resource {
            plural,
            kind,
            api_version,
        } = target.resource;
        let mut state = self.state.lock().unwrap();
        let collection = target.collection();
        if *method != Method::GET && state.failing.contains(&collection) {
            let name = target.name.as_deref().unwrap_or("");
            return json_response(
                500,
                &status(500, "InternalError", "injected failure", plural, name),
            );
        }
        let key_name = target.name.clone().or_else(|| {
            body.as_ref()
                .and_then(|b| b["metadata"]["name"].as_str().map(String::from))
        });
        let Some(object_name) = key_name else {
            return json_response(400, &status(400, "BadRequest", "no name", plural, ""));
        };
        let key: Key = (
            plural,
            target.namespace.clone().unwrap_or_default(),
            object_name.clone(),
        );
        let existing = state.objects.get(&key).cloned();
        let not_found = |name: &str| {
            json_response(
                404,
                &status(
                    404,
                    "NotFound",
                    &format!("{plural} \"{name}\" not found"),
                    plural,
                    name,
                ),
            )
        };
        let response = match (method.as_str(), existing) {
            ("GET", Some(object)) => return bytes_response(200, object.body(metadata_only)),
            // Server-side apply creates what does not exist.
            ("PATCH", None) if apply => {
                let mut object = body.unwrap();
                object["metadata"]["uid"] =
                    format!("00000000-0000-4000-8000-{:012}", state.rv + 1).into();
                (201, Self::store(&mut state, key, object, "ADDED"))
            }
            ("GET", None) | ("PUT" | "PATCH" | "DELETE", None) => return not_found(&object_name),
            ("POST", Some(_)) => {
                return json_response(
                    409,
                    &status(
                        409,
                        "AlreadyExists",
                        &format!("{plural} \"{object_name}\" already exists"),
                        plural,
                        &object_name,
                    ),
                );
            }
            ("POST", None) => {
                let mut object = body.unwrap();
                object["metadata"]["uid"] =
                    format!("00000000-0000-4000-8000-{:012}", state.rv + 1).into();
                if let Some(namespace) = &target.namespace {
                    object["metadata"]["namespace"] = namespace.clone().into();
                }
                object["apiVersion"] = api_version.into();
                object["kind"] = kind.into();
                (201, Self::store(&mut state, key, object, "ADDED"))
            }
            ("PUT", Some(current)) => {
                let current = current.value();
                let mut object = body.unwrap();
                let sent_rv = object["metadata"]["resourceVersion"]
                    .as_str()
                    .map(String::from);
                if sent_rv.is_some()
                    && sent_rv.as_deref() != current["metadata"]["resourceVersion"].as_str()
                {
                    return json_response(
                        409,
                        &status(
                            409,
                            "Conflict",
                            &format!(
                                "Operation cannot be fulfilled on {plural} \"{object_name}\": the object has been modified; please apply your changes to the latest version and try again"
                            ),
                            plural,
                            &object_name,
                        ),
                    );
                }
                object["metadata"]["uid"] = current["metadata"]["uid"].clone();
                object["apiVersion"] = api_version.into();
                object["kind"] = kind.into();
                (200, Self::store(&mut state, key, object, "MODIFIED"))
            }
            ("PATCH", Some(current)) => {
                let before = current.value();
                let mut object = before.clone();
                merge_apply(&mut object, &body.unwrap());
                // An apply that changes nothing is still a write, but no event.
                let stored = if object == before {
                    current
                } else {
                    Self::store(&mut state, key, object, "MODIFIED")
                };
                (200, stored)
            }
            ("DELETE", Some(current)) => {
                state.rv += 1;
                let mut object = current.value();
                object["metadata"]["resourceVersion"] = state.rv.to_string().into();
                let gone = Arc::new(Stored::new(&object));
                state.objects.remove(&key);
                Self::remember(&mut state, key, "DELETED", gone.clone());
                (200, gone)
            }
            (other, _) => panic!("the fake apiserver does not implement {other}"),
        };
        state.writes.push(Write {
            replica: replica.to_string(),
            method: method.to_string(),
            path: format!("{collection}/{object_name}"),
        });
        let rv = state.rv;
        drop(state);
        self.changed.send_replace(rv);
        bytes_response(response.0, response.1.body(metadata_only))
    }

    /// `POST .../serviceaccounts/{name}/token`, answered as the apiserver
    /// does: the TokenRequest back with `status.token` filled in.
    fn token_request(&self, target: &Target, body: Option<Value>) -> Response<ResponseBody> {
        let mut state = self.state.lock().unwrap();
        let namespace = target.namespace.clone().unwrap_or_default();
        let name = target.name.clone().unwrap_or_default();
        if !state
            .objects
            .contains_key(&("serviceaccounts", namespace.clone(), name.clone()))
        {
            return json_response(
                404,
                &status(
                    404,
                    "NotFound",
                    &format!("serviceaccounts \"{name}\" not found"),
                    "serviceaccounts",
                    &name,
                ),
            );
        }
        let mut request = body.unwrap_or_else(|| json!({}));
        state
            .token_requests
            .push((format!("{namespace}/{name}"), request["spec"].clone()));
        request["apiVersion"] = json!("authentication.k8s.io/v1");
        request["kind"] = json!("TokenRequest");
        request["metadata"] =
            json!({"name": name, "namespace": namespace, "creationTimestamp": null});
        request["status"] = json!({
            "token": format!("eyJhbGciOiJSUzI1NiJ9.{namespace}.{name}"),
            "expirationTimestamp": "2030-01-01T00:00:00Z",
        });
        json_response(201, &request)
    }
}

/// One open watch: where it stands and what it selects.
struct Watching {
    server: FakeApiServer,
    plural: &'static str,
    kind: &'static str,
    api_version: &'static str,
    namespace: Option<String>,
    query: BTreeMap<String, String>,
    metadata_only: bool,
    bookmarks: bool,
    deadline: Option<tokio::time::Instant>,
    /// Every event up to this resourceVersion has been looked at.
    cursor: u64,
    changed: watch::Receiver<u64>,
    disconnect: watch::Receiver<u64>,
    done: bool,
}

impl Watching {
    /// The next lines to send; `None` ends the stream.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if self.done {
                return None;
            }
            let chunk = self.pending();
            if !chunk.is_empty() {
                return Some(Bytes::from(chunk));
            }
            let deadline = self.deadline;
            tokio::select! {
                changed = self.changed.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                _ = self.disconnect.changed() => return None,
                () = async {
                    match deadline {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    // The apiserver sends a bookmark before the timeout ends
                    // a watch, so the client resumes from a recent version.
                    self.done = true;
                    if self.bookmarks {
                        return Some(Bytes::from(self.bookmark()));
                    }
                    return None;
                }
            }
        }
    }

    /// The events after the cursor this watch selects, as lines; moves the
    /// cursor past every event looked at.
    fn pending(&mut self) -> Vec<u8> {
        let state = self.server.state.lock().unwrap();
        let start = state.history.partition_point(|e| e.rv <= self.cursor);
        let mut chunk = Vec::new();
        for event in state.history.range(start..) {
            let (plural, namespace, name) = &event.key;
            if *plural != self.plural
                || self.namespace.as_ref().is_some_and(|ns| ns != namespace)
                || !selected(&event.object, namespace, name, &self.query)
            {
                continue;
            }
            chunk.extend_from_slice(format!(r#"{{"type":"{}","object":"#, event.kind).as_bytes());
            chunk.extend_from_slice(&event.object.body(self.metadata_only));
            chunk.extend_from_slice(b"}\n");
        }
        self.cursor = state.rv;
        chunk
    }

    fn bookmark(&self) -> Vec<u8> {
        let (api_version, kind) = if self.metadata_only {
            ("meta.k8s.io/v1", "PartialObjectMetadata")
        } else {
            (self.api_version, self.kind)
        };
        let mut line = serde_json::to_vec(&json!({
            "type": "BOOKMARK",
            "object": {"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": self.cursor.to_string()}},
        }))
        .unwrap();
        line.push(b'\n');
        line
    }
}

/// What a path addresses.
#[derive(Debug)]
struct Target {
    resource: Resource,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

impl Target {
    /// `/api/v1[/namespaces/{ns}]/{plural}[/{name}[/{sub}]]`, and the same
    /// under `/apis/{group}/{version}`.
    fn parse(path: &str) -> Self {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let rest = match segments.first() {
            Some(&"api") => &segments[2..],
            Some(&"apis") => &segments[3..],
            _ => panic!("the fake apiserver does not serve {path}"),
        };
        let (namespace, rest) = match rest {
            ["namespaces", namespace, plural, rest @ ..] => {
                (Some(namespace.to_string()), [&[*plural][..], rest].concat())
            }
            _ => (None, rest.to_vec()),
        };
        let (plural, kind, api_version, _) = RESOURCES
            .iter()
            .find(|(p, ..)| Some(p) == rest.first())
            .unwrap_or_else(|| panic!("the fake apiserver does not serve {path}"));
        Self {
            resource: Resource {
                plural,
                kind,
                api_version,
            },
            namespace,
            name: rest.get(1).map(|s| s.to_string()),
            subresource: rest.get(2).map(|s| s.to_string()),
        }
    }

    /// The collection path, e.g. `/api/v1/namespaces/keyhook/secrets`.
    fn collection(&self) -> String {
        let prefix = if self.resource.api_version.contains('/') {
            format!("/apis/{}", self.resource.api_version)
        } else {
            format!("/api/{}", self.resource.api_version)
        };
        match &self.namespace {
            Some(ns) => format!("{prefix}/namespaces/{ns}/{}", self.resource.plural),
            None => format!("{prefix}/{}", self.resource.plural),
        }
    }
}

/// The key of an object from its `kind` and metadata.
fn key_of(object: &Value) -> (Key, Resource) {
    let resource = resource_of_kind(object["kind"].as_str().unwrap());
    let name = object["metadata"]["name"].as_str().unwrap().to_string();
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    ((resource.plural, namespace, name), resource)
}

fn json_response(status: u16, body: &Value) -> Response<ResponseBody> {
    bytes_response(status, Bytes::from(serde_json::to_vec(body).unwrap()))
}

fn bytes_response(status: u16, body: Bytes) -> Response<ResponseBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body).boxed_unsync())
        .unwrap()
}

fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((percent_decode(k), percent_decode(v)))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// Whether an object matches the `labelSelector` (`k=v`, `k==v`, `k!=v`,
/// `k`, `!k`, comma-separated) and `fieldSelector` (`metadata.name`,
/// `metadata.namespace` with `=`, `==`, `!=`) of a query.
fn selected(
    object: &Stored,
    namespace: &str,
    name: &str,
    query: &BTreeMap<String, String>,
) -> bool {
    let labels_match = query.get("labelSelector").is_none_or(|selector| {
        selector.split(',').filter(|t| !t.is_empty()).all(|term| {
            let label = |k: &str| object.labels.get(k.trim()).map(String::as_str);
            if let Some((k, v)) = term.split_once("!=") {
                label(k) != Some(v.trim())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                label(k) == Some(v.trim())
            } else if let Some(k) = term.strip_prefix('!') {
                label(k).is_none()
            } else {
                label(term).is_some()
            }
        })
    });
    let fields_match = query.get("fieldSelector").is_none_or(|selector| {
        selector.split(',').filter(|t| !t.is_empty()).all(|term| {
            let (field, value, equal) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, v, true)
            } else {
                panic!("the fake apiserver cannot read the field selector term {term:?}")
            };
            let actual = match field.trim() {
                "metadata.name" => name,
                "metadata.namespace" => namespace,
                other => panic!("the fake apiserver does not select on the field {other}"),
            };
            (actual == value.trim()) == equal
        })
    });
    labels_match && fields_match
}

/// Server-side apply, reduced to what keyhook's apply bodies need: maps merge
/// key by key, lists of objects with a `name` merge element by element (the
/// `webhooks` list map), anything else is replaced.
fn merge_apply(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                merge_apply(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (Value::Array(target), Value::Array(patch))
            if patch.iter().all(|v| v.get("name").is_some()) =>
        {
            for element in patch {
                match target
                    .iter_mut()
                    .find(|t| t.get("name") == element.get("name"))
                {
                    Some(existing) => merge_apply(existing, element),
                    None => target.push(element.clone()),
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}
