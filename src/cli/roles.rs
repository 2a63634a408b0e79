//! `hasync promote [--copy-back]` and `hasync demote [--copy-back]`: switch this node's
//! role. Promote starts the services and makes this node master (role file
//! `state_dir/role.json`, sentinel `is-primary`); demote stops them and makes it slave
//! (`is-secondary`), so an old master rejoins as the new slave. `--copy-back` moves the
//! `[check_master] copy_back` paths with the sync engine: demote pushes them to the peer
//! before giving up mastership, promote pulls them from the peer first. Exit 0, 1 a
//! service step failed (the role changed anyway), 2 config, 3 copy-back failed (no change).

use super::output::Console;
use super::{Cli, CliError};
use hasync::failover::switch;

#[derive(clap::Args, Debug)]
pub struct RoleArgs {
    /// Copy the [check_master] copy_back paths (demote: push to the peer; promote: pull
    /// from the peer) before switching
    #[arg(long)]
    pub copy_back: bool,
    /// Print what was done as one JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

pub fn run(cli: &Cli, args: &RoleArgs, promote: bool) -> Result<i32, CliError> {
    let cfg = super::load_config(cli)?;
    if args.copy_back
        && cfg
            .check_master
            .as_ref()
            .is_none_or(|c| c.copy_back.is_empty())
    {
        return Err(CliError::usage(format!(
            "--copy-back: {} lists no paths (add copy_back = [\"/var/spool/asterisk/voicemail\"] to [check_master])",
            cfg.path.display()
        )));
    }
    let transport = if args.copy_back {
        Some(hasync::scheduler::jobs::peer_transport(&cfg)?)
    } else {
        None
    };
    let mut console = Console::new(!cli.quiet && !args.json && cli.verbose > 0, false);
    let res = if promote {
        switch::promote(
            &cfg,
            transport
                .as_deref()
                .map(|t| t as &dyn hasync::transport::Transport),
            &mut console,
        )
    } else {
        switch::demote(
            &cfg,
            transport
                .as_deref()
                .map(|t| t as &dyn hasync::transport::Transport),
            &mut console,
        )
    };
    console.finish();
    let change = res?;
    if args.json {
        outln!("{}", serde_json::to_string(&change).unwrap_or_default());
    } else if !cli.quiet {
        if let Some(s) = &change.copied {
            outln!(
                "copy-back: {} files copied, {} bytes",
                s.files_transferred,
                s.bytes_literal
            );
        }
        outln!("this node is now {}", change.role);
    }
    if let Some(e) = change.error() {
        eprintln!("hasync: {e}");
        return Ok(1);
    }
    Ok(0)
}
