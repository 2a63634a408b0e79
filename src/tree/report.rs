//! What a run reports: itemized changes (like `rsync -i`) and statistics.
//!
//! The library never prints. The receiver produces an [`Item`] per change and
//! the running [`Stats`]; they reach the user through a [`Reporter`], which the
//! CLI implements (itemized lines, progress bar, JSON). When the receiver is
//! the remote `serve` side, items travel back over the wire first.

use crate::tree::path::{RelPath, escape_bytes};
use serde::Serialize;

/// One change, itemized like rsync's `--itemize-changes`:
/// `YXcstpoguax` where Y is the update type (`>` received, `c` created locally,
/// `.` metadata only, `*` a message such as `*deleting`), X the kind (`f`, `d`, `L`),
/// then flags: `c` checksum, `s` size, `t` mtime, `p` permissions, `o` owner, `g` group;
/// `+++++++++` for a new entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub code: String,
    pub path: RelPath,
    /// Symlink target, for display.
    pub target: Vec<u8>,
    /// Set when applying this item failed.
    pub error: Option<String>,
}

impl Item {
    /// `*deleting PATH`: an entry removed (by `--delete`, or in the way of another kind).
    pub fn deleting(path: RelPath) -> Item {
        Item {
            code: "*deleting".into(),
            path,
            target: vec![],
            error: None,
        }
    }

    /// `*warning`: something the user must know that is not about one entry.
    pub fn warning(why: String) -> Item {
        Item {
            code: "*warning".into(),
            path: Default::default(),
            target: vec![],
            error: Some(why),
        }
    }

    /// The line printed for this item (names escaped).
    pub fn line(&self) -> String {
        // The code comes from the peer when it is the receiver: escaped too.
        let code = crate::tree::path::escape_controls(&self.code);
        let mut s = if self.path.is_root() {
            format!("{code} ./")
        } else {
            format!("{code} {}", self.path)
        };
        if !self.target.is_empty() {
            s.push_str(" -> ");
            s.push_str(&escape_bytes(&self.target));
        }
        if let Some(e) = &self.error {
            s.push_str(&format!(
                "  (failed: {})",
                crate::tree::path::escape_controls(e)
            ));
        }
        s
    }
}

/// Counters of one run. The wire carries the receiver's counters; the client
/// adds `bytes_sent`, `bytes_received` (and the same before compression) and
/// `duration_ms`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Stats {
    /// Entries in the source manifest (files, directories, symlinks).
    pub files_total: u64,
    /// Regular files whose content was sent (whole or delta).
    pub files_transferred: u64,
    pub files_deleted: u64,
    /// Items that could not be applied (the run exits 1).
    pub files_failed: u64,
    /// Directories and symlinks created or replaced.
    pub other_created: u64,
    /// Entries whose metadata only was updated.
    pub meta_updated: u64,
    /// New data sent for transferred files.
    pub bytes_literal: u64,
    /// Data reused from the receiver's old copies.
    pub bytes_matched: u64,
    /// Total size of the source's regular files.
    pub bytes_total: u64,
    /// Bytes written to the peer, on the wire.
    pub bytes_sent: u64,
    /// Bytes read from the peer, on the wire.
    pub bytes_received: u64,
    /// `bytes_sent` before compression (equal without it).
    pub bytes_sent_uncompressed: u64,
    /// `bytes_received` once decompressed (equal without compression).
    pub bytes_received_uncompressed: u64,
    pub duration_ms: u64,
}

/// Adds up the stats of several runs (paths of a job, jobs of a command).
impl std::ops::AddAssign<&Stats> for Stats {
    fn add_assign(&mut self, s: &Stats) {
        self.files_total += s.files_total;
        self.files_transferred += s.files_transferred;
        self.files_deleted += s.files_deleted;
        self.files_failed += s.files_failed;
        self.other_created += s.other_created;
        self.meta_updated += s.meta_updated;
        self.bytes_literal += s.bytes_literal;
        self.bytes_matched += s.bytes_matched;
        self.bytes_total += s.bytes_total;
        self.bytes_sent += s.bytes_sent;
        self.bytes_received += s.bytes_received;
        self.bytes_sent_uncompressed += s.bytes_sent_uncompressed;
        self.bytes_received_uncompressed += s.bytes_received_uncompressed;
        self.duration_ms += s.duration_ms;
    }
}

impl Stats {
    pub const N_COUNTERS: usize = 9;

    /// The receiver-side counters, in wire order.
    pub fn counters(&self) -> [u64; Self::N_COUNTERS] {
        [
            self.files_total,
            self.files_transferred,
            self.files_deleted,
            self.files_failed,
            self.other_created,
            self.meta_updated,
            self.bytes_literal,
            self.bytes_matched,
            self.bytes_total,
        ]
    }

    pub fn from_counters(v: [u64; Self::N_COUNTERS]) -> Stats {
        Stats {
            files_total: v[0],
            files_transferred: v[1],
            files_deleted: v[2],
            files_failed: v[3],
            other_created: v[4],
            meta_updated: v[5],
            bytes_literal: v[6],
            bytes_matched: v[7],
            bytes_total: v[8],
            ..Default::default()
        }
    }
}

/// Receives what a run does, as it happens.
pub trait Reporter: Send {
    /// A change was applied (or failed, see `item.error`), or would be in a dry run.
    fn item(&mut self, item: &Item);
    /// `bytes` more bytes of file content were processed.
    fn progress(&mut self, _bytes: u64) {}
    /// The total amount of content to process is now known.
    fn total(&mut self, _bytes: u64) {}
}

/// A reporter that drops everything.
pub struct Silent;
impl Reporter for Silent {
    fn item(&mut self, _item: &Item) {}
}
