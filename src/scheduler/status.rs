//! What `hasync status` and the daemon's HTTP endpoint show: this module owns building
//! one [`StatusReport`] from the config, each job's history (`state::JobState`) and the
//! daemon's live view (`daemon.json`, when a daemon runs), and rendering it as
//! Prometheus text ([`prometheus`]). The CLI renders the same report as text or JSON,
//! so every view agrees.

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::fmt::Write as _;

use crate::node::config::Config;
use crate::node::schedule::{cron_of, next_after};
use crate::scheduler::jobs::Job;
use crate::scheduler::state::{self, DaemonState, Run};

/// The whole node.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub now: DateTime<Utc>,
    /// The effective role now ("master", "slave", "disabled"; "unknown (why)").
    pub role: String,
    /// Where the role came from: role_file, config, ha_conf, sentinels, default.
    pub role_source: Option<crate::node::role::RoleSource>,
    /// The highest role epoch this node has seen (promote raises it; see docs/master-check.md).
    pub role_epoch: u64,
    pub peer: String,
    pub config: String,
    /// The pid of the running daemon, if one runs with this state_dir.
    pub daemon_pid: Option<u32>,
    pub jobs: Vec<JobStatus>,
    /// The master check's state (`state_dir/master.json`), on a node that has run it.
    pub master_check: Option<MasterStatus>,
    /// What `/role` answers: `master`, `slave`, `slave serving`, `disabled`, `unknown`.
    pub role_now: String,
    /// Whether this node's slave services run because of a failover.
    pub services_active: bool,
    /// What this node last received from its peer (`received.json`), if anything.
    pub received: Option<crate::scheduler::health::Received>,
    /// The DB job's lag, on the node that runs it (the master); with `[[peer]]` tables,
    /// the peer that lags most (each is in `db_by_peer`).
    pub db: Option<DbStatus>,
    /// With `[[peer]]` tables: the DB lag toward each peer.
    pub db_by_peer: Vec<DbStatus>,
    /// With `[[peer]]` tables: how the jobs toward each peer stand.
    pub peers: Vec<PeerStatus>,
}

/// One `[[peer]]` (fan-out): its jobs' runs toward it, summed up.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    pub name: String,
    pub address: String,
    /// `ok` (every job's last run succeeded), `failing`, `never` (no run yet), or
    /// `idle` (this node runs none of its jobs: its role).
    pub state: String,
    /// Jobs run toward it on this node, and how many of them failed last.
    pub jobs: usize,
    pub jobs_failing: usize,
    /// The oldest of its jobs' last successes (every job has delivered since).
    pub last_success: Option<DateTime<Utc>>,
    /// The largest of its jobs' lags.
    pub lag_seconds: Option<f64>,
    /// The last error of a failing job.
    pub last_error: Option<String>,
}

/// The [`PeerStatus`] of every `[[peer]]`, from the jobs' statuses.
fn peer_statuses(cfg: &Config, jobs: &[JobStatus]) -> Vec<PeerStatus> {
    cfg.peers
        .iter()
        .map(|p| {
            let run: Vec<&JobStatus> = jobs
                .iter()
                .filter(|j| j.peer.as_deref() == Some(&p.name) && j.skipped.is_none())
                .collect();
            let failing: Vec<&&JobStatus> = run
                .iter()
                .filter(|j| j.last_run.as_ref().is_some_and(|r| !r.ok))
                .collect();
            let never = run.iter().any(|j| j.last_success.is_none());
            let state = match () {
                _ if run.is_empty() => "idle",
                _ if !failing.is_empty() => "failing",
                _ if never => "never",
                _ => "ok",
            };
            PeerStatus {
                name: p.name.clone(),
                address: p.peer.to_string(),
                state: state.into(),
                jobs: run.len(),
                jobs_failing: failing.len(),
                last_success: match never {
                    true => None,
                    false => run.iter().filter_map(|j| j.last_success).min(),
                },
                lag_seconds: run
                    .iter()
                    .filter_map(|j| j.lag_seconds)
                    .max_by(f64::total_cmp),
                last_error: failing.iter().find_map(|j| j.last_error.clone()),
            }
        })
        .collect()
}

