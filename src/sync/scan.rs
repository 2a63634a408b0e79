//! Scanning a tree into a manifest, with gitignore-style exclusions.
//!
//! The walk (our own, over `getdents64` and `fstatat` through rustix: see
//! [`Walker::walk`] for why not walkdir or std's `read_dir`) never follows symlinks
//! and yields entries in wire order (a depth-first pre-order with siblings sorted
//! by name bytes), so the manifest needs no sort afterwards. Excluded directories
//! are not descended into. The receiver's own temporary files (`.hasync-tmp.*`, left only by a
//! killed run) are reported separately so they can be cleaned up, never
//! synced or compared. Unreadable entries are collected as errors: a sender
//! with scan errors tells the receiver, which then skips deletions rather
//! than delete what it could not see.

use crate::sync::fsops::{SafeRoot, TreeRoot, is_temp_name};
use crate::tree::entries::Entries;
pub use crate::tree::excludes::Excludes;
use crate::tree::manifest::{Entry, Kind, Mtime};
use crate::tree::path::RelPath;
use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, RawDir, Stat, fstat, statat};
use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What a scan found.
#[derive(Default)]
pub struct Scan {
    pub entries: Entries,
    /// Leftover temporary files of an earlier, killed run.
    pub stale_temps: Vec<RelPath>,
    /// Paths that could not be read, with the reason.
    pub errors: Vec<(String, String)>,
    /// Special files (fifos, devices, sockets) that were skipped.
    pub skipped: Vec<RelPath>,
    /// Regular files with more than one name (each is mirrored as a file of its own).
    pub hard_links: Vec<RelPath>,
}

/// What a scan found besides its entries (which went to the caller's sink).
#[derive(Default)]
pub struct ScanRest {
    /// Leftover temporary files of an earlier, killed run.
    pub stale_temps: Vec<RelPath>,
    /// Paths that could not be read, with the reason.
    pub errors: Vec<(String, String)>,
    /// Special files (fifos, devices, sockets) that were skipped.
    pub skipped: Vec<RelPath>,
    /// Regular files with more than one name (each is mirrored as a file of its own).
    pub hard_links: Vec<RelPath>,
}

/// Scan `root` into a compact [`Entries`]. A missing root gives `Ok(None)`.
pub fn scan(root: &Path, excludes: &Excludes) -> std::io::Result<Option<Scan>> {
    scan_tree(&TreeRoot::Named(root.to_path_buf()), excludes, false)
}

/// Scan a session's root into a compact [`Entries`] (see [`scan_each`]).
pub fn scan_tree(
    root: &TreeRoot,
    excludes: &Excludes,
    one_file_system: bool,
) -> std::io::Result<Option<Scan>> {
    let mut entries = Entries::new();
    let mut full = None;
    let rest = scan_each(
        root,
        excludes,
        one_file_system,
        &mut |e| match entries.push(&e) {
            Ok(()) => true,
            Err(err) => {
                full = Some(err);
                false
            }
        },
    )?;
    if let Some(err) = full {
        return Err(std::io::Error::other(format!(
            "{}: {err}",
            crate::tree::path::escape_bytes(root.path().as_os_str().as_encoded_bytes())
        )));
    }
    Ok(rest.map(|r| Scan {
        entries,
        stale_temps: r.stale_temps,
        errors: r.errors,
        skipped: r.skipped,
        hard_links: r.hard_links,
    }))
}

/// A scan of a push's source started on a thread before the session needs it: a
/// push scans while its connection is set up (an SSH handshake and the peer's start
/// take longer than a walk of 20,000 files), so the manifest goes out right behind
/// `Open`. [`EarlyScan::take`] hands back what [`scan_tree`] would have found, if the
/// session is the one the scan was started for.
pub struct EarlyScan {
    root: std::path::PathBuf,
    excludes: Vec<String>,
    one_file_system: bool,
    handle: std::thread::JoinHandle<std::io::Result<Option<Scan>>>,
}

impl EarlyScan {
    /// Start scanning `root` as a session with `opts` would. `None` when the
    /// exclusions do not parse (the session reports that error itself).
    pub fn start(root: &Path, opts: &crate::wire::SessionOptions) -> Option<EarlyScan> {
        let excludes = Excludes::new(&opts.excludes).ok()?;
        let tree = TreeRoot::Named(root.to_path_buf());
        let one_file_system = opts.one_file_system;
        let handle = std::thread::Builder::new()
            .name("early-scan".into())
            .spawn(move || scan_tree(&tree, &excludes, one_file_system))
            .ok()?;
        Some(EarlyScan {
            root: root.to_path_buf(),
            excludes: opts.excludes.clone(),
            one_file_system,
            handle,
        })
    }

