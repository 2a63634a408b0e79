//! The receiving side of a session: validate, plan, request, rebuild, commit.
//!
//! Order of work (each phase finishes before the next starts):
//! 1. receive and validate the manifest, scan our own tree, plan;
//! 2. remove entries in the way of another kind, create directories and
//!    symlinks, fix metadata-only changes;
//! 3. transfers: a requester thread sends requests (with signatures of our old
//!    copies) while the main thread reads the sender's answers and rebuilds
//!    files; at most [`WINDOW`] files are in flight;
//! 4. deletions (once every file is received and verified, like
//!    `--delete-after`; the installer may still be renaming the last ones), deepest first;
//! 5. directory metadata, deepest first, so a directory's mtime is set after
//!    its contents changed.
//!
//! Items go to the local reporter when we are the client, else back over the wire.

mod apply;
mod commit;
mod release;
mod request;

use crate::sync::SyncError;
use crate::sync::fsops::{DirCache, Meta, SafeRoot};
use crate::sync::plan::{Action, PlanOptions, make_plan};
use crate::sync::scan::{Excludes, hash_file, scan};
use crate::sync::send::fail;
use crate::tree::manifest::{self, Entry, Kind};
use crate::tree::report::{Item, Reporter, Stats};
use crate::wire::{FrameReader, FrameWriter, Msg, SessionOptions, Want, recv, send};
use apply::{Rebuild, RebuildError};
use commit::Committer;
use release::Releaser;
use request::{Ahead, PrepQueue, request_all};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Mutex;
use std::sync::mpsc;

/// Files in flight at once.
pub const WINDOW: usize = 128;
/// Open-file limit needed to write new files as anonymous temp files.
const ANONYMOUS_FD_LIMIT: u64 = 4096;
/// Most manifest entries accepted (bounds memory against a hostile sender).
pub const MAX_ENTRIES: usize = 20_000_000;

/// Receiver settings that are not part of the wire options.
#[derive(Debug, Clone, Copy)]
pub struct ReceiverConfig {
    /// Flush rebuilt files to disk before they replace old ones.
    pub fsync: bool,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig { fsync: true }
    }
}

/// Where items go.
struct Sink<'a, 'r> {
    rep: &'a mut (dyn Reporter + 'r),
    is_client: bool,
}

impl Sink<'_, '_> {
    fn item<W: Write>(
        &mut self,
        wr: &Mutex<&mut FrameWriter<W>>,
        item: Item,
    ) -> Result<(), SyncError> {
        if self.is_client {
            self.rep.item(&item);
        } else {
            send(
                &mut wr.lock().unwrap_or_else(|e| e.into_inner()),
                &Msg::Item(item),
            )?;
        }
        Ok(())
    }
}

fn item(code: &str, e: &Entry) -> Item {
    Item {
        code: code.to_string(),
        path: e.path.clone(),
        target: e.target.clone(),
        error: None,
    }
}

