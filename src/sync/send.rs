//! The sending side of a session: scan, send the manifest, answer requests.
//!
//! A reader thread drains everything the receiver sends (requests, itemized
//! changes, the final `Done`) so the receiver is never blocked writing to us
//! while we are busy writing file data to it; the main thread answers the
//! requests in order. Every file is opened beneath the root without following
//! symlinks, checked against the manifest (size, mtime) before and after it is
//! read, and hashed with BLAKE3 as it is sent, so a file that changes while
//! being sent is aborted rather than installed half-old, half-new.

use super::SyncError;
use crate::sync::delta;
use crate::sync::fsops::{SafeRoot, TreeRoot};
use crate::sync::scan::{EarlyScan, Excludes, hash_file, scan_tree};
use crate::tree::entries::Entries;
use crate::tree::manifest::{Entry, Kind, Mtime};
use crate::tree::path::RelPath;
use crate::tree::report::{Item, Reporter, Stats};
use crate::wire::manifest_wire::{Form, needs_clamp};
use crate::wire::message::{MAX_DATA_CHUNK, MINOR_OWNER_NAMES, tag};
use crate::wire::{FrameReader, FrameWriter, Msg, SessionOptions, recv, send};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

/// Most requests a receiver may have outstanding before it is considered hostile.
const MAX_OUTSTANDING: usize = 4096;
/// A delta of a file this big writes each literal out at once (see `send_file`).
const EAGER_LITERAL_MIN: u64 = 4 << 20;

/// Soft limit on the encoded size of one manifest frame.
const BATCH_BYTES: usize = 2 * 1024 * 1024;

enum Event {
    Want(crate::wire::Want),
    WantsEnd,
}

/// The tree a sender sends: its root and, when a thread began scanning it before
/// the session (a push, while it connected), that scan.
pub struct Source<'a> {
    pub root: &'a TreeRoot,
    pub early: Option<EarlyScan>,
}

/// Send the tree at `source` to a receiver. `is_client` says whether this side's
/// reporter is the user's (else scan errors are sent to the receiver as items);
/// `peer_minor` is the receiver's protocol minor version (which manifest encoding
/// it reads).
pub fn send_tree<R: Read + Send, W: Write>(
    rd: &mut FrameReader<R>,
    wr: &mut FrameWriter<W>,
    source: Source<'_>,
    opts: &SessionOptions,
    rep: &mut dyn Reporter,
    is_client: bool,
    peer_minor: u16,
) -> Result<Stats, SyncError> {
    let mut phases = super::Phases::new("sender");
    let root = source.root;
    let excludes = Excludes::new(&opts.excludes).map_err(SyncError::Usage)?;
    let early = source.early.and_then(|e| e.take(root, opts));
    let scanned = early.unwrap_or_else(|| scan_tree(root, &excludes, opts.one_file_system));
    let found = match scanned {
        Ok(Some(s)) => s,
        Ok(None) => {
            let e = SyncError::Guard(format!(
                "the source {} does not exist; refusing to sync (a missing source must never wipe the mirror)",
                crate::tree::path::escape_bytes(root.path().as_os_str().as_encoded_bytes())
            ));
            return Err(fail(wr, e));
        }
        Err(e) => {
            return Err(fail(wr, SyncError::file("read the source", root.path(), e)));
        }
    };
    let safe = root
        .open()
        .map_err(|e| fail(wr, SyncError::file("open", root.path(), e)))?;
    let mut entries = found.entries;
    let mut scan_errors: Vec<Item> = found
        .errors
        .iter()
        .map(|(p, e)| Item {
            code: "*error".into(),
            path: Default::default(),
            target: Vec::new(),
            error: Some(format!("{p}: {e}")),
        })
        .collect();
    if opts.checksum {
        for i in 0..entries.len() {
            if entries.kind(i) != Kind::File {
                continue;
            }
            let path = entries.get(i).path;
            let hashed = hash_file(&safe, &path)
                .map_err(|e| format!("cannot read: {e}"))
                .and_then(|h| entries.set_hash(i, h).map_err(|e| e.to_string()));
            if let Err(why) = hashed {
                scan_errors.push(Item {
                    code: "*error".into(),
                    path,
                    target: Vec::new(),
                    error: Some(why),
                });
            }
        }
    }
    let form = Form::for_minor(peer_minor);
    let mut warnings = not_mirrored(&found.skipped, &found.hard_links);
    warnings.extend(clamp_warnings(&entries, form, peer_minor));
    for item in scan_errors.iter().chain(&warnings) {
        if is_client {
            rep.item(item);
        } else {
            send(wr, &Msg::Item(item.clone()))?;
        }
    }
    phases.mark("scan");
    let names = opts.owners && !opts.numeric_ids && peer_minor >= MINOR_OWNER_NAMES;
    let sent = send_manifest(wr, &entries, scan_errors.len() as u64, form, names).and_then(|()| {
        wr.flush()
            .map_err(|e| SyncError::Peer(format!("cannot write to the peer: {e}")))
    });
    if let Err(e) = sent {
        return Err(refusal(rd).unwrap_or(e));
    }
    phases.mark("manifest");
    let total: u64 = (0..entries.len()).map(|i| entries.size(i)).sum();
    rep.total(total);

    let rep = Mutex::new(rep);
    let outstanding = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel::<Event>();
        let (hints, hinted) = mpsc::channel::<u32>();
        let n_entries = entries.len();
        let (rep, outstanding, safe_ref, entries_ref) = (&rep, &outstanding, &safe, &entries);
        s.spawn(move || prefetch_all(safe_ref, entries_ref, hinted));
        let reader = s.spawn(move || read_loop(rd, tx, hints, rep, outstanding, n_entries));
        let served = serve_wants(wr, &safe, &entries, rx, rep, outstanding);
        phases.mark("serve");
        let done = reader
            .join()
            .unwrap_or_else(|_| Err(SyncError::Peer("reader thread panicked".into())));
        // The receiver's verdict (Done or its Error) explains more than our write error would.
        match (served, done) {
            (_, Err(e)) => Err(e),
            (Err(e), Ok(_)) => Err(e),
            (Ok(()), Ok(stats)) => Ok(stats),
        }
    })
}

