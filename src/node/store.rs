//! What this node keeps on disk, and the clock it stamps it with: small JSON records
//! under `state_dir` (job runs, the master check, the role, the DB job), written
//! atomically (temp file in the same directory, fsync, rename over, fsync of the
//! directory) so that a reader, or a node that loses power, sees the old record or the
//! new one, never a mix.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
    pub fn exit_code(&self) -> i32 {
        match self {
            NodeError::State { .. } => 2,
            NodeError::Io { .. } => 1,
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

/// Writes `value` as pretty JSON to `path` atomically: a temp file in the same
/// directory, fsync, rename over, fsync of the directory. A reader sees the old file or
/// the new one.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), NodeError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let io = |what: &'static str| {
        move |e: std::io::Error| NodeError::Io {
            path: path.to_path_buf(),
            what,
            source: e,
        }
    };
    std::fs::create_dir_all(dir).map_err(io("create the directory of"))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io("create a temp file for"))?;
    serde_json::to_writer_pretty(&mut tmp, value)
        .map_err(std::io::Error::other)
        .map_err(io("write"))?;
    use std::io::Write as _;
    tmp.write_all(b"\n").map_err(io("write"))?;
    tmp.as_file().sync_all().map_err(io("sync"))?;
    tmp.persist(path).map_err(|e| io("replace")(e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync the directory of"))?;
    Ok(())
}

/// Reads JSON from `path`; `None` when the file does not exist.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, NodeError> {
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
            reason: format!("is not valid state ({e}); move it away and run again"),
        })
}
