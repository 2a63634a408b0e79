//! The receiving side of a session: validate, plan, request, rebuild, commit.
//!
//! [`receive_tree`] runs five phases in order; phases 3 to 5 overlap with the
//! installer thread, which keeps renaming verified files while they run:
//! 1. receive and validate the manifest while a thread scans our own tree, then plan;
//! 2. local changes: remove entries in the way of another kind (each one a deletion),
//!    create directories and symlinks, fix metadata-only changes;
//! 3. transfers ([`transfers`]): files requested, rebuilt, verified and queued for
//!    the installer; at most [`FILES_IN_FLIGHT`] files are in flight;
//! 4. deletions (once every file is received and verified, like `--delete-after`;
//!    the installer may still be renaming the last ones), deepest first; then every
//!    queued file is installed;
//! 5. directory metadata, deepest first, so a directory's mtime is set after its
//!    contents changed.
//!
//! Items go to the local reporter when we are the client, else back over the wire.
//!
//! # Concurrency map
//!
//! | thread | started by | owns | talks through |
//! |---|---|---|---|
//! | receiving (the caller's) | - | the connection's reader, the plan, [`Stats`], the `Rebuild` in progress | every queue below |
//! | early scanner | phase 1, scoped | our scan of the destination | its join handle |
//! | requester | phase 3, scoped ([`request`]) | requests and the signatures of old copies | the window (a `sync_channel` of [`FILES_IN_FLIGHT`] slots: one per file in flight, freed by `Transfers::finish`); the writer `Mutex` |
//! | preparer | the requester, scoped | temp files created ahead of their data | `PrepQueue` (a `Mutex`ed map; whoever takes a file first owns it) |
//! | hash threads | `apply::Rebuild` for files >= 8 MiB | the BLAKE3 of one file | a `sync_channel` of 4 pieces; joined at the file's end |
//! | installer | `Committer::new` ([`commit`]) | verified temp files until renamed; the group flush | an unbounded channel, bounded by the queued files/bytes limits; the items of installed files back |
//! | releasers (4) | `Releaser::new` ([`release`]) | old inodes being freed | an unbounded channel of descriptors |
//!
//! The connection's writer is shared by the receiving thread (items, the final
//! `Done`) and the requester (requests), behind one `Mutex`; nobody holds it while
//! waiting on anything else. The requester and preparer end inside phase 3 (scoped).
//! Teardown order, enforced by [`Installers`]: the committer goes first (it joins
//! the installer, which drops its handle on the releasers' queue), then the releasers
//! are joined; when the session succeeded they are detached after `Done` instead
//! (freeing old inodes changes nothing the sender waits for; see
//! [`release::wait_detached`]); on failure the committer removes every temp file not
//! yet renamed.

mod apply;
mod commit;
mod release;
mod request;
mod resume;
mod transfers;

use crate::sync::SyncError;
use crate::sync::fsops::{DirCache, Meta, SafeRoot, TreeRoot};
use crate::sync::owners;
use crate::sync::plan::{Action, Change, Plan, PlanOptions, Planner};
use crate::sync::scan::{Excludes, ScanRest, hash_file, scan_each};
use crate::sync::send::fail;
use crate::tree::entries::Entries;
use crate::tree::manifest::{self, Entry, Kind};
use crate::tree::path::RelPath;
use crate::tree::report::{Item, Reporter, Stats};
use crate::wire::{FrameReader, FrameWriter, Msg, SessionOptions, recv_entries, send};
use commit::Committer;
use release::Releaser;
pub use release::wait_detached;
use std::io::{Read, Write};
use std::sync::{Mutex, mpsc};

/// Files in flight at once (requested, not yet verified).
pub const FILES_IN_FLIGHT: usize = 128;
/// Most manifest entries accepted (bounds memory against a hostile sender).
pub use crate::tree::entries::{MAX_ARENA, MAX_ENTRIES};
/// Entries per batch from our scan thread to the planner, and batches queued: the
/// scan runs at most this far ahead of the manifest (a bound on what it holds).
const SCAN_BATCH: usize = 1024;
const SCAN_QUEUE: usize = 4;

/// Receiver settings that are not part of the wire options.
#[derive(Debug, Clone, Copy)]
pub struct ReceiverConfig {
    /// Flush rebuilt files to disk before they replace old ones.
    pub fsync: bool,
    /// The sender's protocol minor version (whether it reads `Signing` hints).
    pub peer_minor: u16,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            fsync: true,
            peer_minor: 0,
        }
    }
}

/// The connection's writer, shared with the requester thread.
type SharedWriter<'w, 'm, W> = &'w Mutex<&'m mut FrameWriter<W>>;

