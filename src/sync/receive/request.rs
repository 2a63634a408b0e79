//! The receiver's requester side: asking the sender for files, and preparing
//! the temp files they will be written into, ahead of their data.
//!
//! Two threads beside the receiving one:
//! - the requester takes a window slot per file (at most [`super::FILES_IN_FLIGHT`]
//!   in flight), computes the signature of our old copy when a delta is wanted, and
//!   sends the request;
//! - the preparer then creates the file's temp file (and keeps the old copy open
//!   for the delta), so that creating inodes, a third of the per-file cost of
//!   small files, is off both the requester and the receiving thread.
//!
//! The receiving thread takes what was prepared when the file's data begins; if
//! the preparer has not got to it yet, it marks the file taken and creates the
//! temp file itself (the preparer then skips it). Unused prepared temp files are
//! removed when the queue is dropped.

use super::SyncError;
use super::apply::Prepared;
use super::resume::Partials;
use crate::sync::delta;
use crate::sync::fsops::{DirCache, SafeRoot};
use crate::tree::entries::Entries;
use crate::wire::{FrameWriter, Msg, Want, send};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::sync::{Mutex, mpsc};

/// What the requester and preparer threads work with, besides the connection.
#[derive(Clone, Copy)]
pub(super) struct Ahead<'a> {
    pub safe: &'a SafeRoot,
    pub source: &'a Entries,
    /// Whether a file is written as an anonymous temp file.
    pub anonymous: &'a (dyn Fn(u32) -> bool + Sync),
    /// The files requested with a signature: only those may come back as deltas.
    pub signed: &'a Mutex<HashSet<u32>>,
    pub prepared: &'a PrepQueue,
    /// Partials of a cut run: a new file with one is asked for as a delta against it.
    pub partials: &'a Partials,
    /// The sender reads `Signing` hints (2.7).
    pub hints: bool,
}

/// Files from this size on are announced with `Signing` before their signature is
/// computed: the sender reads its copy meanwhile (below it, the hint costs more than
/// the overlap gains).
pub const SIGNING_HINT_MIN: u64 = 4 << 20;

/// Temp files prepared ahead, and the files the receiving thread already took.
pub(super) struct PrepQueue {
    inner: Mutex<PrepState>,
}

struct PrepState {
    ready: HashMap<u32, Prepared>,
    /// By source index: one byte per manifest entry, not a set of every file.
    taken: Vec<bool>,
}

impl PrepQueue {
    /// A queue for the files of a manifest of `entries` entries.
    pub fn new(entries: usize) -> PrepQueue {
        PrepQueue {
            inner: Mutex::new(PrepState {
                ready: HashMap::new(),
                taken: vec![false; entries],
            }),
        }
    }

    /// What was prepared for `idx`, if anything; either way the file is taken.
    pub fn take(&self, idx: u32) -> Option<Prepared> {
        let mut st = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = st.taken.get_mut(idx as usize) {
            *t = true;
        }
        st.ready.remove(&idx)
    }

    fn is_taken(&self, idx: u32) -> bool {
        let st = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        st.taken.get(idx as usize).copied().unwrap_or(true)
    }

    /// Offer a prepared file; dropped (its temp file removed) if already taken.
    fn offer(&self, idx: u32, p: Prepared) {
        let mut st = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !st.taken.get(idx as usize).copied().unwrap_or(true) {
            st.ready.insert(idx, p);
        }
    }
}

/// The requester: for each transfer, take a window slot, compute the signature
/// of our old copy if a delta is wanted, send the request, and hand the file to
/// the preparer thread.
pub(super) fn request_all<W: Write>(
    wr: &Mutex<&mut FrameWriter<W>>,
    ahead: Ahead,
    transfers: &[(u32, bool)],
    slots: mpsc::SyncSender<()>,
) -> Result<(), SyncError> {
    let (to_prepare, jobs) = mpsc::channel::<(u32, Option<(File, u64)>)>();
    std::thread::scope(|s| {
        s.spawn(move || prepare_all(ahead, jobs));
        request_loop(wr, ahead, transfers, slots, to_prepare)
    })
}

fn request_loop<W: Write>(
    wr: &Mutex<&mut FrameWriter<W>>,
    ahead: Ahead,
    transfers: &[(u32, bool)],
    slots: mpsc::SyncSender<()>,
    to_prepare: mpsc::Sender<(u32, Option<(File, u64)>)>,
) -> Result<(), SyncError> {
    for (n, &(idx, delta)) in transfers.iter().enumerate() {
        match slots.try_send(()) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(())) => {
                // The window is full: make sure the sender has every request before we wait.
                flush(wr)?;
                if slots.send(()).is_err() {
                    return Ok(()); // the main loop stopped; it reports why
                }
            }
            Err(mpsc::TrySendError::Disconnected(())) => return Ok(()),
        }
        let e = &ahead.source.get(idx as usize);
        let mut base = None;
        let old = match delta {
            true => Some(&e.path),
            false => ahead.partials.get(&e.path),
        };
        let signature = if let Some(old) = old {
            // No usable old copy (vanished, unreadable): fall back to sending it whole.
            ahead.safe.open_file(old).ok().and_then(|f| {
                let len = f.metadata().ok()?.len();
                if ahead.hints && e.size.min(len) >= SIGNING_HINT_MIN {
                    // A failed write shows again, and is reported, with the `Want`.
                    let _ = hint(wr, idx);
                }
                let sig = delta::file_signature(&f, len).ok()?;
                base = Some((f, len));
                Some(sig)
            })
        } else {
            None
        };
        if signature.is_some() {
            ahead
                .signed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(idx);
        }
        {
            let mut w = wr.lock().unwrap_or_else(|e| e.into_inner());
            send(&mut w, &Msg::Want(Want { idx, signature }))?;
            // Flush deltas at once (the sender has work) and small requests in batches.
            if n + 1 == transfers.len() || delta || n % 32 == 31 {
                w.flush()
                    .map_err(|e| SyncError::Peer(format!("cannot write to the peer: {e}")))?;
            }
        }
        let _ = to_prepare.send((idx, base));
    }
    Ok(())
}

/// The preparer: create the temp file of each requested file not yet taken.
fn prepare_all(ahead: Ahead, jobs: mpsc::Receiver<(u32, Option<(File, u64)>)>) {
    let mut dirs = DirCache::new();
    for (idx, base) in jobs {
        if ahead.prepared.is_taken(idx) {
            continue;
        }
        let e = &ahead.source.get(idx as usize);
        // If this fails, the receiving thread tries again and reports why.
        if let Ok(p) = Prepared::new(ahead.safe, &mut dirs, e, base, (ahead.anonymous)(idx)) {
            ahead.prepared.offer(idx, p);
        }
    }
}

/// Tell the sender that the signature of `idx` is being computed (`Signing`), at once.
fn hint<W: Write>(wr: &Mutex<&mut FrameWriter<W>>, idx: u32) -> Result<(), SyncError> {
    let mut w = wr.lock().unwrap_or_else(|e| e.into_inner());
    send(&mut w, &Msg::Signing { idx })?;
    w.flush()
        .map_err(|e| SyncError::Peer(format!("cannot write to the peer: {e}")))
}

fn flush<W: Write>(wr: &Mutex<&mut FrameWriter<W>>) -> Result<(), SyncError> {
    let mut w = wr.lock().unwrap_or_else(|e| e.into_inner());
    w.flush()
        .map_err(|e| SyncError::Peer(format!("cannot write to the peer: {e}")))
}
