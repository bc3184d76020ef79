//! The caches keyhook keeps of cluster objects: kube reflectors whose
//! objects lose, before they are stored, what no cache reads — the
//! `managedFields` tree and the `kubectl.kubernetes.io/last-applied-configuration`
//! annotation (a full copy of the object). On a busy cluster these are most
//! of an object's metadata.
//!
//! Every cache is fed by one watch (list once, then watch from the list's
//! resourceVersion; a list again only after `410 Gone`), and scoped by a
//! label or field selector wherever keyhook needs a subset.

use std::fmt::Debug;
use std::hash::Hash;

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::task::AbortOnDropHandle;

/// The annotation `kubectl apply` keeps a copy of the applied object in.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Removes `managedFields` and the last-applied annotation.
pub fn strip<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// Runs a reflector into `writer` until the returned handle is dropped:
/// `events` (a [`watcher()`] stream) with kube's default backoff, each object
/// passed through `modify` before it is stored. `on_event` sees every event
/// after the store applied it. Watch errors are logged as `what`; the
/// watcher recovers from each.
pub fn spawn<K, S>(
    what: &'static str,
    events: S,
    writer: Writer<K>,
    modify: impl FnMut(&mut K) + Send + 'static,
    mut on_event: impl FnMut(&watcher::Event<K>) + Send + 'static,
) -> AbortOnDropHandle<()>
where
    K: Resource + Clone + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
    S: Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
{
    let stream = events.default_backoff().modify(modify).reflect(writer);
    AbortOnDropHandle::new(tokio::spawn(stream.for_each(move |event| {
        match event {
            Ok(event) => on_event(&event),
            Err(error) => tracing::warn!(cache = what, %error, "watch failed; retrying"),
        }
        futures::future::ready(())
    })))
}
