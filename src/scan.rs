//! Scanning a tree into a manifest, with gitignore-style exclusions.
//!
//! The walk (our own, over std's `read_dir`: see [`walk`] for why not walkdir) never
//! follows symlinks and yields entries in wire order (a depth-first pre-order with
//! siblings sorted by name bytes), so the manifest needs no sort afterwards. Excluded directories are not descended
//! into. The receiver's own temporary files (`.hasync-tmp.*`, left only by a
//! killed run) are reported separately so they can be cleaned up, never
//! synced or compared. Unreadable entries are collected as errors: a sender
//! with scan errors tells the receiver, which then skips deletions rather
//! than delete what it could not see.

use crate::fsops::is_temp_name;
use crate::manifest::{Entry, Kind};
use crate::path::RelPath;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// Compiled exclusion patterns.
pub struct Excludes {
    gi: Gitignore,
}

impl Excludes {
    /// Compile gitignore-style patterns (see README: `*.swp`, `cache/`, `/top-only`, `**/tmp`, `!keep.me`).
    pub fn new(patterns: &[String]) -> Result<Excludes, String> {
        let mut b = GitignoreBuilder::new("/");
        for p in patterns {
            b.add_line(None, p)
                .map_err(|e| format!("bad exclude pattern {p:?}: {e}"))?;
        }
        Ok(Excludes {
            gi: b
                .build()
                .map_err(|e| format!("bad exclude patterns: {e}"))?,
        })
    }

    /// Whether a relative path is excluded.
    pub fn excluded(&self, rel: &RelPath, is_dir: bool) -> bool {
        if rel.is_root() {
            return false;
        }
        // Matched against "/<rel>" so that anchored patterns ("/top") work relative to the sync root.
        let mut abs = b"/".to_vec();
        abs.extend_from_slice(rel.as_bytes());
        self.gi
            .matched(Path::new(std::ffi::OsStr::from_bytes(&abs)), is_dir)
            .is_ignore()
    }
}

/// What a scan found.
#[derive(Default)]
pub struct Scan {
    pub entries: Vec<Entry>,
    /// Leftover temporary files of an earlier, killed run.
    pub stale_temps: Vec<RelPath>,
    /// Paths that could not be read, with the reason.
    pub errors: Vec<(String, String)>,
    /// Special files (fifos, devices, sockets) that were skipped.
    pub skipped: Vec<RelPath>,
}

/// Scan `root`. A missing root gives `Ok(None)`.
pub fn scan(root: &Path, excludes: &Excludes) -> std::io::Result<Option<Scan>> {
    match std::fs::symlink_metadata(root) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
        Ok(m) if !m.is_dir() => {
            return Err(std::io::Error::other(format!(
                "{} is not a directory",
                root.display()
            )));
        }
        Ok(_) => {}
    }
    let mut out = Scan::default();
    let md = std::fs::metadata(root)?;
    out.entries
        .push(entry(RelPath::root(), Kind::Dir, &md, Vec::new()));
    walk(root, &RelPath::root(), excludes, &mut out);
    Ok(Some(out))
}

fn entry(path: RelPath, kind: Kind, md: &std::fs::Metadata, target: Vec<u8>) -> Entry {
    Entry {
        path,
        kind,
        size: if kind == Kind::File { md.len() } else { 0 },
        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        target,
        hash: None,
    }
}

