//! The daemon's SIGHUP reload (a config that does not load is logged and ignored) and
//! the publication of its plan (`daemon.json`, the HTTP view).

use chrono::Utc;
use std::sync::Arc;

use super::{Daemon, Running};
use crate::node::config;
use crate::scheduler::jobs;
use crate::scheduler::state::{self, DaemonJob, DaemonState};

impl Daemon {
    pub(super) fn reload(&mut self) {
        let new = match config::load(&self.path) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                tracing::error!(
                    "reload: keeping the current configuration, the file is not valid: {e}"
                );
                return;
            }
        };
        if new.node != self.cfg.node || new.peers != self.cfg.peers {
            match jobs::PeerTransports::of(&new) {
                Ok(t) => self.transports = t,
                Err(e) => {
                    tracing::error!(
                        "reload: keeping the current configuration, cannot set up the peer: {e}"
                    );
                    return;
                }
            }
        }
        if new.daemon.metrics_listen != self.cfg.daemon.metrics_listen {
            tracing::warn!("reload: metrics_listen changed; restart the daemon to apply it");
        }
        let now = Utc::now();
        let old_slots = std::mem::take(&mut self.slots);
        self.cfg = new.clone();
        self.jobs = jobs::jobs_of(&new);
        let mut slots = Vec::new();
        for job in self.jobs.clone() {
            let mut s = self.slot(job, now);
            if let Some(old) = old_slots.iter().find(|o| o.job.name() == s.job.name()) {
                s.running = old.running.as_ref().map(|r| Running { ..*r });
                s.attempt = old.attempt;
                s.last_start = old.last_start;
                s.retry_at = old.retry_at;
                if s.watch && old.watch {
                    (s.dirty, s.pending_since, s.change_gen, s.watch_due) =
                        (old.dirty, old.pending_since, old.change_gen, old.watch_due);
                }
                if old.timer_text == s.timer_text && old.job.jitter() == s.job.jitter() {
                    s.next_timed = old.next_timed;
                }
            }
            slots.push(s);
        }
        self.slots = slots;
        self.start_watcher();
        tracing::info!("reload: configuration reloaded ({} jobs)", self.slots.len());
    }

    /// Publishes the plan to `daemon.json` and the HTTP view when it changed.
    pub(super) fn publish(&mut self) {
        let jobs = self
            .slots
            .iter()
            .map(|s| {
                let next_run = [s.next_timed, s.retry_at, s.watch_due]
                    .into_iter()
                    .flatten()
                    .min();
                let dj = DaemonJob {
                    schedule: s.job.schedule().to_string(),
                    next_run: if s.skipped.is_some() { None } else { next_run },
                    pending_since: s.pending_since,
                    retry_at: s.retry_at,
                    running_since: s.running.as_ref().map(|r| r.started),
                };
                (s.job.name().to_string(), dj)
            })
            .collect();
        let st = DaemonState {
            pid: std::process::id(),
            started: Some(self.started),
            config: self.path.clone(),
            updated: None,
            jobs,
            db_watch: self
                .db_poller
                .as_ref()
                .map(|p| p.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()),
        };
        if self.written.as_ref() == Some(&st) {
            return;
        }
        let mut stamped = st.clone();
        stamped.updated = Some(Utc::now());
        if let Err(e) = state::write_json(&state::daemon_file(&self.cfg.node.state_dir), &stamped) {
            tracing::warn!(
                "cannot write {}: {e}",
                state::daemon_file(&self.cfg.node.state_dir).display()
            );
        }
        let mut v = self.view.lock().unwrap_or_else(|e| e.into_inner());
        v.cfg = self.cfg.clone();
        v.jobs = self.jobs.clone();
        v.daemon = stamped;
        self.written = Some(st);
    }
}