/// How far behind the master the slave's database may be (docs/db.md, "DB lag").
#[derive(Debug, Clone, Default, Serialize)]
pub struct DbStatus {
    /// The `[[peer]]` this is the lag toward (`None`: the one peer of `[node] peer`).
    pub peer: Option<String>,
    pub schedule: String,
    /// Seconds: 0 when the daemon's poller saw no commit since the slave's last run
    /// started, else the age of the first commit not yet on the slave (`watch`); without
    /// a watching daemon, the time since `synced_as_of` (`since_sync`, an upper bound).
    /// `None` before the first successful run.
    pub lag_seconds: Option<f64>,
    /// `watch` or `since_sync`: how `lag_seconds` was found.
    pub lag_basis: String,
    /// Start of the last successful run: the slave holds every commit up to then.
    pub synced_as_of: Option<DateTime<Utc>>,
    /// The slave's last replay (a changed dump).
    pub last_replay: Option<DateTime<Utc>>,
    /// `replayed`, `unchanged` or `failed`.
    pub last_outcome: Option<String>,
    /// Watch mode: when the daemon's poller last saw a commit on the master.
    pub last_commit_seen: Option<DateTime<Utc>>,
    /// Watch mode: polls that found a commit since the daemon started.
    pub commits_seen: Option<u64>,
    /// Watch mode: why polling the master fails, while it does.
    pub poll_error: Option<String>,
}

fn from_unix(s: Option<u64>) -> Option<DateTime<Utc>> {
    s.and_then(|s| DateTime::from_timestamp(s as i64, 0))
}

