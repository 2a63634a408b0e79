//! Planning: what the receiver must do to make its tree equal the source's.
//!
//! [`make_plan`] compares the source manifest with the receiver's own scan and
//! returns a [`Plan`] without touching anything, so `--dry-run` prints exactly
//! what a real run would do. The checks that refuse a whole run (an empty
//! source about to wipe the mirror, `--max-delete`) are applied to the plan,
//! before anything is changed.

use crate::tree::entries::Entries;
use crate::tree::manifest::{Entry, Kind, wire_order};
use crate::tree::path::RelPath;
use foldhash::{HashMap, HashSet};

/// One thing to do for a source entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create a directory (its metadata is applied at the end).
    MkDir,
    /// Send the file's content; `delta` if the receiver has an old copy to diff against.
    Transfer { delta: bool },
    /// Create or replace a symlink.
    Symlink,
    /// Only the metadata differs (mode, owner, or a symlink's mtime).
    Meta,
}

/// A planned action on source entry `idx`, with what changes (its itemized line).
#[derive(Debug, Clone)]
pub struct Step {
    /// The source entry's index in the manifest.
    pub idx: u32,
    pub action: Action,
    pub change: Change,
}

/// What changes on one entry. Rendered as rsync's `-i` code only at the output edge
/// ([`Change::code`]); the engine decides on the typed fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub kind: Kind,
    pub how: How,
    pub diff: Diff,
}

/// How an entry changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// Nothing was there (`>f+++++++++`, `cd+++++++++`, `cL+++++++++`).
    Created,
    /// A file's content is sent (`>f...`).
    Sent,
    /// A symlink is made again, its target changed (`cL...`).
    Relinked,
    /// Only metadata is set (`.f...`, `.d...`, `.L...`).
    Meta,
}

/// Which attributes differ between the source entry and the receiver's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Diff {
    /// Content (with `--checksum`) or a symlink's target.
    pub content: bool,
    pub size: bool,
    pub time: bool,
    pub perms: bool,
    pub owner: bool,
    pub group: bool,
}

impl Change {
    /// The change of an entry that did not exist.
    pub fn created(kind: Kind) -> Change {
        Change {
            kind,
            how: How::Created,
            diff: Diff::default(),
        }
    }

    /// A directory whose metadata is set (the line of a failed directory pass).
    pub fn dir_meta() -> Change {
        Change {
            kind: Kind::Dir,
            how: How::Meta,
            diff: Diff::default(),
        }
    }

    /// Whether the file is new, so there is no old inode to replace or free.
    pub fn is_new(&self) -> bool {
        self.how == How::Created
    }

    /// rsync's `-i` code: `YXcstpoguax` (update type, file type, then attribute flags).
    pub fn code(&self) -> String {
        let ty = match self.kind {
            Kind::File => 'f',
            Kind::Dir => 'd',
            Kind::Symlink => 'L',
        };
        let update = match (self.how, self.kind) {
            (How::Created | How::Relinked, Kind::Dir | Kind::Symlink) => 'c',
            (How::Created | How::Sent, _) => '>',
            (How::Relinked, Kind::File) => 'c',
            (How::Meta, _) => '.',
        };
        if self.how == How::Created {
            return format!("{update}{ty}+++++++++");
        }
        let d = self.diff;
        let flag = |on: bool, c: char| if on { c } else { '.' };
        format!(
            "{update}{ty}{}{}{}{}{}{}...",
            flag(d.content, 'c'),
            flag(d.size, 's'),
            flag(d.time, 't'),
            flag(d.perms, 'p'),
            flag(d.owner, 'o'),
            flag(d.group, 'g'),
        )
    }
}

#[derive(Debug, Default)]
pub struct Plan {
    /// Receiver entries in the way of an entry of another kind: removed first, deepest
    /// first. Each is a deletion: itemized as `*deleting`, counted, held by the guards.
    pub removals: Vec<(RelPath, Kind)>,
    /// Actions, in manifest order.
    pub steps: Vec<Step>,
    /// Entries the source no longer has (`--delete`), deepest first, applied after transfers.
    pub deletions: Vec<(RelPath, Kind)>,
    /// Source directories whose metadata must be set, deepest first, applied last,
    /// each with whether only its mtime needs setting (mode and owner already match).
    pub dir_meta: Vec<(usize, bool)>,
    /// Why deletions were skipped, if they were.
    pub deletions_skipped: Option<String>,
    /// Source entries not applied because a non-empty directory is in their way and
    /// deleting was not asked for (rsync: "cannot delete non-empty directory"), with why.
    pub refused: Vec<(usize, String)>,
}

