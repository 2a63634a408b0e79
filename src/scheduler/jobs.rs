//! Jobs: the units the daemon schedules and `hasync sync` runs. This module owns the
//! [`Job`] trait (name, schedule, what to watch, one blocking run), the `[[sync]]`
//! implementation of it ([`SyncJobRun`], built on [`run_sync_paths`], which the CLI
//! uses too), the transport to the peer ([`peer_transport`]: one per peer, shared by
//! every job so an SSH session is reused), and [`execute`]: take the job's lock, run,
//! record the run in the state directory, call the `on_failure` hook.
//!
//! Hook point for other kinds of jobs (the `[db]` job, the master check): implement
//! [`Job`] and add it in [`jobs_of`]; the daemon then schedules, locks, retries,
//! records and reports it like a sync job.

mod db_run;
pub use db_run::DB_JOB_NAME;

use chrono::Utc;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::node::config::{Config, Direction, Hooks, Peer, Role, Schedule, SyncJob};
use crate::scheduler::state::{self, JobLock, JobState, Run};
use crate::sync::SyncError;
use crate::sync::client::Client;
use crate::sync::scan::EarlyScan;
use crate::transport::Transport;
use crate::tree::report::{Item, Reporter, Stats};
use crate::wire::SessionOptions;

/// The transport shared by every job of a node.
pub type SharedTransport = Arc<dyn Transport + Send + Sync>;

/// How one run ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// 0 success, 1 some items failed, 2 usage, 3 peer, 4 guard (see `--help`).
    pub exit_code: i32,
    pub error: Option<String>,
    pub stats: Stats,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.exit_code == 0 && self.error.is_none()
    }

    /// The error to record: the run's, or the count of items that failed.
    pub fn error_text(&self) -> Option<String> {
        self.error.clone().or_else(|| {
            (self.stats.files_failed > 0)
                .then(|| format!("{} items failed", self.stats.files_failed))
        })
    }
}

/// Something the daemon runs on a schedule.
pub trait Job: Send + Sync {
    fn name(&self) -> &str;
    /// `hourly`, a cron expression, `watch` or `manual`.
    fn schedule(&self) -> &Schedule;
    /// For a `watch` job: the timed full pass that runs anyway.
    fn safety_pass(&self) -> &Schedule {
        &Schedule::Manual
    }
    /// For a `watch` job: the least time between the starts of two runs (default none).
    fn min_interval(&self) -> Duration {
        Duration::ZERO
    }
    /// A random delay added to each timed run.
    fn jitter(&self) -> Duration {
        Duration::ZERO
    }
    /// For a `watch` job: the local directories whose changes trigger a run.
    fn watch_paths(&self) -> Vec<PathBuf> {
        Vec::new()
    }
    /// `Some(why)` when this node does not run the job (its role).
    fn skip_reason(&self) -> Option<String> {
        None
    }
    /// One run, blocking. Errors are in the outcome.
    fn run(&self, transport: &dyn Transport, rep: &mut dyn JobReporter) -> Outcome;
    /// The `[[peer]]` this job's runs go to (`None`: the one peer of `[node] peer`).
    fn peer(&self) -> Option<&str> {
        None
    }
}

/// A job run's name split into the config's job name and its `[[peer]]`:
/// `"web@b"` -> `("web", Some("b"))`, `"web"` -> `("web", None)` (see [`Config::unit_name`]).
pub fn split_unit(name: &str) -> (&str, Option<&str>) {
    match name.split_once('@') {
        Some((job, peer)) => (job, Some(peer)),
        None => (name, None),
    }
}

/// A [`Reporter`] that is also told which directory a run is on.
pub trait JobReporter: Reporter {
    fn path(&mut self, _job: &str, _local: &Path, _peer: &Path) {}
}

/// Logs failures (warn) and changes (debug) through `tracing`: the daemon's reporter.
pub struct LogReporter {
    pub job: String,
}