    /// The scan's result, if it was started for this root and these options (else
    /// `None`: the caller scans itself).
    pub fn take(
        self,
        root: &TreeRoot,
        opts: &crate::wire::SessionOptions,
    ) -> Option<std::io::Result<Option<Scan>>> {
        let same = matches!(root, TreeRoot::Named(p) if *p == self.root)
            && self.excludes == opts.excludes
            && self.one_file_system == opts.one_file_system;
        if !same {
            return None;
        }
        Some(
            self.handle
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the early scan thread panicked"))),
        )
    }
}

/// Scan `root`, handing each entry to `sink` in wire order (a receiver merges them
/// with the manifest as they come, keeping none: see `plan::Planner`); `sink`
/// returning false stops the walk. A missing root gives `Ok(None)`. With
/// `one_file_system` (rsync's `-x`), a directory on another file system than the
/// root's is listed but not entered. A confined root (a restricted serve's) is walked
/// from its descriptor, never by its path.
pub fn scan_each(
    root: &TreeRoot,
    excludes: &Excludes,
    one_file_system: bool,
    sink: &mut dyn FnMut(Entry) -> bool,
) -> std::io::Result<Option<ScanRest>> {
    let root = match root {
        TreeRoot::Named(p) => match open_root(p)? {
            Some(fd) => SafeRoot::from_fd(fd, p),
            None => return Ok(None),
        },
        TreeRoot::Confined { dir: Some(d), .. } => d.clone(),
        TreeRoot::Confined { dir: None, .. } => return Ok(None),
    };
    let st = fstat(root.fd())?;
    let mut w = Walker {
        root: &root,
        excludes,
        device: one_file_system.then_some(st.st_dev),
        out: ScanRest::default(),
        sink,
        stopped: false,
        buf: vec![MaybeUninit::uninit(); DIR_BUF],
        names: Vec::new(),
    };
    w.emit(entry(RelPath::root(), Kind::Dir, &st, Vec::new()));
    if !w.stopped {
        w.walk(root.fd(), &RelPath::root(), 0);
    }
    Ok(Some(w.out))
}

/// Opens the directory at `root` (not a symlink); `None` when it is missing.
fn open_root(root: &Path) -> std::io::Result<Option<OwnedFd>> {
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
    open_dir(CWD, root).map(Some)
}

/// Bytes of directory entries read per `getdents64` call.
const DIR_BUF: usize = 32 * 1024;
/// Below this depth a subdirectory is opened relative to its parent (whose
/// descriptor stays open meanwhile); deeper, by its path beneath the root's descriptor
/// (`openat2`, never through a symlink), so that
/// a pathologically deep tree cannot run out of descriptors.
const FD_DEPTH: usize = 64;

fn open_dir<Fd: AsFd, P: rustix::path::Arg>(at: Fd, path: P) -> std::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let path = path.into_c_str()?;
    Ok(crate::sync::fsops::open_reading(flags, |f| {
        rustix::fs::openat(at.as_fd(), &*path, f, Mode::empty())
    })?)
}

fn entry(path: RelPath, kind: Kind, st: &Stat, target: Vec<u8>) -> Entry {
    Entry {
        path,
        kind,
        size: if kind == Kind::File {
            st.st_size as u64
        } else {
            0
        },
        mtime: Mtime::from_stat(st.st_mtime, st.st_mtime_nsec as i64),
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        target,
        hash: None,
    }
}

/// The manifest kind of a file type; `None` for special files, which are skipped.
fn kind_of(ft: FileType) -> Option<Kind> {
    match ft {
        FileType::Directory => Some(Kind::Dir),
        FileType::RegularFile => Some(Kind::File),
        FileType::Symlink => Some(Kind::Symlink),
        _ => None,
    }
}

/// One scan's state: the output and buffers reused from directory to directory.
struct Walker<'a> {
    root: &'a SafeRoot,
    excludes: &'a Excludes,
    /// With `-x`: the root's device; directories of another are not entered.
    device: Option<u64>,
    out: ScanRest,
    sink: &'a mut dyn FnMut(Entry) -> bool,
    /// The sink asked to stop.
    stopped: bool,
    buf: Vec<MaybeUninit<u8>>,
    /// The current directory's child names, each followed by a NUL.
    names: Vec<u8>,
}

