//! An in-memory kube-apiserver for scenarios with several replicas and many
//! hours of (paused) time, where scripting every request would drown the
//! behaviour under test. It keeps objects with resourceVersions, answers GET
//! (one object or a filtered list), watches (streamed events), POST, PUT
//! (409 on a stale resourceVersion), server-side apply (merging list maps by
//! `name`) and DELETE, with the Status bodies of the real apiserver. Every
//! write is recorded with the replica that made it.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::Frame;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::broadcast;

pub type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

/// A write the fake apiserver accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The replica whose client made it.
    pub replica: String,
    pub method: String,
    pub path: String,
}

#[derive(Debug, Clone)]
struct Event {
    rv: u64,
    collection: String,
    kind: &'static str,
    object: Value,
}

#[derive(Debug, Default)]
struct State {
    rv: u64,
    /// (collection path, name) -> object.
    objects: BTreeMap<(String, String), Value>,
    history: Vec<Event>,
    writes: Vec<Write>,
    /// Every request: method and path with query.
    requests: Vec<(Method, String)>,
    /// Collections whose writes fail with HTTP 500, to hold a scenario still.
    failing: Vec<String>,
    /// TokenRequests created: (namespace/name of the account, spec).
    token_requests: Vec<(String, Value)>,
}

/// The in-memory apiserver.
#[derive(Clone)]
pub struct FakeApiServer {
    state: Arc<Mutex<State>>,
    changed: broadcast::Sender<()>,
}

const RESOURCES: [(&str, &str, &str); 9] = [
    ("secrets", "Secret", "v1"),
    ("serviceaccounts", "ServiceAccount", "v1"),
    ("namespaces", "Namespace", "v1"),
    ("secretstores", "SecretStore", "external-secrets.io/v1"),
    (
        "clustersecretstores",
        "ClusterSecretStore",
        "external-secrets.io/v1",
    ),
    ("leases", "Lease", "coordination.k8s.io/v1"),
    (
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        "admissionregistration.k8s.io/v1",
    ),
    (
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        "admissionregistration.k8s.io/v1",
    ),
    (
        "customresourcedefinitions",
        "CustomResourceDefinition",
        "apiextensions.k8s.io/v1",
    ),
];

/// The collection path of an object, e.g. `/api/v1/namespaces/keyhook/secrets`.
pub fn collection_of(object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap();
    let (plural, _, api_version) = RESOURCES.iter().find(|(_, k, _)| *k == kind).unwrap();
    let prefix = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    match object["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{prefix}/namespaces/{ns}/{plural}"),
        None => format!("{prefix}/{plural}"),
    }
}