/// The DB lag and how it was found (see [`DbStatus::lag_seconds`]). The poller knows:
/// nothing pending (0), or the first commit not yet delivered. It does not know what
/// was committed before the daemon started (its first run's pending, `changes` 0) nor
/// while polling fails: then the upper bound, the time since the last sync.
fn db_lag(
    watch: Option<&state::DbWatchState>,
    pending_since: Option<DateTime<Utc>>,
    synced_as_of: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> (Option<f64>, &'static str) {
    let since_sync = synced_as_of.map(|t| secs(now - t));
    match watch {
        Some(w) if w.last_error.is_none() && synced_as_of.is_some() => match pending_since {
            None => (Some(0.0), "watch"),
            Some(p) if w.changes > 0 => (Some(secs(now - p)), "watch"),
            Some(_) => (since_sync, "since_sync"),
        },
        _ => (since_sync, "since_sync"),
    }
}

/// The DB job's [`DbStatus`]; `None` when this node does not run it.
fn db_status(
    cfg: &Config,
    job: Option<&JobStatus>,
    daemon: Option<&DaemonState>,
    now: DateTime<Utc>,
) -> Option<DbStatus> {
    let db = cfg.db.as_ref()?;
    let job = job.filter(|j| j.skipped.is_none())?;
    let st = crate::db::state::load(&cfg.node.state_dir, cfg.node.peer_name.as_deref());
    let synced_as_of = from_unix(st.synced_unix);
    let watch = daemon
        .and_then(|d| d.db_watch.as_ref())
        .filter(|_| db.schedule == crate::node::config::Schedule::Watch);
    let (lag_seconds, lag_basis) = db_lag(watch, job.pending_since, synced_as_of, now);
    Some(DbStatus {
        peer: cfg.node.peer_name.clone(),
        schedule: db.schedule.to_string(),
        lag_seconds,
        lag_basis: lag_basis.into(),
        synced_as_of,
        last_replay: from_unix(st.replayed_unix),
        last_outcome: st.last_run.map(|r| r.outcome),
        last_commit_seen: watch.and_then(|w| w.last_change),
        commits_seen: watch.map(|w| w.changes),
        poll_error: watch.and_then(|w| w.last_error.clone()),
    })
}

/// What the master check last concluded (see docs/master-check.md).
#[derive(Debug, Clone, Serialize)]
pub struct MasterStatus {
    pub address: String,
    /// `up`, `down`, `isolated`, `unknown`, or `null` before the first check.
    pub master: Option<String>,
    pub master_since: Option<DateTime<Utc>>,
    pub services_active: bool,
    /// `failover` or `failback`.
    pub last_transition: Option<String>,
    pub last_transition_at: Option<DateTime<Utc>>,
    pub failovers: u64,
    pub failbacks: u64,
    pub last_check_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

fn from_ms(ms: Option<u64>) -> Option<DateTime<Utc>> {
    ms.and_then(|m| DateTime::from_timestamp_millis(m as i64))
}

/// Reads `state_dir/master.json`, if the master check ever ran on this node.
fn master_status(cfg: &Config) -> Option<MasterStatus> {
    let f: crate::failover::MasterFile =
        crate::failover::read_json(&crate::failover::master_file(cfg)).ok()??;
    let st = f.state;
    Some(MasterStatus {
        address: f.address,
        master: st.master.map(|v| v.as_str().to_string()),
        master_since: from_ms(st.master_since_unix_ms),
        services_active: st.services_active,
        last_transition: st.last_transition.map(|d| format!("{d:?}").to_lowercase()),
        last_transition_at: from_ms(st.last_transition_unix_ms),
        failovers: st.failovers,
        failbacks: st.failbacks,
        last_check_at: from_ms(st.last_check_unix_ms),
        last_error: f.last_error,
    })
}

/// One job.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    /// The run's name: the job's, or `job@peer` with `[[peer]]` tables.
    pub name: String,
    /// The config's job name, and the `[[peer]]` its runs go to.
    pub job: String,
    pub peer: Option<String>,
    pub schedule: String,
    /// Why this node does not run the job (its role), if it does not.
    pub skipped: Option<String>,
    pub last_success: Option<DateTime<Utc>>,
    /// Seconds since the last successful run ended.
    pub lag_seconds: Option<f64>,
    /// Watch mode: the oldest change not yet delivered (from the running daemon).
    pub pending_since: Option<DateTime<Utc>>,
    pub pending_seconds: Option<f64>,
    /// From the running daemon (jitter and retries included), else from the schedule.
    pub next_run: Option<DateTime<Utc>>,
    pub retry_at: Option<DateTime<Utc>>,
    pub running_since: Option<DateTime<Utc>>,
    pub last_run: Option<Run>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    pub runs_total: u64,
    pub failures_total: u64,
}

fn secs(d: chrono::Duration) -> f64 {
    d.num_milliseconds().max(0) as f64 / 1000.0
}

/// Builds the report for `jobs` of `cfg` at `now`. `daemon`: the daemon's view
/// (pass [`state::load_daemon`]'s result, or the daemon's own in-memory view).
pub fn report(
    cfg: &Config,
    jobs: &[std::sync::Arc<dyn Job>],
    daemon: Option<&DaemonState>,
    now: DateTime<Utc>,
) -> StatusReport {
    let zone = cfg.daemon.timezone.zone();
    let jobs = jobs
        .iter()
        .map(|job| {
            let st = state::load_job(&cfg.node.state_dir, job.name()).unwrap_or_default();
            let live = daemon.and_then(|d| d.jobs.get(job.name()));
            let timed = match job.schedule() {
                crate::node::config::Schedule::Watch => job.safety_pass(),
                s => s,
            };
            let next_run = match live {
                Some(l) => l.next_run,
                None => cron_of(timed).and_then(|c| next_after(&c, now, zone)),
            };
            let pending_since = live.and_then(|l| l.pending_since);
            JobStatus {
                name: job.name().to_string(),
                job: crate::scheduler::jobs::split_unit(job.name()).0.to_string(),
                peer: job.peer().map(str::to_string),
                schedule: job.schedule().to_string(),
                skipped: job.skip_reason(),
                last_success: st.last_success.as_ref().map(|r| r.end),
                lag_seconds: st.lag_seconds(now),
                pending_since,
                pending_seconds: pending_since.map(|t| secs(now - t)),
                next_run,
                retry_at: live.and_then(|l| l.retry_at),
                running_since: live.and_then(|l| l.running_since),
                last_error: st.last_failure.as_ref().and_then(|r| r.error.clone()),
                last_run: st.last_run().cloned(),
                consecutive_failures: st.consecutive_failures,
                runs_total: st.runs_total,
                failures_total: st.failures_total,
            }
        })
        .collect::<Vec<JobStatus>>();
    let db_of = |c: &Config| {
        let unit = c.unit_name(crate::scheduler::jobs::DB_JOB_NAME);
        db_status(c, jobs.iter().find(|j| j.name == unit), daemon, now)
    };
    let (db, db_by_peer) = match cfg.peers.is_empty() {
        true => (db_of(cfg), Vec::new()),
        false => {
            let all: Vec<DbStatus> = cfg.per_peer().iter().filter_map(db_of).collect();
            let worst = all
                .iter()
                .max_by(|a, b| lag_rank(a).total_cmp(&lag_rank(b)))
                .cloned();
            (worst, all)
        }
    };
    let peers = peer_statuses(cfg, &jobs);
    // Read once: the role files may change between two reads.
    let effective = crate::node::role::effective(cfg);
    StatusReport {
        now,
        // The role and peer now: role_from / peer_from ("wazo") are read at run time.
        role: match &effective {
            Ok((r, _)) => r.to_string(),
            Err(e) => format!("unknown ({e})"),
        },
        role_source: effective.as_ref().ok().map(|(_, s)| *s),
        role_epoch: crate::node::role::epoch(cfg).unwrap_or(0),
        peer: match crate::node::wazo::effective_peer(cfg) {
            Ok(p) => p.to_string(),
            Err(e) => format!("unknown ({e})"),
        },
        config: cfg.path.display().to_string(),
        daemon_pid: daemon.map(|d| d.pid),
        jobs,
        master_check: master_status(cfg),
        role_now: crate::scheduler::health::role_line(cfg),
        services_active: crate::scheduler::health::services_active(cfg),
        received: Some(crate::scheduler::health::load_received(&cfg.node.state_dir))
            .filter(|r| r.last().is_some()),
        db,
        db_by_peer,
        peers,
    }
}

/// Orders DB lags, a peer never replicated to (no lag yet) last of all.
fn lag_rank(d: &DbStatus) -> f64 {
    d.lag_seconds.unwrap_or(f64::INFINITY)
}

/// The DB lag metrics (see [`DbStatus`]).
fn db_metrics(out: &mut String, dbs: &[&DbStatus]) {
    let ts = |t: &DateTime<Utc>| t.timestamp_millis() as f64 / 1000.0;
    type Getter = fn(&DbStatus, &dyn Fn(&DateTime<Utc>) -> f64) -> Option<f64>;
    let gauges: [(&str, &str, Getter); 3] = [
        (
            "hasync_db_lag_seconds",
            "How far behind the master the slave's database may be (0: nothing committed since the slave's last run; docs/db.md).",
            |d, _| d.lag_seconds,
        ),
        (
            "hasync_db_synced_timestamp_seconds",
            "Start of the last successful DB run: the slave holds every commit up to then (Unix time).",
            |d, ts| d.synced_as_of.as_ref().map(ts),
        ),
        (
            "hasync_db_last_commit_seen_timestamp_seconds",
            "Watch mode: when the daemon last saw a commit on the master (Unix time).",
            |d, ts| d.last_commit_seen.as_ref().map(ts),
        ),
    ];
    for (name, help, get) in gauges {
        // The commit poller watches the master, not a peer: one value without a label.
        let per_peer = name != "hasync_db_last_commit_seen_timestamp_seconds";
        let values: Vec<(String, f64)> = dbs
            .iter()
            .take(if per_peer { usize::MAX } else { 1 })
            .filter_map(|d| {
                let labels = match (&d.peer, per_peer) {
                    (Some(p), true) => format!("{{peer=\"{}\"}}", escape(p)),
                    _ => String::new(),
                };
                get(d, &ts).map(|v| (labels, v))
            })
            .collect();
        if values.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, v) in values {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    }
    if let Some(n) = dbs.first().and_then(|d| d.commits_seen) {
        let name = "hasync_db_commits_seen_total";
        let _ = writeln!(
            out,
            "# HELP {name} Watch mode: polls of the master that found a commit since the daemon started.\n# TYPE {name} counter\n{name} {n}"
        );
    }
}

/// With `[[peer]]` tables: each peer's jobs that failed last, and its largest lag.
fn peer_metrics(out: &mut String, peers: &[PeerStatus]) {
    if peers.is_empty() {
        return;
    }
    let name = "hasync_peer_jobs_failing";
    let _ = writeln!(
        out,
        "# HELP {name} Jobs toward each [[peer]] whose last run failed.\n# TYPE {name} gauge"
    );
    for p in peers {
        let _ = writeln!(
            out,
            "{name}{{peer=\"{}\"}} {}",
            escape(&p.name),
            p.jobs_failing
        );
    }
    let name = "hasync_peer_lag_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Seconds since the least recent last success of the jobs toward each [[peer]].\n# TYPE {name} gauge"
    );
    for p in peers {
        if let Some(l) = p.lag_seconds {
            let _ = writeln!(out, "{name}{{peer=\"{}\"}} {l}", escape(&p.name));
        }
    }
}