impl Reporter for LogReporter {
    fn item(&mut self, item: &Item) {
        match &item.error {
            Some(e) => tracing::warn!("job {}: {}: {e}", self.job, item.line()),
            None => tracing::debug!("job {}: {}", self.job, item.line()),
        }
    }
}

impl JobReporter for LogReporter {}

/// Every job of the node, in config order; with `[[peer]]` tables, every job once per
/// peer (`job@peer`: its own lock, state, retries and metrics, so a slow or dead peer
/// delays no other), peer by peer.
pub fn jobs_of(cfg: &Arc<Config>) -> Vec<Arc<dyn Job>> {
    let mut jobs: Vec<Arc<dyn Job>> = Vec::new();
    for peer_cfg in cfg.per_peer() {
        let peer_cfg = Arc::new(peer_cfg);
        for index in 0..cfg.sync.len() {
            jobs.push(Arc::new(SyncJobRun::new(peer_cfg.clone(), index)));
        }
        // The [db] job is scheduled like the sync jobs. (The master check runs every few
        // seconds on its own thread instead: see `daemon::master_loop`.)
        if cfg.db.is_some() {
            jobs.push(Arc::new(db_run::DbJobRun::new(peer_cfg)));
        }
    }
    jobs.shrink_to_fit();
    jobs
}

/// A `[[sync]]` job toward one peer as a [`Job`].
pub struct SyncJobRun {
    /// The config as seen toward the job's peer ([`Config::for_peer`]).
    pub cfg: Arc<Config>,
    pub index: usize,
    /// [`Config::unit_name`]: `job`, or `job@peer`.
    unit: String,
}

impl SyncJobRun {
    pub fn new(cfg: Arc<Config>, index: usize) -> SyncJobRun {
        let unit = cfg.unit_name(&cfg.sync[index].name);
        SyncJobRun { cfg, index, unit }
    }

    fn job(&self) -> &SyncJob {
        &self.cfg.sync[self.index]
    }
}

impl Job for SyncJobRun {
    fn name(&self) -> &str {
        &self.unit
    }
    fn peer(&self) -> Option<&str> {
        self.cfg.node.peer_name.as_deref()
    }
    fn schedule(&self) -> &Schedule {
        &self.job().schedule
    }
    fn safety_pass(&self) -> &Schedule {
        &self.job().safety_pass
    }
    fn jitter(&self) -> Duration {
        self.job().jitter
    }
    fn watch_paths(&self) -> Vec<PathBuf> {
        match self.job().schedule {
            Schedule::Watch => self
                .job()
                .paths
                .iter()
                .map(|p| self.cfg.local_path(p))
                .collect(),
            _ => Vec::new(),
        }
    }
    fn skip_reason(&self) -> Option<String> {
        skip_reason(&self.cfg, self.job())
    }
    fn run(&self, transport: &dyn Transport, rep: &mut dyn JobReporter) -> Outcome {
        let mut client = None;
        let out = run_sync_paths(&self.cfg, self.job(), transport, &mut client, false, rep);
        if let Some(c) = client {
            let _ = c.close();
        }
        out
    }
}

/// Lets one `connect` through at a time. The SSH transport takes its cached session
/// out while it opens a channel on it, so two jobs connecting at the same moment
/// would otherwise open two sessions; connecting is short (a channel and an exec on
/// the kept session), the runs themselves still go in parallel.
struct OneConnectAtATime<T> {
    inner: T,
    gate: std::sync::Mutex<()>,
}

impl<T: Transport> Transport for OneConnectAtATime<T> {
    fn connect(
        &self,
        serve_args: &[String],
    ) -> Result<crate::transport::Connection, crate::transport::TransportError> {
        let _turn = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        self.inner.connect(serve_args)
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }
}