/// How to compare.
pub struct PlanOptions {
    pub delete: bool,
    pub checksum: bool,
    /// Compare and set owners (receiver is root and owners were asked for).
    pub owners: bool,
    pub max_delete: Option<u64>,
    pub allow_empty_source: bool,
    /// The sender could not read part of its tree: never delete on this run.
    pub sender_scan_errors: u64,
}

/// A run refused before anything changed (exit code 4).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GuardError(pub String);

/// How `new` differs from `old`, flag by flag.
fn diff(new: &Entry, old: &Entry, checksum: bool, owners: bool) -> Diff {
    Diff {
        content: (checksum && new.kind == Kind::File && new.hash != old.hash)
            || (new.kind == Kind::Symlink && new.target != old.target),
        size: new.kind == Kind::File && new.size != old.size,
        time: new.mtime != old.mtime,
        perms: new.kind != Kind::Symlink && new.mode != old.mode,
        owner: owners && new.uid != old.uid,
        group: owners && new.gid != old.gid,
    }
}

/// Compare `source` (validated manifest, wire order) with `dest` (the receiver's scan,
/// wire order), both whole: [`Planner`] over slices (tests, small trees).
/// `dest` file entries carry hashes when `checksum` is set and sizes matched.
pub fn make_plan(source: &[Entry], dest: &[Entry], opts: &PlanOptions) -> Result<Plan, GuardError> {
    let store: Entries = source.iter().cloned().collect();
    let mut p = Planner::new(opts, dest.iter().cloned(), |_: &RelPath| None);
    for (i, e) in source.iter().enumerate() {
        p.source(i as u32, e);
    }
    p.finish(&store, opts.sender_scan_errors)
}

/// A receiver entry of another kind than the source's, decided at the end (whether
/// it may be removed depends on `--delete` and on the sender's scan errors, known
/// only at `ManifestEnd`): the source entry and the receiver's subtree, wire order.
struct KindChange {
    idx: u32,
    kind: Kind,
    subtree: Vec<(RelPath, Kind)>,
}

/// The plan, built while the source manifest arrives and the receiver's own scan
/// runs: both are in wire order, so one merge pass pairs them (no map of either
/// side), and of the receiver's tree only what the plan itself lists is kept (its
/// deletions and the entries in the way of another kind). Linear in both.
pub struct Planner<'o, D: Iterator<Item = Entry>, H: FnMut(&RelPath) -> Option<[u8; 32]>> {
    opts: &'o PlanOptions,
    dest: std::iter::Peekable<D>,
    /// Hashes a receiver file (`--checksum`, same size as the source's).
    hash: H,
    plan: Plan,
    kind_changes: Vec<KindChange>,
    /// Whether the last kind change is still collecting the receiver's subtree.
    collecting: bool,
    /// Receiver entries the source does not have (`--delete`), wire order.
    gone: Vec<(RelPath, Kind)>,
    sources: u64,
}

impl<'o, D: Iterator<Item = Entry>, H: FnMut(&RelPath) -> Option<[u8; 32]>> Planner<'o, D, H> {
    pub fn new(opts: &'o PlanOptions, dest: D, hash: H) -> Self {
        Planner {
            opts,
            dest: dest.peekable(),
            hash,
            plan: Plan::default(),
            kind_changes: Vec::new(),
            collecting: false,
            gone: Vec::new(),
            sources: 0,
        }
    }

    /// The next source entry (validated, in wire order), number `idx` of the manifest.
    pub fn source(&mut self, idx: u32, new: &Entry) {
        self.sources += 1;
        while let Some(d) = self.dest.peek() {
            match wire_order(&d.path, &new.path) {
                std::cmp::Ordering::Less => {
                    let d = self.dest.next().expect("peeked");
                    self.dest_only(d);
                }
                std::cmp::Ordering::Equal => {
                    let mut old = self.dest.next().expect("peeked");
                    self.collecting = false;
                    self.pair(idx, new, &mut old);
                    return;
                }
                std::cmp::Ordering::Greater => break,
            }
        }
        self.collecting = false;
        plan_new(&mut self.plan, idx, new);
    }

