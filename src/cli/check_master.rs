//! `hasync check-master [--once] [--json]`: the slave's watch on its master (what Wazo's
//! `xivo-check-master-status` does every minute from cron). Without `--once` it checks
//! every `[check_master] interval` until killed; with `--once` it checks once and
//! applies the same thresholds from the counters persisted in `state_dir/master.json`,
//! so a cron line `* * * * *` works too. Exit 0, or 1 when a services action failed.

use super::{Cli, CliError};
use hasync::failover::{MasterCheck, MasterError};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct CheckMasterArgs {
    /// Check once and exit (for cron); the counters persist in state_dir/master.json
    #[arg(long)]
    pub once: bool,
    /// With --once: print the check and the state file as one JSON object on stdout
    #[arg(long, requires = "once")]
    pub json: bool,
}

pub const CHECK_MASTER_HELP: &str = "\
Only a node whose role is slave acts (config role, the role file written by
promote/demote, or the sentinel is-secondary); on any other node it logs and exits 0.
State: state_dir/master.json (see docs/master-check.md).";

impl From<MasterError> for CliError {
    fn from(e: MasterError) -> Self {
        CliError {
            code: e.exit_code().code(),
            message: e.to_string(),
        }
    }
}

pub fn run(cli: &Cli, args: &CheckMasterArgs) -> Result<i32, CliError> {
    let cfg = super::load_config(cli)?;
    let mut mc =
        MasterCheck::new(&cfg)?.with_copy_back(hasync::scheduler::jobs::copy_back_connector(&cfg));
    if args.once {
        let ev = mc.step()?;
        if args.json {
            outln!(
                "{}",
                serde_json::json!({ "event": ev, "state_file": mc.file() })
            );
        } else if !cli.quiet {
            match (&ev.skipped, &ev.check) {
                (Some(why), _) => outln!("{why}"),
                (None, Some(c)) => outln!(
                    "master {}: {} ({} down, {} up in a row); services {}; decision {:?}",
                    mc.file().address,
                    c.verdict.as_str(),
                    ev.state.consecutive_down,
                    ev.state.consecutive_up,
                    if ev.state.services_active {
                        "active"
                    } else {
                        "inactive"
                    },
                    ev.decision
                ),
                (None, None) => {}
            }
        }
        if let Some(e) = &ev.error {
            eprintln!("hasync: {e}");
            return Ok(1);
        }
        return Ok(0);
    }
    if let Some(w) = cfg
        .check_master
        .as_ref()
        .and_then(hasync::failover::no_witness_warning)
    {
        tracing::warn!("{w}");
    }
    tracing::info!(
        "check-master: watching {} every {:?}",
        mc.file().address,
        mc.interval()
    );
    loop {
        let t0 = Instant::now();
        match mc.step() {
            Ok(ev) => {
                if let Some(e) = ev.error {
                    eprintln!("hasync: {e}");
                }
            }
            // A state file that cannot be written is worth a message, not an exit: the
            // watch goes on (the decision was applied already).
            Err(e) => eprintln!("hasync: {e}"),
        }
        std::thread::sleep(mc.interval().saturating_sub(t0.elapsed()));
    }
}
