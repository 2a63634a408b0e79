//! The daemon's side of `[db] schedule = "watch"`: a thread that asks the master's
//! database for its commit token every second ([`crate::db::watch`]) and, when it
//! changed, sends the same "job changed" message the file watcher sends for a `watch`
//! sync job. The daemon then treats it like any watch job (debounce, a run that
//! started after the last change must succeed, retries), except that two runs start
//! at least `[db] min_interval` apart: a burst of commits coalesces into few dumps.
//! A poll that fails (the server restarting) is logged once and retried each second;
//! the token is kept across the outage, so a commit made meanwhile is still noticed.

use chrono::Utc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Daemon, Wakeup};
use crate::db::PgConn;
use crate::db::watch::{CommitWatch, POLL};
use crate::scheduler::jobs::DB_JOB_NAME;
use crate::scheduler::state::DbWatchState;
use crate::scheduler::watch::Change;

/// A running poller; dropping it stops the thread (within 100 ms).
pub(super) struct DbPoller {
    conn: PgConn,
    stop: Arc<AtomicBool>,
    pub(super) seen: Arc<Mutex<DbWatchState>>,
}

impl Drop for DbPoller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn spawn(conn: PgConn, tx: Sender<Wakeup>) -> DbPoller {
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(DbWatchState::default()));
    let p = DbPoller {
        conn: conn.clone(),
        stop: stop.clone(),
        seen: seen.clone(),
    };
    tracing::info!(
        "job {DB_JOB_NAME}: watching {} for commits (every {}s)",
        conn.describe(),
        POLL.as_secs()
    );
    let spawned = std::thread::Builder::new()
        .name("db watch".into())
        .spawn(move || poll_loop(&conn, &tx, &stop, &seen));
    if let Err(e) = spawned {
        tracing::error!(
            "job {DB_JOB_NAME}: cannot start the commit poller: {e}; only the safety pass runs"
        );
    }
    p
}

fn poll_loop(conn: &PgConn, tx: &Sender<Wakeup>, stop: &AtomicBool, seen: &Mutex<DbWatchState>) {
    let mut w = CommitWatch::default();
    let mut failing = false;
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        match conn.commit_token() {
            Ok(token) => {
                if failing {
                    tracing::info!("job {DB_JOB_NAME}: polling the master's commits works again");
                    failing = false;
                }
                tracing::debug!("job {DB_JOB_NAME}: commit token {token}");
                let changed = w.saw(token);
                let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
                s.last_error = None;
                if changed {
                    s.changes = w.changes;
                    s.last_change = Some(Utc::now());
                    drop(s);
                    if tx
                        .send(Wakeup::Changed(Change::Job(DB_JOB_NAME.into())))
                        .is_err()
                    {
                        return; // the daemon is gone
                    }
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(
                        "job {DB_JOB_NAME}: cannot poll {} for commits: {e}; retrying every second (the safety pass still runs)",
                        conn.describe()
                    );
                    failing = true;
                }
                seen.lock().unwrap_or_else(|e| e.into_inner()).last_error = Some(e.to_string());
            }
        }
        while !stop.load(Ordering::SeqCst) && started.elapsed() < POLL {
            std::thread::sleep(
                POLL.saturating_sub(started.elapsed())
                    .min(Duration::from_millis(100)),
            );
        }
    }
}

impl Daemon {
    /// Starts, keeps or stops the poller to match the DB job's slot (watch mode, run on
    /// this node). A new poller for a changed `[db]` marks the job changed: what was
    /// committed between the old poller's last poll and the new one's first is not lost.
    pub(super) fn start_db_poller(&mut self) {
        let want = self
            .slots
            .iter()
            .any(|s| {
                crate::scheduler::jobs::split_unit(s.job.name()).0 == DB_JOB_NAME
                    && s.watch
                    && s.skipped.is_none()
            })
            .then(|| self.cfg.db.as_ref().map(PgConn::from_job))
            .flatten();
        match (&self.db_poller, want) {
            (Some(p), Some(c)) if p.conn == c => {}
            (_, Some(c)) => {
                let restarted = self.db_poller.is_some();
                self.db_poller = Some(spawn(c, self.tx.clone()));
                if restarted {
                    self.changed(Change::Job(DB_JOB_NAME.into()));
                }
            }
            (_, None) => self.db_poller = None,
        }
    }
}