    /// A receiver entry with no source entry of its path.
    fn dest_only(&mut self, d: Entry) {
        if self.collecting {
            let kc = self.kind_changes.last_mut().expect("collecting one");
            if d.path.starts_with(&kc.subtree[0].0) {
                kc.subtree.push((d.path, d.kind));
                return;
            }
            self.collecting = false;
        }
        if self.opts.delete && !d.path.is_root() {
            self.gone.push((d.path, d.kind));
        }
    }

    fn pair(&mut self, idx: u32, new: &Entry, old: &mut Entry) {
        if old.kind != new.kind {
            if old.kind == Kind::Dir {
                let path = std::mem::take(&mut old.path);
                self.kind_changes.push(KindChange {
                    idx,
                    kind: new.kind,
                    subtree: vec![(path, Kind::Dir)],
                });
                self.collecting = true;
            } else {
                // Nothing beneath it: removed like rsync does, even without --delete.
                self.plan
                    .removals
                    .push((std::mem::take(&mut old.path), old.kind));
                plan_new(&mut self.plan, idx, new);
            }
            return;
        }
        if self.opts.checksum
            && new.kind == Kind::File
            && new.size == old.size
            && old.hash.is_none()
        {
            old.hash = (self.hash)(&old.path);
        }
        plan_existing(&mut self.plan, idx, new, old, self.opts);
    }

    /// The manifest ended (`source` holds it all; the sender could not read
    /// `scan_errors` entries): the rest of our scan, the kind changes, the guards.
    pub fn finish(mut self, source: &Entries, scan_errors: u64) -> Result<Plan, GuardError> {
        while let Some(d) = self.dest.next() {
            self.dest_only(d);
        }
        let opts = self.opts;
        let mut plan = self.plan;
        let may_delete = opts.delete && scan_errors == 0;
        let deferred = !self.kind_changes.is_empty();
        for kc in self.kind_changes {
            if kc.subtree.len() > 1 && !may_delete {
                plan.refused.push((
                    kc.idx as usize,
                    refusal(&kc.subtree[0].0, opts, scan_errors),
                ));
                continue;
            }
            plan.removals.extend(kc.subtree.into_iter().rev());
            let step = plan_new_kind(&mut plan, kc.idx, kc.kind);
            plan.steps.push(step);
        }
        if deferred {
            plan.steps.sort_by_key(|s| s.idx);
        }
        // Reverse wire order lists children before their parents.
        plan.deletions = self.gone;
        plan.deletions.reverse();
        if opts.delete {
            let source_empty = self.sources <= 1;
            if source_empty && !plan.deletions.is_empty() && !opts.allow_empty_source {
                return Err(GuardError(format!(
                    "the source is empty and --delete would remove all {} entries of the mirror; refusing (pass --allow-empty-source if this is really wanted)",
                    plan.deletions.len()
                )));
            }
        }
        let deleting = (plan.deletions.len() + plan.removals.len()) as u64;
        if let Some(max) = opts.max_delete
            && deleting > max
        {
            return Err(GuardError(format!(
                "this run would delete {deleting} entries, more than --max-delete {max}; refusing to change anything"
            )));
        }
        if scan_errors > 0 && !plan.deletions.is_empty() {
            plan.deletions_skipped = Some(format!(
                "the sender could not read {scan_errors} entries; skipping {} deletions on this run so nothing is deleted by mistake",
                plan.deletions.len()
            ));
            plan.deletions.clear();
        }
        plan_dir_meta(&mut plan, source);
        Ok(plan)
    }
}

/// Why a non-empty directory was left in place of a source entry of another kind.
fn refusal(path: &RelPath, opts: &PlanOptions, scan_errors: u64) -> String {
    if opts.delete && scan_errors > 0 {
        format!(
            "cannot delete non-empty directory {path}: the sender could not read its whole tree, so nothing is deleted on this run"
        )
    } else {
        format!(
            "cannot delete non-empty directory {path} to put another kind of entry there (pass --delete to allow it)"
        )
    }
}

/// A source entry with nothing (left) in its place.
fn plan_new(plan: &mut Plan, idx: u32, new: &Entry) {
    let step = plan_new_kind(plan, idx, new.kind);
    plan.steps.push(step);
}

