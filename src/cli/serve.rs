//! `hasync serve`: the peer side, on stdin/stdout. Started by the client, over
//! SSH or as a local child process; people don't run it by hand.

mod idle;

use super::{Cli, CliError};
use hasync::db::serve::DbServe;
use hasync::serve::{ServePolicy, serve};
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
    /// Read no config file, not even $HASYNC_CONFIG or the default one (what a local
    /// peer's child gets when the master's config has no [node] peer_config)
    #[arg(long, hide = true, conflicts_with = "restrict")]
    pub no_config: bool,
    /// Seconds the peer has to complete its Hello before serve gives up (exit 3);
    /// default $HASYNC_HANDSHAKE_TIMEOUT or 30
    #[arg(long, value_name = "SECS", hide = true)]
    pub handshake_timeout: Option<f64>,
    /// Seconds the peer may stay silent (nothing sent, nothing read) once the session
    /// is set up before serve gives up (exit 3); default $HASYNC_IDLE_TIMEOUT or 600
    #[arg(long, value_name = "SECS", hide = true)]
    pub idle_timeout: Option<f64>,
}

use hasync::sync::client::HANDSHAKE_TIMEOUT_SECS as HANDSHAKE_TIMEOUT;

/// The handshake deadline: `--handshake-timeout`, else `$HASYNC_HANDSHAKE_TIMEOUT`, else 30 s.
fn handshake_timeout(args: &ServeArgs) -> Result<std::time::Duration, CliError> {
    deadline(
        args.handshake_timeout,
        "handshake-timeout",
        "HASYNC_HANDSHAKE_TIMEOUT",
        HANDSHAKE_TIMEOUT,
    )
}

/// A deadline from its flag, else its environment variable, else the default.
fn deadline(
    flag: Option<f64>,
    flag_name: &str,
    env: &str,
    default: f64,
) -> Result<std::time::Duration, CliError> {
    hasync::node::config::deadline_secs(flag, flag_name, env, default).map_err(CliError::usage)
}

/// The idle deadline: `--idle-timeout`, else `$HASYNC_IDLE_TIMEOUT`, else 600 s.
fn deadline_of_idle(args: &ServeArgs) -> Result<std::time::Duration, CliError> {
    deadline(
        args.idle_timeout,
        "idle-timeout",
        "HASYNC_IDLE_TIMEOUT",
        idle::IDLE_TIMEOUT,
    )
}

/// A peer that connects and then says nothing (or half a Hello) must not hold a
/// `serve` process forever: if the handshake is not done by the deadline, this
/// thread ends the process with exit 3. (A blocked read on stdin cannot be
/// interrupted portably; the process serves one connection, so exiting is the
/// simple and complete answer.)
fn handshake_watchdog(
    timeout: std::time::Duration,
) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if flag.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50).min(timeout));
        }
        if !flag.load(Ordering::SeqCst) {
            eprintln!(
                "hasync: error: the peer did not complete the handshake (Hello) within {:.1} s; giving up",
                timeout.as_secs_f64()
            );
            std::process::exit(3);
        }
    });
    done
}

pub fn run(cli: &Cli, args: &ServeArgs) -> Result<i32, CliError> {
    let mut policy = ServePolicy::default();
    policy.cfg.fsync = !args.no_fsync;
    let deadline = handshake_timeout(args)?;
    let idle_timeout = deadline_of_idle(args)?;
    let restricted = args.restrict || !args.allow.is_empty();
    let path = super::config_path(cli);
    let loaded = (!args.no_config && path.exists()).then(|| hasync::node::config::load(&path));
    let db = db_policy(loaded.as_ref(), restricted);
    // The role fence needs this node's own config (see hasync::node::role).
    policy.node = loaded.as_ref().and_then(|c| c.as_ref().ok()).cloned();
    // Where this node records what it received (the standby's lag, issue 21).
    let record_dir = match &loaded {
        Some(Ok(cfg)) => Some(cfg.node.state_dir.clone()),
        _ => None,
    };
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(0));
    policy.received = Some(received.clone());
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
    // When stdin and stdout are pipes (to sshd or a local client), 1 MiB pipes
    // instead of 64 KiB let file data cross in fewer, larger steps, with far fewer
    // wake-ups of either side: the first copy of 1 GiB in 4 files took 0.9 s
    // instead of 1.55 s locally, 1.5 s instead of 2.0 s over SSH. Best effort (not a
    // pipe, or above /proc/sys/fs/pipe-max-size: unchanged).
    let _ = rustix::pipe::fcntl_setpipe_size(&input, PIPE_SIZE);
    let _ = rustix::pipe::fcntl_setpipe_size(&output, PIPE_SIZE);
    policy.handshake_done = Some(handshake_watchdog(deadline));
    let activity = idle::Activity::new();
    idle::watchdog(activity.clone(), idle_timeout);
    let input = idle::Watched {
        inner: input,
        activity: activity.clone(),
    };
    let output = idle::Watched {
        inner: output,
        activity,
    };
    let res = serve(input, output, &policy);
    report_rss();
    res?;
    record_received(record_dir.as_deref(), &received);
    // The session is over: end our side of the connection (the client waits for its
    // end, not for our exit), then let the old inodes finish being freed.
    close_stdio();
    hasync::sync::receive::wait_detached();
    Ok(0)
}

/// Point stdout and stderr at /dev/null: the client sees the end of the connection
/// now, while this process still frees the old copies of what it received.
fn close_stdio() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stdout(&null);
        let _ = rustix::stdio::dup2_stderr(&null);
    }
}

/// After a session that ended well: note in `state_dir/received.json` what it brought
/// (see `hasync::scheduler::health`). A failure to write is logged, never fatal to the session.
fn record_received(dir: Option<&std::path::Path>, got: &std::sync::atomic::AtomicU8) {
    use hasync::serve::{RECEIVED_REPLAY, RECEIVED_TREE};
    let got = got.load(std::sync::atomic::Ordering::SeqCst);
    let Some(dir) = dir.filter(|_| got != 0) else {
        return;
    };
    let (tree, replay) = (got & RECEIVED_TREE != 0, got & RECEIVED_REPLAY != 0);
    if let Err(e) =
        hasync::scheduler::health::record_received(dir, tree, replay, chrono::Utc::now())
    {
        tracing::warn!(
            "cannot record the received session in {}: {e}",
            dir.display()
        );
    }
}

/// What this node lets the master do for the DB job: its own `[db]` decides the
/// database and user; staging goes to its own `state_dir`.
fn db_policy(
    loaded: Option<&Result<hasync::node::config::Config, hasync::node::config::ConfigError>>,
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
            db.node_state = Some(cfg.node.state_dir.clone());
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

/// The size asked for the serve side's input pipe.
const PIPE_SIZE: usize = 1 << 20;
