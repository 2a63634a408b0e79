//! Wazo's HA scripts, answered by hasync: when the binary is invoked under one of their
//! names (a symlink `xivo-sync -> hasync`, see `docs/migrating-from-wazo.md`), it takes
//! their arguments and does what they did, with the Wazo profile's config, so the cron
//! lines Wazo writes (`/etc/cron.d/xivo-ha-master`, `xivo-ha-slave`) and the calls of
//! wazo-sysconfd keep working unchanged:
//!
//! - `xivo-sync` / `wazo-sync`: `hasync sync` (every `[[sync]]` job); like Wazo's, exit 1
//!   on a node that is not the master, exit 0 "not synchronizing" without the SSH key;
//!   `-i` / `--init`: `hasync init` (key, installed on the peer).
//! - `xivo-master-slave-db-replication <slave_ip>`: `hasync db-replicate` to that slave.
//! - `xivo-check-master-status <master_ip>`: one check of that master, as the cron line
//!   every minute did (on the slave only; the sentinel `is-secondary` decides), repeated
//!   `interval` apart within the run while the counters are on their way to a failover
//!   or failback, as Wazo's `ping -c 3 -i 10` decided within one run.
//! - `xivo-manage-slave-services start|stop`: `hasync services start|stop` (idempotent).
//!
//! The config: `$HASYNC_CONFIG` if set, else `/etc/hasync/hasync.toml` if it exists, else
//! the shipped `/usr/share/hasync/profiles/wazo.toml`. The IP argument overrides the
//! peer's host and `[check_master] address` (`--peer-address`). Exit codes are hasync's
//! (0 ok, 1 a step failed, 2 usage or config, 3 peer...), which keep the scripts' sense:
//! 0 success, non-zero failure.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use hasync::failover::MasterCheck;
use hasync::failover::state::Verdict;

use super::Cli;

/// The script names hasync answers to.
pub const NAMES: [&str; 5] = [
    "xivo-sync",
    "wazo-sync",
    "xivo-master-slave-db-replication",
    "xivo-check-master-status",
    "xivo-manage-slave-services",
];

/// Where the Debian package puts the Wazo profile.
pub const WAZO_PROFILE: &str = "/usr/share/hasync/profiles/wazo.toml";

/// `Some(exit code)` when `args[0]` names one of Wazo's scripts, `None` otherwise.
pub fn main(args: &[OsString]) -> Option<i32> {
    let name = Path::new(args.first()?).file_name()?.to_str()?;
    let name = NAMES.iter().find(|n| **n == name)?;
    let rest: Vec<String> = args[1..]
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    Some(run(name, &rest))
}

/// `$HASYNC_CONFIG`, `/etc/hasync/hasync.toml` if present, else the Wazo profile.
pub fn config_path() -> PathBuf {
    if let Some(p) = std::env::var_os("HASYNC_CONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let etc = Path::new(hasync::node::config::DEFAULT_PATH);
    if etc.exists() {
        etc.to_path_buf()
    } else {
        PathBuf::from(WAZO_PROFILE)
    }
}

fn run(name: &str, rest: &[String]) -> i32 {
    let usage = |u: &str| {
        eprintln!("usage: {name} {u}");
        2
    };
    let args: Vec<&str> = rest.iter().map(String::as_str).collect();
    let (command, address): (Vec<&str>, Option<&str>) = match (name, args.as_slice()) {
        ("xivo-sync" | "wazo-sync", []) => (vec!["sync"], None),
        ("xivo-sync" | "wazo-sync", ["-i" | "--init"]) => (vec!["init"], None),
        ("xivo-sync" | "wazo-sync", _) => return usage("[-i|--init]"),
        ("xivo-master-slave-db-replication", [ip]) if !ip.starts_with('-') => {
            (vec!["db-replicate"], Some(*ip))
        }
        ("xivo-master-slave-db-replication", _) => return usage("<slave_ip>"),
        ("xivo-check-master-status", [ip]) if !ip.starts_with('-') => {
            (vec!["check-master", "--once"], Some(*ip))
        }
        ("xivo-check-master-status", _) => return usage("<master_ip>"),
        ("xivo-manage-slave-services", [a @ ("start" | "stop" | "status")]) => {
            (vec!["services", a], None)
        }
        ("xivo-manage-slave-services", _) => return usage("start|stop"),
        _ => return usage(""),
    };
    let mut argv: Vec<OsString> = vec!["hasync".into(), "--config".into()];
    argv.push(config_path().into());
    if name == "xivo-check-master-status" && std::env::var_os("HASYNC_LOG").is_none() {
        // Every minute from cron, stderr mailed to root: only errors (a failed start),
        // not a warning per minute while the master is down.
        argv.push("-q".into());
    }
    if let Some(ip) = address {
        argv.push("--peer-address".into());
        argv.push(ip.into());
    }
    argv.extend(command.iter().map(OsString::from));
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return 2;
        }
    };
    if command == ["sync"] {
        super::init_logging(&cli);
        if let Some(code) = sync_gate(name, &cli) {
            return code;
        }
    }
    if name == "xivo-check-master-status" {
        super::init_logging(&cli);
        return match check_master(&cli) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("{name}: {}", e.message);
                e.code
            }
        };
    }
    super::run(cli)
}

