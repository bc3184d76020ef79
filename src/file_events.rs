//! Which file events mean that files changed, as opposed to being read.
//!
//! keyhook watches directories (the cert directory, the stores file's) and
//! reads files when they change. Reading a file raises events of its own
//! (opened, closed without writing): a watcher that woke on those would make
//! every read wake the next one, for as long as the process runs.

use std::path::{Component, Path, PathBuf};

use notify::event::{AccessKind, AccessMode, EventKind};

/// Whether `event` may have changed something at or below `within`: a
/// write, creation, rename or removal there, or an event that names no path
/// (a queue overflow, say, which may hide anything).
pub fn is_change(event: &notify::Event, within: &Path) -> bool {
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
        EventKind::Access(_) => return false,
        _ => {}
    }
    if event.paths.is_empty() {
        return true;
    }
    let within = without_dot_components(within);
    event
        .paths
        .iter()
        .any(|path| without_dot_components(path).starts_with(&within))
}

/// `path` without `.` components: the watcher names an entry of `./certs`
/// `./certs/…` or `certs/…` depending on how the directory was watched.
fn without_dot_components(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, ModifyKind, RemoveKind, RenameMode};

    use super::*;

    fn event(kind: EventKind, paths: &[&str]) -> notify::Event {
        notify::Event {
            kind,
            paths: paths.iter().map(PathBuf::from).collect(),
            attrs: Default::default(),
        }
    }

    #[test]
    fn reading_the_files_is_not_a_change() {
        let dir = Path::new("./certs");
        for kind in [
            AccessKind::Open(AccessMode::Any),
            AccessKind::Read,
            AccessKind::Close(AccessMode::Read),
        ] {
            let read = event(EventKind::Access(kind), &["./certs/tls.crt"]);
            assert!(!is_change(&read, dir), "{kind:?}");
        }
    }

    #[test]
    fn writes_renames_and_removals_in_the_directory_are() {
        let dir = Path::new("./certs");
        for kind in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Remove(RemoveKind::File),
        ] {
            assert!(
                is_change(&event(kind, &["./certs/..data"]), dir),
                "{kind:?}"
            );
            // The watcher may name it without the leading `./`.
            assert!(is_change(&event(kind, &["certs/tls.key"]), dir), "{kind:?}");
        }
        // The directory itself, seen from its parent: deleted or created anew.
        let created = event(EventKind::Create(CreateKind::Folder), &["./certs"]);
        assert!(is_change(&created, Path::new("certs")));
    }

    #[test]
    fn other_entries_of_the_parent_are_not() {
        let sibling = event(EventKind::Create(CreateKind::File), &["./notes.txt"]);
        assert!(!is_change(&sibling, Path::new("./certs")));
        let prefix = event(
            EventKind::Create(CreateKind::File),
            &["./certs-old/tls.crt"],
        );
        assert!(!is_change(&prefix, Path::new("./certs")));
    }

    #[test]
    fn an_event_without_paths_may_hide_anything() {
        let overflow = event(EventKind::Other, &[]);
        assert!(is_change(&overflow, Path::new("/etc/keyhook/certs")));
    }
}
