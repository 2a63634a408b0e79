//! `hasync services start|stop|status [--json]`: the slave's services by hand (what
//! Wazo's `xivo-manage-slave-services` does). Idempotent; every step is logged and the
//! action recorded in `state_dir/services.json`. Exit 0 ok (status: running), 1 a step
//! failed (status: not running), 2 config error; status with no way to tell exits 3.

use super::{Cli, CliError};
use hasync::failover::services::{self, Action};

pub const SERVICES_HELP: &str = "\
Exit codes: 0 done (status: running); 1 a step failed or timed out (status: stopped);
2 config error; 3 status cannot tell (commands without a status command).
Every action is recorded in state_dir/services.json.";

#[derive(clap::Args, Debug)]
pub struct ServicesArgs {
    /// start, stop or status
    #[arg(value_enum)]
    pub action: ServicesAction,
    /// Print the report as one JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ServicesAction {
    Start,
    Stop,
    Status,
}

pub fn run(cli: &Cli, args: &ServicesArgs) -> Result<i32, CliError> {
    let cfg = hasync::node::config::load(&super::config_path(cli))?;
    let Some(svc) = &cfg.services else {
        return Err(hasync::failover::MasterError::NoServices(cfg.path.clone()).into());
    };
    let action = match args.action {
        ServicesAction::Start => Action::Start,
        ServicesAction::Stop => Action::Stop,
        ServicesAction::Status => Action::Status,
    };
    let report = services::run(svc, action);
    services::record(&cfg.node.state_dir, &report)?;
    if args.json {
        outln!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else if !cli.quiet {
        for s in &report.steps {
            match &s.skipped {
                Some(why) => outln!("{} {}: skipped ({why})", s.kind, s.target),
                None if s.kind == "status" => outln!(
                    "status {}: {}",
                    s.target,
                    if s.exit_code == Some(0) {
                        "running"
                    } else {
                        "not running"
                    }
                ),
                None => outln!(
                    "{} {}: {}",
                    s.kind,
                    s.target,
                    if s.ok { "ok" } else { "FAILED" }
                ),
            }
        }
        if action == Action::Status {
            outln!(
                "services: {}",
                match report.running {
                    Some(true) => "running",
                    Some(false) => "stopped",
                    None => "unknown (no status command configured)",
                }
            );
        }
    }
    if let Some(e) = &report.error {
        eprintln!("hasync: {e}");
        return Ok(1);
    }
    Ok(match (action, report.running) {
        (Action::Status, Some(true)) => 0,
        (Action::Status, Some(false)) => 1,
        (Action::Status, None) => 3,
        _ => 0,
    })
}
