//! `hasync status [--json]`: the node's role and peer, and per job the last
//! success, the lag, pending changes, the next run and the last error; the DB lag.

use super::{Cli, CliError};
use chrono::{DateTime, Utc};
use hasync::scheduler::status::{DbStatus, StatusReport, report};

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
    /// Answer one question by the exit code, like the daemon's /primary and /replica
    /// (keepalived's track_script): 0 yes, 1 no, with the reason on stdout.
    /// primary: this node serves (a master whose slave has not taken over, or a slave
    /// whose services hasync started). replica: a healthy standby
    #[arg(long, value_name = "WHAT", value_enum)]
    pub check: Option<Check>,
    /// With --check replica: also 1 when the last sync or replay received is older
    /// than this (60s, 5m, 1h, 500ms)
    #[arg(long, value_name = "DURATION", requires = "check", value_parser = parse_max_lag)]
    pub max_lag: Option<std::time::Duration>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    Primary,
    Replica,
}

fn parse_max_lag(s: &str) -> Result<std::time::Duration, String> {
    hasync::scheduler::health::parse_lag(s)
}

pub fn run(cli: &Cli, args: &StatusArgs) -> Result<i32, CliError> {
    if let Some(check) = args.check {
        return run_check(cli, check, args.max_lag);
    }
    let cfg = std::sync::Arc::new(super::load_config(cli)?);
    let jobs = hasync::scheduler::jobs::jobs_of(&cfg);
    let daemon = hasync::scheduler::state::load_daemon(&cfg.node.state_dir);
    let r = report(&cfg, &jobs, daemon.as_ref(), Utc::now());
    if args.json {
        let mut v = serde_json::to_value(&r).expect("status serializes");
        if let Some(c) = hasync::cluster::status::json(&cfg) {
            v["cluster"] = c;
        }
        outln!(
            "{}",
            serde_json::to_string_pretty(&v).expect("status serializes")
        );
    } else {
        print_text(&r);
        for line in hasync::cluster::status::text(&cfg) {
            outln!("{line}");
        }
    }
    Ok(0)
}

/// `--check`: the answer on stdout, 0 when yes and 1 when no.
fn run_check(
    cli: &Cli,
    check: Check,
    max_lag: Option<std::time::Duration>,
) -> Result<i32, CliError> {
    if check == Check::Primary && max_lag.is_some() {
        return Err(CliError::usage(
            "--max-lag goes with --check replica (a primary has no lag)",
        ));
    }
    let cfg = super::load_config(cli)?;
    let a = match check {
        Check::Primary => hasync::scheduler::health::primary(&cfg),
        Check::Replica => hasync::scheduler::health::replica(&cfg, max_lag, Utc::now()),
    };
    outln!("{}: {}", if a.ok { "yes" } else { "no" }, a.why);
    Ok(if a.ok { 0 } else { 1 })
}

fn ago(now: DateTime<Utc>, t: DateTime<Utc>) -> String {
    let s = (now - t).num_seconds();
    if s < 0 {
        format!("in {}", span(-s))
    } else {
        format!("{} ago", span(s))
    }
}