impl Walker<'_> {
    fn emit(&mut self, e: Entry) {
        if !self.stopped && !(self.sink)(e) {
            self.stopped = true;
        }
    }

    /// A path for messages: the root joined with `rel`.
    fn shown(&self, rel: &RelPath) -> String {
        self.full_path(rel).display().to_string()
    }

    /// The root joined with `rel`, byte for byte (any name, UTF-8 or not).
    fn full_path(&self, rel: &RelPath) -> std::path::PathBuf {
        let mut p = self.root.path().to_path_buf();
        if !rel.is_root() {
            p.push(std::ffi::OsStr::from_bytes(rel.as_bytes()));
        }
        p
    }

    /// Adds the entries under directory `dir` (relative path `rel`) to the output, in wire order.
    ///
    /// Each child is looked at relative to its directory (`fstatat` on the
    /// directory's descriptor), not by its full path: the kernel resolves one
    /// name instead of every component of the path, which is most of the cost of
    /// a scan of an unchanged tree (walkdir stats by full path). Names are read
    /// with `getdents64` into one reused buffer and kept in one byte array per
    /// directory, with no allocation per name, and subdirectories are opened
    /// relative to their parent: a scan of the 20,000-file bench tree takes 58 ms
    /// instead of 75 ms with std's `read_dir` (19 ms of user time down to 9).
    /// A directory's children are all looked at before any subdirectory is entered.
    fn walk(&mut self, dir: &OwnedFd, rel: &RelPath, depth: usize) {
        // (start in `names`, length without the NUL, type from the directory)
        let mut spans: Vec<(usize, usize, FileType)> = Vec::new();
        self.names.clear();
        let mut rd = RawDir::new(dir, &mut self.buf);
        while let Some(d) = rd.next() {
            match d {
                Ok(d) => {
                    let name = d.file_name().to_bytes_with_nul();
                    if name == b".\0" || name == b"..\0" {
                        continue;
                    }
                    spans.push((self.names.len(), name.len() - 1, d.file_type()));
                    self.names.extend_from_slice(name);
                }
                Err(e) => {
                    let at = self.shown(rel);
                    self.out
                        .errors
                        .push((at, std::io::Error::from(e).to_string()));
                    break;
                }
            }
        }
        let names = std::mem::take(&mut self.names);
        let name_of = |&(start, len, _): &(usize, usize, FileType)| &names[start..start + len];
        spans.sort_unstable_by(|a, b| name_of(a).cmp(name_of(b)));
        // Look at every child now; enter the subdirectories after.
        let mut children: Vec<(Entry, Option<usize>)> = Vec::with_capacity(spans.len());
        for (i, span) in spans.iter().enumerate() {
            let name = name_of(span);
            let cname = CStr::from_bytes_with_nul(&names[span.0..=span.0 + span.1])
                .expect("a NUL-terminated name without inner NUL");
            let child = rel.join(name);
            if child.as_bytes().len() > crate::tree::path::MAX_PATH {
                self.out.errors.push((
                    self.shown(&child),
                    crate::tree::path::PathError::TooLong.to_string(),
                ));
                continue;
            }
            // The directory's type is enough to skip or exclude; a file system
            // that does not report it costs a stat first.
            let mut st = None;
            let ft = match span.2 {
                FileType::Unknown => match statat(dir, cname, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(s) => {
                        let ft = FileType::from_raw_mode(s.st_mode);
                        st = Some(s);
                        ft
                    }
                    Err(e) => {
                        self.out
                            .errors
                            .push((child.to_string(), std::io::Error::from(e).to_string()));
                        continue;
                    }
                },
                ft => ft,
            };
            let is_dir = ft == FileType::Directory;
            if is_temp_name(name) && !is_dir {
                self.out.stale_temps.push(child);
                continue;
            }
            if self.excludes.excluded(&child, is_dir) {
                continue;
            }
            if kind_of(ft).is_none() {
                self.out.skipped.push(child);
                continue;
            }
            let st = match st.map_or_else(|| statat(dir, cname, AtFlags::SYMLINK_NOFOLLOW), Ok) {
                Ok(s) => s,
                Err(e) => {
                    self.out
                        .errors
                        .push((child.to_string(), std::io::Error::from(e).to_string()));
                    continue;
                }
            };
            // What the stat saw is what we describe (the name may have been
            // replaced by another kind since the directory was read).
            let now = FileType::from_raw_mode(st.st_mode);
            if now != ft && self.excludes.excluded(&child, now == FileType::Directory) {
                continue;
            }
            let Some(kind) = kind_of(now) else {
                self.out.skipped.push(child);
                continue;
            };
            let is_dir = kind == Kind::Dir;
            if kind == Kind::File && st.st_nlink > 1 {
                self.out.hard_links.push(child.clone());
            }
            let target = if kind == Kind::Symlink {
                match rustix::fs::readlinkat(dir, cname, Vec::new()) {
                    Ok(t) => t.into_bytes(),
                    Err(e) => {
                        self.out
                            .errors
                            .push((child.to_string(), std::io::Error::from(e).to_string()));
                        continue;
                    }
                }
            } else {
                Vec::new()
            };
            // A directory not entered (another file system under -x) is still listed.
            let enter = is_dir && self.device.is_none_or(|d| d == st.st_dev);
            children.push((entry(child, kind, &st, target), enter.then_some(i)));
        }
        for (e, sub) in children {
            if self.stopped {
                break;
            }
            let Some(i) = sub else {
                self.emit(e);
                continue;
            };
            let sub_rel = e.path.clone();
            self.emit(e);
            let span = &spans[i];
            let opened = if depth < FD_DEPTH {
                let cname = CStr::from_bytes_with_nul(&names[span.0..=span.0 + span.1])
                    .expect("a NUL-terminated name without inner NUL");
                open_dir(dir, cname).map(std::sync::Arc::new)
            } else {
                self.root.open_dir(&sub_rel)
            };
            match opened {
                Ok(fd) => self.walk(&fd, &sub_rel, depth + 1),
                Err(e) => self.out.errors.push((self.shown(&sub_rel), e.to_string())),
            }
        }
        // Give the name buffer back for the next directory (keeps its capacity).
        if self.names.capacity() < names.capacity() {
            self.names = names;
        }
    }
}

