//! What hasync remembers between runs, under the node's `state_dir`: this module owns
//! the per-job run history (`jobs/<job>.json`), the per-job lock files
//! (`locks/<job>.lock`) that keep two runs of one job from overlapping, across
//! processes (the daemon and a manual `hasync sync`), and the daemon's live view
//! (`daemon.json`: its pid, each job's next run and pending changes) that `hasync
//! status` reads. Every file is replaced atomically (temp file, fsync, rename, fsync of
//! the directory): a crash leaves the old version or the new one, never half of one.
//! A job's history is only written while its lock is held, so writers never race.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::node::store;
use crate::tree::report::Stats;

/// How many runs a job's history keeps.
pub const HISTORY: usize = 20;

/// One finished run of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub ok: bool,
    /// What started it: `schedule`, `watch`, `retry`, `safety_pass`, `startup`, `manual`.
    pub trigger: String,
    /// The exit code `hasync sync` would give this run.
    pub exit_code: i32,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub stats: Stats,
}

/// A job's history: counters and the last runs, newest last.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobState {
    pub job: String,
    pub runs_total: u64,
    pub failures_total: u64,
    /// Failed runs since the last success.
    pub consecutive_failures: u32,
    pub last_success: Option<Run>,
    pub last_failure: Option<Run>,
    pub runs: Vec<Run>,
    /// When `on_failure` was last called for this job (it is called once per
    /// failure streak, then at most hourly while the streak lasts).
    pub last_hook: Option<DateTime<Utc>>,
}

impl JobState {
    /// Seconds since the last successful run ended, if there was one.
    pub fn lag_seconds(&self, now: DateTime<Utc>) -> Option<f64> {
        self.last_success
            .as_ref()
            .map(|r| ((now - r.end).num_milliseconds().max(0) as f64) / 1000.0)
    }

    pub fn last_run(&self) -> Option<&Run> {
        self.runs.last()
    }

    fn record(&mut self, run: Run) {
        self.runs_total += 1;
        if run.ok {
            self.consecutive_failures = 0;
            self.last_success = Some(run.clone());
        } else {
            self.failures_total += 1;
            self.consecutive_failures += 1;
            self.last_failure = Some(run.clone());
        }
        self.runs.push(run);
        if self.runs.len() > HISTORY {
            let extra = self.runs.len() - HISTORY;
            self.runs.drain(..extra);
        }
    }
}

fn job_file(state_dir: &Path, job: &str) -> PathBuf {
    state_dir.join("jobs").join(format!("{job}.json"))
}

/// A job's history; an empty one when there is none yet. A file that cannot be
/// parsed is an error (the caller decides; [`record_run`] starts afresh).
pub fn load_job(state_dir: &Path, job: &str) -> io::Result<JobState> {
    match std::fs::read(job_file(state_dir, job)) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", job_file(state_dir, job).display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(JobState {
            job: job.to_string(),
            ..Default::default()
        }),
        Err(e) => Err(e),
    }
}

/// Adds `run` to the job's history and writes it back atomically. Call it while
/// holding the job's [`JobLock`]. Returns the new state.
pub fn record_run(state_dir: &Path, job: &str, run: Run) -> io::Result<JobState> {
    let mut st = load_job(state_dir, job).unwrap_or_else(|e| {
        tracing::warn!("job {job}: unreadable history, starting a new one: {e}");
        JobState::default()
    });
    st.job = job.to_string();
    st.record(run);
    save_job(state_dir, &st)?;
    Ok(st)
}

/// Writes a job's history atomically.
pub fn save_job(state_dir: &Path, st: &JobState) -> io::Result<()> {
    write_json(&job_file(state_dir, &st.job), st)
}

/// Writes `value` as JSON to `path` atomically (see [`store::write_atomic`]).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    store::write_atomic(path, &store::json_bytes(value)?)
}

/// An exclusive lock on one job (flock on `state_dir/locks/<job>.lock`), held until
/// dropped. The kernel releases it when the process dies, so a crash never leaves a
/// stale lock behind.
#[derive(Debug)]
pub struct JobLock {
    _file: File,
}

fn lock_path(state_dir: &Path, job: &str) -> std::path::PathBuf {
    state_dir.join("locks").join(format!("{job}.lock"))
}

impl JobLock {
    /// Takes the lock, or returns `None` at once when another run holds it.
    pub fn try_lock(state_dir: &Path, job: &str) -> io::Result<Option<JobLock>> {
        Ok(store::lock_file(&lock_path(state_dir, job), false)?.map(|f| JobLock { _file: f }))
    }

