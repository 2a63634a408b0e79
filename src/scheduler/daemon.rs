//! `hasync daemon`: this module owns the scheduler loop. One thread (the caller's)
//! owns every job's plan (next timed run, pending watch changes, retry backoff) and
//! reacts to messages ([`Wakeup`]) on one channel: stop and reload requests (the CLI
//! maps SIGTERM/SIGINT/SIGHUP to them), changes from the watcher, and the end of runs.
//! Each run happens on its own thread through [`jobs::execute`], under the job's lock
//! (shared with `hasync sync`), so a job never runs twice at once, even across
//! processes; the jobs toward one peer share one transport to it (one per `[[peer]]`).
//!
//! Watch jobs: a change marks the job dirty and, after a short debounce, starts a full
//! run of the job; the job stays dirty (and is retried with backoff) until a run that
//! *started after the last change* succeeds, so nothing is lost while the peer is away.
//! The DB job in watch mode (`[db] schedule = "watch"`) is a watch job whose changes come
//! from a poller of the master's commits ([`db_watch`]) instead of inotify; its runs
//! start at least the job's [`Job::min_interval`] apart, so a burst of commits coalesces.
//! Timed jobs: a failed run is retried with capped exponential backoff until the next
//! timed run is due. Stop: no new runs start, running ones finish (the engine leaves no
//! temp file behind when a run ends, even by an error), then `run` returns. A second
//! stop returns at once. Reload: a config that does not load is ignored and logged.

mod db_watch;
mod http;
mod master_loop;
mod page;
mod reload;
mod watching;

use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::node::config::{self, Config, ConfigError, Schedule};
use crate::node::schedule::{CronExpr, backoff, cron_of, jitter, next_after};
use crate::scheduler::jobs::{self, Executed, Job, LogReporter, PeerTransports};
use crate::scheduler::state::{self, DaemonState, JobLock};
use crate::scheduler::watch::{self, Change, Watcher};

/// How long after the first change of a burst a watch run starts.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// How soon a run is tried again when another process holds the job's lock.
const BUSY_RETRY: Duration = Duration::from_secs(1);

/// What wakes the scheduler loop up.
#[derive(Debug)]
pub enum Wakeup {
    /// Stop (SIGTERM, SIGINT); the string says why, for the log.
    Stop(String),
    /// Reload the config file (SIGHUP).
    Reload,
    Changed(Change),
    Finished {
        job: String,
        seq: u64,
        result: Result<Executed, String>,
    },
}

/// Why the daemon could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("another hasync daemon already runs with the state_dir {} (its lock is {})", .0.display(), .0.join("locks/.daemon.lock").display())]
    AlreadyRunning(PathBuf),
    #[error("{0}")]
    Setup(String),
}

impl DaemonError {
    /// The process exit code (see `--help`).
    pub fn exit_code(&self) -> crate::node::exit::ExitCode {
        use crate::node::exit::ExitCode;
        match self {
            DaemonError::Config(_) => ExitCode::Usage,
            DaemonError::AlreadyRunning(_) => ExitCode::Busy,
            DaemonError::Setup(_) => ExitCode::Failed,
        }
    }
}

/// How the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every run in progress finished.
    Clean,
    /// A second stop request: returned without waiting for the runs in progress.
    Aborted,
}

struct Running {
    seq: u64,
    /// The job's change counter when the run started.
    change_gen: u64,
    started: DateTime<Utc>,
}

/// One job's plan.
struct Slot {
    job: Arc<dyn Job>,
    /// The timed schedule (a watch job's safety pass), as written and parsed.
    timer_text: String,
    timer: Option<CronExpr>,
    next_timed: Option<DateTime<Utc>>,
    watch: bool,
    skipped: Option<String>,
    dirty: bool,
    pending_since: Option<DateTime<Utc>>,
    change_gen: u64,
    watch_due: Option<DateTime<Utc>>,
    retry_at: Option<DateTime<Utc>>,
    attempt: u32,
    running: Option<Running>,
    /// When the last run started ([`Job::min_interval`] counts from there).
    last_start: Option<DateTime<Utc>>,
}

struct Daemon {
    path: PathBuf,
    cfg: Arc<Config>,
    jobs: Vec<Arc<dyn Job>>,
    slots: Vec<Slot>,
    /// One per peer: each job runs on its own peer's.
    transports: PeerTransports,
    watcher: Watcher,
    tx: Sender<Wakeup>,
    seq: u64,
    stopping: bool,
    started: DateTime<Utc>,
    view: Arc<Mutex<http::View>>,
    written: Option<DaemonState>,
    /// See [`Daemon::recheck_watch_roots`].
    watched_ids: Vec<(String, Option<(u64, u64)>)>,
    /// The poller of the master's commits, for the DB job in watch mode.
    db_poller: Option<db_watch::DbPoller>,
}

