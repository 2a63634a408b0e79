//! The manifest: what one side's tree holds, entry by entry.
//!
//! The sender scans its root and sends the manifest; the receiver checks it
//! with [`validate`] before planning anything. A valid manifest is sorted so
//! that every directory comes before what it contains, has no duplicates,
//! starts with the root directory, and nothing in it lies beneath a symlink
//! or a file (the "`d -> /outside` then `d/file`" attack is refused here,
//! before the file system layer would refuse it again).

use crate::tree::path::RelPath;

/// Kind of a tree entry. Other file types (devices, fifos, sockets) are skipped by the scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

impl Kind {
    pub fn code(self) -> u8 {
        match self {
            Kind::File => 0,
            Kind::Dir => 1,
            Kind::Symlink => 2,
        }
    }
    pub fn from_code(c: u8) -> Option<Kind> {
        match c {
            0 => Some(Kind::File),
            1 => Some(Kind::Dir),
            2 => Some(Kind::Symlink),
            _ => None,
        }
    }
}

/// One file, directory or symlink, with the metadata that is mirrored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: RelPath,
    pub kind: Kind,
    /// Size in bytes (files only; 0 otherwise).
    pub size: u64,
    /// Modification time (any the file system can hold, see [`Mtime`]).
    pub mtime: Mtime,
    /// Permission bits (07777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Symlink target, verbatim (symlinks only).
    pub target: Vec<u8>,
    /// BLAKE3 of the content, when the sender was asked for checksums.
    pub hash: Option<[u8; 32]>,
}

/// A modification time: whole seconds since the Unix epoch (any `i64`, as the
/// kernel's `timespec` holds them) and nanoseconds within the second.
///
/// Not nanoseconds in one `i64`: that only reaches 1677-09-21 to 2262-04-11, and
/// `secs * 1_000_000_000` on a file dated 2300 overflowed (a debug build panicked,
/// a release build wrapped it to 1901). The derived order is chronological.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mtime {
    pub secs: i64,
    /// Always below 1,000,000,000.
    nanos: u32,
}

impl Mtime {
    pub const NANOS_PER_SEC: u32 = 1_000_000_000;

    /// A time from seconds and nanoseconds; `None` unless `0 <= nanos < 1e9`.
    pub fn new(secs: i64, nanos: i64) -> Option<Mtime> {
        let nanos = u32::try_from(nanos).ok()?;
        (nanos < Self::NANOS_PER_SEC).then_some(Mtime { secs, nanos })
    }

    /// A `stat` result's `st_mtime` and `st_mtime_nsec` (the kernel keeps the
    /// nanoseconds in range; anything else is clamped into it).
    pub fn from_stat(secs: i64, nsec: i64) -> Mtime {
        Mtime {
            secs,
            nanos: nsec.clamp(0, i64::from(Self::NANOS_PER_SEC) - 1) as u32,
        }
    }

    /// The time of a nanosecond count (the fixed-width wire form of protocol < 2.2).
    pub fn from_nanos(ns: i64) -> Mtime {
        let per = i64::from(Self::NANOS_PER_SEC);
        Mtime {
            secs: ns.div_euclid(per),
            nanos: ns.rem_euclid(per) as u32,
        }
    }

    pub fn nanos(self) -> u32 {
        self.nanos
    }

    /// Nanoseconds since the epoch, if they fit an `i64` (1677-09-21 to 2262-04-11).
    pub fn as_nanos(self) -> Option<i64> {
        // In i128: near i64::MIN the floor seconds times 1e9 passes the bound before
        // the nanoseconds bring the sum back in range.
        let ns = i128::from(self.secs) * i128::from(Self::NANOS_PER_SEC) + i128::from(self.nanos);
        i64::try_from(ns).ok()
    }

    /// The nearest time that [`Mtime::as_nanos`] can express: what a peer of a
    /// protocol older than 2.4 is sent (with a warning) for a time outside its range.
    pub fn clamped_to_nanos(self) -> Mtime {
        Mtime::from_nanos(self.as_nanos().unwrap_or(if self.secs < 0 {
            i64::MIN
        } else {
            i64::MAX
        }))
    }
}

