//! Noticing new certificate files and offering them to the server.
//!
//! The directory is watched, not the files: the kubelet updates a Secret
//! volume by writing a new timestamped directory and renaming the `..data`
//! symlink onto it, so the file names never see an event of their own. A
//! slow poll backs the watch up, and takes over when the platform offers no
//! file events.

use std::{path::Path, path::PathBuf, sync::Arc, time::Duration};

use notify::{RecursiveMode, Watcher};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::{PemBundle, Refusal, ServingCert, read_bundle};
use crate::clock::Clock;
use crate::file_events;
use crate::readiness::Check;

/// The `/readyz` check of the cert directory: advisory, since the
/// certificate loaded from it is served (and checked) on its own.
const DIR_CHECK: &str = "cert_dir_readable";

/// Files often change in bursts (a rotation renames several): wait for the
/// burst to end before reading.
const SETTLE: Duration = Duration::from_millis(150);
/// Poll interval while file events work: only a safety net.
pub const POLL_WITH_EVENTS: Duration = Duration::from_secs(10);
/// Poll interval without file events: keeps reloads within the 2 s promise.
const POLL_WITHOUT_EVENTS: Duration = Duration::from_secs(1);

/// Reads the directory and offers its bundle; returns whether the served
/// certificate changed.
pub fn reload_from_dir(dir: &Path, serving: &ServingCert, now: i64) -> Result<bool, Refusal> {
    let bundle = read_bundle(dir)?;
    serving.offer(bundle, now)
}

/// Watches `dir` until `shutdown` and installs every new, good bundle,
/// judged at `clock`'s time; reads it every `poll_every` too, in case an
/// event was missed.
pub fn spawn_dir_watcher(
    dir: PathBuf,
    serving: Arc<ServingCert>,
    poll_every: Duration,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let (events_tx, mut events) = mpsc::channel::<()>(1);
    let watched_dir = dir.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|event| file_events::is_change(&event, &watched_dir)) {
            // A full channel already holds a wake-up: dropping this one is fine.
            let _ = events_tx.try_send(());
        }
    });
    let (mut armed, poll_every) = match watcher {
        Ok(watcher) => (Some(DirWatch::new(watcher, &dir)), poll_every),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "no file events for the cert directory; polling every second");
            (None, POLL_WITHOUT_EVENTS)
        }
    };

    tokio::spawn(async move {
        let mut poll = tokio::time::interval(poll_every);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_refused: Option<RefusedCandidate> = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                Some(()) = events.recv() => tokio::time::sleep(SETTLE).await,
                _ = poll.tick() => {}
            }
            if let Some(watch) = &mut armed {
                watch.rearm(&dir);
            }
            reload_once(&dir, &serving, clock.unix_now(), &mut last_refused);
        }
    })
}

/// File events for the cert directory that survive its deletion: the
/// directory's parent is watched too, so that a directory created again
/// (a volume remounted, a directory replaced by a tool) wakes the watcher,
/// which then watches the new directory.
struct DirWatch {
    watcher: notify::RecommendedWatcher,
    /// The inode of the directory being watched, if any.
    watched: Option<u64>,
}

impl DirWatch {
    fn new(mut watcher: notify::RecommendedWatcher, dir: &Path) -> Self {
        let parent = match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        if let Err(e) = watcher.watch(parent, RecursiveMode::NonRecursive) {
            tracing::debug!(dir = %parent.display(), error = %e, "cannot watch the cert directory's parent");
        }
        let mut watch = Self {
            watcher,
            watched: None,
        };
        watch.rearm(dir);
        watch
    }

    /// Watches `dir` again when it is a different directory than the one
    /// watched (created anew), or was not there before.
    fn rearm(&mut self, dir: &Path) {
        use std::os::unix::fs::MetadataExt;
        let current = std::fs::metadata(dir).ok().map(|m| m.ino());
        if current == self.watched {
            return;
        }
        if self.watched.is_some() {
            // The old directory is gone; its watch went with it.
            let _ = self.watcher.unwatch(dir);
        }
        self.watched = None;
        if current.is_some() {
            match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => self.watched = current,
                Err(e) => {
                    tracing::debug!(dir = %dir.display(), error = %e, "cannot watch the cert directory");
                }
            }
        }
    }
}

/// A refused candidate is reported once, not on every poll.
#[derive(PartialEq)]
enum RefusedCandidate {
    Bundle(PemBundle),
    Unreadable(String),
}

fn reload_once(
    dir: &Path,
    serving: &ServingCert,
    now: i64,
    last_refused: &mut Option<RefusedCandidate>,
) {
    let bundle = match read_bundle(dir) {
        Ok(bundle) => {
            serving.report_source(
                Check::passed(DIR_CHECK, format!("{} is readable", dir.display())).advisory(),
            );
            bundle
        }
        Err(e) => {
            let candidate = RefusedCandidate::Unreadable(e.to_string());
            if last_refused.as_ref() != Some(&candidate) {
                tracing::error!(error = %e, "cannot read the cert directory; still serving the previous certificate");
                serving.record_refused();
                serving.report_source(
                    Check::failed(
                        DIR_CHECK,
                        format!("{e}; still serving the certificate loaded before"),
                    )
                    .advisory(),
                );
                *last_refused = Some(candidate);
            }
            return;
        }
    };
    if let Some(RefusedCandidate::Bundle(refused)) = last_refused.as_ref()
        && *refused == bundle
    {
        return;
    }
    match serving.offer(bundle.clone(), now) {
        Ok(true) => {
            *last_refused = None;
            if let Some(cert) = serving.current() {
                let leaf = &cert.inspection.leaf;
                tracing::info!(
                    subject = %leaf.subject,
                    not_after = %super::check::rfc3339(leaf.not_after),
                    "serving a new certificate to new connections"
                );
            }
        }
        Ok(false) => *last_refused = None,
        Err(refusal) => {
            tracing::error!(error = %refusal, "refused a new certificate; still serving the previous one");
            *last_refused = Some(RefusedCandidate::Bundle(bundle));
        }
    }
}
