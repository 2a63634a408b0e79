//! The daemon's side of watch mode: starting the watcher for the `watch` jobs (and the
//! DB job's commit poller, [`super::db_watch`]),
//! turning its [`Change`]s into dirty jobs with a debounce, and watching again a root
//! that appeared or was re-created (an inotify watch follows an inode, not a path).

use chrono::Utc;
use std::path::PathBuf;

use super::{DEBOUNCE, Daemon, Wakeup, after};
use crate::scheduler::jobs;
use crate::scheduler::watch::{self, Change};

impl Daemon {
    pub(super) fn start_watcher(&mut self) {
        // By the config's job name: with [[peer]] tables, one change wakes the job's
        // run toward every peer (see `changed`), and each root is watched once.
        let mut jobs: Vec<(String, Vec<PathBuf>)> = Vec::new();
        for s in self.slots.iter().filter(|s| s.watch && s.skipped.is_none()) {
            let base = jobs::split_unit(s.job.name()).0;
            if !jobs.iter().any(|(n, _)| n == base) {
                jobs.push((base.to_string(), s.job.watch_paths()));
            }
        }
        let tx = self.tx.clone();
        // Replace the old watcher first so its inotify watches are released.
        self.watcher = watch::watch(Vec::new(), |_| {}).0;
        let (w, warnings) = watch::watch(jobs, move |c| {
            let _ = tx.send(Wakeup::Changed(c));
        });
        for w in warnings {
            tracing::warn!("{w}");
        }
        self.watcher = w;
        self.watched_ids = self.watch_ids();
        self.start_db_poller();
    }

    /// The identity (device, inode) of every watched root, `None` when missing.
    pub(super) fn watch_ids(&self) -> Vec<(String, Option<(u64, u64)>)> {
        use std::os::unix::fs::MetadataExt;
        self.slots
            .iter()
            .filter(|s| s.watch && s.skipped.is_none())
            .flat_map(|s| {
                let name = s.job.name().to_string();
                s.job.watch_paths().into_iter().map(move |p| {
                    let id = std::fs::metadata(&p).ok().map(|m| (m.dev(), m.ino()));
                    (name.clone(), id)
                })
            })
            .collect()
    }

    /// A watched root that appeared, or was deleted and created again, has no (valid)
    /// inotify watch: watch again, and run its job now.
    pub(super) fn recheck_watch_roots(&mut self) {
        if self.stopping {
            return;
        }
        let now_ids = self.watch_ids();
        if now_ids == self.watched_ids {
            return;
        }
        let changed: Vec<String> = now_ids
            .iter()
            .zip(
                self.watched_ids
                    .iter()
                    .map(Some)
                    .chain(std::iter::repeat(None)),
            )
            .filter(|(a, b)| Some(*a) != *b)
            .map(|(a, _)| a.0.clone())
            .collect();
        tracing::info!("watched directories changed identity; watching again");
        self.start_watcher();
        let now = Utc::now();
        for s in &mut self.slots {
            if changed.iter().any(|n| n == s.job.name()) {
                s.dirty = true;
                s.change_gen += 1;
                s.pending_since.get_or_insert(now);
                s.retry_at = None;
                s.watch_due = Some(now);
            }
        }
    }

    pub(super) fn changed(&mut self, c: Change) {
        let now = Utc::now();
        let all = matches!(c, Change::All(_));
        if let Change::All(why) = &c {
            tracing::info!("{why}: every watched job will run in full");
        }
        for s in &mut self.slots {
            let hit = match &c {
                Change::Job(name) => jobs::split_unit(s.job.name()).0 == name,
                Change::All(_) => s.watch,
            };
            if !hit || s.skipped.is_some() {
                continue;
            }
            s.dirty = true;
            s.change_gen += 1;
            s.pending_since.get_or_insert(now);
            // While a failing job backs off, changes wait for the retry.
            if s.retry_at.is_none() && s.watch_due.is_none() {
                s.watch_due = Some(if all { now } else { after(DEBOUNCE) });
            }
        }
    }
}