/// `now + d`, saturating (a huge configured duration never panics).
fn plus(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn after(d: Duration) -> DateTime<Utc> {
    plus(Utc::now(), d)
}

impl Daemon {
    fn slot(&self, job: Arc<dyn Job>, now: DateTime<Utc>) -> Slot {
        let watch = *job.schedule() == Schedule::Watch;
        let timed = if watch {
            job.safety_pass()
        } else {
            job.schedule()
        };
        let timer = cron_of(timed);
        let skipped = job.skip_reason();
        let mut s = Slot {
            timer_text: timed.to_string(),
            next_timed: None,
            watch,
            // A watch job starts dirty: what changed while no daemon ran is delivered now.
            dirty: watch && skipped.is_none(),
            pending_since: (watch && skipped.is_none()).then_some(now),
            change_gen: 0,
            watch_due: (watch && skipped.is_none()).then_some(now),
            retry_at: None,
            attempt: 0,
            running: None,
            last_start: None,
            skipped,
            timer,
            job,
        };
        s.next_timed = self.next_timed(&s, now);
        s
    }

    fn next_timed(&self, s: &Slot, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let zone = self.cfg.daemon.timezone.zone();
        let t = next_after(s.timer.as_ref()?, now, zone)?;
        Some(plus(t, jitter(s.job.jitter())))
    }

    /// Re-reads this node's role for every job (promote, demote, ha.conf and the
    /// sentinels take effect within a second, not at the next reload): a job that may
    /// no longer run is skipped from now on; one that may run again starts its watch (a
    /// watch job runs at once, to deliver what changed meanwhile).
    fn recheck_roles(&mut self, now: DateTime<Utc>) {
        let mut rewatch = false;
        for s in &mut self.slots {
            let skipped = s.job.skip_reason();
            if skipped == s.skipped {
                continue;
            }
            match &skipped {
                Some(why) => {
                    tracing::warn!("job {}: not run on this node now ({why})", s.job.name())
                }
                None => tracing::warn!("job {}: runs on this node now", s.job.name()),
            }
            if s.watch {
                rewatch = true;
                if skipped.is_none() {
                    s.dirty = true;
                    s.pending_since = Some(now);
                    s.watch_due = Some(now);
                }
            }
            s.skipped = skipped;
        }
        if rewatch {
            self.start_watcher();
        }
    }

    /// Starts every run that is due; returns how long to sleep at most.
    fn start_due(&mut self) -> Duration {
        let now = Utc::now();
        self.recheck_roles(now);
        // Wake at least this often to notice a role change (within a second, with
        // room to spare), re-created watched roots and clock jumps. Each wake reads
        // the role once per job: a few small files.
        let mut wake = now + chrono::Duration::milliseconds(250);
        for i in 0..self.slots.len() {
            let s = &self.slots[i];
            if s.skipped.is_some() || s.running.is_some() {
                continue;
            }
            // A watch run waits for min_interval after the last start (bursts coalesce).
            let watch_due = watch_due_after(s.watch_due, s.last_start, s.job.min_interval());
            let due = [watch_due, s.retry_at, s.next_timed]
                .into_iter()
                .flatten()
                .min();
            let Some(due) = due else { continue };
            if self.stopping {
                continue; // no new runs; and a past due time must not make the loop spin
            }
            if due > now {
                wake = wake.min(due);
                continue;
            }
            let trigger = if watch_due.is_some_and(|t| t <= now) {
                "watch"
            } else if s.retry_at.is_some_and(|t| t <= now) {
                "retry"
            } else if s.watch {
                "safety_pass"
            } else {
                "schedule"
            };
            self.start_run(i, trigger, now);
        }
        (wake - now).to_std().unwrap_or(Duration::ZERO)
    }

    fn start_run(&mut self, i: usize, trigger: &'static str, now: DateTime<Utc>) {
        self.seq += 1;
        let seq = self.seq;
        if self.slots[i].next_timed.is_some_and(|t| t <= now) {
            self.slots[i].next_timed = self.next_timed(&self.slots[i], now);
        }
        let s = &mut self.slots[i];
        s.watch_due = s.watch_due.filter(|t| *t > now);
        s.retry_at = s.retry_at.filter(|t| *t > now);
        s.last_start = Some(now);
        s.running = Some(Running {
            seq,
            change_gen: s.change_gen,
            started: now,
        });
        let job = s.job.clone();
        let name = job.name().to_string();
        tracing::info!("job {name}: starting ({trigger})");
        let (transport, tx) = (self.transports.get(job.peer()), self.tx.clone());
        let (state_dir, hooks) = (self.cfg.node.state_dir.clone(), self.cfg.hooks.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("job {name}"))
            .spawn(move || {
                let mut rep = LogReporter { job: name.clone() };
                let result = jobs::execute(
                    job.as_ref(),
                    transport.as_ref(),
                    &state_dir,
                    &hooks,
                    trigger,
                    false,
                    &mut rep,
                )
                .map_err(|e| format!("cannot use the state_dir {}: {e}", state_dir.display()));
                let _ = tx.send(Wakeup::Finished {
                    job: name,
                    seq,
                    result,
                });
            });
        if let Err(e) = spawned {
            let _ = self.tx.send(Wakeup::Finished {
                job: self.slots[i].job.name().to_string(),
                seq,
                result: Err(format!("cannot start a thread: {e}")),
            });
        }
    }

    fn finished(&mut self, job: &str, seq: u64, result: Result<Executed, String>) {
        let now = Utc::now();
        let (min, max) = (self.cfg.daemon.retry_min, self.cfg.daemon.retry_max);
        let Some(i) = self.slots.iter().position(|s| s.job.name() == job) else {
            return; // removed by a reload while it ran
        };
        let next = self.next_timed(&self.slots[i], now);
        let s = &mut self.slots[i];
        let Some(run) = s.running.take_if(|r| r.seq == seq) else {
            return;
        };
        let error = match result {
            Ok(Executed::Busy) => {
                tracing::info!(
                    "job {job}: already running in another process; trying again shortly"
                );
                s.retry_at = Some(after(BUSY_RETRY));
                return;
            }
            Ok(Executed::Done { run: r, .. }) if r.ok => {
                let st = &r.stats;
                tracing::info!(
                    "job {job}: done: {} entries, {} transferred, {} deleted in {:.2}s",
                    st.files_total,
                    st.files_transferred,
                    st.files_deleted,
                    (r.end - r.start).num_milliseconds() as f64 / 1000.0
                );
                s.attempt = 0;
                s.retry_at = None;
                if s.change_gen == run.change_gen {
                    s.dirty = false;
                    s.pending_since = None;
                } else {
                    // Changes arrived during the run: deliver them now.
                    s.pending_since = Some(run.started);
                    s.watch_due = Some(now);
                }
                return;
            }
            Ok(Executed::Done { run: r, .. })
                if r.exit_code == 1 && s.change_gen != run.change_gen =>
            {
                // Some files failed while changes kept arriving (typically a file
                // caught mid-write in a burst): that is not the peer failing, so run
                // again after the debounce instead of backing off. A burst ends; a
                // run with no change during it falls back to the backoff below.
                tracing::info!(
                    "job {job}: {} (files changed during the run); running again",
                    r.error.as_deref().unwrap_or("some items failed")
                );
                s.retry_at = None;
                s.pending_since = Some(run.started);
                s.watch_due = Some(now);
                return;
            }
            Ok(Executed::Done { run: r, .. }) => r.error.unwrap_or_else(|| "failed".into()),
            Err(e) => e,
        };
        s.attempt += 1;
        s.watch_due = None;
        s.retry_at = retry_at(s.attempt, s.dirty, next, now, min, max);
        match (s.retry_at, next) {
            (Some(t), _) => tracing::warn!(
                "job {job}: failed (attempt {}): {error}; retrying in {:.1}s",
                s.attempt,
                (t - now).num_milliseconds() as f64 / 1000.0
            ),
            (None, Some(n)) => tracing::warn!(
                "job {job}: failed: {error}; next timed run at {}",
                n.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            (None, None) => tracing::warn!("job {job}: failed: {error}"),
        }
    }
}

/// When a watch run due at `due` may start: not before `min_gap` after the last start.
fn watch_due_after(
    due: Option<DateTime<Utc>>,
    last_start: Option<DateTime<Utc>>,
    min_gap: Duration,
) -> Option<DateTime<Utc>> {
    due.map(|t| match last_start {
        Some(last) if !min_gap.is_zero() => t.max(plus(last, min_gap)),
        _ => t,
    })
}

/// When to retry after failed attempt number `attempt` at `now`: after the backoff
/// delay; but a job with no pending changes (`dirty` false) whose next timed run
/// comes first waits for that run instead. `None`: no retry.
fn retry_at(
    attempt: u32,
    dirty: bool,
    next_timed: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    min: Duration,
    max: Duration,
) -> Option<DateTime<Utc>> {
    let retry = plus(now, backoff(attempt, min, max));
    if !dirty && next_timed.is_some_and(|n| n <= retry) {
        None
    } else {
        Some(retry)
    }
}

/// A channel for [`run`]: hand the sender to whatever produces stop/reload requests.
pub fn channel() -> (Sender<Wakeup>, Receiver<Wakeup>) {
    std::sync::mpsc::channel()
}

/// Runs the daemon for the config at `path` until a [`Wakeup::Stop`] arrives on `rx`.
/// `tx` must be the sender of the same channel (the watcher and the runs use it).
pub fn run(path: &Path, tx: Sender<Wakeup>, rx: Receiver<Wakeup>) -> Result<Stopped, DaemonError> {
    let cfg = Arc::new(config::load(path)?);
    let state_dir = cfg.node.state_dir.clone();
    let _daemon_lock = JobLock::try_lock(&state_dir, ".daemon")
        .map_err(|e| {
            DaemonError::Setup(format!(
                "cannot use the state_dir {}: {e}",
                state_dir.display()
            ))
        })?
        .ok_or_else(|| DaemonError::AlreadyRunning(state_dir.clone()))?;
    let transports = PeerTransports::of(&cfg).map_err(|e| DaemonError::Setup(e.to_string()))?;
    let jobs = jobs::jobs_of(&cfg);
    let view = Arc::new(Mutex::new(http::View {
        cfg: cfg.clone(),
        jobs: jobs.clone(),
        daemon: DaemonState::default(),
    }));
    if let Some(listen) = &cfg.daemon.metrics_listen {
        let listener = std::net::TcpListener::bind(listen).map_err(|e| {
            DaemonError::Setup(format!("metrics_listen {listen}: cannot listen: {e}"))
        })?;
        http::spawn(listener, view.clone(), http::Surface::Full);
        tracing::info!("status page, metrics and health on http://{listen}/");
    }
    if let Some(listen) = &cfg.daemon.health_listen {
        let listener = std::net::TcpListener::bind(listen).map_err(|e| {
            DaemonError::Setup(format!("health_listen {listen}: cannot listen: {e}"))
        })?;
        http::spawn(listener, view.clone(), http::Surface::Health);
        tracing::info!("health endpoints on http://{listen}/primary, /replica, /health, /role");
    }
    let mut d = Daemon {
        path: path.to_path_buf(),
        cfg: cfg.clone(),
        jobs: jobs.clone(),
        slots: Vec::new(),
        transports,
        watcher: watch::watch(Vec::new(), |_| {}).0,
        tx,
        seq: 0,
        stopping: false,
        started: Utc::now(),
        view,
        written: None,
        watched_ids: Vec::new(),
        db_poller: None,
    };
    let now = Utc::now();
    d.slots = jobs.into_iter().map(|j| d.slot(j, now)).collect();
    for s in &d.slots {
        match &s.skipped {
            Some(why) => tracing::info!("job {}: not run on this node ({why})", s.job.name()),
            None => tracing::info!("job {}: schedule {}", s.job.name(), s.job.schedule()),
        }
    }
    d.start_watcher();
    let master_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let master = master_loop::spawn(&cfg, master_stop.clone());
    tracing::info!(
        "daemon started (pid {}, {} jobs)",
        std::process::id(),
        d.slots.len()
    );
    let stopped = loop {
        let wait = d.start_due();
        d.publish();
        if d.stopping && d.slots.iter().all(|s| s.running.is_none()) {
            break Stopped::Clean;
        }
        match rx.recv_timeout(wait) {
            Ok(Wakeup::Stop(why)) if d.stopping => {
                tracing::warn!("{why} again: exiting without waiting for the runs in progress");
                break Stopped::Aborted;
            }
            Ok(Wakeup::Stop(why)) => {
                let n = d.slots.iter().filter(|s| s.running.is_some()).count();
                tracing::info!("{why}: stopping (waiting for {n} runs in progress)");
                d.stopping = true;
                d.watcher = watch::watch(Vec::new(), |_| {}).0;
                d.db_poller = None;
            }
            Ok(Wakeup::Reload) if d.stopping => {}
            Ok(Wakeup::Reload) => d.reload(),
            Ok(Wakeup::Changed(c)) => {
                if !d.stopping {
                    d.changed(c)
                }
            }
            Ok(Wakeup::Finished { job, seq, result }) => {
                d.finished(&job, seq, result);
                d.recheck_watch_roots();
            }
            Err(RecvTimeoutError::Timeout) => d.recheck_watch_roots(),
            Err(RecvTimeoutError::Disconnected) => break Stopped::Clean,
        }
    };
    master_stop.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(h) = master {
        // A step in progress (probes, a service action) ends within its own timeouts.
        if stopped == Stopped::Clean {
            let _ = h.join();
        }
    }
    let _ = std::fs::remove_file(state::daemon_file(&d.cfg.node.state_dir));
    tracing::info!("daemon stopped");
    Ok(stopped)
}

#[cfg(test)]
mod tests;
