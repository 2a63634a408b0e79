//! Command-line interface: argument definitions and dispatch.
//!
//! Each subcommand lives in its own file and only turns arguments into
//! library calls. Errors come back as [`CliError`], which carries the exit
//! code; `main` prints the message once and exits with it.

/// `println!` that ignores a closed stdout (`hasync ... | head` must not panic).
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

mod check_master;
mod compat;
mod cron;
mod daemon;
mod db;
mod generate;
mod init;
mod output;
mod push;
mod roles;
mod serve;
mod services;
mod status;
mod switchover;
mod sync;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the run finished but some items failed (each is named)
  2  usage or configuration error
  3  peer, transport or authentication failure
  4  refused by a safety guard (e.g. the source is missing or empty and would wipe the mirror,
     or more deletions than --max-delete)
  5  already running: another hasync (the daemon, another `hasync sync`) holds the job's
     lock (`hasync sync --wait` waits instead), or another daemon uses the same state_dir";

/// `hasync --version`: the release and the wire protocol it speaks (both nodes of a
/// pair must share the protocol's major version).
const LONG_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (wire protocol 2.7)");

/// Keep the standby node of an HA pair in step with its master.
#[derive(Parser, Debug)]
#[command(
    name = "hasync",
    version = LONG_VERSION,
    long_version = LONG_VERSION,
    about,
    after_help = EXIT_CODES,
    max_term_width = 100
)]
pub struct Cli {
    /// Config file [default: /etc/hasync/hasync.toml]
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "HASYNC_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// More output (repeat for debug logs)
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors
    #[arg(long, short = 'q', global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Use this address for the peer and the master check (what the IP argument of
    /// Wazo's scripts does; see `compat`)
    #[arg(long, global = true, hide = true, value_name = "ADDRESS")]
    pub peer_address: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Mirror a local directory to a destination, like `rsync -a SRC/ DEST/`
    #[command(after_help = push::PUSH_HELP)]
    Push(push::PushArgs),
    /// Mirror a (remote) source into a local directory
    #[command(after_help = push::PUSH_HELP)]
    Pull(push::PushArgs),
    /// Run the config's [[sync]] jobs now (all, or the named ones)
    Sync(sync::SyncArgs),
    /// Run the config's [db] job now: dump on the master, ship, replay on the slave
    #[command(name = "db-replicate", after_help = db::DB_HELP)]
    DbReplicate(db::DbArgs),
    /// Create this node's SSH key, install it on the peer (restricted), pin its host key
    #[command(after_help = init::INIT_HELP)]
    Init(init::InitArgs),
    /// Start, stop or show the slave services ([services]); idempotent
    #[command(after_help = services::SERVICES_HELP)]
    Services(services::ServicesArgs),
    /// Probe the master; start the slave services when it is gone, stop them when back
    #[command(after_help = check_master::CHECK_MASTER_HELP)]
    CheckMaster(check_master::CheckMasterArgs),
    /// Make this node the master: services up, sentinel is-primary, role file
    Promote(roles::RoleArgs),
    /// Make this node the slave: services down, sentinel is-secondary, role file
    Demote(roles::RoleArgs),
    /// Run every job on its schedule (cron, watch), with retries, status and metrics
    Daemon(daemon::DaemonArgs),
    /// Move the leadership of a [cluster] (etcd) to another member, planned
    #[command(after_help = switchover::SWITCHOVER_HELP)]
    Switchover(switchover::SwitchoverArgs),
    /// Show the role, the peer, and each job's last run, lag and next run
    Status(status::StatusArgs),
    /// Print /etc/cron.d lines equivalent to the config's schedules
    Cron(cron::CronArgs),
    /// The peer side of a connection, started over SSH or as a local child; not for people
    #[command(hide = true)]
    Serve(serve::ServeArgs),
    /// Write the man page or shell completions (for packaging)
    #[command(hide = true)]
    Generate(generate::GenerateArgs),
}

/// An error for the user, with the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub message: String,
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            code: 2,
            message: message.into(),
        }
    }
}

impl From<hasync::sync::SyncError> for CliError {
    fn from(e: hasync::sync::SyncError) -> Self {
        CliError {
            code: e.exit_code().code(),
            message: e.to_string(),
        }
    }
}

impl From<hasync::node::store::NodeError> for CliError {
    fn from(e: hasync::node::store::NodeError) -> Self {
        CliError {
            code: e.exit_code().code(),
            message: e.to_string(),
        }
    }
}

impl From<hasync::node::config::ConfigError> for CliError {
    fn from(e: hasync::node::config::ConfigError) -> Self {
        CliError::usage(e.to_string())
    }
}

