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

/// A planned action on source entry `idx`, with its itemized code.
#[derive(Debug, Clone)]
pub struct Step {
    pub idx: usize,
    pub action: Action,
    pub code: String,
}

#[derive(Debug, Default)]
pub struct Plan {
    /// Receiver entries in the way of an entry of another kind: removed first, deepest first.
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

fn flags(new: &Entry, old: &Entry, checksum: bool, owners: bool) -> String {
    let ty = match new.kind {
        Kind::File => 'f',
        Kind::Dir => 'd',
        Kind::Symlink => 'L',
    };
    let c = if checksum && new.kind == Kind::File && new.hash != old.hash {
        'c'
    } else {
        '.'
    };
    let c = if new.kind == Kind::Symlink && new.target != old.target {
        'c'
    } else {
        c
    };
    let s = if new.kind == Kind::File && new.size != old.size {
        's'
    } else {
        '.'
    };
    let t = if new.mtime_ns != old.mtime_ns {
        't'
    } else {
        '.'
    };
    let p = if new.kind != Kind::Symlink && new.mode != old.mode {
        'p'
    } else {
        '.'
    };
    let o = if owners && new.uid != old.uid {
        'o'
    } else {
        '.'
    };
    let g = if owners && new.gid != old.gid {
        'g'
    } else {
        '.'
    };
    format!("{ty}{c}{s}{t}{p}{o}{g}...")
}

fn new_code(kind: Kind) -> String {
    match kind {
        Kind::File => ">f+++++++++".into(),
        Kind::Dir => "cd+++++++++".into(),
        Kind::Symlink => "cL+++++++++".into(),
    }
}

/// Compare `source` (validated manifest, wire order) with `dest` (the receiver's scan, wire order).
/// `dest` file entries carry hashes when `checksum` is set and sizes matched.
pub fn make_plan(source: &[Entry], dest: &[Entry], opts: &PlanOptions) -> Result<Plan, GuardError> {
    let mut plan = Plan::default();
    let by_path: HashMap<&RelPath, &Entry> = dest.iter().map(|e| (&e.path, e)).collect();
    let mut in_source: HashSet<&RelPath> = HashSet::with_capacity(source.len());
    let mut removed_dirs: Vec<&RelPath> = Vec::new();

    for (idx, new) in source.iter().enumerate() {
        in_source.insert(&new.path);
        let old = by_path.get(&new.path).copied();
        let old = match old {
            Some(o) if o.kind != new.kind => {
                // Something of another kind is in the way: remove it (and, for a directory, its subtree).
                if o.kind == Kind::Dir {
                    let sub: Vec<_> = dest
                        .iter()
                        .filter(|d| d.path.starts_with(&o.path))
                        .collect();
                    for d in sub.iter().rev() {
                        plan.removals.push((d.path.clone(), d.kind));
                    }
                    removed_dirs.push(&o.path);
                } else {
                    plan.removals.push((o.path.clone(), o.kind));
                }
                None
            }
            o => o,
        };
        let Some(old) = old else {
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
                code: new_code(new.kind),
            });
            continue;
        };
        let meta_differs =
            new.mode != old.mode || (opts.owners && (new.uid != old.uid || new.gid != old.gid));
        match new.kind {
            Kind::Dir => {
                if meta_differs || new.mtime_ns != old.mtime_ns {
                    plan.dir_meta.push((idx, !meta_differs));
                    if meta_differs {
                        plan.steps.push(Step {
                            idx,
                            action: Action::Meta,
                            code: format!(".{}", flags(new, old, false, opts.owners)),
                        });
                    }
                }
            }
            Kind::File => {
                let same = if opts.checksum {
                    new.size == old.size && new.hash.is_some() && new.hash == old.hash
                } else {
                    new.size == old.size && new.mtime_ns == old.mtime_ns
                };
                if !same {
                    // An old copy smaller than one block has nothing a delta could reuse
                    // (only whole blocks are signed): send such files whole, and save
                    // the receiver reading it and the sender diffing against nothing.
                    let delta = old.size >= crate::sync::delta::block_size_for(old.size) as u64
                        && new.size > 0;
                    plan.steps.push(Step {
                        idx,
                        action: Action::Transfer { delta },
                        code: format!(">{}", flags(new, old, opts.checksum, opts.owners)),
                    });
                } else if meta_differs || new.mtime_ns != old.mtime_ns {
                    plan.steps.push(Step {
                        idx,
                        action: Action::Meta,
                        code: format!(".{}", flags(new, old, false, opts.owners)),
                    });
                }
            }
            Kind::Symlink => {
                if new.target != old.target {
                    plan.steps.push(Step {
                        idx,
                        action: Action::Symlink,
                        code: format!("c{}", flags(new, old, false, opts.owners)),
                    });
                } else if new.mtime_ns != old.mtime_ns
                    || (opts.owners && (new.uid != old.uid || new.gid != old.gid))
                {
                    plan.steps.push(Step {
                        idx,
                        action: Action::Meta,
                        code: format!(".{}", flags(new, old, false, opts.owners)),
                    });
                }
            }
        }
    }
    if opts.delete {
        // Reverse wire order lists children before their parents.
        for old in dest.iter().rev() {
            if old.path.is_root() || in_source.contains(&old.path) {
                continue;
            }
            if removed_dirs.iter().any(|d| old.path.starts_with(d)) {
                continue;
            }
            plan.deletions.push((old.path.clone(), old.kind));
        }
        let source_empty = source.len() <= 1;
        if source_empty && !plan.deletions.is_empty() && !opts.allow_empty_source {
            return Err(GuardError(format!(
                "the source is empty and --delete would remove all {} entries of the mirror; refusing (pass --allow-empty-source if this is really wanted)",
                plan.deletions.len()
            )));
        }
        if let Some(max) = opts.max_delete
            && plan.deletions.len() as u64 > max
        {
            return Err(GuardError(format!(
                "this run would delete {} entries, more than --max-delete {max}; refusing to change anything",
                plan.deletions.len()
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
    }
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

    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(p: &str, kind: Kind, size: u64, mtime: i64) -> Entry {
        Entry {
            path: RelPath::from_wire(p.as_bytes()).unwrap(),
            kind,
            size,
            mtime_ns: mtime,
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
        assert_eq!(p.steps[0].code, ">f.s.......");
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