impl Default for FakeApiServer {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeApiServer {
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            changed: broadcast::channel(1024).0,
        }
    }

    /// The apiserver as a tower service for `replica`'s client; its writes
    /// are recorded under that name.
    pub fn service(
        &self,
        replica: &str,
    ) -> tower::util::BoxCloneService<Request<Body>, Response<ResponseBody>, Infallible> {
        let server = self.clone();
        let replica = replica.to_string();
        tower::util::BoxCloneService::new(tower::service_fn(move |request: Request<Body>| {
            let server = server.clone();
            let replica = replica.clone();
            async move { Ok::<_, Infallible>(server.handle(&replica, request).await) }
        }))
    }

    /// A client for `replica`.
    pub fn client(&self, replica: &str) -> kube::Client {
        kube::Client::new(self.service(replica), "keyhook")
    }

    /// Stores `object` as if created by someone else.
    pub fn seed(&self, mut object: Value) {
        let collection = collection_of(&object);
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let mut state = self.state.lock().unwrap();
        state.rv += 1;
        object["metadata"]["resourceVersion"] = state.rv.to_string().into();
        Self::record(&mut state, &collection, "ADDED", &object);
        state.objects.insert((collection, name), object);
        drop(state);
        let _ = self.changed.send(());
    }

    /// Every write accepted so far.
    pub fn writes(&self) -> Vec<Write> {
        self.state.lock().unwrap().writes.clone()
    }

    /// Every request received so far: method and path with query.
    pub fn requests(&self) -> Vec<(Method, String)> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Makes writes to `collection` fail (true) or succeed again (false).
    /// The TokenRequests created so far: the account (`namespace/name`) and
    /// the request's spec.
    pub fn token_requests(&self) -> Vec<(String, Value)> {
        self.state.lock().unwrap().token_requests.clone()
    }

    pub fn fail_writes_to(&self, collection: &str, fail: bool) {
        let mut state = self.state.lock().unwrap();
        state.failing.retain(|c| c != collection);
        if fail {
            state.failing.push(collection.to_string());
        }
    }

    fn record(state: &mut State, collection: &str, kind: &'static str, object: &Value) {
        let rv = state.rv;
        state.history.push(Event {
            rv,
            collection: collection.to_string(),
            kind,
            object: object.clone(),
        });
    }

    async fn handle(&self, replica: &str, request: Request<Body>) -> Response<ResponseBody> {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        self.state
            .lock()
            .unwrap()
            .requests
            .push((method.clone(), request.uri().to_string()));
        let query = parse_query(request.uri().query().unwrap_or(""));
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body: Option<Value> =
            (!bytes.is_empty()).then(|| serde_json::from_slice(&bytes).unwrap());

        let (collection, name) = split_path(&path);
        if method == Method::POST
            && collection.ends_with("/serviceaccounts")
            && path.ends_with("/token")
        {
            return self.token_request(&collection, name.as_deref().unwrap_or(""), body);
        }
        let (plural, kind, api_version) = RESOURCES
            .iter()
            .find(|(p, _, _)| collection.ends_with(&format!("/{p}")))
            .copied()
            .unwrap_or_else(|| panic!("the fake apiserver does not serve {path}"));

        if method == Method::GET && name.is_none() {
            if query.get("watch").map(String::as_str) == Some("true") {
                return self.watch(collection, &query);
            }
            let state = self.state.lock().unwrap();
            let items: Vec<Value> = state
                .objects
                .iter()
                .filter(|((c, _), o)| in_collection(c, &collection) && selected(o, &query))
                .map(|(_, o)| o.clone())
                .collect();
            return json_response(
                200,
                &json!({
                    "apiVersion": api_version,
                    "kind": format!("{kind}List"),
                    "metadata": { "resourceVersion": state.rv.to_string() },
                    "items": items,
                }),
            );
        }

        let mut state = self.state.lock().unwrap();
        if method != Method::GET && state.failing.contains(&collection) {
            return json_response(
                500,
                &status(
                    500,
                    "InternalError",
                    "injected failure",
                    plural,
                    name.as_deref().unwrap_or(""),
                ),
            );
        }
        let key_name = name.clone().or_else(|| {
            body.as_ref()
                .and_then(|b| b["metadata"]["name"].as_str().map(String::from))
        });
        let Some(object_name) = key_name else {
            return json_response(400, &status(400, "BadRequest", "no name", plural, ""));
        };
        let key = (collection.clone(), object_name.clone());
        let existing = state.objects.get(&key).cloned();
        let response = match (method.as_str(), existing) {
            ("GET", Some(object)) => return json_response(200, &object),
            ("GET", None) | ("PUT" | "PATCH" | "DELETE", None) => {
                return json_response(404, &super::not_found(plural, &object_name));
            }
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
                state.rv += 1;
                object["metadata"]["resourceVersion"] = state.rv.to_string().into();
                object["metadata"]["uid"] =
                    format!("00000000-0000-4000-8000-{:012}", state.rv).into();
                object["apiVersion"] = api_version.into();
                object["kind"] = kind.into();
                Self::record(&mut state, &collection, "ADDED", &object);
                state.objects.insert(key, object.clone());
                (201, object)
            }
            ("PUT", Some(current)) => {
                let mut object = body.unwrap();
                let sent_rv = object["metadata"]["resourceVersion"]
                    .as_str()
                    .map(String::from);
                if sent_rv.is_some()
                    && sent_rv.as_deref() != current["metadata"]["resourceVersion"].as_str()
                {
                    let mut conflict = super::fixture("status-409-conflict.json");
                    conflict["message"] = format!(
                        "Operation cannot be fulfilled on {plural} \"{object_name}\": the object has been modified; please apply your changes to the latest version and try again"
                    )
                    .into();
                    conflict["details"] = json!({ "name": object_name, "kind": plural });
                    return json_response(409, &conflict);
                }
                state.rv += 1;
                object["metadata"]["resourceVersion"] = state.rv.to_string().into();
                object["metadata"]["uid"] = current["metadata"]["uid"].clone();
                object["apiVersion"] = api_version.into();
                object["kind"] = kind.into();
                Self::record(&mut state, &collection, "MODIFIED", &object);
                state.objects.insert(key, object.clone());
                (200, object)
            }
            ("PATCH", Some(current)) => {
                let mut object = current.clone();
                merge_apply(&mut object, &body.unwrap());
                if object != current {
                    state.rv += 1;
                    object["metadata"]["resourceVersion"] = state.rv.to_string().into();
                    Self::record(&mut state, &collection, "MODIFIED", &object);
                    state.objects.insert(key, object.clone());
                }
                (200, object)
            }
            ("DELETE", Some(object)) => {
                state.rv += 1;
                Self::record(&mut state, &collection, "DELETED", &object);
                state.objects.remove(&key);
                (200, object)
            }
            (other, _) => panic!("the fake apiserver does not implement {other}"),
        };
        state.writes.push(Write {
            replica: replica.to_string(),
            method: method.to_string(),
            path: format!("{collection}/{object_name}"),
        });
        drop(state);
        let _ = self.changed.send(());
        json_response(response.0, &response.1)
    }

    fn watch(
        &self,
        collection: String,
        query: &BTreeMap<String, String>,
    ) -> Response<ResponseBody> {
        let since: u64 = query
            .get("resourceVersion")
            .and_then(|rv| rv.parse().ok())
            .unwrap_or(0);
        let query = query.clone();
        let server = self.clone();
        let changes = self.changed.subscribe();
        let stream = futures::stream::unfold((since, changes), move |(mut last, mut changes)| {
            let server = server.clone();
            let collection = collection.clone();
            let query = query.clone();
            async move {
                loop {
                    let events: Vec<Event> = {
                        let state = server.state.lock().unwrap();
                        state
                            .history
                            .iter()
                            .filter(|e| {
                                e.rv > last
                                    && in_collection(&e.collection, &collection)
                                    && selected(&e.object, &query)
                            })
                            .cloned()
                            .collect()
                    };
                    if let Some(newest) = events.last() {
                        last = newest.rv;
                        let mut chunk = Vec::new();
                        for event in events {
                            serde_json::to_writer(
                                &mut chunk,
                                &json!({ "type": event.kind, "object": event.object }),
                            )
                            .unwrap();
                            chunk.push(b'\n');
                        }
                        let frame: Result<Frame<Bytes>, Infallible> =
                            Ok(Frame::data(Bytes::from(chunk)));
                        return Some((frame, (last, changes)));
                    }
                    // Lagging only means more changes: look again.
                    if let Err(broadcast::error::RecvError::Closed) = changes.recv().await {
                        return None;
                    }
                }
            }
        });
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(StreamBody::new(stream.boxed()).boxed_unsync())
            .unwrap()
    }
}

