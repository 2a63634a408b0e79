//! Planning: what the receiver must do to make its tree equal the source's.
//!
//! [`make_plan`] compares the source manifest with the receiver's own scan and
//! returns a [`Plan`] without touching anything, so `--dry-run` prints exactly
//! what a real run would do. The checks that refuse a whole run (an empty
//! source about to wipe the mirror, `--max-delete`) are applied to the plan,
//! before anything is changed.

use crate::tree::manifest::{Entry, Kind};
use crate::tree::path::RelPath;
use foldhash::{HashMap, HashSet, HashSetExt};

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
    pub idx: usize,
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

/// Compare `source` (validated manifest, wire order) with `dest` (the receiver's scan, wire order).
/// `dest` file entries carry hashes when `checksum` is set and sizes matched.
/// Linear in the size of both: wire order keeps each subtree contiguous.
pub fn make_plan(source: &[Entry], dest: &[Entry], opts: &PlanOptions) -> Result<Plan, GuardError> {
    let mut plan = Plan::default();
    let by_path: HashMap<&RelPath, usize> =
        dest.iter().enumerate().map(|(i, e)| (&e.path, i)).collect();
    let mut in_source: HashSet<&RelPath> = HashSet::with_capacity(source.len());
    // Receiver entries already handled by a kind change (removed, or kept because
    // removing them was refused): never deleted a second time.
    let mut covered = vec![false; dest.len()];
    let may_delete = opts.delete && opts.sender_scan_errors == 0;
    for (idx, new) in source.iter().enumerate() {
        in_source.insert(&new.path);
        let old = match by_path.get(&new.path).copied() {
            Some(i) if dest[i].kind != new.kind => {
                if !make_way(&mut plan, dest, i, &mut covered, may_delete) {
                    plan.refused.push((idx, refusal(&dest[i].path, opts)));
                    continue;
                }
                None
            }
            o => o.map(|i| &dest[i]),
        };
        match old {
            None => plan_new(&mut plan, idx, new),
            Some(old) => plan_existing(&mut plan, idx, new, old, opts),
        }
    }
    if opts.delete {
        // Reverse wire order lists children before their parents.
        for (j, old) in dest.iter().enumerate().rev() {
            if !old.path.is_root() && !covered[j] && !in_source.contains(&old.path) {
                plan.deletions.push((old.path.clone(), old.kind));
            }
        }
        let source_empty = source.len() <= 1;
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
    if opts.sender_scan_errors > 0 && !plan.deletions.is_empty() {
        plan.deletions_skipped = Some(format!(
            "the sender could not read {} entries; skipping {} deletions on this run so nothing is deleted by mistake",
            opts.sender_scan_errors,
            plan.deletions.len()
        ));
        plan.deletions.clear();
    }
    plan_dir_meta(&mut plan, source);
    Ok(plan)
}

/// The receiver's entry `dest[i]` is of another kind than the source's: plan its
/// removal (a directory with everything beneath it, deepest first) and return true, or,
/// when it is a non-empty directory and deleting is not allowed, leave it and return
/// false. Either way its subtree is marked `covered`.
fn make_way(
    plan: &mut Plan,
    dest: &[Entry],
    i: usize,
    covered: &mut [bool],
    may_delete: bool,
) -> bool {
    let mut end = i + 1;
    if dest[i].kind == Kind::Dir {
        while end < dest.len() && dest[end].path.starts_with(&dest[i].path) {
            end += 1;
        }
    }
    covered[i..end].iter_mut().for_each(|c| *c = true);
    if end > i + 1 && !may_delete {
        return false;
    }
    for d in dest[i..end].iter().rev() {
        plan.removals.push((d.path.clone(), d.kind));
    }
    true
}

/// Why a non-empty directory was left in place of a source entry of another kind.
fn refusal(path: &RelPath, opts: &PlanOptions) -> String {
    if opts.delete {
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
fn plan_new(plan: &mut Plan, idx: usize, new: &Entry) {
    let action = match new.kind {
        Kind::Dir => Action::MkDir,
        Kind::File => Action::Transfer { delta: false },
        Kind::Symlink => Action::Symlink,
    };
    if new.kind == Kind::Dir {
        plan.dir_meta.push((idx, false));
    }
    plan.steps.push(Step {
        idx,
        action,
        change: Change::created(new.kind),
    });
}

/// A source entry whose receiver entry has the same kind.
fn plan_existing(plan: &mut Plan, idx: usize, new: &Entry, old: &Entry, opts: &PlanOptions) {
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
                plan.dir_meta.push((idx, !meta_differs));
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
fn plan_dir_meta(plan: &mut Plan, source: &[Entry]) {
    // Creating, replacing or deleting an entry changes its directory's mtime:
    // those directories get their metadata re-applied at the end too.
    let dir_index: HashMap<&RelPath, usize> = source
        .iter()
        .enumerate()
        .filter(|(_, e)| e.kind == Kind::Dir)
        .map(|(i, e)| (&e.path, i))
        .collect();
    let mut touched: Vec<RelPath> = plan
        .steps
        .iter()
        .filter(|s| s.action != Action::Meta)
        .filter_map(|s| source[s.idx].path.split_last().map(|(p, _)| p))
        .collect();
    touched.extend(
        plan.removals
            .iter()
            .chain(plan.deletions.iter())
            .filter_map(|(p, _)| p.split_last().map(|(d, _)| d)),
    );
    let mut seen: HashSet<usize> = plan.dir_meta.iter().map(|&(i, _)| i).collect();
    for d in touched {
        if let Some(&i) = dir_index.get(&d)
            && seen.insert(i)
        {
            // Not new and not planned: mode and owner match, only the mtime will differ.
            plan.dir_meta.push((i, true));
        }
    }
    // Directory metadata deepest first, so setting a parent's mtime comes after its children changed.
    plan.dir_meta
        .sort_by_key(|&(i, _)| std::cmp::Reverse(source[i].path.depth()));
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
