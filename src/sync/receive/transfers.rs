//! Phase 3 of a receive: the files' data. The requester thread ([`super::request`])
//! asks for the files while this, the receiving thread, reads the sender's answers
//! (`FileBegin`, `Data`/`Copy`..., `FileEnd` or `FileAbort`), rebuilds each file into
//! its temp file ([`super::apply::Rebuild`]), verifies it and queues it for the
//! installer ([`super::commit`]). A file that fails locally is reported and its
//! remaining frames skipped; the run goes on. Every file ends in exactly one call of
//! [`Transfers::finish`], which frees its window slot.

use super::apply::{Rebuild, RebuildError};
use super::commit::Committer;
use super::request::{Ahead, PrepQueue, request_all};
use super::resume::{Partials, RESUME_MIN};
use super::{Changes, FILES_IN_FLIGHT, Local, Out, item};
use crate::sync::SyncError;
use crate::sync::fsops::{DirCache, SafeRoot};
use crate::sync::plan::{Change, How};
use crate::tree::manifest::Kind;
use crate::tree::path::RelPath;
use crate::wire::{FrameReader, Msg, Want, recv, send};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::sync::{Mutex, mpsc};

/// Open-file limit needed to write new files as anonymous temp files.
const ANONYMOUS_FD_LIMIT: u64 = 4096;

/// Send requests (in a helper thread) and rebuild files (here) until every file of
/// `files` (source index, delta planned) is done.
pub(super) fn run<R: Read, W: Write + Send>(
    rd: &mut FrameReader<R>,
    out: &mut Out<W>,
    local: &Local,
    files: &[(u32, bool)],
    changes: &Changes,
    committer: &mut Committer,
    partials: &Partials,
) -> Result<(), SyncError> {
    if files.is_empty() {
        return Ok(());
    }
    let (safe, source) = (local.safe, local.source);
    let mut dirs = DirCache::new();
    // New files are written as anonymous temp files, which stay open until installed
    // (up to the installer's queue): only with room for that many descriptors, and
    // where linking them works (tried with the first new file, in its directory,
    // whose mtime is set again at the end).
    let is_new = |idx: u32| changes.get(idx).is_some_and(|c| c.is_new());
    let anonymous_ok = crate::sync::fsops::raise_fd_limit(ANONYMOUS_FD_LIMIT) >= ANONYMOUS_FD_LIMIT
        && files
            .iter()
            .find(|&&(idx, _)| is_new(idx))
            .is_some_and(|&(idx, _)| {
                probe_anonymous(safe, &mut dirs, &source.get(idx as usize).path)
            });
    // Big files get a name that survives a cut connection, to be resumed (`resume.rs`).
    let anonymous =
        |idx: u32| anonymous_ok && is_new(idx) && source.size(idx as usize) < RESUME_MIN;
    let signed: Mutex<HashSet<u32>> = Mutex::default();
    let prepared = PrepQueue::new(source.len());
    let (slot_tx, slot_rx) = mpsc::sync_channel::<()>(FILES_IN_FLIGHT);
    let wr = out.wr;
    std::thread::scope(|s| {
        let ahead = Ahead {
            safe,
            source,
            anonymous: &anonymous,
            signed: &signed,
            prepared: &prepared,
            partials,
            hints: local.hints,
        };
        let requester = s.spawn(move || request_all(wr, ahead, files, slot_tx));
        let mut t = Transfers {
            out,
            local,
            changes,
            pending: Pending::new(source.len(), files),
            slots: slot_rx,
            current: None,
            dirs,
            anonymous: &anonymous,
            signed: &signed,
            prepared: &prepared,
            committer,
            partials,
        };
        let res = t.receive_all(rd);
        if let Some(mut r) = t.current.take() {
            // Cut off in the middle of a big file: keep what arrived for the next run.
            match &res {
                Err(e) if e.is_peer() && r.expected >= RESUME_MIN => r.keep_partial(),
                _ => r.discard(),
            }
        }
        drop(t); // its window unblocks the requester if we stopped early
        let req = requester
            .join()
            .unwrap_or_else(|_| Err(SyncError::Peer("requester thread panicked".into())));
        res.and(req)
    })
}

/// The receiving thread's state during phase 3.
struct Transfers<'t, 'o, 'a, 'w, 'm, W: Write> {
    out: &'t mut Out<'a, 'w, 'm, W>,
    local: &'t Local<'o>,
    changes: &'t Changes<'t>,
    /// Files that may still arrive, each with whether it was already retried whole.
    pending: Pending,
    /// The window: one slot per file in flight, freed by [`Transfers::finish`].
    slots: mpsc::Receiver<()>,
    /// The file being rebuilt.
    current: Option<Rebuild>,
    dirs: DirCache,
    anonymous: &'t (dyn Fn(u32) -> bool + Sync),
    /// The files requested with a signature: only those may come back as deltas.
    signed: &'t Mutex<HashSet<u32>>,
    /// Temp files (and old copies) made ready before the data arrives.
    prepared: &'t PrepQueue,
    committer: &'t mut Committer,
    /// Partials of a cut run, the delta bases of their files.
    partials: &'t Partials,
}

