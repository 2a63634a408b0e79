//! `hasync db-replicate`: run the config's `[db]` job now (what Wazo's
//! `xivo-master-slave-db-replication` does). Turns arguments into a call to
//! [`hasync::db::job`], prints the outcome, and on failure runs the `[hooks] on_failure`
//! command with `HASYNC_EVENT=failure`, `HASYNC_JOB=db`, `HASYNC_ERROR=<message>`.

use super::output::human;
use super::{Cli, CliError};
use hasync::db::job::{self, DbReport};
use hasync::db::plan::{self, DbPlan, Relation};
use hasync::node::config::Role;
use hasync::sync::SyncError;
use hasync::sync::client::Client;

#[derive(clap::Args, Debug)]
pub struct DbArgs {
    /// Show what would be replicated (tables, sizes, row estimates), change nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Print one JSON object with the run's stats on stdout at the end
    #[arg(long)]
    pub json: bool,
    /// Ship and replay even when the dump equals the last one replayed
    #[arg(long)]
    pub force: bool,
    /// Replay even into a slave whose database was written while it served as master
    /// after a failover: those rows are discarded (the slave refuses otherwise; see
    /// docs/master-check.md, failback)
    #[arg(long)]
    pub discard_failover_writes: bool,
    /// With [[peer]] tables: replicate to this peer only (repeat it for several;
    /// default: every peer, one after the other)
    #[arg(long = "peer", value_name = "NAME")]
    pub peers: Vec<String>,
}

pub const DB_HELP: &str = "\
Exit codes: 0 replayed or unchanged (or skipped: not the master); 1 pg_dump or the slave's
replay failed (the slave's database is left exactly as it was); 2 usage or config error;
3 peer or transport failure, or the role fence refused (this node is a stale master, or
the peer is or serves as master); 4 the slave refused to discard what it wrote while it
served as master after a failover (see --discard-failover-writes).";

pub fn run(cli: &Cli, args: &DbArgs) -> Result<i32, CliError> {
    let cfg = super::load_config(cli)?;
    let Some(mut db) = cfg.db.clone() else {
        return Err(CliError::usage(format!(
            "{} has no [db] section (add kind, database, user, ...; see docs/db.md)",
            cfg.path.display()
        )));
    };
    db.discard_failover_writes = args.discard_failover_writes;
    let text = !args.json && !cli.quiet;
    // The role now: promote/demote and role_from (Wazo's ha.conf) win over [node] role.
    let role =
        hasync::node::role::effective_role(&cfg).map_err(|e| CliError::usage(e.to_string()))?;
    if role != Role::Master {
        let why = format!("DB replication runs on the master; this node's role is {role}");
        if args.json {
            outln!(
                "{}",
                serde_json::json!({"outcome": "skipped", "database": db.database, "skipped": why})
            );
        } else if text {
            outln!("db {}: skipped ({why})", db.database);
        }
        return Ok(0);
    }
    if args.dry_run {
        let plan = match plan::plan(&db) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("hasync: db {}: {e}", db.database);
                return Ok(e.exit_code().code());
            }
        };
        if args.json {
            let rep = DbReport {
                outcome: "dry-run".into(),
                database: db.database.clone(),
                tables: plan.tables.len() as u64,
                plan: Some(plan),
                ..Default::default()
            };
            outln!("{}", serde_json::to_string(&rep).unwrap_or_default());
        } else if !cli.quiet {
            print_plan(&plan);
        }
        return Ok(0);
    }
    let targets = super::sync::selected_peers(&cfg, &args.peers)?;
    let mut worst = 0;
    let mut by_peer = serde_json::Map::new();
    for t in &targets {
        let (code, rep) = replicate_to(t, &db, args, text);
        worst = worst.max(code);
        match &t.node.peer_name {
            None if args.json => outln!("{}", serde_json::to_string(&rep).unwrap_or_default()),
            Some(name) => {
                by_peer.insert(name.clone(), serde_json::to_value(&rep).unwrap_or_default());
            }
            None => {}
        }
    }
    if args.json && !by_peer.is_empty() {
        outln!("{}", serde_json::json!({ "peers": by_peer }));
    }
    Ok(worst)
}

/// One run toward the peer of `cfg`: its exit code and report (printed as text here).
fn replicate_to(
    cfg: &hasync::node::config::Config,
    db: &hasync::node::config::DbJob,
    args: &DbArgs,
    text: bool,
) -> (i32, DbReport) {
    let mut connect = || -> Result<Client, SyncError> {
        let transport = hasync::scheduler::jobs::peer_transport(cfg)?;
        Client::connect_as(transport.as_ref(), &[], Some(cfg)).map_err(|e| match e {
            e if e.is_peer() => {
                SyncError::Peer(format!("cannot reach the peer {}: {e}", cfg.node.peer))
            }
            e => e,
        })
    };
    let (rep, res) = job::run(cfg, db, args.force, &mut connect);
    let to = match &cfg.node.peer_name {
        Some(p) => format!(" to {p}"),
        None => String::new(),
    };
    match res {
        Ok(()) => {
            if text {
                if !to.is_empty() {
                    outln!("peer{to}:");
                }
                print_outcome(&rep);
            }
            (0, rep)
        }
        Err(e) => {
            // psql's message is several lines: each on its own, indented, escaped.
            let msg = e.to_string();
            let mut lines = msg.lines().map(hasync::tree::path::escape_controls);
            eprintln!(
                "hasync: db {}{to} failed: {}",
                db.database,
                lines.next().unwrap_or_default()
            );
            for l in lines {
                eprintln!("    {l}");
            }
            if let Some(hook_err) = hasync::db::failure_hook(cfg, &e.to_string()) {
                eprintln!("hasync: {hook_err}");
            }
            (e.exit_code().code(), rep)
        }
    }
}

fn print_outcome(r: &DbReport) {
    let what = format!(
        "{} tables, {} rows, {} sequences; script {}",
        r.tables,
        r.rows,
        r.sequences,
        human(r.dump_bytes)
    );
    if r.outcome == "unchanged" {
        outln!(
            "db {}: unchanged since the last replay ({what}); nothing shipped",
            r.database
        );
    } else {
        let verified = match &r.verify {
            Some(v) if v.ok => format!("; verified: {} tables equal the dump", v.tables.len()),
            _ => String::new(),
        };
        outln!(
            "db {}: replayed ({what}, {} on the wire) in {:.1} s: {}{verified}",
            r.database,
            human(r.bytes_on_wire),
            r.duration_ms as f64 / 1000.0,
            r.reason
        );
    }
}

fn print_plan(p: &DbPlan) {
    let est = |r: &Relation| match r.rows_estimate {
        Some(n) => format!("~{n} rows"),
        None => "rows unknown (not analyzed)".into(),
    };
    outln!(
        "db {} (dry run): schema {}, {}; would replicate {} tables and {} sequences:",
        p.database,
        p.schema,
        if p.with_schema {
            "schema and data"
        } else {
            "data only"
        },
        p.tables.len(),
        p.sequences.len()
    );
    for t in &p.tables {
        outln!(
            "  table {:<40} {:>24} {:>10}",
            t.name,
            est(t),
            human(t.bytes)
        );
    }
    for s in &p.sequences {
        outln!("  sequence {s}");
    }
    for t in &p.excluded_tables {
        outln!(
            "  excluded table {:<31} {:>24} {:>10}",
            t.name,
            est(t),
            human(t.bytes)
        );
    }
    for s in &p.excluded_sequences {
        outln!("  excluded sequence {s}");
    }
}