/// The step that creates an entry of `kind` (a directory's metadata is planned too).
fn plan_new_kind(plan: &mut Plan, idx: u32, kind: Kind) -> Step {
    let action = match kind {
        Kind::Dir => Action::MkDir,
        Kind::File => Action::Transfer { delta: false },
        Kind::Symlink => Action::Symlink,
    };
    if kind == Kind::Dir {
        plan.dir_meta.push((idx as usize, false));
    }
    Step {
        idx,
        action,
        change: Change::created(kind),
    }
}

/// A source entry whose receiver entry has the same kind.
fn plan_existing(plan: &mut Plan, idx: u32, new: &Entry, old: &Entry, opts: &PlanOptions) {
    let meta_differs =
        new.mode != old.mode || (opts.owners && (new.uid != old.uid || new.gid != old.gid));
    let step = |action: Action, how: How, checksum: bool| Step {
        idx,
        action,
        change: Change {
            kind: new.kind,
            how,
            diff: diff(new, old, checksum, opts.owners),
        },
    };
    match new.kind {
        Kind::Dir => {
            if meta_differs {
                plan.steps.push(step(Action::Meta, How::Meta, false));
            }
            if meta_differs || new.mtime != old.mtime {
                plan.dir_meta.push((idx as usize, !meta_differs));
            }
        }
        Kind::File => {
            let same = if opts.checksum {
                new.size == old.size && new.hash.is_some() && new.hash == old.hash
            } else {
                new.size == old.size && new.mtime == old.mtime
            };
            if !same {
                // An old copy smaller than one block has nothing a delta could reuse
                // (only whole blocks are signed): send such files whole, and save
                // the receiver reading it and the sender diffing against nothing.
                let delta =
                    old.size >= crate::sync::delta::block_size_for(old.size) as u64 && new.size > 0;
                plan.steps
                    .push(step(Action::Transfer { delta }, How::Sent, opts.checksum));
            } else if meta_differs || new.mtime != old.mtime {
                plan.steps.push(step(Action::Meta, How::Meta, false));
            }
        }
        Kind::Symlink => {
            if new.target != old.target {
                plan.steps.push(step(Action::Symlink, How::Relinked, false));
            } else if new.mtime != old.mtime
                || (opts.owners && (new.uid != old.uid || new.gid != old.gid))
            {
                plan.steps.push(step(Action::Meta, How::Meta, false));
            }
        }
    }
}

