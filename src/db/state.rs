//! The DB job's record in `state_dir/db.json`: the last run (outcome, error, times,
//! sizes) and the hash of the last script the slave replayed successfully, which is what
//! makes an unchanged dump a no-op. Written atomically (temp file in the same directory,
//! fsync, rename), so a reader, or a crash, sees the old record or the new one. A
//! missing or unreadable record means "nothing replayed yet": the next run replays,
//! which is always safe.

use serde::{Deserialize, Serialize};

use std::path::{Path, PathBuf};

use crate::node::store;

/// File name of the record under `state_dir`.
pub const FILE: &str = "db.json";

/// One run, as recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `replayed`, `unchanged` or `failed`.
    pub outcome: String,
    pub error: Option<String>,
    pub started_unix: u64,
    pub finished_unix: u64,
    pub duration_ms: u64,
    pub dump_bytes: u64,
    pub bytes_on_wire: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbState {
    pub job: String,
    pub last_run: Option<RunRecord>,
    /// BLAKE3 (hex) of the last script the slave committed.
    pub replayed_hash: Option<String>,
    pub replayed_unix: Option<u64>,
    /// When a run last ended well (replayed or unchanged).
    pub last_success_unix: Option<u64>,
    /// When that run started (before its dump): the slave holds every commit made on the
    /// master up to then. The base of `hasync status`'s DB lag.
    #[serde(default)]
    pub synced_unix: Option<u64>,
}

/// The record of the runs toward `peer` (a `[[peer]]` name; `None`: the one peer of
/// `[node] peer`): `db.json`, or `db@PEER.json`.
pub fn path(state_dir: &Path, peer: Option<&str>) -> PathBuf {
    match peer {
        None => state_dir.join(FILE),
        Some(p) => state_dir.join(format!("db@{p}.json")),
    }
}

/// The record, or an empty one when there is none or it cannot be read.
pub fn load(state_dir: &Path, peer: Option<&str>) -> DbState {
    std::fs::read(path(state_dir, peer))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Writes the record atomically.
pub fn save(state_dir: &Path, peer: Option<&str>, st: &DbState) -> std::io::Result<()> {
    store::write_atomic(&path(state_dir, peer), &store::json_bytes(st)?)
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    store::now_ms() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_round_trips_and_garbage_reads_as_empty() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(load(d.path(), None), DbState::default());
        let st = DbState {
            job: "db".into(),
            replayed_hash: Some("ab".into()),
            last_run: Some(RunRecord {
                outcome: "failed".into(),
                error: Some("boom".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        save(d.path(), None, &st).unwrap();
        assert_eq!(load(d.path(), None), st);
        std::fs::write(path(d.path(), None), b"{not json").unwrap();
        assert_eq!(load(d.path(), None), DbState::default());
    }
}