/// wazo-sync's own exits before it syncs: not the master, exit 1 ("HA not configured
/// or not a master node"); the SSH key missing, exit 0 ("not synchronizing").
fn sync_gate(name: &str, cli: &Cli) -> Option<i32> {
    let cfg = match super::load_config(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {}", e.message);
            return Some(e.code);
        }
    };
    match hasync::node::role::effective_role(&cfg) {
        Ok(hasync::node::config::Role::Master) => {}
        Ok(_) => {
            eprintln!("{name}: HA not configured or not a master node");
            return Some(1);
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            return Some(e.exit_code().code());
        }
    }
    match &cfg.node.identity {
        Some(key) if !key.exists() => {
            if !cli.quiet {
                outln!("SSH key {} not found: not synchronizing", key.display());
            }
            Some(0)
        }
        _ => None,
    }
}

/// The longest a `xivo-check-master-status` run keeps checking (cron starts the next
/// one a minute later).
const CHECK_BUDGET: Duration = Duration::from_secs(45);

/// One cron run of the master check: a step, then more steps `interval` apart while the
/// master's state disagrees with the services' and the thresholds are not reached yet.
fn check_master(cli: &Cli) -> Result<i32, super::CliError> {
    let cfg = super::load_config(cli)?;
    let Some(cm) = cfg.check_master.clone() else {
        return Err(hasync::failover::MasterError::NoCheckMaster(cfg.path.clone()).into());
    };
    let mut mc = MasterCheck::new(&cfg)?;
    let started = Instant::now();
    loop {
        let ev = mc.step()?;
        if let Some(why) = &ev.skipped {
            tracing::info!("{why}");
            return Ok(0);
        }
        if let Some(e) = &ev.error {
            eprintln!("hasync: {e}");
            return Ok(1);
        }
        let st = &ev.state;
        let verdict = ev.check.as_ref().map(|c| c.verdict);
        let on_the_way = match verdict {
            Some(Verdict::Down) => !st.services_active && st.consecutive_down < cm.fail_after,
            Some(Verdict::Up) => st.services_active && st.consecutive_up < cm.recover_after,
            _ => false,
        };
        if !cli.quiet {
            outln!(
                "master {}: {} ({} down, {} up in a row); services {}",
                mc.file().address,
                verdict.map_or("unknown", |v| v.as_str()),
                st.consecutive_down,
                st.consecutive_up,
                if st.services_active {
                    "active"
                } else {
                    "inactive"
                },
            );
        }
        if !on_the_way || started.elapsed() + mc.interval() > CHECK_BUDGET {
            return Ok(0);
        }
        std::thread::sleep(mc.interval());
    }
}