/// Where items go, and what they add up to.
struct Out<'a, 'w, 'm, W: Write> {
    rep: &'a mut dyn Reporter,
    is_client: bool,
    wr: SharedWriter<'w, 'm, W>,
    stats: Stats,
}

impl<W: Write> Out<'_, '_, '_, W> {
    /// Report `item` (locally when we are the client, else to the peer).
    fn item(&mut self, item: Item) -> Result<(), SyncError> {
        if self.is_client {
            self.rep.item(&item);
        } else {
            send(
                &mut self.wr.lock().unwrap_or_else(|e| e.into_inner()),
                &Msg::Item(item),
            )?;
        }
        Ok(())
    }

    /// Report `item`, counting it as failed when it carries an error.
    fn outcome(&mut self, item: Item) -> Result<(), SyncError> {
        if item.error.is_some() {
            self.stats.files_failed += 1;
        }
        self.item(item)
    }

    /// A deletion (or a removal in the way of another kind), done or failed.
    fn deleted(&mut self, path: &RelPath, res: std::io::Result<()>) -> Result<(), SyncError> {
        let mut it = Item::deleting(path.clone());
        match res {
            Ok(()) => self.stats.files_deleted += 1,
            Err(e) => it.error = Some(e.to_string()),
        }
        self.outcome(it)
    }

    /// Fail the run: the error goes to the peer too.
    fn fail(&self, e: SyncError) -> SyncError {
        fail(&mut self.wr.lock().unwrap_or_else(|e| e.into_inner()), e)
    }
}

/// The line of `change` on entry `e`.
fn item(change: &Change, e: &Entry) -> Item {
    Item {
        code: change.code(),
        path: e.path.clone(),
        target: e.target.clone(),
        error: None,
    }
}

/// What phase 1 found: the validated source, our scan, our root, the plan.
struct Planned {
    source: Entries,
    /// Leftover temp files of a killed run in our tree.
    stale_temps: Vec<RelPath>,
    safe: Option<SafeRoot>,
    owners: bool,
    plan: Plan,
}

/// Receive a tree into `root`.
pub fn receive_tree<R: Read + Send, W: Write + Send>(
    rd: &mut FrameReader<R>,
    wr: &mut FrameWriter<W>,
    root: &TreeRoot,
    opts: &SessionOptions,
    cfg: ReceiverConfig,
    rep: &mut dyn Reporter,
    is_client: bool,
) -> Result<Stats, SyncError> {
    let mut phases = crate::sync::Phases::new("receiver");
    let planned = plan_phase(rd, wr, root, opts, rep, is_client, &mut phases)?;
    let wr = Mutex::new(wr);
    let mut out = Out {
        rep,
        is_client,
        wr: &wr,
        stats: Stats {
            files_total: planned.source.len() as u64,
            bytes_total: (0..planned.source.len())
                .map(|i| planned.source.size(i))
                .sum(),
            ..Default::default()
        },
    };
    let Planned {
        source,
        stale_temps,
        safe,
        owners,
        plan,
    } = planned;
    report_refusals(&mut out, &plan, &source)?;
    if opts.dry_run {
        dry_run(&mut out, &plan, &source)?;
        return finish(&wr, out.stats);
    }
    let safe = safe.expect("opened when not a dry run");
    let mut local = Local {
        safe: &safe,
        dirs: DirCache::new(),
        source: &source,
        owners,
        hints: cfg.peer_minor >= crate::wire::message::MINOR_SIGNING,
    };
    // Partials of big files a cut run left are kept as delta bases (`resume.rs`).
    let (partials, stale_temps) = resume::Partials::split(&safe, stale_temps);
    local.remove_stale(&stale_temps);
    local.removals(&mut out, &plan.removals)?;
    let to_transfer = local.changes(&mut out, &plan.steps)?;
    phases.mark("local changes");
    let mut installers = Installers::start(cfg.fsync).map_err(|e| out.fail(e))?;
    let changes = Changes(&plan.steps);
    let committer = &mut installers.committer;
    transfers::run(
        rd,
        &mut out,
        &local,
        &to_transfer,
        &changes,
        committer,
        &partials,
    )
    .map_err(|e| out.fail(e))?;
    installers.committer.seal();
    phases.mark("transfers");
    local.deletions(&mut out, &plan.deletions, &installers.releaser)?;
    phases.mark("deletions");
    for it in installers.committer.commit() {
        out.outcome(it)?;
    }
    local.remove_stale(&partials.paths());
    phases.mark("commit");
    local.dir_meta(&mut out, &plan.dir_meta)?;
    phases.mark("dir meta");
    // Every file is in place: `Done` goes now, and the old inodes still being freed
    // (100 ms or more for a replaced 256 MiB file) are left to the detached releasers
    // (`hasync serve` waits for them after closing its end: `release::wait_detached`).
    let Installers {
        committer,
        releaser,
    } = installers;
    drop(committer);
    let done = finish(&wr, out.stats);
    phases.mark("done");
    releaser.detach();
    done
}