impl<W: Write> Transfers<'_, '_, '_, '_, '_, W> {
    fn receive_all<R: Read>(&mut self, rd: &mut FrameReader<R>) -> Result<(), SyncError> {
        while !self.pending.is_empty() {
            match recv(rd)? {
                Msg::FileBegin { idx, delta } => self.begin(rd, idx, delta)?,
                Msg::Data(d) => {
                    let res = self.rebuilding("data")?.data(d);
                    self.stepped(rd, res)?;
                }
                Msg::Copy { offset, len } => {
                    let res = self.rebuilding("copy")?.copy(offset, len);
                    self.stepped(rd, res)?;
                }
                Msg::FileEnd { size, hash } => self.end(size, &hash)?,
                Msg::FileAbort { idx, reason } => self.abort(idx, reason)?,
                Msg::Item(it) if self.out.is_client => self.out.rep.item(&it),
                Msg::Item(_) => {}
                Msg::Error { code, message } => return Err(SyncError::from_wire(code, message)),
                m => {
                    return Err(SyncError::Peer(format!(
                        "protocol error: unexpected {} during transfers",
                        m.name()
                    )));
                }
            }
        }
        Ok(())
    }

    /// The file in progress, for a frame that belongs inside one.
    fn rebuilding(&mut self, what: &str) -> Result<&mut Rebuild, SyncError> {
        self.current
            .as_mut()
            .ok_or_else(|| SyncError::Peer(format!("protocol error: {what} outside a file")))
    }

    /// The one end of every file: report the failure, if any, drop the file from the
    /// pending set and free its window slot.
    fn finish(&mut self, idx: u32, failure: Option<String>) -> Result<(), SyncError> {
        if let Some(why) = failure {
            let e = &self.local.source.get(idx as usize);
            let sent = Change {
                kind: Kind::File,
                how: How::Sent,
                diff: Default::default(),
            };
            let mut it = item(self.changes.get(idx).unwrap_or(&sent), e);
            it.error = Some(why);
            self.out.outcome(it)?;
        }
        self.pending.remove(idx);
        let _ = self.slots.try_recv();
        Ok(())
    }

    fn begin<R: Read>(
        &mut self,
        rd: &mut FrameReader<R>,
        idx: u32,
        delta: bool,
    ) -> Result<(), SyncError> {
        if self.current.is_some() {
            return Err(SyncError::Peer(
                "protocol error: file started before the previous one ended".into(),
            ));
        }
        let Some(retried_whole) = self.pending.get(idx) else {
            return Err(SyncError::Peer(format!(
                "protocol error: unrequested file {idx}"
            )));
        };
        let signed = self.signed.lock().unwrap_or_else(|e| e.into_inner());
        if delta && (retried_whole || !signed.contains(&idx)) {
            return Err(SyncError::Peer(format!(
                "protocol error: a delta for file {idx}, which was requested whole"
            )));
        }
        drop(signed);
        let e = &self.local.source.get(idx as usize);
        let fsync = self.committer.fsync;
        let started = match self.prepared.take(idx) {
            Some(p) => Rebuild::with(p, e, idx, delta, fsync),
            None => {
                let anonymous = (self.anonymous)(idx);
                let safe = self.local.safe;
                let base = self.partials.get(&e.path).unwrap_or(&e.path);
                Rebuild::start(safe, &mut self.dirs, e, base, idx, delta, fsync, anonymous)
            }
        };
        match started {
            Ok(r) => self.current = Some(r),
            Err(err) => {
                // Cannot write here: skip this file's data, report it, go on.
                skip_file(rd)?;
                self.finish(idx, Some(format!("cannot create: {err}")))?;
            }
        }
        Ok(())
    }

    /// After a data/copy step: a local I/O error fails this file (its remaining data
    /// is skipped).
    fn stepped<R: Read>(
        &mut self,
        rd: &mut FrameReader<R>,
        res: Result<(), RebuildError>,
    ) -> Result<(), SyncError> {
        let why = match res {
            Ok(()) => return Ok(()),
            Err(RebuildError::Protocol(p)) => {
                return Err(SyncError::Peer(format!("protocol error: {p}")));
            }
            Err(RebuildError::Io(e)) => format!("write failed: {e}"),
            Err(RebuildError::Verify(v)) => v,
        };
        let mut r = self.current.take().expect("a file is being rebuilt");
        r.discard();
        skip_file(rd)?;
        self.finish(r.idx, Some(why))
    }

    fn end(&mut self, size: u64, hash: &[u8; 32]) -> Result<(), SyncError> {
        let r = self
            .current
            .take()
            .ok_or_else(|| SyncError::Peer("protocol error: file end outside a file".into()))?;
        let idx = r.idx;
        let e = &self.local.source.get(idx as usize);
        let (was_delta, literal, matched) = (r.delta, r.literal, r.matched);
        let failure = match r.finish(size, hash, &self.local.meta_of(e)) {
            Ok(temp) => {
                let stats = &mut self.out.stats;
                stats.files_transferred += 1;
                stats.bytes_literal += literal;
                stats.bytes_matched += matched;
                self.out.rep.progress(size);
                let change = self.changes.get(idx).expect("a planned transfer");
                let replaces = !change.is_new(); // an old inode to free
                for done in self
                    .committer
                    .push(temp, &e.path, item(change, e), size, replaces)
                {
                    self.out.outcome(done)?;
                }
                None
            }
            Err(RebuildError::Verify(why)) if was_delta && self.pending.get(idx) == Some(false) => {
                // A false block match (80-bit block check) or a base that changed: retry whole.
                tracing::debug!("{}: {why}; retrying whole", e.path);
                return self.retry_whole(idx);
            }
            Err(RebuildError::Protocol(p)) => {
                return Err(SyncError::Peer(format!("protocol error: {p}")));
            }
            Err(RebuildError::Verify(why)) => Some(why),
            Err(RebuildError::Io(err)) => Some(format!("write failed: {err}")),
        };
        self.finish(idx, failure)
    }

    /// Ask again for file `idx`, whole this time; it stays pending.
    fn retry_whole(&mut self, idx: u32) -> Result<(), SyncError> {
        self.pending.retried(idx);
        let mut w = self.out.wr.lock().unwrap_or_else(|e| e.into_inner());
        let want = Want {
            idx,
            signature: None,
        };
        send(&mut w, &Msg::Want(want))?;
        w.flush().map_err(|e| SyncError::Peer(e.to_string()))
    }

    fn abort(&mut self, idx: u32, reason: String) -> Result<(), SyncError> {
        if let Some(mut r) = self.current.take() {
            if r.idx != idx {
                return Err(SyncError::Peer(
                    "protocol error: abort of another file".into(),
                ));
            }
            r.discard();
        }
        if self.pending.get(idx).is_none() {
            return Err(SyncError::Peer(format!(
                "protocol error: abort of unrequested file {idx}"
            )));
        }
        self.finish(idx, Some(reason))
    }
}