fn span(s: i64) -> String {
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn when(now: DateTime<Utc>, t: Option<DateTime<Utc>>) -> String {
    match t {
        Some(t) => format!("{} ({})", t.format("%Y-%m-%d %H:%M:%S UTC"), ago(now, t)),
        None => "-".into(),
    }
}

/// The DB lag (docs/db.md, "DB lag").
fn print_db(now: DateTime<Utc>, db: &DbStatus) {
    outln!();
    let how = match (db.lag_basis.as_str(), db.lag_seconds) {
        (_, None) => "never replicated yet",
        ("watch", Some(0.0)) => "nothing committed on the master since the slave's last run",
        ("watch", _) => "since the first commit not yet on the slave",
        _ => "at most: time since the start of the last successful run",
    };
    let lag = db
        .lag_seconds
        .map_or("unknown".to_string(), |l| format!("{l:.0}s"));
    let to = db
        .peer
        .as_ref()
        .map_or(String::new(), |p| format!(" to {p}"));
    outln!("db{to} [{}] lag {lag} ({how})", db.schedule);
    outln!("  synced as of: {}", when(now, db.synced_as_of));
    outln!("  last replay:  {}", when(now, db.last_replay));
    if let Some(n) = db.commits_seen {
        outln!(
            "  commits seen: {n} by the daemon (last {})",
            when(now, db.last_commit_seen)
        );
    }
    if let Some(e) = &db.poll_error {
        outln!("  poll error:   {e}");
    }
}

/// With `[[peer]]` tables: one line per peer.
fn print_peers(r: &StatusReport) {
    if r.peers.is_empty() {
        return;
    }
    outln!();
    outln!("peers:");
    for p in &r.peers {
        let lag = p
            .lag_seconds
            .map_or("-".to_string(), |l| format!("{l:.0}s"));
        let failing = match p.jobs_failing {
            0 => String::new(),
            n => format!(", {n} of {} jobs failing", p.jobs),
        };
        outln!(
            "  {:<12} {:<24} {:<8} lag {lag}{failing}",
            p.name,
            p.address,
            p.state
        );
        if let Some(e) = &p.last_error {
            outln!("  {:<12} last error: {e}", "");
        }
    }
}

fn print_text(r: &StatusReport) {
    let now = r.now;
    let from = r
        .role_source
        .map(|s| format!(" (from {})", s.as_str()))
        .unwrap_or_default();
    outln!(
        "role: {}{from}   epoch: {}   peer: {}",
        r.role,
        r.role_epoch,
        match r.peers.len() {
            0 => r.peer.clone(),
            n => format!("{n} ([[peer]] tables, below)"),
        }
    );
    match r.daemon_pid {
        Some(pid) => outln!("daemon: running (pid {pid})"),
        None => outln!("daemon: not running"),
    }
    if let Some(rec) = &r.received {
        outln!(
            "received: last sync {}, last replay {}",
            when(now, rec.last_sync),
            when(now, rec.last_replay)
        );
    }
    print_peers(r);
    for j in &r.jobs {
        outln!();
        outln!("job {} [{}]", j.name, j.schedule);
        if let Some(why) = &j.skipped {
            outln!("  not run on this node: {why}");
            continue;
        }
        outln!("  last success: {}", when(now, j.last_success));
        if let Some(l) = j.lag_seconds {
            outln!("  lag:          {l:.0}s");
        }
        if let Some(p) = j.pending_since {
            outln!("  pending:      changes since {}", when(now, Some(p)));
        }
        if let Some(t) = j.running_since {
            outln!("  running:      since {}", when(now, Some(t)));
        }
        outln!("  next run:     {}", when(now, j.next_run));
        if let Some(t) = j.retry_at {
            outln!("  retry at:     {}", when(now, Some(t)));
        }
        if let Some(run) = &j.last_run {
            outln!(
                "  last run:     {} ({}, {})",
                if run.ok { "ok" } else { "FAILED" },
                run.trigger,
                when(now, Some(run.end))
            );
        }
        if let Some(e) = &j.last_error {
            outln!(
                "  last error:   {e}{}",
                if j.consecutive_failures > 0 {
                    format!(" ({} failures in a row)", j.consecutive_failures)
                } else {
                    String::new()
                }
            );
        }
        outln!(
            "  runs:         {} ({} failed)",
            j.runs_total,
            j.failures_total
        );
    }
    match r.db_by_peer.is_empty() {
        true => r.db.iter().for_each(|db| print_db(now, db)),
        false => r.db_by_peer.iter().for_each(|db| print_db(now, db)),
    }
    if let Some(m) = &r.master_check {
        outln!();
        outln!(
            "master check ({}): master {} since {}",
            m.address,
            m.master.as_deref().unwrap_or("not checked yet"),
            when(now, m.master_since)
        );
        outln!(
            "  services:     {}",
            if m.services_active {
                "RUNNING (failed over)"
            } else {
                "stopped"
            }
        );
        if let Some(t) = &m.last_transition {
            outln!("  last {t}:  {}", when(now, m.last_transition_at));
        }
        outln!(
            "  failovers:    {} (failbacks {})",
            m.failovers,
            m.failbacks
        );
        outln!("  last check:   {}", when(now, m.last_check_at));
        if let Some(e) = &m.last_error {
            outln!("  last error:   {e}");
        }
    }
}