    /// Takes the lock, waiting for the run that holds it to end.
    pub fn lock(state_dir: &Path, job: &str) -> io::Result<JobLock> {
        let f = store::lock_file(&lock_path(state_dir, job), true)?;
        Ok(JobLock {
            _file: f.expect("a waiting lock is always taken"),
        })
    }
}

/// The daemon's live view of one job, for `hasync status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DaemonJob {
    pub schedule: String,
    pub next_run: Option<DateTime<Utc>>,
    /// Watch mode: the first change not yet delivered to the peer.
    pub pending_since: Option<DateTime<Utc>>,
    /// After a failure: when the next attempt is due.
    pub retry_at: Option<DateTime<Utc>>,
    pub running_since: Option<DateTime<Utc>>,
}

/// `state_dir/daemon.json`, rewritten whenever the daemon's plan changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DaemonState {
    pub pid: u32,
    pub started: Option<DateTime<Utc>>,
    pub config: PathBuf,
    pub updated: Option<DateTime<Utc>>,
    pub jobs: BTreeMap<String, DaemonJob>,
    /// `[db] schedule = "watch"`: what the poller of the master's commits saw.
    pub db_watch: Option<DbWatchState>,
}

/// The daemon's poller of the master's commits (`[db] schedule = "watch"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DbWatchState {
    /// When a poll last found a commit (within one poll, 1 s, of the commit itself).
    pub last_change: Option<DateTime<Utc>>,
    /// Polls that found a commit since the daemon started.
    pub changes: u64,
    /// The last poll's error, while polling fails.
    pub last_error: Option<String>,
}

pub fn daemon_file(state_dir: &Path) -> PathBuf {
    state_dir.join("daemon.json")
}

/// The daemon's view, if a daemon wrote one and its process still runs.
pub fn load_daemon(state_dir: &Path) -> Option<DaemonState> {
    let bytes = std::fs::read(daemon_file(state_dir)).ok()?;
    let st: DaemonState = serde_json::from_slice(&bytes).ok()?;
    let pid = rustix::process::Pid::from_raw(st.pid as i32)?;
    // Signal 0 checks that the process exists; EPERM means it exists as another user.
    match rustix::process::test_kill_process(pid) {
        Ok(()) | Err(rustix::io::Errno::PERM) => Some(st),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(ok: bool, secs: i64) -> Run {
        let t = DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap();
        Run {
            start: t,
            end: t,
            ok,
            trigger: "manual".into(),
            exit_code: if ok { 0 } else { 3 },
            error: (!ok).then(|| "boom".into()),
            stats: Stats::default(),
        }
    }

    #[test]
    fn history_counts_and_is_bounded() {
        let d = tempfile::tempdir().unwrap();
        for i in 0..25 {
            record_run(d.path(), "j", run(i % 5 != 4, i)).unwrap();
        }
        let st = load_job(d.path(), "j").unwrap();
        assert_eq!((st.runs_total, st.failures_total), (25, 5));
        assert_eq!(st.runs.len(), HISTORY);
        assert_eq!(st.consecutive_failures, 1);
        assert_eq!(
            st.last_success.as_ref().unwrap().start.timestamp(),
            1_700_000_023
        );
        let lag = st.lag_seconds(DateTime::from_timestamp(1_700_000_033, 0).unwrap());
        assert_eq!(lag, Some(10.0));
        // No temp file left next to it.
        let names: Vec<_> = std::fs::read_dir(d.path().join("jobs")).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_corrupt_history_is_replaced() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("jobs")).unwrap();
        std::fs::write(d.path().join("jobs/j.json"), "{not json").unwrap();
        assert!(load_job(d.path(), "j").is_err());
        let st = record_run(d.path(), "j", run(true, 0)).unwrap();
        assert_eq!(st.runs_total, 1);
    }

    #[test]
    fn lock_is_exclusive_until_dropped() {
        let d = tempfile::tempdir().unwrap();
        let a = JobLock::try_lock(d.path(), "j").unwrap().expect("free");
        assert!(JobLock::try_lock(d.path(), "j").unwrap().is_none());
        assert!(JobLock::try_lock(d.path(), "other").unwrap().is_some());
        drop(a);
        assert!(JobLock::try_lock(d.path(), "j").unwrap().is_some());
    }

    #[test]
    fn daemon_state_needs_a_live_pid() {
        let d = tempfile::tempdir().unwrap();
        let mut st = DaemonState {
            pid: std::process::id(),
            ..Default::default()
        };
        write_json(&daemon_file(d.path()), &st).unwrap();
        assert!(load_daemon(d.path()).is_some());
        st.pid = 0x3fff_fff0;
        write_json(&daemon_file(d.path()), &st).unwrap();
        assert!(load_daemon(d.path()).is_none());
    }
}
