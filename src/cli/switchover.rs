//! `hasync switchover --to NODE [--wait DURATION] [--json]`: move the leadership of a
//! `[cluster]` to a named member, planned: the old leader stops its services first, then
//! the target takes the leader key and starts its own (`hasync::cluster::switchover`).
//! Runs on any member (it only talks to etcd).

use super::{Cli, CliError};
use hasync::cluster::switchover::{self, SwitchoverError};

pub const SWITCHOVER_HELP: &str = "\
The old leader stops its services while it still holds the leader key, then deletes it;
the target (and only it) takes the key and starts its services. Refused: a member that is
not alive in etcd, one with priority 0, the current leader, or no leader at all.

Exit codes: 0 the target is leader; 1 it did not take over within --wait (the request is
withdrawn); 2 refused or config error (no [cluster]); 3 etcd not reachable.";

#[derive(clap::Args, Debug)]
pub struct SwitchoverArgs {
    /// The member (its [cluster] name) that should become leader
    #[arg(long, value_name = "NODE")]
    pub to: String,
    /// How long to wait for the target to take over [default: 2 x (ttl + loop_wait)]
    #[arg(long, value_name = "DURATION", value_parser = hasync::node::config::parse_duration)]
    pub wait: Option<std::time::Duration>,
    /// Print the result as one JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

pub fn run(cli: &Cli, args: &SwitchoverArgs) -> Result<i32, CliError> {
    let cfg = super::load_config(cli)?;
    let wait = args
        .wait
        .or_else(|| cfg.cluster.as_ref().map(switchover::default_wait))
        .unwrap_or_default();
    match switchover::switchover(&cfg, &args.to, wait) {
        Ok(done) => {
            if args.json {
                outln!("{}", serde_json::to_string(&done).unwrap_or_default());
            } else if !cli.quiet {
                outln!(
                    "switchover: {} is the leader now (was {}; {:.1}s)",
                    done.to,
                    done.from,
                    done.seconds
                );
            }
            Ok(0)
        }
        Err(e) => Err(CliError {
            code: e.exit_code().code(),
            message: match e {
                SwitchoverError::Refused(m) => format!("switchover refused: {m}"),
                other => other.to_string(),
            },
        }),
    }
}