/// Phase 1: the manifest, merged into the plan as it arrives with our own scan
/// (a thread walks our tree meanwhile: the two scans, the sender's before its
/// manifest and ours, overlap instead of adding up, which is most of a no-change
/// run). Each entry is validated as it comes; nothing of our tree is kept but what
/// the plan lists, and the source only compactly ([`Entries`]).
#[allow(clippy::too_many_arguments)]
fn plan_phase<R: Read + Send, W: Write>(
    rd: &mut FrameReader<R>,
    wr: &mut FrameWriter<W>,
    root: &TreeRoot,
    opts: &SessionOptions,
    rep: &mut dyn Reporter,
    is_client: bool,
    phases: &mut crate::sync::Phases,
) -> Result<Planned, SyncError> {
    let excludes = Excludes::new(&opts.excludes);
    let exists = root.exists();
    let io = |what: &'static str, e: std::io::Error| SyncError::file(what, root.path(), e);
    // Open first when it exists: `--checksum` hashes our files during the merge.
    let early_safe = match exists {
        true => Some(root.open().map_err(|e| fail(wr, io("open", e)))?),
        false => None,
    };
    let owners = opts.owners && crate::sync::fsops::is_root();
    let plan_opts = PlanOptions {
        delete: opts.delete,
        checksum: opts.checksum,
        owners,
        max_delete: opts.max_delete,
        allow_empty_source: opts.allow_empty_source,
        sender_scan_errors: 0,
    };
    let (tx, rx) = mpsc::sync_channel::<Vec<Entry>>(SCAN_QUEUE);
    let (manifest, rest) = std::thread::scope(|s| {
        let scanner = match (&excludes, exists) {
            (Ok(ex), true) => Some(s.spawn(move || scan_to(root, ex, opts.one_file_system, tx))),
            _ => {
                drop(tx);
                None
            }
        };
        let hash = |p: &RelPath| early_safe.as_ref().and_then(|s| hash_file(s, p).ok());
        let planner = Planner::new(&plan_opts, rx.into_iter().flatten(), hash);
        let names = owners && !opts.numeric_ids;
        // On an error the planner (our end of the scan queue) is dropped: the scan stops.
        let m = receive_manifest(rd, wr, rep, is_client, planner, names);
        let rest = scanner.map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the scan thread panicked")))
        });
        (m, rest)
    });
    phases.mark("manifest+scan+plan");
    let (source, plan) = manifest?;
    let excludes = excludes.map_err(|e| fail(wr, SyncError::Usage(e)))?;
    let _ = excludes;
    let stale_temps = match rest {
        Some(r) => {
            r.map_err(|e| fail(wr, io("scan the destination", e)))?
                .unwrap_or_default()
                .stale_temps
        }
        None => Vec::new(),
    };
    if !exists && !opts.dry_run {
        root.create()
            .map_err(|e| fail(wr, io("create the destination", e)))?;
    }
    let safe = match (early_safe, opts.dry_run) {
        (Some(s), _) => Some(s),
        (None, false) => Some(root.open().map_err(|e| fail(wr, io("open", e)))?),
        (None, true) => None,
    };
    tracing::debug!(
        "receiver: {} source entries in {} KiB",
        source.len(),
        source.heap_bytes() >> 10
    );
    Ok(Planned {
        source,
        stale_temps,
        safe,
        owners,
        plan,
    })
}

/// Our scan, in batches of [`SCAN_BATCH`] entries, into the planner's queue; stops
/// when the planner is gone (the session failed).
fn scan_to(
    root: &TreeRoot,
    ex: &Excludes,
    one_file_system: bool,
    tx: mpsc::SyncSender<Vec<Entry>>,
) -> std::io::Result<Option<ScanRest>> {
    let mut batch = Vec::with_capacity(SCAN_BATCH);
    let r = scan_each(root, ex, one_file_system, &mut |e| {
        batch.push(e);
        batch.len() < SCAN_BATCH
            || tx
                .send(std::mem::replace(
                    &mut batch,
                    Vec::with_capacity(SCAN_BATCH),
                ))
                .is_ok()
    });
    if !batch.is_empty() {
        let _ = tx.send(batch);
    }
    r
}