/// After a write failed with the peer's answer to a pipelined `Open` still unread: that
/// answer, when it is the refusal (the peer ended the session), says more than the
/// broken pipe.
fn refusal<R: Read>(rd: &mut FrameReader<R>) -> Option<SyncError> {
    if !rd.open_pending() {
        return None;
    }
    match recv(rd) {
        Ok(Msg::Error { code, message }) => Some(SyncError::from_wire(code, message)),
        _ => None,
    }
}

/// One warning per entry whose mtime the peer's protocol cannot carry (a peer
/// older than 2.4 reads only 1677-2262): it gets the nearest time it can hold.
/// A warning for each thing of the source that hasync does not mirror as it is: special
/// files (skipped) and hard links (each name becomes a file of its own).
fn not_mirrored(skipped: &[RelPath], hard_links: &[RelPath]) -> Vec<Item> {
    let special = skipped.iter().map(|p| {
        Item::warning(format!(
            "{p}: a device, FIFO or socket: not mirrored (hasync mirrors files, directories and symlinks)"
        ))
    });
    let linked = hard_links.iter().map(|p| {
        Item::warning(format!(
            "{p}: a hard link: mirrored as a separate file (links between names are not kept)"
        ))
    });
    special.chain(linked).collect()
}

fn clamp_warnings(entries: &Entries, form: Form, peer_minor: u16) -> Vec<Item> {
    entries
        .iter()
        .filter(|e| needs_clamp(form, e.mtime))
        .map(|e| {
            Item::warning(format!(
                "{}: mtime {} is outside what the peer's protocol 2.{peer_minor} can carry (1677-2262); it gets {} instead and will see the entry as changed on every run (upgrade the peer)",
                e.path,
                e.mtime,
                e.mtime.clamped_to_nanos()
            ))
        })
        .collect()
}

/// Send an error to the peer (best effort) and hand it back.
pub(crate) fn fail<W: Write>(wr: &mut FrameWriter<W>, e: SyncError) -> SyncError {
    let _ = send(
        wr,
        &Msg::Error {
            code: e.wire_code(),
            message: e.to_string(),
        },
    );
    let _ = wr.flush();
    e
}

fn send_manifest<W: Write>(
    wr: &mut FrameWriter<W>,
    entries: &Entries,
    scan_errors: u64,
    form: Form,
    owner_names: bool,
) -> Result<(), SyncError> {
    // The names first: the receiver maps owners as the entries arrive.
    if owner_names {
        crate::sync::owners::send_tables(wr, entries)?;
    }
    let mut batch: Vec<Entry> = Vec::new();
    let mut bytes = 0;
    for i in 0..entries.len() {
        let e = entries.get(i);
        bytes += 64 + e.path.as_bytes().len() + e.target.len();
        batch.push(e);
        if batch.len() == crate::wire::message::MAX_BATCH
            || bytes >= BATCH_BYTES
            || i + 1 == entries.len()
        {
            wr.write_frame(&crate::wire::manifest_wire::encode(&batch, form))
                .map_err(|e| SyncError::Peer(format!("cannot write to the peer: {e}")))?;
            batch.clear();
            bytes = 0;
        }
    }
    send(
        wr,
        &Msg::ManifestEnd {
            count: entries.len() as u64,
            scan_errors,
        },
    )?;
    Ok(())
}