/// Receive a tree into `root`.
pub fn receive_tree<R: Read + Send, W: Write + Send>(
    rd: &mut FrameReader<R>,
    wr: &mut FrameWriter<W>,
    root: &Path,
    opts: &SessionOptions,
    cfg: ReceiverConfig,
    rep: &mut dyn Reporter,
    is_client: bool,
) -> Result<Stats, SyncError> {
    let mut sink = Sink { rep, is_client };
    let mut phases = crate::sync::Phases::new("receiver");
    // 1. Manifest, while a thread scans our own tree: the two scans (the
    // sender's, which precedes its manifest, and ours) overlap instead of
    // adding up, which is most of a no-change run.
    let excludes = Excludes::new(&opts.excludes);
    let exists = root.exists();
    let (manifest, early_scan) = std::thread::scope(|s| {
        let scanner = match (&excludes, exists) {
            (Ok(ex), true) => Some(s.spawn(move || scan(root, ex))),
            _ => None,
        };
        let m = read_manifest(rd, &mut sink);
        let d = scanner.map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the scan thread panicked")))
        });
        (m, d)
    });
    phases.mark("manifest+scan");
    let (source, scan_errors) = manifest?;
    if let Err(e) = manifest::validate(&source) {
        return Err(fail(
            wr,
            SyncError::Peer(format!(
                "protocol error: invalid manifest from the sender: {e}"
            )),
        ));
    }
    let excludes = excludes.map_err(|e| fail(wr, SyncError::Usage(e)))?;
    if !exists && !opts.dry_run {
        std::fs::create_dir_all(root).map_err(|e| {
            fail(
                wr,
                SyncError::Io(format!(
                    "cannot create the destination {}: {e}",
                    crate::tree::path::escape_bytes(root.as_os_str().as_encoded_bytes())
                )),
            )
        })?;
    }
    let scanned = match early_scan {
        Some(r) => r,
        None if !opts.dry_run => scan(root, &excludes),
        None => Ok(None),
    };
    let dest = match scanned {
        Ok(Some(s)) => s,
        Ok(None) => Default::default(),
        Err(e) => {
            return Err(fail(
                wr,
                SyncError::Io(format!(
                    "cannot scan the destination {}: {e}",
                    crate::tree::path::escape_bytes(root.as_os_str().as_encoded_bytes())
                )),
            ));
        }
    };
    let safe = if exists || !opts.dry_run {
        Some(SafeRoot::open(root).map_err(|e| {
            fail(
                wr,
                SyncError::Io(format!(
                    "cannot open {}: {e}",
                    crate::tree::path::escape_bytes(root.as_os_str().as_encoded_bytes())
                )),
            )
        })?)
    } else {
        None
    };
    let mut dest_entries = dest.entries;
    if opts.checksum {
        let sizes: HashMap<_, _> = source.iter().map(|e| (&e.path, e.size)).collect();
        for d in dest_entries.iter_mut().filter(|d| d.kind == Kind::File) {
            if sizes.get(&d.path) == Some(&d.size) {
                d.hash = safe.as_ref().and_then(|s| hash_file(s, &d.path).ok());
            }
        }
    }
    let owners = opts.owners && crate::sync::fsops::is_root();
    let plan_opts = PlanOptions {
        delete: opts.delete,
        checksum: opts.checksum,
        owners,
        max_delete: opts.max_delete,
        allow_empty_source: opts.allow_empty_source,
        sender_scan_errors: scan_errors,
    };
    phases.mark("validate");
    let plan = make_plan(&source, &dest_entries, &plan_opts)
        .map_err(|g| fail(wr, SyncError::Guard(g.0)))?;
    phases.mark("plan");
    let mut stats = Stats {
        files_total: source.len() as u64,
        ..Default::default()
    };
    stats.bytes_total = source.iter().map(|e| e.size).sum();
    let wr = Mutex::new(wr);
    if let Some(why) = &plan.deletions_skipped {
        sink.item(
            &wr,
            Item {
                code: "*warning".into(),
                path: Default::default(),
                target: vec![],
                error: Some(why.clone()),
            },
        )?;
    }

    if opts.dry_run {
        for step in &plan.steps {
            sink.item(&wr, item(&step.code, &source[step.idx]))?;
            if matches!(step.action, Action::Transfer { .. }) {
                stats.files_transferred += 1;
            }
        }
        for (p, _) in &plan.deletions {
            sink.item(
                &wr,
                Item {
                    code: "*deleting".into(),
                    path: p.clone(),
                    target: vec![],
                    error: None,
                },
            )?;
            stats.files_deleted += 1;
        }
        return finish(rd, &wr, stats);
    }
    let safe = safe.expect("opened when not a dry run");
    let mut dirs = DirCache::new();
    let meta_of = |e: &Entry| Meta {
        mode: e.mode,
        mtime_ns: e.mtime_ns,
        owner: owners.then_some((e.uid, e.gid)),
    };

    // Stale temp files of a killed run.
    for t in &dest.stale_temps {
        let _ = apply::remove(&safe, &mut dirs, t, false);
    }
    // 2. Local changes.
    for (p, kind) in &plan.removals {
        if let Err(e) = apply::remove(&safe, &mut dirs, p, *kind == Kind::Dir) {
            sink.item(
                &wr,
                Item {
                    code: "*deleting".into(),
                    path: p.clone(),
                    target: vec![],
                    error: Some(e.to_string()),
                },
            )?;
            stats.files_failed += 1;
        }
    }
    dirs.clear();
    let mut transfers: Vec<(u32, bool)> = Vec::new();
    for step in &plan.steps {
        let e = &source[step.idx];
        let res = match step.action {
            Action::Transfer { delta } => {
                transfers.push((step.idx as u32, delta));
                continue;
            }
            Action::MkDir => apply::make_dir(&safe, &mut dirs, &e.path),
            Action::Symlink => apply::make_symlink(&safe, &mut dirs, e, &meta_of(e)),
            Action::Meta if e.kind == Kind::Dir => Ok(()), // applied with the directory pass
            Action::Meta => apply::set_meta(&safe, &mut dirs, e, &meta_of(e)),
        };
        let mut it = item(&step.code, e);
        match res {
            Ok(()) if step.action == Action::Meta => stats.meta_updated += 1,
            Ok(()) => stats.other_created += 1,
            Err(err) => {
                it.error = Some(err.to_string());
                stats.files_failed += 1;
            }
        }
        sink.item(&wr, it)?;
    }

    phases.mark("local changes");
    // 3. Transfers.
    let codes: HashMap<u32, &str> = plan
        .steps
        .iter()
        .map(|s| (s.idx as u32, s.code.as_str()))
        .collect();
    let releaser = Releaser::new();
    let mut committer =
        Committer::new(safe.fd_clone(), cfg.fsync, releaser.sender()).map_err(|e| {
            let mut w = wr.lock().unwrap_or_else(|e| e.into_inner());
            fail(
                &mut w,
                SyncError::Io(format!("cannot start the installer thread: {e}")),
            )
        })?;
    let result = transfer_all(
        rd,
        &wr,
        &safe,
        &source,
        &transfers,
        &codes,
        &mut committer,
        &mut sink,
        &mut stats,
        &meta_of,
    );
    if let Err(e) = result {
        committer.abandon();
        let mut w = wr.lock().unwrap_or_else(|e| e.into_inner());
        return Err(fail(&mut w, e));
    }
    committer.seal();
    phases.mark("transfers");

    // 4. Deletions, once every file is received and verified, while the installer
    // puts the last ones in place; the removed inodes are freed by the releaser.
    dirs.clear();
    let release = releaser.sender();
    for (p, kind) in &plan.deletions {
        let mut it = Item {
            code: "*deleting".into(),
            path: p.clone(),
            target: vec![],
            error: None,
        };
        match apply::remove_releasing(&safe, &mut dirs, p, *kind == Kind::Dir, &release) {
            Ok(()) => stats.files_deleted += 1,
            Err(e) => {
                it.error = Some(e.to_string());
                stats.files_failed += 1;
            }
        }
        sink.item(&wr, it)?;
    }
    drop(release);
    phases.mark("deletions");
    for it in committer.commit() {
        if it.error.is_some() {
            stats.files_failed += 1;
        }
        sink.item(&wr, it)?;
    }
    phases.mark("commit");
    // 5. Directory metadata, deepest first (after the renames, which change it).
    for &(idx, mtime_only) in &plan.dir_meta {
        let e = &source[idx];
        let res = match mtime_only {
            true => apply::set_dir_mtime(&safe, &mut dirs, e, &meta_of(e)),
            false => apply::set_meta(&safe, &mut dirs, e, &meta_of(e)),
        };
        if let Err(err) = res {
            let mut it = item(".d.........", e);
            it.error = Some(err.to_string());
            stats.files_failed += 1;
            sink.item(&wr, it)?;
        }
    }
    phases.mark("dir meta");
    drop(committer); // its installer's handle on the releaser
    releaser.finish();
    phases.mark("release");
    finish(rd, &wr, stats)
}