/// Directories whose metadata is set last: those planned, plus those in which an
/// entry is created, replaced or deleted (which changes their mtime), deepest first.
fn plan_dir_meta(plan: &mut Plan, source: &Entries) {
    // Creating, replacing or deleting an entry changes its directory's mtime:
    // those directories get their metadata re-applied at the end too.
    let dir_index: HashMap<&[u8], usize> = (0..source.len())
        .filter(|&i| source.kind(i) == Kind::Dir)
        .map(|i| (source.path(i), i))
        .collect();
    let parent = |p: &[u8]| -> Option<usize> {
        if p.is_empty() {
            return None;
        }
        let dir = &p[..p.iter().rposition(|&b| b == b'/').unwrap_or(0)];
        dir_index.get(dir).copied()
    };
    let mut seen: HashSet<usize> = plan.dir_meta.iter().map(|&(i, _)| i).collect();
    let mut touched = Vec::new();
    let steps = plan.steps.iter().filter(|s| s.action != Action::Meta);
    let steps = steps.filter_map(|s| parent(source.path(s.idx as usize)));
    let gone = plan.removals.iter().chain(plan.deletions.iter());
    for i in steps.chain(gone.filter_map(|(p, _)| parent(p.as_bytes()))) {
        if seen.insert(i) {
            // Not new and not planned: mode and owner match, only the mtime will differ.
            touched.push((i, true));
        }
    }
    plan.dir_meta.extend(touched);
    // Directory metadata deepest first, so setting a parent's mtime comes after its children changed.
    let depth = |i: usize| {
        let p = source.path(i);
        p.iter().filter(|&&b| b == b'/').count() + usize::from(!p.is_empty())
    };
    plan.dir_meta
        .sort_by_key(|&(i, _)| std::cmp::Reverse(depth(i)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(p: &str, kind: Kind, size: u64, mtime: i64) -> Entry {
        Entry {
            path: RelPath::from_wire(p.as_bytes()).unwrap(),
            kind,
            size,
            mtime: crate::tree::manifest::Mtime::from_nanos(mtime),
            mode: if kind == Kind::Dir { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            target: if kind == Kind::Symlink {
                b"t".to_vec()
            } else {
                vec![]
            },
            hash: None,
        }
    }
    fn opts() -> PlanOptions {
        PlanOptions {
            delete: true,
            checksum: false,
            owners: false,
            max_delete: None,
            allow_empty_source: false,
            sender_scan_errors: 0,
        }
    }

    #[test]
    fn directories_whose_mode_matches_only_get_their_mtime_set() {
        let mut chmodded = e("m", Kind::Dir, 0, 1);
        chmodded.mode = 0o700;
        let src = vec![
            e("", Kind::Dir, 0, 1),
            e("m", Kind::Dir, 0, 1),
            e("n", Kind::Dir, 0, 1),
            e("new", Kind::Dir, 0, 1),
            e("t", Kind::Dir, 0, 1),
            e("t/f", Kind::File, 3, 9),
        ];
        let dst = vec![
            e("", Kind::Dir, 0, 1),
            chmodded,
            e("n", Kind::Dir, 0, 2),
            e("t", Kind::Dir, 0, 1),
            e("t/f", Kind::File, 3, 5),
        ];
        let p = make_plan(&src, &dst, &opts()).unwrap();
        let mut got: Vec<(&[u8], bool)> = p
            .dir_meta
            .iter()
            .map(|&(i, only)| (src[i].path.as_bytes(), only))
            .collect();
        got.sort();
        let want: Vec<(&[u8], bool)> = vec![
            (b"", true),     // a new entry in it
            (b"m", false),   // its mode differs
            (b"n", true),    // its mtime differs
            (b"new", false), // created: everything
            (b"t", true),    // a file in it is replaced
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn unchanged_tree_plans_nothing() {
        let t = vec![e("", Kind::Dir, 0, 1), e("a", Kind::File, 3, 5)];
        let p = make_plan(&t, &t, &opts()).unwrap();
        assert!(p.steps.is_empty() && p.deletions.is_empty() && p.dir_meta.is_empty());
    }

    #[test]
    fn changes_deletions_and_kind_changes() {
        let src = vec![
            e("", Kind::Dir, 0, 1),
            e("a", Kind::File, 4, 5),
            e("d", Kind::File, 1, 1),
            e("n", Kind::File, 1, 1),
        ];
        let dst = vec![
            e("", Kind::Dir, 0, 1),
            e("a", Kind::File, 3, 5),
            e("d", Kind::Dir, 0, 1),
            e("d/x", Kind::File, 1, 1),
            e("old", Kind::File, 1, 1),
        ];
        let p = make_plan(&src, &dst, &opts()).unwrap();
        assert_eq!(p.removals.len(), 2);
        assert_eq!(p.removals[0].0.as_bytes(), b"d/x");
        assert_eq!(p.deletions.len(), 1);
        assert_eq!(p.steps[0].change.code(), ">f.s.......");
        // 3 bytes: less than one block, nothing a delta could reuse.
        assert_eq!(p.steps[0].action, Action::Transfer { delta: false });
        let mut dst = dst;
        dst[1] = e("a", Kind::File, 4096, 5);
        let p = make_plan(&src, &dst, &opts()).unwrap();
        assert_eq!(p.steps[0].action, Action::Transfer { delta: true });
    }

    #[test]
    fn guards() {
        let src = vec![e("", Kind::Dir, 0, 1)];
        let dst = vec![e("", Kind::Dir, 0, 1), e("a", Kind::File, 3, 5)];
        assert!(make_plan(&src, &dst, &opts()).is_err());
        let mut o = opts();
        o.allow_empty_source = true;
        assert!(make_plan(&src, &dst, &o).is_ok());
        let src = vec![e("", Kind::Dir, 0, 1), e("b", Kind::File, 1, 1)];
        let mut o = opts();
        o.max_delete = Some(0);
        assert!(make_plan(&src, &dst, &o).is_err());
        let mut o = opts();
        o.sender_scan_errors = 1;
        assert!(make_plan(&src, &dst, &o).unwrap().deletions.is_empty());
    }
}