/// The receiver's `Signing` hints: start reading our copy of each named file while the
/// receiver signs its own (the diff then finds it in the page cache). A hint names an
/// entry at most once ([`read_loop`]); one that is not a file is ignored.
fn prefetch_all(safe: &SafeRoot, entries: &Entries, hinted: mpsc::Receiver<u32>) {
    for idx in hinted {
        let i = idx as usize;
        if entries.kind(i) != Kind::File {
            continue;
        }
        if let Ok(f) = safe.open_file(&entries.get(i).path) {
            let len = std::num::NonZeroU64::new(entries.size(i));
            let _ = rustix::fs::fadvise(&f, 0, len, rustix::fs::Advice::WillNeed);
        }
    }
}

fn read_loop<R: Read>(
    rd: &mut FrameReader<R>,
    tx: mpsc::Sender<Event>,
    hints: mpsc::Sender<u32>,
    rep: &Mutex<&mut dyn Reporter>,
    outstanding: &AtomicUsize,
    n_entries: usize,
) -> Result<Stats, SyncError> {
    // Per entry: 0 never asked, 1 asked with a signature (one whole retry allowed), 2 done.
    let mut asked = vec![0u8; n_entries];
    let mut hinted = vec![false; n_entries];
    let mut ended = false;
    loop {
        match recv(rd)? {
            Msg::Signing { idx } => match hinted.get_mut(idx as usize) {
                Some(h) if !*h => {
                    *h = true;
                    let _ = hints.send(idx);
                }
                _ => {
                    return Err(SyncError::Peer(format!(
                        "protocol error: the receiver announced entry {idx} twice or out of range"
                    )));
                }
            },
            Msg::Want(_) | Msg::WantsEnd if ended => {
                return Err(SyncError::Peer(
                    "protocol error: the receiver sent a request after WantsEnd".into(),
                ));
            }
            Msg::Want(w) => {
                // A file may be asked once, plus once more whole after a failed delta
                // (the receiver's retry); anything else is a hostile or broken peer.
                if let Some(state) = asked.get_mut(w.idx as usize) {
                    *state = match (*state, w.signature.is_some()) {
                        (0, true) => 1,
                        (0, false) | (1, false) => 2,
                        _ => {
                            return Err(SyncError::Peer(format!(
                                "protocol error: the receiver asked for entry {} twice",
                                w.idx
                            )));
                        }
                    };
                }
                if outstanding.fetch_add(1, Ordering::SeqCst) >= MAX_OUTSTANDING {
                    return Err(SyncError::Peer(
                        "protocol error: the receiver sent too many requests at once".into(),
                    ));
                }
                let _ = tx.send(Event::Want(w));
            }
            Msg::WantsEnd => {
                ended = true;
                let _ = tx.send(Event::WantsEnd);
            }
            Msg::Item(item) => rep.lock().unwrap_or_else(|e| e.into_inner()).item(&item),
            Msg::Done(stats) => return Ok(stats),
            Msg::Error { code, message } => return Err(SyncError::from_wire(code, message)),
            m => {
                return Err(SyncError::Peer(format!(
                    "protocol error: unexpected {} from the receiver",
                    m.name()
                )));
            }
        }
    }
}

fn serve_wants<W: Write>(
    wr: &mut FrameWriter<W>,
    safe: &SafeRoot,
    entries: &Entries,
    rx: mpsc::Receiver<Event>,
    rep: &Mutex<&mut dyn Reporter>,
    outstanding: &AtomicUsize,
) -> Result<(), SyncError> {
    let io_err = |e: std::io::Error| SyncError::Peer(format!("cannot write to the peer: {e}"));
    let mut buf = Vec::new();
    loop {
        // Flush only when about to wait: keeps frames batched while requests are queued.
        let ev = match rx.try_recv() {
            Ok(ev) => ev,
            Err(mpsc::TryRecvError::Empty) => {
                wr.flush().map_err(io_err)?;
                match rx.recv() {
                    Ok(ev) => ev,
                    Err(_) => return Ok(()), // the reader ended; it reports why
                }
            }
            Err(mpsc::TryRecvError::Disconnected) => return Ok(()),
        };
        let want = match ev {
            Event::WantsEnd => {
                wr.flush().map_err(io_err)?;
                return Ok(());
            }
            Event::Want(w) => w,
        };
        outstanding.fetch_sub(1, Ordering::SeqCst);
        let i = want.idx as usize;
        let entry = match (i < entries.len()).then(|| entries.get(i)) {
            Some(e) if e.kind == Kind::File => e,
            _ => {
                return Err(fail(
                    wr,
                    SyncError::Peer(format!(
                        "protocol error: request for entry {} which is not a file",
                        want.idx
                    )),
                ));
            }
        };
        let sent = send_file(wr, safe, &entry, want.idx, want.signature, &mut buf, rep);
        match sent {
            Ok(()) => {}
            Err(SendFailure::Abort(reason)) => {
                send(
                    wr,
                    &Msg::FileAbort {
                        idx: want.idx,
                        reason,
                    },
                )?;
            }
            Err(SendFailure::Fatal(e)) => return Err(fail(wr, e)),
        }
    }
}