/// Parse, run, and return the process exit code. Invoked under one of Wazo's script
/// names (a symlink), behave as that script ([`compat`]).
pub fn main() -> i32 {
    // Before any thread: a bare cron's PATH lacks the sbin directories.
    hasync::node::envpath::complete_process_path();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(code) = compat::main(&args) {
        return code;
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 2,
            };
        }
    };
    run(cli)
}

/// Runs a parsed command line; the process exit code.
pub fn run(cli: Cli) -> i32 {
    init_logging(&cli);
    let result = match &cli.command {
        Command::Push(a) => push::run(&cli, a, push::Direction::Push),
        Command::Pull(a) => push::run(&cli, a, push::Direction::Pull),
        Command::Sync(a) => sync::run(&cli, a),
        Command::DbReplicate(a) => db::run(&cli, a),
        Command::Init(a) => init::run(&cli, a),
        Command::Daemon(a) => daemon::run(&cli, a),
        Command::Switchover(a) => switchover::run(&cli, a),
        Command::Status(a) => status::run(&cli, a),
        Command::Cron(a) => cron::run(&cli, a),
        Command::Serve(a) => serve::run(&cli, a),
        Command::Services(a) => services::run(&cli, a),
        Command::CheckMaster(a) => check_master::run(&cli, a),
        Command::Promote(a) => roles::run(&cli, a, true),
        Command::Demote(a) => roles::run(&cli, a, false),
        Command::Generate(a) => generate::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // Multi-line messages keep their lines; any other control character is escaped.
            let msg: Vec<String> = e
                .message
                .split('\n')
                .map(hasync::tree::path::escape_controls)
                .collect();
            eprintln!("hasync: {}", msg.join("\n"));
            e.code
        }
    }
}

/// Log output: stderr with every control character of an event escaped except
/// the newline that ends it (and ESC when colours are on, for the level's
/// colour), so a log line that quotes a hostile name stays one plain line.
/// The fmt layer writes each event with one `write_all` of its whole text.
struct SafeStderr {
    ansi: bool,
}

impl SafeStderr {
    fn make() -> SafeStderr {
        SafeStderr {
            ansi: colour() && std::env::var_os("JOURNAL_STREAM").is_none(),
        }
    }
}

/// Colours in the log: stderr is a terminal and `NO_COLOR` is unset or empty
/// (no-color.org).
fn colour() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

impl std::io::Write for SafeStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (body, nl) = match buf.strip_suffix(b"\n") {
            Some(b) => (b, true),
            None => (buf, false),
        };
        let mut out = Vec::with_capacity(buf.len() + 16);
        for &b in body {
            match b {
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                0x1b if self.ansi => out.push(b),
                0..=0x1f | 0x7f => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
                _ => out.push(b),
            }
        }
        if nl {
            out.push(b'\n');
        }
        std::io::stderr().write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Logs go to stderr (stdout may carry the protocol or JSON). Under systemd
/// (JOURNAL_STREAM set) no timestamps or colours: journald adds its own.
pub(crate) fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        // The daemon's runs are its output: log them (journald keeps them).
        (_, 0) if matches!(cli.command, Command::Daemon(_)) => "info",
        (_, 0) => "warn",
        (_, 1) => "info",
        (_, _) => "debug",
    };
    let filter = EnvFilter::try_from_env("HASYNC_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(SafeStderr::make)
        .with_target(false);
    let _ = if journald {
        builder.without_time().with_ansi(false).try_init()
    } else {
        builder.with_ansi(colour()).try_init()
    };
}

/// The config file to use: --config, $HASYNC_CONFIG, or the default path.
pub fn config_path(cli: &Cli) -> PathBuf {
    cli.config
        .clone()
        .unwrap_or_else(|| PathBuf::from(hasync::node::config::DEFAULT_PATH))
}

/// Loads the config file, with `--peer-address` applied.
pub fn load_config(cli: &Cli) -> Result<hasync::node::config::Config, CliError> {
    let mut cfg = hasync::node::config::load(&config_path(cli))?;
    if let Some(addr) = &cli.peer_address {
        hasync::node::wazo::override_address(&mut cfg, addr)
            .map_err(|why| CliError::usage(format!("--peer-address {addr:?}: {why}")))?;
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_version_names_the_protocol_this_build_speaks() {
        use hasync::wire::message::{PROTO_MAJOR, PROTO_MINOR};
        assert!(
            super::LONG_VERSION.ends_with(&format!(" (wire protocol {PROTO_MAJOR}.{PROTO_MINOR})")),
            "update LONG_VERSION: {}",
            super::LONG_VERSION
        );
    }
}