/// The files not done yet, by source index: one byte per manifest entry (a map of
/// a million files cost 18 bytes each). 0: not pending, 1: pending, 2: pending,
/// asked again whole after a failed delta.
struct Pending {
    state: Vec<u8>,
    left: usize,
}

impl Pending {
    fn new(entries: usize, files: &[(u32, bool)]) -> Pending {
        let mut state = vec![0u8; entries];
        for &(i, _) in files {
            state[i as usize] = 1;
        }
        Pending {
            state,
            left: files.len(),
        }
    }

    /// `Some(retried whole)` for a pending file.
    fn get(&self, idx: u32) -> Option<bool> {
        match self.state.get(idx as usize) {
            Some(1) => Some(false),
            Some(2) => Some(true),
            _ => None,
        }
    }

    fn retried(&mut self, idx: u32) {
        if let Some(s @ 1..=2) = self.state.get_mut(idx as usize) {
            *s = 2;
        }
    }

    fn remove(&mut self, idx: u32) {
        if let Some(s @ 1..=2) = self.state.get_mut(idx as usize) {
            *s = 0;
            self.left -= 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.left == 0
    }
}

/// Whether new files can be written as anonymous files, tried in `path`'s directory.
fn probe_anonymous(safe: &SafeRoot, dirs: &mut DirCache, path: &RelPath) -> bool {
    let Some((parent, _)) = path.split_last() else {
        return false;
    };
    dirs.get(safe, &parent)
        .is_ok_and(|dir| crate::sync::fsops::anonymous_files_work(&dir))
}

/// Read and drop the rest of a file's frames, up to its end or abort.
fn skip_file<R: Read>(rd: &mut FrameReader<R>) -> Result<(), SyncError> {
    loop {
        match recv(rd)? {
            Msg::Data(_) | Msg::Copy { .. } => {}
            Msg::FileEnd { .. } | Msg::FileAbort { .. } => return Ok(()),
            Msg::Error { code, message } => return Err(SyncError::from_wire(code, message)),
            m => {
                return Err(SyncError::Peer(format!(
                    "protocol error: unexpected {} inside a file",
                    m.name()
                )));
            }
        }
    }
}
