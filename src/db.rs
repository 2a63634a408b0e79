//! The DB job: PostgreSQL replicated from master to slave by dump and replay (what Wazo's
//! `xivo-master-slave-db-replication` does, made atomic and delta-shipped). This module
//! owns the whole job: [`pg`] runs `pg_dump` and `psql` on the local node (unix socket,
//! never a port opened to the peer), [`plan`] reads what would be replicated from the
//! catalog, [`script`] turns a dump into a one-transaction
//! replay script and counts what it holds, [`state`] records each run in `state_dir`,
//! [`job`] is the master's side (dump, compare, ship with the sync engine, ask for the
//! replay) and [`serve`] the slave's (staging directory, hash check, replay with psql);
//! [`watch`] is how `schedule = "watch"` notices the master's commits.
//! Nothing here prints; every error says what failed, where, and what to do.

pub mod digest;
pub mod identity;
pub mod incremental;
pub mod job;
pub mod patch;
pub mod pg;
pub mod plan;
pub mod psql_error;
pub mod script;
pub mod serve;
pub mod state;
pub mod watch;

use crate::sync::SyncError;

pub use pg::PgConn;

/// Name of the master's private working directory under `state_dir` (mode 0700).
pub const WORK_DIR: &str = "db";
/// Name of the slave's private staging directory under its `state_dir` (mode 0700).
pub const STAGING_DIR: &str = "db-staging";

/// Why a DB run failed. Each variant maps to one exit code. The text is the whole
/// message (what, where, the cause); the cause is also the error's `source()`.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The dump could not be used (an unreadable catalog row, ...) on this node (exit 1).
    #[error("{0}")]
    Dump(String),
    /// A PostgreSQL client failed on this node (exit 1); `doing` says at which step.
    #[error("{doing}: {source}")]
    Pg {
        doing: String,
        #[source]
        source: pg::PgError,
    },
    /// The slave's psql refused or failed the replay; its transaction was rolled back (exit 1).
    #[error("{0}")]
    Replay(String),
    /// A local file problem on this node (exit 1).
    #[error("{what} {}: {source}", path.display())]
    File {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another local problem on this node (exit 1).
    #[error("{0}")]
    Local(String),
    /// The peer, the transport or the protocol failed (exit 3), or the peer refused (its code).
    #[error("{0}")]
    Peer(#[from] SyncError),
}

impl DbError {
    /// The process exit code (see `docs/db.md`).
    pub fn exit_code(&self) -> crate::node::exit::ExitCode {
        match self {
            DbError::Peer(e) => e.exit_code(),
            _ => crate::node::exit::ExitCode::Failed,
        }
    }
}

/// Sets `dir` (created if missing) to mode 0700 and refuses a symlink or a non-directory:
/// dumps hold the whole configuration database and must not be readable by others.
pub fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::symlink_metadata(dir) {
        Ok(md) if md.is_dir() => {}
        Ok(_) => {
            return Err(std::io::Error::other(format!(
                "{} exists and is not a directory (remove it)",
                dir.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        Err(e) => return Err(e),
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Runs `[hooks] on_failure` for a failed DB run, with `HASYNC_EVENT=failure`,
/// `HASYNC_JOB=db` and `HASYNC_ERROR=<message>` (60 s at most). Returns a message when
/// the hook itself failed, for the caller to report; the run's own error stands.
pub fn failure_hook(cfg: &crate::node::config::Config, error: &str) -> Option<String> {
    let cmd = cfg.hooks.on_failure.as_deref()?;
    let timeout = std::time::Duration::from_secs(60);
    let env = [
        ("HASYNC_EVENT", "failure"),
        ("HASYNC_JOB", "db"),
        ("HASYNC_ERROR", error),
    ];
    match crate::node::exec::shell(cmd, &env, timeout) {
        Ok(o) if o.success() => None,
        Ok(o) => Some(format!(
            "the [hooks] on_failure command {cmd:?} failed ({}): {}",
            o.describe(timeout),
            o.output.trim()
        )),
        Err(e) => Some(format!(
            "the [hooks] on_failure command {cmd:?} could not start: {e}"
        )),
    }
}