/// The transport to this node's peer: a local child process, or SSH (whose session
/// the transport keeps and reuses across connections, also between jobs running at
/// the same time).
pub fn peer_transport(cfg: &Config) -> Result<SharedTransport, SyncError> {
    // peer_from = "wazo": the peer is read from ha.conf now, not when the config was.
    let peer = crate::node::wazo::effective_peer(cfg)
        .map_err(|e| SyncError::Usage(format!("cannot tell the peer: {e}")))?;
    match &peer {
        Peer::WazoHaConf => Err(SyncError::Usage(
            "the peer from ha.conf is not resolved".into(),
        )),
        Peer::Local => Ok(Arc::new(
            crate::transport::local::LocalTransport::for_config(cfg)?,
        )),
        Peer::Ssh { user, host, port } => {
            let mut target = crate::transport::ssh::SshTarget::new(host.clone());
            target.user = user.clone();
            if let Some(p) = port {
                target.port = *p;
            }
            let known_hosts = cfg.node.known_hosts.clone().unwrap_or_else(|| {
                std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("/root"))
                    .join(".ssh/known_hosts")
            });
            let opts = crate::transport::ssh::SshOptions {
                identity: cfg.node.identity.clone(),
                known_hosts,
                remote_path: cfg.node.remote_path.clone(),
                ..Default::default()
            }
            .with_timeout(cfg.node.timeout);
            Ok(Arc::new(OneConnectAtATime {
                inner: crate::transport::ssh::SshTransport::new(target, opts),
                gate: std::sync::Mutex::new(()),
            }))
        }
    }
}

/// One [`peer_transport`] per peer of the node (one for `[node] peer`, one per
/// `[[peer]]`), each keeping its own SSH session: a dead peer's timeouts hold up no
/// other peer's jobs.
#[derive(Clone)]
pub struct PeerTransports(Vec<(Option<String>, SharedTransport)>);

impl PeerTransports {
    pub fn of(cfg: &Config) -> Result<PeerTransports, SyncError> {
        cfg.per_peer()
            .iter()
            .map(|c| Ok((c.node.peer_name.clone(), peer_transport(c)?)))
            .collect::<Result<_, SyncError>>()
            .map(PeerTransports)
    }

    /// The transport to `peer` (a [`Job::peer`]); the first one for a name it does not know.
    pub fn get(&self, peer: Option<&str>) -> SharedTransport {
        let found = self.0.iter().find(|(name, _)| name.as_deref() == peer);
        found.unwrap_or(&self.0[0]).1.clone()
    }
}

/// What the master check uses to reach the master for a failback's copy-back.
pub fn copy_back_connector(cfg: &Config) -> crate::failover::PeerConnector {
    let cfg = cfg.clone();
    Box::new(move || peer_transport(&cfg).map_err(|e| e.to_string()))
}

/// Whether this node runs `job` given its role; `Some(reason)` when it does not.
pub fn skip_reason(cfg: &Config, job: &SyncJob) -> Option<String> {
    // The role file written by promote/demote (then ha.conf, sentinels) overrides the config's role.
    let role = match crate::node::role::effective_role(cfg) {
        Ok(r) => r,
        Err(e) => return Some(format!("cannot tell this node's role: {e}")),
    };
    match (role, job.direction) {
        (Role::Disabled, _) => Some("this node's role is disabled".into()),
        // A pull now would mirror the master's data over what this node wrote while
        // it served (with --delete); the failback copies that back first.
        (Role::Slave, Direction::Pull) if crate::node::role::failed_over(&cfg.node.state_dir) => {
            Some(
                "this node serves as master after a failover: pull jobs wait for the failback"
                    .into(),
            )
        }
        // [cluster] with [[peer]] tables: a standby pulls from the leader only.
        (Role::Slave, Direction::Pull) if cfg.cluster.is_some() && cfg.node.peer_name.is_some() => {
            let leader = crate::cluster::load(&cfg.node.state_dir)
                .ok()
                .flatten()
                .and_then(|f| f.leader);
            match leader {
                Some(l) if cfg.node.peer_name.as_deref() == Some(l.as_str()) => None,
                Some(l) => Some(format!("pull jobs pull from the cluster's leader ({l})")),
                None => Some("the cluster has no leader to pull from".into()),
            }
        }
        (Role::Master, Direction::Push) | (Role::Slave, Direction::Pull) => None,
        (Role::Master, Direction::Pull) => Some("pull jobs run on the slave".into()),
        (Role::Slave, Direction::Push) => Some("push jobs run on the master".into()),
    }
}