enum SendFailure {
    /// This file could not be sent; the run goes on.
    Abort(String),
    /// The session cannot go on.
    Fatal(SyncError),
}

impl From<std::io::Error> for SendFailure {
    fn from(e: std::io::Error) -> Self {
        SendFailure::Fatal(SyncError::Peer(format!("cannot write to the peer: {e}")))
    }
}

#[allow(clippy::too_many_arguments)]
fn send_file<W: Write>(
    wr: &mut FrameWriter<W>,
    safe: &SafeRoot,
    entry: &Entry,
    idx: u32,
    signature: Option<Vec<u8>>,
    buf: &mut Vec<u8>,
    rep: &Mutex<&mut dyn Reporter>,
) -> Result<(), SendFailure> {
    let file = safe
        .open_file(&entry.path)
        .map_err(|e| SendFailure::Abort(format!("cannot open on the sender: {e}")))?;
    let unchanged = |f: &std::fs::File| -> bool {
        f.metadata()
            .map(|m| {
                m.len() == entry.size && Mtime::from_stat(m.mtime(), m.mtime_nsec()) == entry.mtime
            })
            .unwrap_or(false)
    };
    if !unchanged(&file) {
        return Err(SendFailure::Abort(
            "changed on the sender since the scan; it will be sent next run".into(),
        ));
    }
    let sig = match signature {
        Some(bytes) => Some(delta::parse_signature(bytes).map_err(|e| {
            SendFailure::Fatal(SyncError::Peer(format!(
                "protocol error: the receiver sent a bad signature: {e}"
            )))
        })?),
        None => None,
    };
    wr.write_frame(
        &Msg::FileBegin {
            idx,
            delta: sig.is_some(),
        }
        .encode(),
    )?;
    let mut hasher = blake3::Hasher::new();
    let mut progressed = 0u64;
    let read_err =
        |e: std::io::Error| SendFailure::Abort(format!("read failed on the sender: {e}"));
    match &sig {
        Some(sig) => {
            let index = sig.index();
            let eager = entry.size >= EAGER_LITERAL_MIN;
            let mut write_err = None;
            let r = delta::diff_file(
                &index,
                &file,
                entry.size,
                buf,
                |op| {
                    let res = match op {
                        delta::Op::Copy { offset, len } => {
                            wr.write_frame(&Msg::Copy { offset, len }.encode())
                        }
                        // In a big file the next change may be far on: what we
                        // have goes out now instead of waiting for a full buffer
                        // (over a 20 Mbit/s link the first 256 KiB of a 256 MiB
                        // delta's literal waited ~50 ms for the next changes).
                        delta::Op::Literal(data) if eager => {
                            write_data(wr, data).and_then(|()| wr.flush())
                        }
                        delta::Op::Literal(data) => write_data(wr, data),
                    };
                    if let Err(e) = &res {
                        write_err = Some(e.kind());
                    }
                    res
                },
                |d| {
                    hasher.update(d);
                    progressed += d.len() as u64;
                },
            );
            if let Err(e) = r {
                if write_err.is_some() {
                    return Err(e.into());
                }
                return Err(read_err(e));
            }
        }
        None => {
            use std::os::unix::fs::FileExt;
            buf.resize(MAX_DATA_CHUNK.min(entry.size.max(1) as usize), 0);
            let mut off = 0u64;
            while off < entry.size {
                let n = ((entry.size - off) as usize).min(buf.len());
                file.read_exact_at(&mut buf[..n], off).map_err(read_err)?;
                hasher.update(&buf[..n]);
                write_data(wr, &buf[..n])?;
                off += n as u64;
            }
            progressed = entry.size;
        }
    }
    rep.lock()
        .unwrap_or_else(|e| e.into_inner())
        .progress(progressed);
    if !unchanged(&file) {
        return Err(SendFailure::Abort(
            "changed on the sender while it was sent; it will be sent next run".into(),
        ));
    }
    wr.write_frame(
        &Msg::FileEnd {
            size: entry.size,
            hash: *hasher.finalize().as_bytes(),
        }
        .encode(),
    )?;
    Ok(())
}

/// Send literal data as Data frames of at most MAX_DATA_CHUNK bytes.
fn write_data<W: Write>(wr: &mut FrameWriter<W>, data: &[u8]) -> std::io::Result<()> {
    for chunk in data.chunks(MAX_DATA_CHUNK) {
        wr.write_tagged(tag::DATA, chunk)?;
    }
    Ok(())
}