/// The change planned for each source entry, by its index: the steps are in
/// manifest order, so a binary search (no map of every entry).
pub(super) struct Changes<'p>(&'p [crate::sync::plan::Step]);

impl Changes<'_> {
    pub fn get(&self, idx: u32) -> Option<&Change> {
        let i = self.0.binary_search_by_key(&idx, |s| s.idx).ok()?;
        Some(&self.0[i].change)
    }
}

/// The plan's warnings: deletions skipped, and entries refused because a non-empty
/// directory is in their way (each a failed item: the run exits 1).
fn report_refusals<W: Write>(
    out: &mut Out<W>,
    plan: &Plan,
    source: &Entries,
) -> Result<(), SyncError> {
    if let Some(why) = &plan.deletions_skipped {
        out.item(Item::warning(why.clone()))?;
    }
    for (idx, why) in &plan.refused {
        let e = &source.get(*idx);
        let mut it = item(&Change::created(e.kind), e);
        it.error = Some(why.clone());
        out.outcome(it)?;
    }
    Ok(())
}

/// `--dry-run`: every item the run would report, in the order it would apply them.
fn dry_run<W: Write>(out: &mut Out<W>, plan: &Plan, source: &Entries) -> Result<(), SyncError> {
    for (p, _) in &plan.removals {
        out.deleted(p, Ok(()))?;
    }
    for step in &plan.steps {
        out.item(item(&step.change, &source.get(step.idx as usize)))?;
        if matches!(step.action, Action::Transfer { .. }) {
            out.stats.files_transferred += 1;
        }
    }
    for (p, _) in &plan.deletions {
        out.deleted(p, Ok(()))?;
    }
    Ok(())
}

/// The phases that change our tree outside the transfers.
struct Local<'l> {
    safe: &'l SafeRoot,
    dirs: DirCache,
    source: &'l Entries,
    owners: bool,
    /// The sender reads `Signing` hints.
    hints: bool,
}

impl Local<'_> {
    fn meta_of(&self, e: &Entry) -> Meta {
        Meta {
            mode: e.mode,
            mtime: e.mtime,
            owner: self.owners.then_some((e.uid, e.gid)),
        }
    }

    /// Stale temp files of a killed run.
    fn remove_stale(&mut self, temps: &[RelPath]) {
        for t in temps {
            let _ = apply::remove(self.safe, &mut self.dirs, t, false);
        }
    }

    /// Phase 2a: entries in the way of another kind, deepest first.
    fn removals<W: Write>(
        &mut self,
        out: &mut Out<W>,
        removals: &[(RelPath, Kind)],
    ) -> Result<(), SyncError> {
        for (p, kind) in removals {
            let res = apply::remove(self.safe, &mut self.dirs, p, *kind == Kind::Dir);
            out.deleted(p, res)?;
        }
        self.dirs.clear();
        Ok(())
    }

    /// Phase 2b: directories, symlinks, metadata; returns the files to transfer
    /// (source index, whether a delta was planned).
    fn changes<W: Write>(
        &mut self,
        out: &mut Out<W>,
        steps: &[crate::sync::plan::Step],
    ) -> Result<Vec<(u32, bool)>, SyncError> {
        let mut transfers = Vec::new();
        for step in steps {
            if let Action::Transfer { delta } = step.action {
                transfers.push((step.idx, delta));
                continue;
            }
            let e = &self.source.get(step.idx as usize);
            let meta = self.meta_of(e);
            let res = match step.action {
                Action::Transfer { .. } => unreachable!("handled above"),
                Action::MkDir => apply::make_dir(self.safe, &mut self.dirs, &e.path),
                Action::Symlink => apply::make_symlink(self.safe, &mut self.dirs, e, &meta),
                Action::Meta if e.kind == Kind::Dir => Ok(()), // applied with the directory pass
                Action::Meta => apply::set_meta(self.safe, &mut self.dirs, e, &meta),
            };
            let mut it = item(&step.change, e);
            match res {
                Ok(()) if step.action == Action::Meta => out.stats.meta_updated += 1,
                Ok(()) => out.stats.other_created += 1,
                Err(err) => it.error = Some(err.to_string()),
            }
            out.outcome(it)?;
        }
        self.dirs.clear();
        Ok(transfers)
    }

    /// Phase 4: entries the source no longer has; their inodes go to the releasers.
    fn deletions<W: Write>(
        &mut self,
        out: &mut Out<W>,
        deletions: &[(RelPath, Kind)],
        releaser: &Releaser,
    ) -> Result<(), SyncError> {
        self.dirs.clear();
        let release = releaser.sender();
        for (p, kind) in deletions {
            let dir = *kind == Kind::Dir;
            let res = apply::remove_releasing(self.safe, &mut self.dirs, p, dir, &release);
            out.deleted(p, res)?;
        }
        Ok(())
    }

    /// Phase 5: directory metadata, deepest first (after the renames, which change it).
    fn dir_meta<W: Write>(
        &mut self,
        out: &mut Out<W>,
        dir_meta: &[(usize, bool)],
    ) -> Result<(), SyncError> {
        for &(idx, mtime_only) in dir_meta {
            let e = &self.source.get(idx);
            let meta = self.meta_of(e);
            let res = match mtime_only {
                true => apply::set_dir_mtime(self.safe, &mut self.dirs, e, &meta),
                false => apply::set_meta(self.safe, &mut self.dirs, e, &meta),
            };
            if let Err(err) = res {
                let mut it = item(&Change::dir_meta(), e);
                it.error = Some(err.to_string());
                out.outcome(it)?;
            }
        }
        Ok(())
    }
}

