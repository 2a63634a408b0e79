//! What this node keeps on disk, and the clock it stamps it with: small JSON records
//! under `state_dir` (job runs, the master check, the role, the DB job), written
//! atomically (temp file in the same directory, fsync, rename over, fsync of the
//! directory) so that a reader, or a node that loses power, sees the old record or the
//! new one, never a mix.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::exit::ExitCode;

/// What went wrong with a record on disk, where, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    State { path: PathBuf, reason: String },
}

impl NodeError {
    /// The CLI exit code: 2 for a record that does not parse (setup), 1 for I/O.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            NodeError::State { .. } => ExitCode::Usage,
            NodeError::Io { .. } => ExitCode::Failed,
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Writes `bytes` to `path` atomically: a temp file in the same directory (created if
/// needed), mode 0644 (records are read by monitoring users; nothing secret goes in
/// one), fsync, rename over, fsync of the directory. A reader, or a node that loses
/// power, sees the old file or the new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".hasync-state.")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// `value` as pretty JSON with a final newline: what [`write_json`] writes.
pub fn json_bytes<T: Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Writes `value` as pretty JSON to `path` atomically (see [`write_atomic`]).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), NodeError> {
    json_bytes(value)
        .and_then(|b| write_atomic(path, &b))
        .map_err(|source| NodeError::Io {
            path: path.to_path_buf(),
            what: "write",
            source,
        })
}

/// Takes an exclusive `flock` on `path` (created if needed, with its directory); with
/// `wait`, waits for the holder to let go, else `None` when another process holds it.
/// Held until the file is dropped; the kernel lets go when the process dies, so a crash
/// never leaves a stale lock.
pub fn lock_file(path: &Path, wait: bool) -> std::io::Result<Option<std::fs::File>> {
    use rustix::fs::{FlockOperation, flock};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    let op = match wait {
        true => FlockOperation::LockExclusive,
        false => FlockOperation::NonBlockingLockExclusive,
    };
    loop {
        match flock(&file, op) {
            Ok(()) => return Ok(Some(file)),
            Err(rustix::io::Errno::WOULDBLOCK) if !wait => return Ok(None),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads JSON from `path`; `None` when the file does not exist.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, NodeError> {
    read_json_or(path, |e| {
        format!("is not valid state ({e}); move it away and run again")
    })
}

/// [`read_json`], with `reason` saying what a file that does not parse should hold.
pub fn read_json_or<T: for<'de> Deserialize<'de>>(
    path: &Path,
    reason: impl FnOnce(&serde_json::Error) -> String,
) -> Result<Option<T>, NodeError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(NodeError::Io {
                path: path.to_path_buf(),
                what: "read",
                source: e,
            });
        }
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| NodeError::State {
            path: path.to_path_buf(),
            reason: reason(&e),
        })
}