/// BLAKE3 of a file's content, read beneath `root` without following symlinks.
pub fn hash_file(root: &crate::sync::fsops::SafeRoot, rel: &RelPath) -> std::io::Result<[u8; 32]> {
    let f = root.open_file(rel)?;
    let mut h = blake3::Hasher::new();
    h.update_reader(f)?;
    Ok(*h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_early_scan_serves_only_the_session_it_was_started_for() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/a"), b"a").unwrap();
        std::fs::write(d.path().join("b.log"), b"b").unwrap();
        let opts = crate::wire::SessionOptions::default();
        let root = TreeRoot::Named(d.path().to_path_buf());
        let early = EarlyScan::start(d.path(), &opts).unwrap();
        let got = early.take(&root, &opts).unwrap().unwrap().unwrap();
        let want = scan_tree(&root, &Excludes::new(&[]).unwrap(), false)
            .unwrap()
            .unwrap();
        assert_eq!(got.entries.len(), 4);
        assert_eq!(got.entries.len(), want.entries.len());
        // Another root, other exclusions, -x: not this scan, the session scans itself.
        let other = TreeRoot::Named(d.path().join("sub"));
        assert!(
            EarlyScan::start(d.path(), &opts)
                .unwrap()
                .take(&other, &opts)
                .is_none()
        );
        let excl = crate::wire::SessionOptions {
            excludes: vec!["*.log".into()],
            ..Default::default()
        };
        assert!(
            EarlyScan::start(d.path(), &opts)
                .unwrap()
                .take(&root, &excl)
                .is_none()
        );
        let x = crate::wire::SessionOptions {
            one_file_system: true,
            ..Default::default()
        };
        assert!(
            EarlyScan::start(d.path(), &opts)
                .unwrap()
                .take(&root, &x)
                .is_none()
        );
        // Exclusions that do not parse start nothing (the session reports them).
        let bad = crate::wire::SessionOptions {
            excludes: vec!["x".repeat(100_000)],
            ..Default::default()
        };
        assert!(Excludes::new(&bad.excludes).is_err());
        assert!(EarlyScan::start(d.path(), &bad).is_none());
    }

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
    fn a_tree_deeper_than_the_descriptor_depth_is_scanned_whole() {
        let d = tempfile::tempdir().unwrap();
        let mut p = d.path().to_path_buf();
        for i in 0..FD_DEPTH + 20 {
            p.push(format!("d{i}"));
        }
        // A name that is not UTF-8, below the depth where directories are opened by path.
        p.push(std::ffi::OsStr::from_bytes(b"\xff\xfe"));
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("leaf"), b"x").unwrap();
        let s = scan(d.path(), &ex(&[])).unwrap().unwrap();
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        assert_eq!(s.entries.len(), 1 + FD_DEPTH + 20 + 1 + 1);
        let entries: Vec<Entry> = s.entries.iter().collect();
        crate::tree::manifest::validate(&entries).unwrap();
        assert!(entries.last().unwrap().path.as_bytes().ends_with(b"/leaf"));
    }

    #[test]
    fn special_files_are_skipped_and_temp_files_reported() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let temp = crate::sync::fsops::temp_name(b"x");
        std::fs::write(d.path().join(std::ffi::OsStr::from_bytes(&temp)), b"t").unwrap();
        std::fs::write(d.path().join("x"), b"x").unwrap();
        let s = scan(d.path(), &ex(&[])).unwrap().unwrap();
        assert_eq!(s.skipped, vec![r("fifo")]);
        assert_eq!(s.stale_temps.len(), 1);
        assert_eq!(s.entries.len(), 2, "the root and x");
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
        let entries: Vec<Entry> = s.entries.iter().collect();
        crate::tree::manifest::validate(&entries).unwrap();
        let link = entries.iter().find(|e| e.path == r("link")).unwrap();
        assert_eq!(link.kind, Kind::Symlink);
        assert_eq!(link.target, b"/etc");
    }
}