/// The installer thread and the releaser pool, torn down in the one safe order:
/// fields drop in declaration order, so the committer (which joins the installer, the
/// holder of a handle on the releasers' queue, and removes temp files not renamed
/// yet) always goes before the releasers are joined.
struct Installers {
    committer: Committer,
    releaser: Releaser,
}

impl Installers {
    fn start(fsync: bool) -> Result<Installers, SyncError> {
        let releaser = Releaser::new();
        let committer = Committer::new(fsync, releaser.sender())
            .map_err(|e| SyncError::Io(format!("cannot start the installer thread: {e}")))?;
        Ok(Installers {
            committer,
            releaser,
        })
    }
}

/// Tell the sender we are done and return the stats.
fn finish<W: Write>(wr: &Mutex<&mut FrameWriter<W>>, stats: Stats) -> Result<Stats, SyncError> {
    let mut w = wr.lock().unwrap_or_else(|e| e.into_inner());
    send(&mut w, &Msg::WantsEnd).ok();
    send(&mut w, &Msg::Done(stats.clone()))?;
    w.flush()
        .map_err(|e| SyncError::Peer(format!("cannot write to the peer: {e}")))?;
    Ok(stats)
}

/// The source's manifest, validated, owners mapped and planned entry by entry as
/// it arrives (names come before the entries: see `sync::owners`).
fn receive_manifest<R: Read, W: Write, D, H>(
    rd: &mut FrameReader<R>,
    wr: &mut FrameWriter<W>,
    rep: &mut dyn Reporter,
    is_client: bool,
    mut planner: Planner<'_, D, H>,
    map_names: bool,
) -> Result<(Entries, Plan), SyncError>
where
    D: Iterator<Item = Entry>,
    H: FnMut(&RelPath) -> Option<[u8; 32]>,
{
    let mut source = Entries::new();
    let mut check = manifest::Validator::default();
    let mut names = owners::Received::default();
    let mut mapping: Option<owners::Mapping> = None;
    let invalid = |e: manifest::ManifestError| {
        SyncError::Peer(format!(
            "protocol error: invalid manifest from the sender: {e}"
        ))
    };
    loop {
        let mut each = |e: &Entry| -> Result<(), SyncError> {
            let m = mapping.get_or_insert_with(|| match map_names {
                true => names.mapping(),
                false => owners::Mapping::default(),
            });
            check.check(e).map_err(|e| fail(wr, invalid(e)))?;
            let mapped;
            let e = match m.is_empty() {
                true => e,
                false => {
                    mapped = m.apply(e.clone());
                    &mapped
                }
            };
            planner.source(source.len() as u32, e);
            source
                .push(e)
                .map_err(|e| fail(wr, SyncError::Peer(format!("protocol error: {e}"))))
        };
        let Some(msg) = recv_entries(rd, &mut each)? else {
            continue;
        };
        match msg {
            Msg::OwnerNames { groups, names: n } if mapping.is_none() => {
                names.add(groups, n).map_err(SyncError::Peer)?;
            }
            Msg::ManifestEnd { count, scan_errors } => {
                if count != source.len() as u64 {
                    return Err(SyncError::Peer(
                        "protocol error: manifest count does not match".into(),
                    ));
                }
                if source.is_empty() {
                    return Err(fail(wr, invalid(manifest::ManifestError::NoRoot)));
                }
                let plan = planner
                    .finish(&source, scan_errors)
                    .map_err(|g| fail(wr, SyncError::Guard(g.0)))?;
                return Ok((source, plan));
            }
            Msg::Item(it) if is_client => rep.item(&it),
            Msg::Item(_) => {}
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
