//! `hasync daemon`: maps SIGTERM/SIGINT (stop) and SIGHUP (reload) to the
//! scheduler's messages and runs it (`hasync::scheduler::daemon`) until it stops.

use super::{Cli, CliError};
use hasync::scheduler::daemon::{self, Stopped, Wakeup};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

#[derive(clap::Args, Debug)]
pub struct DaemonArgs {}

pub fn run(cli: &Cli, _args: &DaemonArgs) -> Result<i32, CliError> {
    let path = super::config_path(cli);
    let (tx, rx) = daemon::channel();
    let mut signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(|e| CliError {
            code: 1,
            message: format!("cannot handle signals: {e}"),
        })?;
    let sig_tx = tx.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let msg = match sig {
                    SIGHUP => Wakeup::Reload,
                    SIGINT => Wakeup::Stop("SIGINT".into()),
                    _ => Wakeup::Stop("SIGTERM".into()),
                };
                if sig_tx.send(msg).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| CliError {
            code: 1,
            message: format!("cannot start the signal thread: {e}"),
        })?;
    match daemon::run(&path, tx, rx) {
        Ok(Stopped::Clean) => Ok(0),
        Ok(Stopped::Aborted) => Ok(1),
        Err(e) => Err(CliError {
            code: e.exit_code().code(),
            message: e.to_string(),
        }),
    }
}
