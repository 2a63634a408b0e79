//! Resuming a big file that a killed or cut-off run left half-received.
//!
//! A new file of at least [`RESUME_MIN`] bytes is written into a named temp file
//! (`.hasync-tmp.<name>.<random>`, in its final directory) rather than an anonymous
//! one, and when the connection is lost in the middle of it, the temp file is kept
//! (see `transfers::run`) instead of removed. Such a file is the receiver's private
//! partial place: it is never under the final name, and the scans never mirror,
//! compare or delete it as an entry (temp names are reported apart, as stale).
//!
//! The next run's receiver finds it among the stale temps: if the same file is to be
//! fetched again as a new file, the partial is its delta basis (the sender is sent
//! its signature, so only what is missing or different travels, and the result is
//! checked by BLAKE3 like any file); every kept partial is removed once the run's
//! files are installed. A partial older than [`PARTIAL_MAX_AGE`], or smaller than a
//! block worth the signature, is removed like any stale temp.

use crate::sync::fsops::{SafeRoot, TEMP_PREFIX};
use crate::tree::path::RelPath;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// New files at least this big are written under a name that survives a cut.
pub const RESUME_MIN: u64 = 4 << 20;
/// Partials older than this are removed, not resumed.
pub const PARTIAL_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// The smallest partial worth its signature.
const PARTIAL_MIN: u64 = 1 << 20;
/// How much of the final name a temp name keeps (`fsops::temp_name`).
const NAME_KEPT: usize = 200;

/// Kept partials: the final path of a file -> the temp file holding its first part.
#[derive(Default)]
pub struct Partials(HashMap<RelPath, RelPath>);

impl Partials {
    /// Sort the stale temps of our scan into partials worth resuming (the biggest
    /// per final name) and the rest, to remove.
    pub fn split(safe: &SafeRoot, stale: Vec<RelPath>) -> (Partials, Vec<RelPath>) {
        let mut best: HashMap<RelPath, (u64, RelPath)> = HashMap::new();
        let mut remove = Vec::new();
        for t in stale {
            let Some(target) = final_path(&t) else {
                remove.push(t);
                continue;
            };
            let size = safe
                .open_file(&t)
                .and_then(|f| f.metadata())
                .ok()
                .filter(|m| {
                    let fresh = m
                        .modified()
                        .ok()
                        .and_then(|at| SystemTime::now().duration_since(at).ok())
                        .is_some_and(|age| age < PARTIAL_MAX_AGE);
                    fresh && m.len() >= PARTIAL_MIN
                });
            let Some(m) = size else {
                remove.push(t);
                continue;
            };
            match best.get(&target) {
                Some((n, _)) if *n >= m.len() => remove.push(t),
                _ => {
                    if let Some((_, old)) = best.insert(target, (m.len(), t)) {
                        remove.push(old);
                    }
                }
            }
        }
        let kept = best.into_iter().map(|(k, (_, t))| (k, t)).collect();
        (Partials(kept), remove)
    }

    /// The partial of the file at `path`, if one was kept.
    pub fn get(&self, path: &RelPath) -> Option<&RelPath> {
        self.0.get(path)
    }

    /// Every kept partial (to remove once the run's files are installed).
    pub fn paths(&self) -> Vec<RelPath> {
        self.0.values().cloned().collect()
    }
}

/// The final path a temp file `.hasync-tmp.<name>.<16 hex>` was written for; `None`
/// when the name was cut (too long to tell) or is not of that form.
fn final_path(temp: &RelPath) -> Option<RelPath> {
    let (dir, name) = temp.split_last()?;
    let rest = name.strip_prefix(TEMP_PREFIX)?;
    if rest.len() < 18 || rest[rest.len() - 17] != b'.' {
        return None;
    }
    let (base, suffix) = rest.split_at(rest.len() - 17);
    if base.is_empty() || base.len() >= NAME_KEPT || !suffix[1..].iter().all(u8::is_ascii_hexdigit)
    {
        return None;
    }
    Some(dir.join(base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_map_back_to_their_file() {
        let t = RelPath::from_wire(b"a/b/.hasync-tmp.big.bin.0123456789abcdef").unwrap();
        assert_eq!(
            final_path(&t).unwrap(),
            RelPath::from_wire(b"a/b/big.bin").unwrap()
        );
        let t = RelPath::from_wire(b".hasync-tmp.x.0123456789abcdef").unwrap();
        assert_eq!(final_path(&t).unwrap(), RelPath::from_wire(b"x").unwrap());
        for bad in [
            &b".hasync-tmp.x"[..],
            b".hasync-tmp..0123456789abcdef",
            b".hasync-tmp.x.0123456789abcdeg",
        ] {
            assert!(final_path(&RelPath::from_wire(bad).unwrap()).is_none());
        }
        let long = [
            b".hasync-tmp.".to_vec(),
            vec![b'n'; 200],
            b".0123456789abcdef".to_vec(),
        ]
        .concat();
        assert!(
            final_path(&RelPath::from_wire(&long).unwrap()).is_none(),
            "a cut name"
        );
    }
}