impl FakeApiServer {
    /// `POST .../serviceaccounts/{name}/token`, answered as the apiserver
    /// does: the TokenRequest back with `status.token` filled in.
    fn token_request(
        &self,
        collection: &str,
        name: &str,
        body: Option<Value>,
    ) -> Response<ResponseBody> {
        let mut state = self.state.lock().unwrap();
        if !state
            .objects
            .contains_key(&(collection.to_string(), name.to_string()))
        {
            return json_response(404, &super::not_found("serviceaccounts", name));
        }
        let namespace = collection
            .split("/namespaces/")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default();
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

fn json_response(status: u16, body: &Value) -> Response<ResponseBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())).boxed_unsync())
        .unwrap()
}

fn status(code: u16, reason: &str, message: &str, plural: &str, name: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason,
        "details": { "name": name, "kind": plural }, "code": code,
    })
}

/// `/api/v1/namespaces/ns/secrets/name` -> (`/api/v1/namespaces/ns/secrets`, Some(name)).
/// Whether an object stored under `stored` belongs to the `requested`
/// collection: the same one, or its cluster-wide form (`/api/v1/secrets`
/// lists the Secrets of every namespace).
fn in_collection(stored: &str, requested: &str) -> bool {
    if stored == requested {
        return true;
    }
    let Some((prefix, rest)) = stored.split_once("/namespaces/") else {
        return false;
    };
    match rest.split_once('/') {
        Some((_namespace, plural)) => format!("{prefix}/{plural}") == requested,
        None => false,
    }
}

fn split_path(path: &str) -> (String, Option<String>) {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let resource_at = segments
        .iter()
        .rposition(|s| RESOURCES.iter().any(|(p, _, _)| p == s))
        .unwrap_or_else(|| panic!("no known resource in {path}"));
    let collection = segments[..=resource_at].join("/");
    let name = segments.get(resource_at + 1).map(|s| s.to_string());
    (collection, name)
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

/// Whether `object` matches the `labelSelector` (`k=v,...`) and
/// `fieldSelector` (`metadata.name=x`) of a query.
fn selected(object: &Value, query: &BTreeMap<String, String>) -> bool {
    let labels_match = query.get("labelSelector").is_none_or(|selector| {
        selector.split(',').all(|term| match term.split_once('=') {
            Some((k, v)) => object["metadata"]["labels"][k].as_str() == Some(v),
            None => true,
        })
    });
    let fields_match = query.get("fieldSelector").is_none_or(|selector| {
        selector.split(',').all(|term| match term.split_once('=') {
            Some(("metadata.name", v)) => object["metadata"]["name"].as_str() == Some(v),
            Some(("metadata.namespace", v)) => object["metadata"]["namespace"].as_str() == Some(v),
            _ => true,
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
