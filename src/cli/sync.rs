//! `hasync sync`: run the config's [[sync]] jobs now (what `xivo-sync` does).
//!
//! One connection to the peer carries every job. With `[[peer]]` tables, the jobs run
//! toward every peer (or those `--peer` names) at once, one thread and one connection
//! per peer, each job under its own lock `job@peer`: a dead peer delays no other. Each path of a job is
//! mirrored at the same absolute path on the peer (under `root` here and
//! `peer_root` there). A job that fails does not stop the others; the exit
//! code is the worst outcome. Each job runs under its lock (shared with the
//! daemon): a job already running elsewhere is reported (exit 5) or, with
//! `--wait`, waited for. Runs are recorded in the state directory and a failed
//! one calls the `on_failure` hook, as in the daemon.

use super::output::{Console, summary};
use super::{Cli, CliError};
use hasync::node::config::{Config, SyncJob};
use hasync::node::exit::ExitCode;
use hasync::scheduler::jobs::{
    Executed, Execution, JobReporter, execute_with, peer_transport, run_sync_paths, skip_reason,
};
use hasync::sync::client::Client;
use hasync::tree::report::{Item, Reporter, Stats};
use serde::Serialize;
use std::path::Path;

#[derive(clap::Args, Debug)]
pub struct SyncArgs {
    /// Jobs to run (default: every job of the config)
    pub jobs: Vec<String>,
    /// Print what would change, change nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Print one JSON object with each job's stats on stdout at the end
    #[arg(long)]
    pub json: bool,
    /// When a job is already running (the daemon, another `hasync sync`), wait for it
    /// to end and then run, instead of reporting it with exit code 5
    #[arg(long)]
    pub wait: bool,
    /// With [[peer]] tables: sync to (or from) this peer only (repeat it for several;
    /// default: every peer, in parallel, each over its own connection)
    #[arg(long = "peer", value_name = "NAME")]
    pub peers: Vec<String>,
    /// For this run, override every job's `compress` / `bwlimit`
    #[command(flatten)]
    pub link: super::push::LinkArgs,
}

#[derive(Serialize)]
struct JobReport {
    name: String,
    /// The `[[peer]]` of this run (absent with `[node] peer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<String>,
    ok: bool,
    skipped: Option<String>,
    error: Option<String>,
    #[serde(flatten)]
    stats: Stats,
}

/// The console, told which directory each run is on.
struct PathConsole<'a> {
    console: &'a mut Console,
    verbose: bool,
    /// This node's `root`: item lines show the managed path (`etc/xivo/...`), not
    /// where it sits under a test or demo root.
    root: &'a Path,
}

impl Reporter for PathConsole<'_> {
    fn item(&mut self, item: &Item) {
        self.console.item(item)
    }
    fn progress(&mut self, bytes: u64) {
        self.console.progress(bytes)
    }
    fn total(&mut self, bytes: u64) {
        self.console.total(bytes)
    }
}

impl JobReporter for PathConsole<'_> {
    fn path(&mut self, job: &str, local: &Path, peer: &Path) {
        if self.verbose {
            outln!("job {job}: {} -> {}", local.display(), peer.display());
        }
        let managed = local.strip_prefix(self.root).unwrap_or(local);
        let rel = managed.strip_prefix("/").unwrap_or(managed);
        self.console.prefix = rel.display().to_string();
    }
}