/// Adds the entries under directory `dir` (relative path `rel`) to `out`, in wire order.
///
/// Each child is looked at relative to its directory (`fstatat` on the directory's fd,
/// which is what std's `DirEntry::metadata` does), not by its full path: the kernel
/// resolves one name instead of every component of the path, which is most of the cost
/// of a scan of an unchanged tree. A directory's children are all looked at before any
/// subdirectory is entered, so one directory is open at a time, whatever the depth.
fn walk(dir: &Path, rel: &RelPath, excludes: &Excludes, out: &mut Scan) {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            out.errors.push((dir.display().to_string(), e.to_string()));
            return;
        }
    };
    let mut dents = Vec::new();
    for d in rd {
        match d {
            Ok(d) => dents.push((d.file_name(), d)),
            Err(e) => out.errors.push((dir.display().to_string(), e.to_string())),
        }
    }
    dents.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    // Look at every child now; enter the subdirectories after (the directory is closed).
    let mut children: Vec<(Entry, Option<std::path::PathBuf>)> = Vec::with_capacity(dents.len());
    for (name, dent) in dents {
        let child = rel.join(name.as_bytes());
        if child.as_bytes().len() > crate::path::MAX_PATH {
            out.errors.push((
                dent.path().display().to_string(),
                crate::path::PathError::TooLong.to_string(),
            ));
            continue;
        }
        let ft = match dent.file_type() {
            Ok(ft) => ft,
            Err(e) => {
                out.errors.push((child.to_string(), e.to_string()));
                continue;
            }
        };
        if is_temp_name(name.as_bytes()) && !ft.is_dir() {
            out.stale_temps.push(child);
            continue;
        }
        if excludes.excluded(&child, ft.is_dir()) {
            continue;
        }
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_symlink() {
            Kind::Symlink
        } else {
            if ft.is_fifo() || ft.is_socket() || ft.is_block_device() || ft.is_char_device() {
                out.skipped.push(child);
            }
            continue;
        };
        let md = match dent.metadata() {
            Ok(m) => m,
            Err(e) => {
                out.errors.push((child.to_string(), e.to_string()));
                continue;
            }
        };
        let target = if kind == Kind::Symlink {
            match std::fs::read_link(dent.path()) {
                Ok(t) => t.into_os_string().as_bytes().to_vec(),
                Err(e) => {
                    out.errors.push((child.to_string(), e.to_string()));
                    continue;
                }
            }
        } else {
            Vec::new()
        };
        let sub = (kind == Kind::Dir).then(|| dent.path());
        children.push((entry(child, kind, &md, target), sub));
    }
    for (e, sub) in children {
        let sub_rel = sub.as_ref().map(|_| e.path.clone());
        out.entries.push(e);
        if let (Some(path), Some(r)) = (sub, sub_rel) {
            walk(&path, &r, excludes, out);
        }
    }
}

/// BLAKE3 of a file's content, read beneath `root` without following symlinks.
pub fn hash_file(root: &crate::fsops::SafeRoot, rel: &RelPath) -> std::io::Result<[u8; 32]> {
    let f = root.open_file(rel)?;
    let mut h = blake3::Hasher::new();
    h.update_reader(f)?;
    Ok(*h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(p: &[&str]) -> Excludes {
        Excludes::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }
    fn r(s: &str) -> RelPath {
        RelPath::from_wire(s.as_bytes()).unwrap()
    }

    #[test]
    fn gitignore_semantics() {
        let e = ex(&[
            "*.swp",
            "cache/",
            "/top",
            "**/tmp",
            "logs/*.log",
            "!keep.swp",
        ]);
        assert!(e.excluded(&r("a/b.swp"), false));
        assert!(!e.excluded(&r("a/keep.swp"), false));
        assert!(e.excluded(&r("x/cache"), true));
        assert!(!e.excluded(&r("x/cache"), false));
        assert!(e.excluded(&r("top"), false));
        assert!(!e.excluded(&r("a/top"), false));
        assert!(e.excluded(&r("a/b/tmp"), true));
        assert!(e.excluded(&r("logs/x.log"), false));
        assert!(!e.excluded(&r("logs/sub/x.log"), false));
    }

    /// The Wazo profile's sounds job: each tenant's own monitor/ and recording/ only.
    #[test]
    fn wazo_tenant_excludes_are_anchored_one_level_down() {
        let e = ex(&["/*/monitor/", "/*/recording/"]);
        assert!(e.excluded(&r("t1/monitor"), true));
        assert!(e.excluded(&r("t2/recording"), true));
        assert!(!e.excluded(&r("t1/monitor"), false), "a file named monitor");
        assert!(!e.excluded(&r("monitor"), true), "the tenants dir itself");
        assert!(!e.excluded(&r("t1/playback/monitor"), true), "deeper down");
        assert!(!e.excluded(&r("t1/playback"), true));
        assert!(!e.excluded(&r("t1/playback/hello.wav"), false));
    }

    #[test]
    fn scan_is_in_wire_order() {
        let d = tempfile::tempdir().unwrap();
        for p in ["a/b", "a-b", "a/c/d", "b"] {
            std::fs::create_dir_all(d.path().join(p)).unwrap();
        }
        std::fs::write(d.path().join("a/file"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("link")).unwrap();
        let s = scan(d.path(), &ex(&[])).unwrap().unwrap();
        crate::manifest::validate(&s.entries).unwrap();
        let link = s.entries.iter().find(|e| e.path == r("link")).unwrap();
        assert_eq!(link.kind, Kind::Symlink);
        assert_eq!(link.target, b"/etc");
    }
}