impl std::fmt::Display for Mtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match chrono::DateTime::from_timestamp(self.secs, self.nanos) {
            Some(t) => write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%S%.fZ")),
            None => write!(f, "{}.{:09} s since 1970", self.secs, self.nanos),
        }
    }
}

/// Why a manifest from the peer was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest must start with the root directory")]
    NoRoot,
    #[error("manifest entry {0} is out of order or duplicated")]
    Order(RelPath),
    #[error("manifest entry {0} has no parent directory in the manifest")]
    NoParent(RelPath),
    #[error("manifest entry {0} lies beneath a symlink or a file")]
    BeneathNonDir(RelPath),
    #[error("manifest entry {0}: bad mode {1:o}")]
    Mode(RelPath, u32),
    #[error("manifest entry {0}: symlink target is empty or contains NUL")]
    Target(RelPath),
}

/// Sort order used on the wire: parents before children, siblings by name bytes,
/// that is comparing component by component (a depth-first pre-order). Computed as
/// a byte comparison where `/` sorts before every other byte: at the first byte
/// where the paths differ, a `/` (or the end) means that path's component ended
/// first, so it is the smaller one, as with components.
pub fn wire_order(a: &RelPath, b: &RelPath) -> std::cmp::Ordering {
    wire_order_bytes(a.as_bytes(), b.as_bytes())
}

/// Check a received manifest (see the module docs).
pub fn validate(entries: &[Entry]) -> Result<(), ManifestError> {
    if entries.is_empty() {
        return Err(ManifestError::NoRoot);
    }
    let mut v = Validator::default();
    entries.iter().try_for_each(|e| v.check(e))
}

/// [`validate`] one entry at a time, as a manifest arrives.
///
/// In wire order a directory's subtree is contiguous, so an entry's parent, if
/// present, is on the stack of the entries enclosing it: one pass, no map.
#[derive(Default)]
pub struct Validator {
    /// The path of the last entry: every entry enclosing it is a prefix of it.
    last: Vec<u8>,
    /// The entries enclosing the last one and itself, outermost first: the length
    /// of each one's path in `last`, and its kind (no allocation per entry).
    stack: Vec<(usize, Kind)>,
    started: bool,
}

impl Validator {
    /// Check the next entry of the manifest.
    pub fn check(&mut self, e: &Entry) -> Result<(), ManifestError> {
        if !self.started {
            if !e.path.is_root() || e.kind != Kind::Dir {
                return Err(ManifestError::NoRoot);
            }
            self.started = true;
            self.stack.push((0, Kind::Dir));
            return Ok(());
        }
        let path = e.path.as_bytes();
        if wire_order_bytes(&self.last, path) != std::cmp::Ordering::Less {
            return Err(ManifestError::Order(e.path.clone()));
        }
        if e.mode & !0o7777 != 0 {
            return Err(ManifestError::Mode(e.path.clone(), e.mode));
        }
        if e.kind == Kind::Symlink && (e.target.is_empty() || e.target.contains(&0)) {
            return Err(ManifestError::Target(e.path.clone()));
        }
        let parent = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => &path[..i],
            None => &path[..0],
        };
        while let Some(&(len, _)) = self.stack.last()
            && !encloses(&self.last[..len], parent)
        {
            self.stack.pop();
        }
        match self.stack.last() {
            Some(&(len, Kind::Dir)) if &self.last[..len] == parent => {}
            Some(&(len, _)) if &self.last[..len] == parent => {
                return Err(ManifestError::BeneathNonDir(e.path.clone()));
            }
            _ => return Err(ManifestError::NoParent(e.path.clone())),
        }
        // What is left on the stack encloses `path`: its paths are prefixes of it too.
        self.last.clear();
        self.last.extend_from_slice(path);
        self.stack.push((path.len(), e.kind));
        Ok(())
    }
}

/// How many leading bytes `a` and `b` have in common.
pub(crate) fn shared_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// [`wire_order`] of raw path bytes.
fn wire_order_bytes(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let n = shared_prefix(a, b);
    let key = |s: &[u8]| {
        s.get(n)
            .map(|&c| if c == b'/' { 0 } else { u16::from(c) + 1 })
    };
    key(a).cmp(&key(b))
}

