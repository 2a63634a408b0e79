//! `hasync push` and `hasync pull`: one-off mirrors, like `rsync -a SRC/ DEST/`.

use super::output::{Console, summary};
use super::{Cli, CliError};
use hasync::node::config::{Compress, MAX_COMPRESS_LEVEL, parse_rate};
use hasync::sync::client::{Client, LinkOptions};
use hasync::sync::scan::EarlyScan;
use hasync::transport::Transport;
use hasync::transport::local::LocalTransport;
use hasync::wire::SessionOptions;
use std::path::{Path, PathBuf};

pub const PUSH_HELP: &str = "\
Locations:
  /local/dir                     a directory on this host
  [user@]host:/dir               a directory on a peer, over SSH
  ssh://[user@]host[:port]/dir   the same, with a port

The content of SRC is mirrored into DEST (like rsync's SRC/ DEST/): DEST is created if needed.
Files are compared by size and mtime (or by BLAKE3 with --checksum); changed files travel as
block deltas, are verified with BLAKE3, and replace the old copy atomically.

Exclude patterns use gitignore syntax, relative to SRC: '*.swp' (any depth), 'cache/'
(directories only), '/top' (only at the top), 'a/**/b', '!keep.swp' (re-include).

Examples:
  hasync push /etc/asterisk /srv/replica/etc/asterisk --delete
  hasync push /var/lib/asterisk/moh root@10.0.0.2:/var/lib/asterisk/moh --delete --dry-run
  hasync pull root@10.0.0.1:/etc/xivo /etc/xivo --delete --exclude '*.swp' --json";

#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// Source directory
    pub src: String,
    /// Destination directory
    pub dest: String,
    /// Delete what the source no longer has (after transfers)
    #[arg(long)]
    pub delete: bool,
    /// Exclude paths matching PATTERN (gitignore syntax; repeatable)
    #[arg(long, value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// Compare by BLAKE3 content hash instead of size + mtime
    #[arg(long)]
    pub checksum: bool,
    /// Print what would change, change nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Print one JSON object with the run's stats on stdout at the end
    #[arg(long)]
    pub json: bool,
    /// Refuse the run if it would delete more than N entries (exit 4)
    #[arg(long, value_name = "N")]
    pub max_delete: Option<u64>,
    /// Allow an empty source to empty the mirror with --delete
    #[arg(long)]
    pub allow_empty_source: bool,
    /// Don't cross file system boundaries (like rsync -x): a mount point is mirrored as
    /// a directory, what is mounted there is neither sent nor deleted
    #[arg(long, short = 'x')]
    pub one_file_system: bool,
    /// Mirror owners by number, not by user and group name (as root; like rsync's --numeric-ids)
    #[arg(long)]
    pub numeric_ids: bool,
    /// Don't flush files to disk before they replace old copies (faster, less safe on power loss)
    #[arg(long)]
    pub no_fsync: bool,
    #[command(flatten)]
    pub link: LinkArgs,
    /// SSH private key
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// known_hosts file for the peer's host key [default: ~/.ssh/known_hosts]
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Trust and record the peer's host key if it is not known yet (never a changed one)
    #[arg(long)]
    pub accept_new: bool,
    /// Where hasync lives on the peer
    #[arg(long, value_name = "PATH", default_value = "hasync")]
    pub remote_path: String,
    /// Connect deadline; a peer or link silent this long ends the run (exit 3)
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub timeout: f64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Push,
    Pull,
}

/// A side of a transfer.
pub enum Location {
    Local(PathBuf),
    Remote(Box<dyn Transport>, PathBuf),
}

/// Parse a location argument.
pub fn location(s: &str, args: &PushArgs) -> Result<Location, CliError> {
    if let Some((target, dir)) = hasync::transport::ssh::parse_location(s) {
        let opts = hasync::transport::ssh::SshOptions {
            identity: args.identity.clone(),
            known_hosts: args.known_hosts.clone().unwrap_or_else(default_known_hosts),
            accept_new: args.accept_new,
            remote_path: args.remote_path.clone(),
            ..Default::default()
        }
        .with_timeout(timeout(args.timeout)?);
        let t = hasync::transport::ssh::SshTransport::new(target, opts);
        return Ok(Location::Remote(Box::new(t), PathBuf::from(dir)));
    }
    let p = std::path::absolute(Path::new(s))
        .map_err(|e| CliError::usage(format!("bad path {s}: {e}")))?;
    Ok(Location::Local(p))
}

fn timeout(secs: f64) -> Result<std::time::Duration, CliError> {
    std::time::Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            CliError::usage(format!(
                "--timeout {secs}: give a positive number of seconds"
            ))
        })
}