/// Mirrors every path of `job` over `client` (connected on first use through
/// `transport`, reconnected after a failed path, left open for the caller's next job).
pub fn run_sync_paths(
    cfg: &Config,
    job: &SyncJob,
    transport: &dyn Transport,
    client: &mut Option<Client>,
    dry_run: bool,
    rep: &mut dyn JobReporter,
) -> Outcome {
    let opts = SessionOptions {
        delete: job.delete,
        checksum: job.checksum,
        dry_run,
        owners: true,
        allow_empty_source: job.allow_empty_source,
        max_delete: job.max_delete,
        excludes: job.exclude.clone(),
        one_file_system: job.one_file_system,
        numeric_ids: job.numeric_ids,
        copy_back: false,
    };
    let mut total = Stats::default();
    let mut errors = Vec::new();
    let mut worst = 0;
    for p in &job.paths {
        let (local, peer) = (cfg.local_path(p), cfg.peer_path(p));
        // The role now, before each path: a demote in the middle of a run stops it.
        if let Some(why) = skip_reason(cfg, job) {
            errors.push(format!("stopped before {}: {why}", p.display()));
            worst = worst.max(crate::node::exit::ExitCode::Peer.code());
            break;
        }
        rep.path(&job.name, &local, &peer);
        let mut early = None;
        if client.is_none() {
            // A push scans its source while the connection is set up.
            if matches!(job.direction, Direction::Push) {
                early = EarlyScan::start(&local, &opts);
            }
            match Client::connect_as(transport, &[], Some(cfg)) {
                Ok(c) => *client = Some(c),
                Err(e) => {
                    worst = worst.max(e.exit_code().code());
                    errors.push(match e {
                        SyncError::Fenced(_) => e.to_string(),
                        e => format!("cannot reach the peer {}: {e}", cfg.node.peer),
                    });
                    break;
                }
            }
        }
        let c = client.as_mut().expect("connected above");
        c.link = crate::sync::client::LinkOptions {
            compress: job.compress.unwrap_or(cfg.node.compress),
            bwlimit: job.bwlimit.unwrap_or(cfg.node.bwlimit),
        };
        let res = match job.direction {
            Direction::Push => c.push_scanned(&local, &peer, &opts, rep, early),
            Direction::Pull => c.pull(&peer, &local, &opts, rep),
        };
        match res {
            Ok(s) => total += &s,
            Err(e) => {
                worst = worst.max(e.exit_code().code());
                errors.push(format!("{}: {e}", p.display()));
                if let SyncError::Fenced(_) = e {
                    let _ = client.take();
                    break; // every other path would be refused the same way
                }
                // The peer ends the connection after an error: reconnect for the next path.
                if let Some(c) = client.take() {
                    let _ = c.close();
                }
            }
        }
    }
    if total.files_failed > 0 {
        worst = worst.max(1);
    }
    Outcome {
        exit_code: worst,
        error: (!errors.is_empty()).then(|| errors.join("; ")),
        stats: total,
    }
}

/// The result of [`execute`].
#[derive(Debug)]
pub enum Executed {
    /// Another run of the job holds its lock; nothing ran.
    Busy,
    Done {
        run: Box<Run>,
        state: Box<JobState>,
    },
}

/// Runs `job` under its lock, records the run and calls `on_failure` if it failed.
/// `wait`: wait for a run in progress instead of returning [`Executed::Busy`].
pub fn execute(
    job: &dyn Job,
    transport: &dyn Transport,
    state_dir: &Path,
    hooks: &Hooks,
    trigger: &str,
    wait: bool,
    rep: &mut dyn JobReporter,
) -> std::io::Result<Executed> {
    let how = Execution {
        state_dir,
        hooks,
        trigger,
        wait,
        record: true,
    };
    execute_with(job.name(), &how, || job.run(transport, rep))
}