/// A job's labels: `job="web"`, and `peer="b"` toward a `[[peer]]`.
fn job_labels(j: &JobStatus) -> String {
    match &j.peer {
        None => format!("job=\"{}\"", escape(&j.job)),
        Some(p) => format!("job=\"{}\",peer=\"{}\"", escape(&j.job), escape(p)),
    }
}

/// The node-level metrics of issue 21: role, services, last success per job and
/// what a standby received.
fn node_metrics(out: &mut String, r: &StatusReport) {
    let ts = |t: &DateTime<Utc>| t.timestamp_millis() as f64 / 1000.0;
    let _ = writeln!(
        out,
        "# HELP hasync_role 1 for this node's current role (serving: a slave whose services run since a failover).\n# TYPE hasync_role gauge"
    );
    for (label, line) in [
        ("master", "master"),
        ("slave", "slave"),
        ("serving", "slave serving"),
        ("disabled", "disabled"),
        ("unknown", "unknown"),
    ] {
        let on = u8::from(r.role_now == line);
        let _ = writeln!(out, "hasync_role{{role=\"{label}\"}} {on}");
    }
    let _ = writeln!(
        out,
        "# HELP hasync_role_epoch The highest role epoch this node has seen (promote raises it).\n# TYPE hasync_role_epoch gauge\nhasync_role_epoch {}",
        r.role_epoch
    );
    let _ = writeln!(
        out,
        "# HELP hasync_services_active 1 while this node's slave services run because of a failover.\n# TYPE hasync_services_active gauge\nhasync_services_active {}",
        u8::from(r.services_active)
    );
    let name = "hasync_last_success_timestamp_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} End of each job's last successful run (Unix time).\n# TYPE {name} gauge"
    );
    for j in r.jobs.iter().filter(|j| j.skipped.is_none()) {
        if let Some(t) = &j.last_success {
            let _ = writeln!(out, "{name}{{{}}} {}", job_labels(j), ts(t));
        }
    }
    let Some(rec) = &r.received else { return };
    let name = "hasync_last_received_timestamp_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Standby: end of the last session that received a sync or replayed a DB script (Unix time).\n# TYPE {name} gauge"
    );
    for (kind, t) in [("sync", &rec.last_sync), ("replay", &rec.last_replay)] {
        if let Some(t) = t {
            let _ = writeln!(out, "{name}{{kind=\"{kind}\"}} {}", ts(t));
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The report in the Prometheus text exposition format (version 0.0.4).
pub fn prometheus(r: &StatusReport) -> String {
    let mut out = String::new();
    let ts = |t: &DateTime<Utc>| t.timestamp_millis() as f64 / 1000.0;
    type Getter = fn(&JobStatus, &dyn Fn(&DateTime<Utc>) -> f64) -> Option<f64>;
    let metrics: [(&str, &str, &str, Getter); 9] = [
        (
            "hasync_job_last_success_timestamp_seconds",
            "gauge",
            "End of the last successful run (Unix time).",
            |j, ts| j.last_success.as_ref().map(ts),
        ),
        (
            "hasync_job_last_duration_seconds",
            "gauge",
            "Duration of the last run.",
            |j, _| j.last_run.as_ref().map(|r| secs(r.end - r.start)),
        ),
        (
            "hasync_job_last_run_success",
            "gauge",
            "1 if the last run succeeded, 0 if it failed.",
            |j, _| j.last_run.as_ref().map(|r| if r.ok { 1.0 } else { 0.0 }),
        ),
        (
            "hasync_job_runs_total",
            "counter",
            "Runs recorded (daemon and manual).",
            |j, _| Some(j.runs_total as f64),
        ),
        (
            "hasync_job_failures_total",
            "counter",
            "Failed runs recorded.",
            |j, _| Some(j.failures_total as f64),
        ),
        (
            "hasync_job_lag_seconds",
            "gauge",
            "Seconds since the last successful run ended.",
            |j, _| j.lag_seconds,
        ),
        (
            "hasync_job_pending_seconds",
            "gauge",
            "Watch mode: age of the oldest change not yet delivered (0: none).",
            |j, _| Some(j.pending_seconds.unwrap_or(0.0)),
        ),
        (
            "hasync_job_next_run_timestamp_seconds",
            "gauge",
            "When the next timed run is due (Unix time).",
            |j, ts| j.next_run.as_ref().map(ts),
        ),
        (
            "hasync_job_running",
            "gauge",
            "1 while a run is in progress.",
            |j, _| Some(if j.running_since.is_some() { 1.0 } else { 0.0 }),
        ),
    ];
    let _ = writeln!(
        out,
        "# HELP hasync_up 1 when the daemon answers.\n# TYPE hasync_up gauge\nhasync_up 1"
    );
    node_metrics(&mut out, r);
    match r.db_by_peer.is_empty() {
        true => db_metrics(&mut out, &r.db.iter().collect::<Vec<_>>()),
        false => db_metrics(&mut out, &r.db_by_peer.iter().collect::<Vec<_>>()),
    }
    peer_metrics(&mut out, &r.peers);
    for (name, kind, help, get) in metrics {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for j in r.jobs.iter().filter(|j| j.skipped.is_none()) {
            if let Some(v) = get(j, &ts) {
                let _ = writeln!(out, "{name}{{{}}} {v}", job_labels(j));
            }
        }
    }
    if let Some(m) = &r.master_check {
        let _ = writeln!(
            out,
            "# HELP hasync_master_state 1 for the master check's current verdict.\n# TYPE hasync_master_state gauge"
        );
        for v in ["up", "down", "isolated", "unknown"] {
            let on = m.master.as_deref() == Some(v);
            let _ = writeln!(out, "hasync_master_state{{state=\"{v}\"}} {}", u8::from(on));
        }
        let counters = [
            (
                "hasync_master_failovers_total",
                "Failovers (slave services started).",
                m.failovers,
            ),
            (
                "hasync_master_failbacks_total",
                "Failbacks (slave services stopped).",
                m.failbacks,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP hasync_master_services_active 1 while the slave services run because of a failover.\n# TYPE hasync_master_services_active gauge\nhasync_master_services_active {}",
            u8::from(m.services_active)
        );
        if let Some(t) = &m.last_transition_at {
            let _ = writeln!(
                out,
                "# HELP hasync_master_last_transition_timestamp_seconds Last failover or failback (Unix time).\n# TYPE hasync_master_last_transition_timestamp_seconds gauge\nhasync_master_last_transition_timestamp_seconds {}",
                ts(t)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, skipped: bool) -> JobStatus {
        let t = DateTime::from_timestamp(1_800_000_000, 500_000_000).unwrap();
        JobStatus {
            name: name.into(),
            job: name.into(),
            peer: None,
            schedule: "watch".into(),
            skipped: skipped.then(|| "pull jobs run on the slave".into()),
            last_success: Some(t),
            lag_seconds: Some(2.5),
            pending_since: None,
            pending_seconds: None,
            next_run: None,
            retry_at: None,
            running_since: Some(t),
            last_run: None,
            last_error: None,
            consecutive_failures: 0,
            runs_total: 7,
            failures_total: 1,
        }
    }

    #[test]
    fn db_lag_is_0_when_nothing_is_pending_else_an_age_or_the_upper_bound() {
        let now = DateTime::from_timestamp(1_800_000_100, 0).unwrap();
        let at = |s: i64| Some(now - chrono::Duration::seconds(s));
        let seen = state::DbWatchState {
            changes: 4,
            ..Default::default()
        };
        let failing = state::DbWatchState {
            last_error: Some("down".into()),
            ..seen.clone()
        };
        let fresh = state::DbWatchState::default();
        assert_eq!(db_lag(Some(&seen), None, at(60), now), (Some(0.0), "watch"));
        assert_eq!(
            db_lag(Some(&seen), at(3), at(60), now),
            (Some(3.0), "watch")
        );
        // The first run after the daemon started, polling failing, no daemon: since the sync.
        assert_eq!(
            db_lag(Some(&fresh), at(1), at(60), now),
            (Some(60.0), "since_sync")
        );
        assert_eq!(
            db_lag(Some(&failing), None, at(60), now),
            (Some(60.0), "since_sync")
        );
        assert_eq!(db_lag(None, None, at(60), now), (Some(60.0), "since_sync"));
        assert_eq!(db_lag(Some(&seen), None, None, now), (None, "since_sync"));
    }

    #[test]
    fn fan_out_jobs_are_labelled_by_job_and_peer_and_each_peer_is_summed_up() {
        let text = "[node]\nrole = \"master\"\n\
            [[peer]]\nname = \"b\"\naddress = \"root@10.0.0.2\"\n\
            [[peer]]\nname = \"c\"\naddress = \"root@10.0.0.3\"\n\
            [[sync]]\nname = \"web\"\npaths = [\"/w\"]\n";
        let cfg = crate::node::config::parse(text, std::path::Path::new("/x/h.toml")).unwrap();
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let of = |peer: &str, ok: bool| JobStatus {
            name: format!("web@{peer}"),
            job: "web".into(),
            peer: Some(peer.into()),
            last_run: Some(Run {
                start: t,
                end: t,
                ok,
                trigger: "schedule".into(),
                exit_code: if ok { 0 } else { 3 },
                error: (!ok).then(|| "cannot reach the peer".into()),
                stats: Default::default(),
            }),
            last_success: ok.then_some(t),
            last_error: (!ok).then(|| "cannot reach the peer".into()),
            ..job("web", false)
        };
        let jobs = vec![of("b", true), of("c", false)];
        let peers = peer_statuses(&cfg, &jobs);
        assert_eq!(peers.len(), 2);
        assert_eq!(
            (peers[0].name.as_str(), peers[0].state.as_str()),
            ("b", "ok")
        );
        assert_eq!(peers[0].address, "root@10.0.0.2");
        assert_eq!(
            (peers[1].state.as_str(), peers[1].jobs_failing),
            ("failing", 1)
        );
        assert_eq!(
            peers[1].last_error.as_deref(),
            Some("cannot reach the peer")
        );
        assert_eq!(job_labels(&jobs[1]), "job=\"web\",peer=\"c\"");
        let mut out = String::new();
        peer_metrics(&mut out, &peers);
        assert!(
            out.contains("hasync_peer_jobs_failing{peer=\"c\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("hasync_peer_jobs_failing{peer=\"b\"} 0\n"),
            "{out}"
        );
    }

    #[test]
    fn prometheus_text_has_help_type_and_one_sample_per_job() {
        let r = StatusReport {
            now: Utc::now(),
            role: "master".into(),
            role_source: None,
            role_epoch: 3,
            peer: "local".into(),
            config: "/x".into(),
            daemon_pid: Some(1),
            jobs: vec![job("a\"b", false), job("skipped", true)],
            master_check: None,
            role_now: "slave serving".into(),
            services_active: true,
            received: None,
            db: Some(DbStatus {
                lag_seconds: Some(0.0),
                commits_seen: Some(3),
                ..Default::default()
            }),
            db_by_peer: Vec::new(),
            peers: Vec::new(),
        };
        let text = prometheus(&r);
        assert!(text.contains("hasync_up 1\n"));
        assert!(text.contains("hasync_role{role=\"serving\"} 1\n"), "{text}");
        assert!(text.contains("hasync_role{role=\"master\"} 0\n"));
        assert!(text.contains("\nhasync_role_epoch 3\n"), "{text}");
        assert!(text.contains("hasync_services_active 1\n"));
        assert!(
            text.contains("hasync_last_success_timestamp_seconds{job=\"a\\\"b\"} 1800000000.5\n")
        );
        assert!(text.contains("# TYPE hasync_job_runs_total counter\n"));
        assert!(
            text.contains("hasync_job_runs_total{job=\"a\\\"b\"} 7\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "hasync_job_last_success_timestamp_seconds{job=\"a\\\"b\"} 1800000000.5\n"
            )
        );
        assert!(text.contains("hasync_job_pending_seconds{job=\"a\\\"b\"} 0\n"));
        assert!(text.contains("hasync_job_running{job=\"a\\\"b\"} 1\n"));
        assert!(text.contains("\nhasync_db_lag_seconds 0\n"), "{text}");
        assert!(text.contains(
            "# TYPE hasync_db_commits_seen_total counter\nhasync_db_commits_seen_total 3\n"
        ));
        assert!(!text.contains("hasync_db_synced_timestamp_seconds"));
        // Optional values are left out, not written as 0; skipped jobs are not shown.
        assert!(!text.contains("hasync_job_next_run_timestamp_seconds{"));
        assert!(!text.contains("skipped"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = line.rsplit_once(' ').unwrap();
            v.parse::<f64>()
                .unwrap_or_else(|_| panic!("bad sample {line:?}"));
        }
    }
}
