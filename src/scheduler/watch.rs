//! Watching the source directories of `watch` jobs (notify: inotify on Linux). This
//! module owns turning file system events into "job X changed" (or "everything may
//! have changed") messages; it does not debounce or sync, the daemon does.
//!
//! The daemon answers any change by running a sync of the whole job (the engine's
//! quick check makes an unchanged tree cheap), so what notify misses does not matter
//! as long as *some* event arrives: the files of a new subtree created before its watch
//! was added, the other half of a rename, a burst of thousands of files are all found
//! by that full pass. An inotify queue overflow (`Rescan` flag) or a watcher error
//! marks every watched job changed. Access events (reads, including the sender's own
//! reads of the source) are ignored; symlinks are not followed.

use notify::{Event, EventKind, RecursiveMode, Watcher as _};
use std::path::PathBuf;

/// What the watcher reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Something changed under one of this job's paths.
    Job(String),
    /// The watcher lost events (queue overflow) or failed: every job may have changed.
    All(String),
}

/// A running watcher; dropping it stops watching.
pub struct Watcher {
    _inner: Option<notify::RecommendedWatcher>,
}

/// Starts watching `jobs` (name, local directories). `send` is called from notify's
/// thread for every relevant event. Returns the watcher and one warning per directory
/// that could not be watched (missing, or out of inotify watches).
pub fn watch(
    jobs: Vec<(String, Vec<PathBuf>)>,
    send: impl Fn(Change) + Send + 'static,
) -> (Watcher, Vec<String>) {
    let mut warnings = Vec::new();
    if jobs.iter().all(|(_, p)| p.is_empty()) {
        return (Watcher { _inner: None }, warnings);
    }
    let roots: Vec<(PathBuf, String)> = jobs
        .iter()
        .flat_map(|(name, paths)| paths.iter().map(move |p| (p.clone(), name.clone())))
        .collect();
    let table = roots.clone();
    let handler = move |res: notify::Result<Event>| match res {
        Ok(ev) => {
            if ev.need_rescan() {
                send(Change::All(
                    "the watcher lost events (queue overflow)".into(),
                ));
                return;
            }
            if matches!(ev.kind, EventKind::Access(_)) {
                return;
            }
            let mut seen: Vec<&str> = Vec::new();
            for p in &ev.paths {
                for (root, job) in &table {
                    if p.starts_with(root) && !seen.contains(&job.as_str()) {
                        seen.push(job);
                        send(Change::Job(job.clone()));
                    }
                }
            }
        }
        Err(e) => send(Change::All(format!("watcher error: {e}"))),
    };
    let config = notify::Config::default().with_follow_symlinks(false);
    let mut inner = match notify::RecommendedWatcher::new(handler, config) {
        Ok(w) => w,
        Err(e) => {
            warnings.push(format!("cannot start the file watcher: {e}"));
            return (Watcher { _inner: None }, warnings);
        }
    };
    for (root, job) in &roots {
        if let Err(e) = inner.watch(root, RecursiveMode::Recursive) {
            let hint = match e.kind {
                notify::ErrorKind::MaxFilesWatch => {
                    " (raise fs.inotify.max_user_watches)".to_string()
                }
                _ if !root.exists() => " (it is watched as soon as it exists)".to_string(),
                _ => String::new(),
            };
            warnings.push(format!(
                "job {job}: cannot watch {}: {e}{hint}; its changes wait for the safety pass",
                root.display()
            ));
        }
    }
    (
        Watcher {
            _inner: Some(inner),
        },
        warnings,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn events_name_their_job_and_reads_are_ignored() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(b.join("f"), b"x").unwrap();
        let (tx, rx) = mpsc::channel();
        let (_w, warnings) = watch(
            vec![
                ("ja".into(), vec![a.clone()]),
                ("jb".into(), vec![b.clone(), d.path().join("missing")]),
            ],
            move |c| {
                let _ = tx.send(c);
            },
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("missing"), "{warnings:?}");
        // A read of b/f: no event for jb.
        let _ = std::fs::read(b.join("f")).unwrap();
        std::fs::create_dir_all(a.join("new/sub")).unwrap();
        let got = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(got, Change::Job("ja".into()));
        while let Ok(c) = rx.recv_timeout(Duration::from_millis(300)) {
            assert_eq!(c, Change::Job("ja".into()));
        }
    }
}