pub fn run(cli: &Cli, args: &SyncArgs) -> Result<i32, CliError> {
    let mut cfg = super::load_config(cli)?;
    let (compress, bwlimit) = args.link.parse()?;
    for job in &mut cfg.sync {
        job.compress = compress.or(job.compress);
        job.bwlimit = bwlimit.or(job.bwlimit);
    }
    for name in &args.jobs {
        if cfg.job(name).is_none() {
            let names: Vec<_> = cfg.sync.iter().map(|j| j.name.as_str()).collect();
            return Err(CliError::usage(format!(
                "no [[sync]] job named {name:?} in {}; jobs: {}",
                cfg.path.display(),
                names.join(", ")
            )));
        }
    }
    let jobs: Vec<&SyncJob> = cfg
        .sync
        .iter()
        .filter(|j| args.jobs.is_empty() || args.jobs.contains(&j.name))
        .collect();
    if jobs.is_empty() {
        return Err(CliError::usage(format!(
            "{} has no [[sync]] jobs",
            cfg.path.display()
        )));
    }
    let targets = selected_peers(&cfg, &args.peers)?;
    let several = targets.len() > 1;
    let results: Vec<Result<PeerRun, CliError>> = match several {
        false => vec![run_peer(cli, args, &targets[0], &jobs, false)],
        true => std::thread::scope(|s| {
            let handles: Vec<_> = targets
                .iter()
                .map(|t| s.spawn(|| run_peer(cli, args, t, &jobs, true)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        }),
    };
    let mut reports = Vec::new();
    let mut worst = 0;
    for r in results {
        let r = r?;
        worst = worst.max(r.worst);
        reports.extend(r.reports);
    }
    if args.json {
        outln!("{}", serde_json::json!({ "jobs": reports }));
    }
    Ok(worst)
}

/// The configs of the peers this run goes to: the one of `[node] peer`, every
/// `[[peer]]`, or those `--peer` names.
pub(super) fn selected_peers(cfg: &Config, names: &[String]) -> Result<Vec<Config>, CliError> {
    if names.is_empty() {
        return Ok(cfg.per_peer());
    }
    if cfg.peers.is_empty() {
        return Err(CliError::usage(format!(
            "--peer picks among [[peer]] tables, but {} names one peer ([node] peer = {}): leave --peer out",
            cfg.path.display(),
            cfg.node.peer
        )));
    }
    let mut out: Vec<Config> = Vec::new();
    for name in names {
        let Some(p) = cfg.peer_named(name) else {
            let known: Vec<_> = cfg.peers.iter().map(|p| p.name.as_str()).collect();
            return Err(CliError::usage(format!(
                "no [[peer]] named {name:?} in {}; peers: {}",
                cfg.path.display(),
                known.join(", ")
            )));
        };
        if !out
            .iter()
            .any(|c| c.node.peer_name.as_deref() == Some(name))
        {
            out.push(cfg.for_peer(p));
        }
    }
    Ok(out)
}

/// What the jobs toward one peer did.
struct PeerRun {
    reports: Vec<JobReport>,
    worst: i32,
}

/// Runs `jobs` toward the peer of `cfg` over one connection. `several`: other peers
/// run at the same time (lines are tagged with the peer, no progress bar).
fn run_peer(
    cli: &Cli,
    args: &SyncArgs,
    cfg: &Config,
    jobs: &[&SyncJob],
    several: bool,
) -> Result<PeerRun, CliError> {
    let talk = !args.json && !cli.quiet;
    let mut console = Console::new(
        !cli.quiet && (!args.json || cli.verbose > 0),
        !cli.quiet && !args.json && !several,
    );
    if several {
        console.tag = format!("[{}] ", cfg.node.peer_name.as_deref().unwrap_or("peer"));
    }
    let transport = peer_transport(cfg)?;
    let state_dir = cfg.node.state_dir.clone();
    let mut reports = Vec::new();
    let mut worst = 0;
    let mut client: Option<Client> = None;
    for job in jobs {
        let unit = cfg.unit_name(&job.name);
        let mut report = JobReport {
            name: job.name.clone(),
            peer: cfg.node.peer_name.clone(),
            ok: true,
            skipped: None,
            error: None,
            stats: Stats::default(),
        };
        if let Some(why) = skip_reason(cfg, job) {
            if talk {
                outln!("job {unit}: skipped ({why})");
            }
            report.skipped = Some(why);
            reports.push(report);
            continue;
        }
        let mut rep = PathConsole {
            console: &mut console,
            verbose: talk && cli.verbose > 0,
            root: &cfg.node.root,
        };
        let how = Execution {
            state_dir: &state_dir,
            hooks: &cfg.hooks,
            trigger: "manual",
            wait: args.wait,
            record: !args.dry_run,
        };
        let mut outcome = None;
        let executed = execute_with(&unit, &how, || {
            let out = run_sync_paths(
                cfg,
                job,
                transport.as_ref(),
                &mut client,
                args.dry_run,
                &mut rep,
            );
            outcome = Some(out.clone());
            out
        });
        let out = match (executed, outcome) {
            (Ok(Executed::Done { .. }), Some(out)) => out,
            (Ok(_), _) => {
                let why = format!(
                    "already running (another hasync holds {}; pass --wait to wait for it)",
                    state_dir
                        .join("locks")
                        .join(format!("{unit}.lock"))
                        .display()
                );
                eprintln!("hasync: job {unit}: {why}");
                worst = worst.max(ExitCode::Busy.code());
                report.ok = false;
                report.error = Some(why);
                reports.push(report);
                continue;
            }
            (Err(e), None) => {
                return Err(CliError::usage(format!(
                    "cannot lock job {unit} under the state_dir {}: {e} (set [node] state_dir to a directory this user can write)",
                    state_dir.display()
                )));
            }
            (Err(e), Some(out)) => {
                tracing::warn!("job {unit}: cannot record the run: {e}");
                out
            }
        };
        worst = worst.max(out.exit_code);
        match &out.error {
            None if talk => outln!(
                "job {unit}: {}{}",
                if args.dry_run { "(dry run) " } else { "" },
                summary(&out.stats)
            ),
            None => {}
            Some(e) => eprintln!("hasync: job {unit} failed: {e}"),
        }
        report.ok = out.ok();
        report.error = out.error;
        report.stats = out.stats;
        reports.push(report);
    }
    console.finish();
    if let Some(c) = client {
        c.close()?;
    }
    Ok(PeerRun { reports, worst })
}