/// Tell the sender we are done and return the stats.
fn finish<R: Read, W: Write>(
    rd: &mut FrameReader<R>,
    wr: &Mutex<&mut FrameWriter<W>>,
    stats: Stats,
) -> Result<Stats, SyncError> {
    let _ = rd;
    let mut w = wr.lock().unwrap_or_else(|e| e.into_inner());
    send(&mut w, &Msg::WantsEnd).ok();
    send(&mut w, &Msg::Done(stats.clone()))?;
    w.flush()
        .map_err(|e| SyncError::Peer(format!("cannot write to the peer: {e}")))?;
    Ok(stats)
}

fn read_manifest<R: Read>(
    rd: &mut FrameReader<R>,
    sink: &mut Sink,
) -> Result<(Vec<Entry>, u64), SyncError> {
    let mut entries: Vec<Entry> = Vec::new();
    loop {
        match recv(rd)? {
            Msg::Manifest(batch) => {
                if entries.len() + batch.len() > MAX_ENTRIES {
                    return Err(SyncError::Peer(format!(
                        "protocol error: manifest has more than {MAX_ENTRIES} entries"
                    )));
                }
                entries.extend(batch);
            }
            Msg::ManifestEnd { count, scan_errors } => {
                if count != entries.len() as u64 {
                    return Err(SyncError::Peer(
                        "protocol error: manifest count does not match".into(),
                    ));
                }
                return Ok((entries, scan_errors));
            }
            Msg::Item(it) => {
                if sink.is_client {
                    sink.rep.item(&it);
                }
            }
            Msg::Error { code, message } => return Err(SyncError::from_wire(code, message)),
            m => {
                return Err(SyncError::Peer(format!(
                    "protocol error: unexpected {} before the manifest ended",
                    m.name()
                )));
            }
        }
    }
}