/// How [`execute_with`] runs a job.
pub struct Execution<'a> {
    pub state_dir: &'a Path,
    pub hooks: &'a Hooks,
    /// What started the run (recorded): `schedule`, `watch`, `manual`...
    pub trigger: &'a str,
    /// Wait for a run in progress instead of returning [`Executed::Busy`].
    pub wait: bool,
    /// Record the run and call the hook (not for a dry run).
    pub record: bool,
}

/// [`execute`] for a run that is not a [`Job`] object: `hasync sync` runs its jobs
/// through one shared connection.
pub fn execute_with(
    name: &str,
    how: &Execution,
    run: impl FnOnce() -> Outcome,
) -> std::io::Result<Executed> {
    let lock = if how.wait {
        JobLock::lock(how.state_dir, name)?
    } else {
        match JobLock::try_lock(how.state_dir, name)? {
            Some(l) => l,
            None => return Ok(Executed::Busy),
        }
    };
    let start = Utc::now();
    let out = run();
    let run = Run {
        start,
        end: Utc::now(),
        ok: out.ok(),
        trigger: how.trigger.to_string(),
        exit_code: out.exit_code,
        error: out.error_text(),
        stats: out.stats,
    };
    let state = match how.record {
        true => finish_run(how.state_dir, how.hooks, name, run.clone())?,
        false => JobState::default(),
    };
    drop(lock);
    Ok(Executed::Done {
        run: Box::new(run),
        state: Box::new(state),
    })
}

/// Records a finished run (call it under the job's lock) and calls the `on_failure`
/// hook when it failed: at the first failure of a streak, then at most hourly.
pub fn finish_run(
    state_dir: &Path,
    hooks: &Hooks,
    job: &str,
    run: Run,
) -> std::io::Result<JobState> {
    let ok = run.ok;
    let error = run.error.clone().unwrap_or_default();
    let mut st = state::record_run(state_dir, job, run)?;
    if !ok && let Some(cmd) = &hooks.on_failure {
        let now = Utc::now();
        let due = st.consecutive_failures == 1
            || st
                .last_hook
                .is_none_or(|t| now - t >= chrono::Duration::hours(1));
        if due {
            crate::node::hooks::run(cmd, "failure", job, &error, &[]);
            st.last_hook = Some(now);
            state::save_job(state_dir, &st)?;
        }
    }
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_standby_pulls_from_the_leader_only() {
        let d = tempfile::tempdir().unwrap();
        let text = format!(
            "[node]\nrole = \"slave\"\nstate_dir = \"{}\"\n\
             [[peer]]\nname = \"b\"\naddress = \"root@10.0.0.2\"\n\
             [[peer]]\nname = \"c\"\naddress = \"root@10.0.0.3\"\n\
             [[sync]]\nname = \"in\"\npaths = [\"/in\"]\ndirection = \"pull\"\n\
             [cluster]\ndcs = \"etcd\"\nendpoints = [\"http://10.0.0.1:2379\"]\nname = \"a\"\n",
            d.path().display()
        );
        let cfg = crate::node::config::parse(&text, Path::new("/x/h.toml")).unwrap();
        let per = cfg.per_peer();
        let why = |c: &Config| skip_reason(c, &c.sync[0]);
        assert_eq!(
            why(&per[0]).as_deref(),
            Some("the cluster has no leader to pull from")
        );
        let f = crate::cluster::ClusterFile {
            leader: Some("c".into()),
            ..Default::default()
        };
        std::fs::write(
            crate::cluster::cluster_file(d.path()),
            serde_json::to_vec(&f).unwrap(),
        )
        .unwrap();
        assert_eq!(
            why(&per[0]).as_deref(),
            Some("pull jobs pull from the cluster's leader (c)")
        );
        assert_eq!(why(&per[1]), None);
    }
}
