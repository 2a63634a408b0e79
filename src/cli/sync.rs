//! `hasync sync`: run the config's [[sync]] jobs now (what `xivo-sync` does).
//!
//! One connection to the peer carries every job. Each path of a job is
//! mirrored at the same absolute path on the peer (under `root` here and
//! `peer_root` there). A job that fails does not stop the others; the exit
//! code is the worst outcome.

use super::output::{Console, summary};
use super::{Cli, CliError};
use hasync::config::{Config, Direction, Peer, Role, SyncJob};
use hasync::engine::SyncError;
use hasync::engine::session::Client;
use hasync::protocol::SessionOptions;
use hasync::report::Stats;
use hasync::transport::Transport;
use serde::Serialize;

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
}

#[derive(Serialize)]
struct JobReport {
    name: String,
    ok: bool,
    skipped: Option<String>,
    error: Option<String>,
    #[serde(flatten)]
    stats: Stats,
}

/// The transport to this node's peer.
pub fn peer_transport(cfg: &Config) -> Result<Box<dyn Transport>, CliError> {
    match &cfg.node.peer {
        Peer::Local => Ok(Box::new(
            hasync::transport::local::LocalTransport::new().map_err(SyncError::from)?,
        )),
        Peer::Ssh { user, host, port } => {
            let mut target = hasync::transport::ssh::SshTarget::new(host.clone());
            target.user = user.clone();
            if let Some(p) = port {
                target.port = *p;
            }
            let opts = hasync::transport::ssh::SshOptions {
                identity: cfg.node.identity.clone(),
                known_hosts: cfg
                    .node
                    .known_hosts
                    .clone()
                    .unwrap_or_else(super::push::default_known_hosts),
                remote_path: cfg.node.remote_path.clone(),
                ..Default::default()
            }
            .with_timeout(cfg.node.timeout);
            Ok(Box::new(hasync::transport::ssh::SshTransport::new(
                target, opts,
            )))
        }
    }
}

/// Whether this node runs `job` given its role; `Some(reason)` when it does not.
fn skip_reason(role: Role, job: &SyncJob) -> Option<String> {
    match (role, job.direction) {
        (Role::Disabled, _) => Some("this node's role is disabled".into()),
        (Role::Master, Direction::Push) | (Role::Slave, Direction::Pull) => None,
        (Role::Master, Direction::Pull) => Some("pull jobs run on the slave".into()),
        (Role::Slave, Direction::Push) => Some("push jobs run on the master".into()),
    }
}

pub fn run(cli: &Cli, args: &SyncArgs) -> Result<i32, CliError> {
    let cfg = hasync::config::load(&super::config_path(cli))?;
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
    let mut console = Console::new(
        !cli.quiet && (!args.json || cli.verbose > 0),
        !cli.quiet && !args.json,
    );
    // The role file written by promote/demote overrides the config's role.
    let role =
        hasync::master::roles::effective_role(&cfg).map_err(|e| CliError::usage(e.to_string()))?;
    let mut reports = Vec::new();
    let mut worst = 0;
    let mut client: Option<Client> = None;
    for job in jobs {
        if let Some(why) = skip_reason(role, job) {
            if !args.json && !cli.quiet {
                outln!("job {}: skipped ({why})", job.name);
            }
            reports.push(JobReport {
                name: job.name.clone(),
                ok: true,
                skipped: Some(why),
                error: None,
                stats: Stats::default(),
            });
            continue;
        }
        let opts = SessionOptions {
            delete: job.delete,
            checksum: job.checksum,
            dry_run: args.dry_run,
            owners: true,
            allow_empty_source: job.allow_empty_source,
            max_delete: job.max_delete,
            excludes: job.exclude.clone(),
        };
        let mut total = Stats::default();
        let mut errors = Vec::new();
        for p in &job.paths {
            let (local, peer) = (cfg.local_path(p), cfg.peer_path(p));
            if !args.json && !cli.quiet && cli.verbose > 0 {
                outln!(
                    "job {}: {} -> {}",
                    job.name,
                    local.display(),
                    peer.display()
                );
            }
            if client.is_none() {
                let transport = peer_transport(&cfg)?;
                match Client::connect(transport.as_ref(), &[]) {
                    Ok(c) => client = Some(c),
                    Err(e) => {
                        worst = worst.max(e.exit_code());
                        errors.push(format!("cannot reach the peer {}: {e}", cfg.node.peer));
                        break;
                    }
                }
            }
            let c = client.as_mut().expect("connected above");
            console.prefix = p.display().to_string().trim_start_matches('/').to_string();
            let res = match job.direction {
                Direction::Push => c.push(&local, &peer, &opts, &mut console),
                Direction::Pull => c.pull(&peer, &local, &opts, &mut console),
            };
            match res {
                Ok(s) => add(&mut total, &s),
                Err(e) => {
                    worst = worst.max(e.exit_code());
                    errors.push(format!("{}: {e}", p.display()));
                    // The peer ends the connection after an error: reconnect for the next path.
                    if let Some(c) = client.take() {
                        let _ = c.close();
                    }
                }
            }
        }
        let error = (!errors.is_empty()).then(|| errors.join("; "));
        if total.files_failed > 0 {
            worst = worst.max(1);
        }
        if !args.json && !cli.quiet {
            match &error {
                None => outln!(
                    "job {}: {}{}",
                    job.name,
                    if args.dry_run { "(dry run) " } else { "" },
                    summary(&total)
                ),
                Some(e) => eprintln!("hasync: job {} failed: {e}", job.name),
            }
        } else if let Some(e) = &error {
            eprintln!("hasync: job {} failed: {e}", job.name);
        }
        reports.push(JobReport {
            name: job.name.clone(),
            ok: error.is_none() && total.files_failed == 0,
            skipped: None,
            error,
            stats: total,
        });
    }
    console.finish();
    if let Some(c) = client {
        c.close()?;
    }
    if args.json {
        outln!("{}", serde_json::json!({ "jobs": reports }));
    }
    Ok(worst)
}

fn add(t: &mut Stats, s: &Stats) {
    t.files_total += s.files_total;
    t.files_transferred += s.files_transferred;
    t.files_deleted += s.files_deleted;
    t.files_failed += s.files_failed;
    t.other_created += s.other_created;
    t.meta_updated += s.meta_updated;
    t.bytes_literal += s.bytes_literal;
    t.bytes_matched += s.bytes_matched;
    t.bytes_total += s.bytes_total;
    t.bytes_sent += s.bytes_sent;
    t.bytes_received += s.bytes_received;
    t.duration_ms += s.duration_ms;
}