/// Send requests (in a helper thread) and rebuild files (here) until every transfer is done.
#[allow(clippy::too_many_arguments)]
fn transfer_all<R: Read + Send, W: Write + Send>(
    rd: &mut FrameReader<R>,
    wr: &Mutex<&mut FrameWriter<W>>,
    safe: &SafeRoot,
    source: &[Entry],
    transfers: &[(u32, bool)],
    codes: &HashMap<u32, &str>,
    committer: &mut Committer,
    sink: &mut Sink,
    stats: &mut Stats,
    meta_of: &dyn Fn(&Entry) -> Meta,
) -> Result<(), SyncError> {
    if transfers.is_empty() {
        return Ok(());
    }
    // Which files may still arrive, and whether they were already retried whole.
    let mut pending: HashMap<u32, bool> = transfers.iter().map(|&(i, _)| (i, false)).collect();
    let mut dirs = DirCache::new();
    // New files are written as anonymous temp files, which stay open until installed
    // (up to the installer's queue): only with room for that many descriptors, and
    // where linking them works (tried with the first new file, in its directory,
    // whose mtime is set again at the end).
    let is_new = |idx: u32| codes.get(&idx).is_some_and(|c| is_new_file(c));
    let anonymous_ok = crate::sync::fsops::raise_fd_limit(ANONYMOUS_FD_LIMIT) >= ANONYMOUS_FD_LIMIT
        && transfers
            .iter()
            .find(|&&(idx, _)| is_new(idx))
            .is_some_and(|&(idx, _)| probe_anonymous(safe, &mut dirs, &source[idx as usize].path));
    let anonymous = |idx: u32| anonymous_ok && is_new(idx);
    // The files requested with a signature: only those may come back as deltas.
    let signed: Mutex<std::collections::HashSet<u32>> = Mutex::default();
    // Temp files (and old copies) made ready before the data arrives.
    let prepared = PrepQueue::default();
    let (slot_tx, slot_rx) = mpsc::sync_channel::<()>(WINDOW);
    std::thread::scope(|s| {
        let ahead = Ahead {
            safe,
            source,
            anonymous: &anonymous,
            signed: &signed,
            prepared: &prepared,
        };
        let requester = s.spawn(move || request_all(wr, ahead, transfers, slot_tx));
        let mut current: Option<Rebuild> = None;
        let mut remaining = transfers.len();
        let res = (|| -> Result<(), SyncError> {
            while remaining > 0 {
                let msg = recv(rd)?;
                match msg {
                    Msg::FileBegin { idx, delta } => {
                        if current.is_some() {
                            return Err(SyncError::Peer(
                                "protocol error: file started before the previous one ended".into(),
                            ));
                        }
                        let Some(&retried_whole) = pending.get(&idx) else {
                            return Err(SyncError::Peer(format!(
                                "protocol error: unrequested file {idx}"
                            )));
                        };
                        let signed = signed.lock().unwrap_or_else(|e| e.into_inner());
                        if delta && (retried_whole || !signed.contains(&idx)) {
                            return Err(SyncError::Peer(format!(
                                "protocol error: a delta for file {idx}, which was requested whole"
                            )));
                        }
                        drop(signed);
                        let e = &source[idx as usize];
                        let fsync = committer.fsync;
                        let started = match prepared.take(idx) {
                            Some(p) => Rebuild::with(p, e, idx, delta, fsync),
                            None => Rebuild::start(
                                safe,
                                &mut dirs,
                                e,
                                idx,
                                delta,
                                fsync,
                                anonymous(idx),
                            ),
                        };
                        match started {
                            Ok(r) => current = Some(r),
                            Err(err) => {
                                // Cannot write here: skip this file's data, report it, go on.
                                skip_file(rd)?;
                                fail_item(
                                    sink,
                                    wr,
                                    stats,
                                    e,
                                    codes.get(&idx),
                                    format!("cannot create: {err}"),
                                )?;
                                pending.remove(&idx);
                                remaining -= 1;
                                let _ = slot_rx.try_recv();
                            }
                        }
                    }
                    Msg::Data(d) => {
                        let r = current.as_mut().ok_or_else(|| {
                            SyncError::Peer("protocol error: data outside a file".into())
                        })?;
                        let res = r.data(d);
                        step(
                            res,
                            rd,
                            sink,
                            wr,
                            stats,
                            source,
                            codes,
                            &mut current,
                            &mut pending,
                            &mut remaining,
                            &slot_rx,
                        )?;
                    }
                    Msg::Copy { offset, len } => {
                        let r = current.as_mut().ok_or_else(|| {
                            SyncError::Peer("protocol error: copy outside a file".into())
                        })?;
                        let res = r.copy(offset, len);
                        step(
                            res,
                            rd,
                            sink,
                            wr,
                            stats,
                            source,
                            codes,
                            &mut current,
                            &mut pending,
                            &mut remaining,
                            &slot_rx,
                        )?;
                    }
                    Msg::FileEnd { size, hash } => {
                        let r = current.take().ok_or_else(|| {
                            SyncError::Peer("protocol error: file end outside a file".into())
                        })?;
                        let idx = r.idx;
                        let e = &source[idx as usize];
                        let (was_delta, literal, matched) = (r.delta, r.literal, r.matched);
                        match r.finish(size, &hash, &meta_of(e)) {
                            Ok(temp) => {
                                stats.files_transferred += 1;
                                stats.bytes_literal += literal;
                                stats.bytes_matched += matched;
                                sink.rep.progress(size);
                                let code = codes.get(&idx).copied().unwrap_or(">f");
                                let replaces = !is_new_file(code); // an old inode to free
                                let it = item(code, e);
                                for done in committer.push(temp, &e.path, it, size, replaces) {
                                    if done.error.is_some() {
                                        stats.files_failed += 1;
                                    }
                                    sink.item(wr, done)?;
                                }
                            }
                            Err(RebuildError::Verify(why)) if was_delta && !pending[&idx] => {
                                // A false block match (80-bit block check) or a base that changed: retry whole.
                                tracing::debug!("{}: {why}; retrying whole", e.path);
                                pending.insert(idx, true);
                                let mut w = wr.lock().unwrap_or_else(|e| e.into_inner());
                                send(
                                    &mut w,
                                    &Msg::Want(Want {
                                        idx,
                                        signature: None,
                                    }),
                                )?;
                                w.flush().map_err(|e| SyncError::Peer(e.to_string()))?;
                                continue;
                            }
                            Err(RebuildError::Protocol(p)) => {
                                return Err(SyncError::Peer(format!("protocol error: {p}")));
                            }
                            Err(RebuildError::Verify(why)) => {
                                fail_item(sink, wr, stats, e, codes.get(&idx), why)?
                            }
                            Err(RebuildError::Io(err)) => fail_item(
                                sink,
                                wr,
                                stats,
                                e,
                                codes.get(&idx),
                                format!("write failed: {err}"),
                            )?,
                        }
                        pending.remove(&idx);
                        remaining -= 1;
                        let _ = slot_rx.try_recv();
                    }
                    Msg::FileAbort { idx, reason } => {
                        if let Some(mut r) = current.take() {
                            if r.idx != idx {
                                return Err(SyncError::Peer(
                                    "protocol error: abort of another file".into(),
                                ));
                            }
                            r.discard();
                        }
                        if pending.remove(&idx).is_none() {
                            return Err(SyncError::Peer(format!(
                                "protocol error: abort of unrequested file {idx}"
                            )));
                        }
                        fail_item(
                            sink,
                            wr,
                            stats,
                            &source[idx as usize],
                            codes.get(&idx),
                            reason,
                        )?;
                        remaining -= 1;
                        let _ = slot_rx.try_recv();
                    }
                    Msg::Item(it) => {
                        if sink.is_client {
                            sink.rep.item(&it);
                        }
                    }
                    Msg::Error { code, message } => {
                        return Err(SyncError::from_wire(code, message));
                    }
                    m => {
                        return Err(SyncError::Peer(format!(
                            "protocol error: unexpected {} during transfers",
                            m.name()
                        )));
                    }
                }
            }
            Ok(())
        })();
        drop(slot_rx); // unblocks the requester if we stopped early
        if let Some(mut r) = current.take() {
            r.discard();
        }
        let req = requester
            .join()
            .unwrap_or_else(|_| Err(SyncError::Peer("requester thread panicked".into())));
        res.and(req)
    })
}

