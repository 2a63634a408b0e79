//! `hasync serve`: the peer side, on stdin/stdout. Started by the client, over
//! SSH or as a local child process; people don't run it by hand.

use super::{Cli, CliError};
use hasync::db::serve::DbServe;
use hasync::engine::session::{ServePolicy, serve};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Only serve the directories of this node's config ([[sync]] paths under `root`, the [db]
    /// staging dir) and --allow; DB replay only with this node's own [db] section
    #[arg(long)]
    pub restrict: bool,
    /// A directory this peer may serve (repeatable; implies --restrict)
    #[arg(long, value_name = "DIR")]
    pub allow: Vec<PathBuf>,
    /// Don't flush received files to disk before renaming them
    #[arg(long)]
    pub no_fsync: bool,
}

pub fn run(cli: &Cli, args: &ServeArgs) -> Result<i32, CliError> {
    let mut policy = ServePolicy::default();
    policy.cfg.fsync = !args.no_fsync;
    let restricted = args.restrict || !args.allow.is_empty();
    let path = super::config_path(cli);
    let loaded = path.exists().then(|| hasync::config::load(&path));
    let db = db_policy(loaded.as_ref(), restricted);
    if restricted {
        let mut allowed = args.allow.clone();
        if let (true, Some(cfg)) = (args.restrict, loaded) {
            let cfg = cfg?;
            for job in &cfg.sync {
                for p in &job.paths {
                    allowed.push(cfg.local_path(p));
                }
            }
        }
        if db.own.is_some() {
            allowed.push(db.staging.clone());
        }
        policy.allowed_roots = Some(allowed);
    }
    policy.db = Some(db);
    // Raw file handles: the protocol owns stdin/stdout (logs go to stderr).
    use std::os::fd::AsFd;
    let dup = |fd: std::os::fd::BorrowedFd| fd.try_clone_to_owned().map(std::fs::File::from);
    let input =
        dup(std::io::stdin().as_fd()).map_err(|e| CliError::usage(format!("stdin: {e}")))?;
    let output =
        dup(std::io::stdout().as_fd()).map_err(|e| CliError::usage(format!("stdout: {e}")))?;
    let res = serve(input, output, &policy);
    report_rss();
    res?;
    Ok(0)
}

/// What this node lets the master do for the DB job: its own `[db]` decides the
/// database and user; staging goes to its own `state_dir`.
fn db_policy(
    loaded: Option<&Result<hasync::config::Config, hasync::config::ConfigError>>,
    restricted: bool,
) -> DbServe {
    let mut db = DbServe {
        staging: PathBuf::from("/var/lib/hasync").join(hasync::db::STAGING_DIR),
        restricted,
        ..Default::default()
    };
    match loaded {
        Some(Ok(cfg)) => {
            db.staging = cfg.node.state_dir.join(hasync::db::STAGING_DIR);
            db.own = cfg.db.as_ref().map(hasync::db::PgConn::from_job);
        }
        Some(Err(e)) => db.refusal = Some(format!("this peer's config cannot be used: {e}")),
        None => {}
    }
    db
}

/// For the benchmark: append this process's peak RSS (KiB) to $HASYNC_RSS_REPORT.
fn report_rss() {
    let Some(path) = std::env::var_os("HASYNC_RSS_REPORT") else {
        return;
    };
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return;
    };
    if let Some(kb) = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
    {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{kb}");
        }
    }
}