/// How a run uses the link: `--compress[=LEVEL]`, `--no-compress`, `--bwlimit` (shared
/// by `push`/`pull` and `sync`).
#[derive(clap::Args, Debug, Default)]
pub struct LinkArgs {
    /// Compress with zstd (default over SSH; LEVEL 1-19, default 3); data that does not
    /// compress is sent as it is
    #[arg(long, value_name = "LEVEL", num_args = 0..=1, require_equals = true, default_missing_value = "3")]
    pub compress: Option<String>,
    /// Do not compress (the default to a local peer)
    #[arg(long, conflicts_with = "compress")]
    pub no_compress: bool,
    /// Cap the bytes on the link at RATE per second, each direction (rsync's units: a
    /// bare number is KiB/s, suffixes K, M, G; 0 for none)
    #[arg(long, value_name = "RATE")]
    pub bwlimit: Option<String>,
}

impl LinkArgs {
    /// What the flags say; `None`: not given (the config's, or the default, applies).
    pub fn parse(&self) -> Result<(Option<Compress>, Option<u64>), CliError> {
        let compress = match (&self.compress, self.no_compress) {
            (_, true) => Some(Compress::Off),
            (Some(l), false) => match Compress::parse(l) {
                Ok(Compress::Auto) | Err(_) => {
                    return Err(CliError::usage(format!(
                        "--compress={l}: give a zstd level from 1 to {MAX_COMPRESS_LEVEL} (or --no-compress)"
                    )));
                }
                Ok(c) => Some(c),
            },
            (None, false) => None,
        };
        let bwlimit = match &self.bwlimit {
            Some(r) => Some(parse_rate(r).map_err(|m| CliError::usage(format!("--bwlimit: {m}")))?),
            None => None,
        };
        Ok((compress, bwlimit))
    }
}

/// `--compress[=LEVEL]`, `--no-compress` and `--bwlimit` of an ad hoc push or pull.
fn link_options(args: &PushArgs) -> Result<LinkOptions, CliError> {
    let (compress, bwlimit) = args.link.parse()?;
    Ok(LinkOptions {
        compress: compress.unwrap_or(Compress::Auto),
        bwlimit: bwlimit.unwrap_or(0),
    })
}

pub fn default_known_hosts() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".ssh/known_hosts")
}

pub fn run(cli: &Cli, args: &PushArgs, dir: Direction) -> Result<i32, CliError> {
    let src = location(&args.src, args)?;
    let dest = location(&args.dest, args)?;
    let opts = SessionOptions {
        delete: args.delete,
        checksum: args.checksum,
        dry_run: args.dry_run,
        owners: true,
        allow_empty_source: args.allow_empty_source,
        max_delete: args.max_delete,
        excludes: args.exclude.clone(),
        one_file_system: args.one_file_system,
        numeric_ids: args.numeric_ids,
        copy_back: false,
    };
    let local = || -> Result<Box<dyn Transport>, CliError> {
        Ok(Box::new(
            LocalTransport::new().map_err(hasync::sync::SyncError::from)?,
        ))
    };
    let (transport, local_dir, peer_dir) = match (dir, src, dest) {
        (Direction::Push, Location::Local(s), Location::Remote(t, d)) => (t, s, d),
        (Direction::Push, Location::Local(s), Location::Local(d)) => (local()?, s, d),
        (Direction::Pull, Location::Remote(t, s), Location::Local(d)) => (t, d, s),
        (Direction::Pull, Location::Local(s), Location::Local(d)) => (local()?, d, s),
        (Direction::Push, Location::Remote(..), _) => {
            return Err(CliError::usage(
                "push: SRC must be a local directory (use pull to fetch from a peer)",
            ));
        }
        (Direction::Pull, _, Location::Remote(..)) => {
            return Err(CliError::usage(
                "pull: DEST must be a local directory (use push to send to a peer)",
            ));
        }
    };
    let mut console = Console::new(
        !cli.quiet && (!args.json || cli.verbose > 0),
        !cli.quiet && !args.json,
    );
    let link = link_options(args)?;
    // A push scans its source while the connection is set up.
    let early = match dir {
        Direction::Push => EarlyScan::start(&local_dir, &opts),
        Direction::Pull => None,
    };
    let mut client = Client::connect(transport.as_ref(), &[])?;
    client.cfg.fsync = !args.no_fsync;
    client.link = link;
    let result = match dir {
        Direction::Push => client.push_scanned(&local_dir, &peer_dir, &opts, &mut console, early),
        Direction::Pull => client.pull(&peer_dir, &local_dir, &opts, &mut console),
    };
    console.finish();
    let stats = result?;
    client.close()?;
    if args.json {
        outln!(
            "{}",
            serde_json::to_string(&stats).expect("stats serialize")
        );
    } else if !cli.quiet {
        outln!(
            "{}{}",
            if args.dry_run { "(dry run) " } else { "" },
            summary(&stats)
        );
    }
    Ok(if stats.files_failed > 0 || console.failed > 0 {
        1
    } else {
        0
    })
}