/// The plan's item code for a file where nothing was (`>f+++++++++`).
fn is_new_file(code: &str) -> bool {
    code.starts_with(">f+")
}

/// Whether new files can be written as anonymous files, tried in `path`'s directory.
fn probe_anonymous(
    safe: &SafeRoot,
    dirs: &mut DirCache,
    path: &crate::tree::path::RelPath,
) -> bool {
    let Some((parent, _)) = path.split_last() else {
        return false;
    };
    dirs.get(safe, &parent)
        .is_ok_and(|dir| crate::sync::fsops::anonymous_files_work(&dir))
}

/// After a data/copy step: a local I/O error fails this file (its remaining data is skipped).
#[allow(clippy::too_many_arguments)]
fn step<R: Read, W: Write>(
    res: Result<(), RebuildError>,
    rd: &mut FrameReader<R>,
    sink: &mut Sink,
    wr: &Mutex<&mut FrameWriter<W>>,
    stats: &mut Stats,
    source: &[Entry],
    codes: &HashMap<u32, &str>,
    current: &mut Option<Rebuild>,
    pending: &mut HashMap<u32, bool>,
    remaining: &mut usize,
    slot_rx: &mpsc::Receiver<()>,
) -> Result<(), SyncError> {
    match res {
        Ok(()) => Ok(()),
        Err(RebuildError::Protocol(p)) => Err(SyncError::Peer(format!("protocol error: {p}"))),
        Err(err) => {
            let mut r = current.take().expect("a file is being rebuilt");
            let idx = r.idx;
            r.discard();
            let why = match err {
                RebuildError::Io(e) => format!("write failed: {e}"),
                RebuildError::Verify(v) => v,
                RebuildError::Protocol(p) => p,
            };
            skip_file(rd)?;
            fail_item(sink, wr, stats, &source[idx as usize], codes.get(&idx), why)?;
            pending.remove(&idx);
            *remaining -= 1;
            let _ = slot_rx.try_recv();
            Ok(())
        }
    }
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

fn fail_item<W: Write>(
    sink: &mut Sink,
    wr: &Mutex<&mut FrameWriter<W>>,
    stats: &mut Stats,
    e: &Entry,
    code: Option<&&str>,
    why: String,
) -> Result<(), SyncError> {
    stats.files_failed += 1;
    let mut it = item(code.copied().unwrap_or(">f........."), e);
    it.error = Some(why);
    sink.item(wr, it)
}