/// Whether `outer` is `inner` or one of its ancestors (the root encloses all).
fn encloses(outer: &[u8], inner: &[u8]) -> bool {
    outer.is_empty()
        || inner == outer
        || (inner.len() > outer.len() && inner.starts_with(outer) && inner[outer.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(p: &str, kind: Kind) -> Entry {
        Entry {
            path: RelPath::from_wire(p.as_bytes()).unwrap(),
            kind,
            size: 0,
            mtime: Mtime::default(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            target: if kind == Kind::Symlink {
                b"/outside".to_vec()
            } else {
                vec![]
            },
            hash: None,
        }
    }

    #[test]
    fn accepts_a_tree() {
        let m = vec![
            e("", Kind::Dir),
            e("a", Kind::Dir),
            e("a/b", Kind::File),
            e("a-b", Kind::File),
            e("l", Kind::Symlink),
        ];
        validate(&m).unwrap();
    }

    #[test]
    fn refuses_entries_beneath_a_symlink() {
        let m = vec![
            e("", Kind::Dir),
            e("d", Kind::Symlink),
            e("d/file", Kind::File),
        ];
        assert!(matches!(validate(&m), Err(ManifestError::BeneathNonDir(_))));
    }

    #[test]
    fn refuses_disorder_duplicates_and_orphans() {
        assert!(validate(&[e("", Kind::Dir), e("b", Kind::File), e("a", Kind::File)]).is_err());
        assert!(validate(&[e("", Kind::Dir), e("a", Kind::File), e("a", Kind::File)]).is_err());
        assert!(validate(&[e("", Kind::Dir), e("x/y", Kind::File)]).is_err());
        assert!(validate(&[e("a", Kind::Dir)]).is_err());
    }

    #[test]
    fn order_is_preorder() {
        let a = RelPath::from_wire(b"a/b").unwrap();
        let b = RelPath::from_wire(b"a-b").unwrap();
        assert_eq!(wire_order(&a, &b), std::cmp::Ordering::Less);
    }

    /// The byte comparison gives exactly the component-by-component order of its
    /// definition, on every pair of paths built from names that are prefixes of
    /// each other and sort around `/` (`-` and `.` below it, `0` and `a` above).
    #[test]
    fn order_is_componentwise_on_every_pair() {
        let by_components =
            |a: &[u8], b: &[u8]| a.split(|&c| c == b'/').cmp(b.split(|&c| c == b'/'));
        let names: [&[u8]; 7] = [b"a", b"a-", b"a.b", b"a0", b"aa", b"b", b"\xff"];
        let mut paths: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..3 {
            let mut next = Vec::new();
            for p in &paths {
                for n in names {
                    let mut q = p.clone();
                    if !q.is_empty() {
                        q.push(b'/');
                    }
                    q.extend_from_slice(n);
                    next.push(q);
                }
            }
            paths.extend(next);
            paths.sort();
            paths.dedup();
        }
        assert!(paths.len() > 300);
        for a in &paths {
            for b in &paths {
                let (ra, rb) = (
                    RelPath::from_wire(a).unwrap(),
                    RelPath::from_wire(b).unwrap(),
                );
                assert_eq!(wire_order(&ra, &rb), by_components(a, b), "{ra} vs {rb}");
            }
        }
    }

    #[test]
    fn an_entry_beneath_a_file_or_after_its_subtree_closed_is_refused() {
        let ok = [
            e("", Kind::Dir),
            e("a", Kind::Dir),
            e("a/b", Kind::Dir),
            e("a/b/c", Kind::File),
            e("a/d", Kind::File),
            e("e", Kind::File),
        ];
        validate(&ok).unwrap();
        let under_file = [e("", Kind::Dir), e("f", Kind::File), e("f/x", Kind::File)];
        assert!(matches!(
            validate(&under_file),
            Err(ManifestError::BeneathNonDir(_))
        ));
        // "a/b" closed when "a/d" came: "a/b/z" after it is out of order.
        let reopened = [
            e("", Kind::Dir),
            e("a", Kind::Dir),
            e("a/b", Kind::Dir),
            e("a/d", Kind::File),
            e("a/b/z", Kind::File),
        ];
        assert!(validate(&reopened).is_err());
        let orphan = [e("", Kind::Dir), e("a", Kind::Dir), e("a/b/c", Kind::File)];
        assert!(matches!(validate(&orphan), Err(ManifestError::NoParent(_))));
    }
}
