//! Committing verified files: make them durable, then rename them over their
//! final names, on an installer thread beside the receiver.
//!
//! The receiver hands each verified temp file to the [`Committer`] and goes on
//! rebuilding the next one. The installer thread takes every file queued so far
//! as one group (the files queued while it flushed the last one), makes
//! the whole group durable with one `syncfs` per file system it wrote to (one flush
//! per group instead of one `fsync` per file), then renames each file over its final name. So the disk
//! flush, the renames and the freeing of the old copies they replace run on the
//! second core while the receiver reads the network and writes the next files.
//! A file is only ever renamed after the flush that covers it; files not yet
//! renamed when a run fails are removed, so the old copy stays.

use crate::sync::fsops::{self, TempFile};
use crate::tree::path::RelPath;
use crate::tree::report::Item;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most files or bytes in one group.
const GROUP_FILES: usize = 512;
const GROUP_BYTES: u64 = 256 * 1024 * 1024;
/// Most files and bytes of verified temp files waiting for the installer: the
/// receiver waits when they are reached (bounds the temp space in use).
const QUEUED_FILES: u64 = 2 * GROUP_FILES as u64;
const QUEUED_BYTES: u64 = 2 * GROUP_BYTES;

/// A verified temp file waiting for its rename (or link).
struct Ready {
    dir: Arc<OwnedFd>,
    temp: Temp,
    final_name: Vec<u8>,
    item: Item,
    size: u64,
    /// An old file is expected under the final name (its inode is freed elsewhere).
    replaces: bool,
}

/// A named temp file, or an anonymous one (kept open until it is linked).
enum Temp {
    Named(Vec<u8>),
    Anonymous(std::fs::File),
}

impl Ready {
    /// Put the file in place: rename over the old file, or link a new one.
    /// Returns the old inode to free elsewhere, if one was replaced.
    fn install(&self) -> io::Result<Option<OwnedFd>> {
        match &self.temp {
            Temp::Named(n) if self.replaces => {
                fsops::rename_keeping_old(&self.dir, n, &self.final_name)
            }
            Temp::Named(n) => fsops::rename(&self.dir, n, &self.final_name).map(|()| None),
            Temp::Anonymous(f) => match fsops::link_anonymous(f, &self.dir, &self.final_name) {
                // Something took the name since the plan: link under a temp name, rename over.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let name = fsops::temp_name(&self.final_name);
                    fsops::link_anonymous(f, &self.dir, &name)?;
                    fsops::rename_keeping_old(&self.dir, &name, &self.final_name).inspect_err(
                        |_| {
                            let _ = fsops::remove(&self.dir, &name, false);
                        },
                    )
                }
                r => r.map(|()| None),
            },
        }
    }

    /// Remove a named temp file (the run failed, or the flush did); an anonymous
    /// one is freed when the `Ready` is dropped.
    fn discard(&self) {
        if let Temp::Named(n) = &self.temp {
            let _ = fsops::remove(&self.dir, n, false);
        }
    }
}

/// Counts of files and bytes handed to the installer and not yet installed.
#[derive(Default)]
struct Queued {
    files: AtomicU64,
    bytes: AtomicU64,
}

/// The receiver's handle on the installer thread.
pub struct Committer {
    tx: Option<mpsc::Sender<Ready>>,
    done: mpsc::Receiver<Item>,
    queued: Arc<Queued>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub fsync: bool,
}

impl Committer {
    /// Start the installer; the old inodes it replaces go to `release` to be freed.
    pub fn new(fsync: bool, release: mpsc::Sender<OwnedFd>) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let queued = Arc::new(Queued::default());
        let stop = Arc::new(AtomicBool::new(false));
        let installer = Installer {
            fsync,
            rx,
            done: done_tx,
            queued: queued.clone(),
            stop: stop.clone(),
            release,
        };
        let thread = std::thread::Builder::new()
            .name("installer".into())
            .spawn(move || installer.run())?;
        Ok(Committer {
            tx: Some(tx),
            done,
            queued,
            stop,
            thread: Some(thread),
            fsync,
        })
    }

    /// Queue a verified file (`replaces`: the destination had a file by that name);
    /// returns the items of the files installed since the last call.
    pub fn push(
        &mut self,
        temp: TempFile,
        path: &RelPath,
        item: Item,
        size: u64,
        replaces: bool,
    ) -> Vec<Item> {
        let final_name = path
            .split_last()
            .map(|(_, n)| n.to_vec())
            .unwrap_or_default();
        let TempFile { dir, name, file } = temp;
        let temp = match name {
            Some(n) => {
                drop(file);
                Temp::Named(n)
            }
            None => Temp::Anonymous(file),
        };
        let ready = Ready {
            dir,
            temp,
            final_name,
            item,
            size,
            replaces,
        };
        self.queued.files.fetch_add(1, Ordering::SeqCst);
        self.queued.bytes.fetch_add(size, Ordering::SeqCst);
        let mut out = Vec::new();
        let sent = match &self.tx {
            Some(tx) => tx.send(ready),
            None => Err(mpsc::SendError(ready)),
        };
        if let Err(mpsc::SendError(r)) = sent {
            // The installer is gone (it panicked): this file cannot be installed.
            r.discard();
            let mut item = r.item;
            item.error = Some("cannot install: the installer thread stopped".into());
            out.push(item);
        }
        out.extend(self.done.try_iter());
        // Backpressure: wait for the installer while too much is queued.
        while self.queued.files.load(Ordering::SeqCst) > QUEUED_FILES
            || self.queued.bytes.load(Ordering::SeqCst) > QUEUED_BYTES
        {
            match self.done.recv() {
                Ok(it) => out.push(it),
                Err(_) => break,
            }
        }
        out
    }

    /// No more files will come: the installer flushes and installs what is
    /// queued without waiting for a fuller group.
    pub fn seal(&mut self) {
        self.tx = None;
    }

    /// Install every queued file and return their items.
    pub fn commit(&mut self) -> Vec<Item> {
        self.seal();
        let mut out: Vec<Item> = self.done.iter().collect();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            out.push(Item::warning(
                "the installer thread panicked; some files were not installed".into(),
            ));
        }
        out
    }

    /// Remove every file not installed yet (the run is failing).
    pub fn abandon(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.abandon();
    }
}

/// Groups of at most this many files are flushed file by file (`fsync`), bigger ones
/// with one `syncfs` per file system: a `syncfs` also writes out everything else dirty
/// on that file system (a source written just before the run, on the same disk, cost
/// a 1 GiB delta run 1.1-1.5 s), while a few `fsync`s flush only what we wrote. Many
/// small files (a first copy) make big groups, where one `syncfs` beats an `fsync` each.
const FSYNC_EACH: usize = 8;

/// Makes every file of `group` durable. A small group: one `fsync` per file (see
/// [`FSYNC_EACH`]); else one `syncfs` per file system the group wrote to (a mount nested
/// in the destination is a file system of its own, which the root's `syncfs` would
/// not flush), found from each file's directory; consecutive files of one directory
/// cost one `fstat`. Returns the devices written to and how they were flushed.
fn flush(group: &[Ready]) -> io::Result<(Vec<u64>, &'static str)> {
    let each = group.len() <= FSYNC_EACH;
    let mut done = Vec::new();
    let mut last: Option<*const OwnedFd> = None;
    for r in group {
        if each {
            match &r.temp {
                Temp::Anonymous(f) => f.sync_all()?,
                Temp::Named(n) => rustix::fs::fsync(fsops::open_file_at(&r.dir, n)?)?,
            }
        }
        let ptr = Arc::as_ptr(&r.dir);
        if last == Some(ptr) {
            continue;
        }
        last = Some(ptr);
        let dev = rustix::fs::fstat(&*r.dir)?.st_dev;
        if !done.contains(&dev) {
            if !each {
                rustix::fs::syncfs(&*r.dir)?;
            }
            done.push(dev);
        }
    }
    Ok((done, if each { "fsync" } else { "syncfs" }))
}

/// The installer thread's state.
struct Installer {
    fsync: bool,
    rx: mpsc::Receiver<Ready>,
    done: mpsc::Sender<Item>,
    queued: Arc<Queued>,
    stop: Arc<AtomicBool>,
    release: mpsc::Sender<OwnedFd>,
}

impl Installer {
    fn run(self) {
        while let Ok(first) = self.rx.recv() {
            let t0 = Instant::now();
            let group = self.gather(first);
            let n = group.len();
            let t1 = Instant::now();
            let stopping = self.stop.load(Ordering::SeqCst);
            let ((devices, how), sync_err) = match self.fsync && !stopping {
                true => match flush(&group) {
                    Ok(d) => (d, None),
                    Err(e) => ((Vec::new(), "-"), Some(e)),
                },
                false => ((Vec::new(), "-"), None),
            };
            let t2 = Instant::now();
            self.install(group, sync_err);
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            tracing::debug!(
                "installed a group of {n} files: gathered in {:.1} ms, flushed in {:.1} ms \
                 by {how} (devices {devices:?}), renamed in {:.1} ms",
                ms(t1 - t0),
                ms(t2 - t1),
                ms(t2.elapsed())
            );
        }
    }

    /// The group starting with `first`: everything queued, up to the group limits.
    /// No wait for a fuller group: files queue up while a flush runs, which makes
    /// the groups (waiting 15 ms for more was measured slower: the last group,
    /// flushed and renamed after the last file arrived, was bigger).
    fn gather(&self, first: Ready) -> Vec<Ready> {
        let mut bytes = first.size;
        let mut group = vec![first];
        while group.len() < GROUP_FILES && bytes < GROUP_BYTES {
            match self.rx.try_recv() {
                Ok(next) => {
                    bytes += next.size;
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        group
    }

    /// Rename each file of a flushed group over its final name (or drop it if
    /// the flush failed or the run is failing). The old copies replaced are
    /// freed by the releaser threads (see [`super::release`]), not here, where
    /// they would hold up the renames.
    fn install(&self, group: Vec<Ready>, sync_err: Option<io::Error>) {
        for r in group {
            let res = if self.stop.load(Ordering::SeqCst) {
                Err(io::Error::other("the run was stopped"))
            } else {
                match &sync_err {
                    Some(e) => Err(io::Error::new(e.kind(), format!("sync failed: {e}"))),
                    None => r.install().map(|old| {
                        if let Some(old) = old {
                            let _ = self.release.send(old); // if gone, freed here
                        }
                    }),
                }
            };
            self.queued.files.fetch_sub(1, Ordering::SeqCst);
            self.queued.bytes.fetch_sub(r.size, Ordering::SeqCst);
            if res.is_err() {
                r.discard();
            }
            let mut item = r.item;
            if let Err(e) = res {
                item.error = Some(format!("cannot install: {e}"));
            }
            let _ = self.done.send(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::fsops::SafeRoot;
    use std::io::Write;

    fn queue(c: &mut Committer, root: &SafeRoot, name: &str, body: &[u8]) -> Vec<Item> {
        let mut t = fsops::create_temp(root.fd_clone(), name.as_bytes()).unwrap();
        t.file.write_all(body).unwrap();
        let (path, item) = path_item(name, ">f");
        c.push(
            t,
            &path,
            item,
            body.len() as u64,
            name == "f0" || name == "keep",
        )
    }

    fn path_item(name: &str, code: &str) -> (RelPath, Item) {
        let path = RelPath::from_wire(name.as_bytes()).unwrap();
        let item = Item {
            code: code.into(),
            path: path.clone(),
            target: vec![],
            error: None,
        };
        (path, item)
    }

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    fn ready(root: &SafeRoot, name: &str) -> Ready {
        let mut t = fsops::create_temp(root.fd_clone(), name.as_bytes()).unwrap();
        t.file.write_all(b"data").unwrap();
        let (_, item) = path_item(name, ">f");
        let temp = match t.name {
            Some(n) => Temp::Named(n),
            None => Temp::Anonymous(t.file),
        };
        Ready {
            dir: t.dir,
            temp,
            final_name: name.as_bytes().to_vec(),
            item,
            size: 4,
            replaces: false,
        }
    }

    #[test]
    fn a_small_group_is_flushed_file_by_file_a_big_one_by_file_system() {
        let d = tempfile::tempdir().unwrap();
        let root = SafeRoot::open(d.path()).unwrap();
        let small: Vec<Ready> = (0..FSYNC_EACH)
            .map(|i| ready(&root, &format!("s{i}")))
            .collect();
        use std::os::unix::fs::MetadataExt;
        let dev = std::fs::metadata(d.path()).unwrap().dev();
        assert_eq!(flush(&small).unwrap(), (vec![dev], "fsync"));
        let big: Vec<Ready> = (0..=FSYNC_EACH)
            .map(|i| ready(&root, &format!("b{i}")))
            .collect();
        assert_eq!(flush(&big).unwrap(), (vec![dev], "syncfs"));
        for r in small.iter().chain(&big) {
            r.install().unwrap();
        }
        assert_eq!(names(d.path()).len(), 2 * FSYNC_EACH + 1);
        assert_eq!(std::fs::read(d.path().join("s0")).unwrap(), b"data");
    }

    #[test]
    fn commit_renames_every_file_over_its_old_copy() {
        for fsync in [true, false] {
            let d = tempfile::tempdir().unwrap();
            std::fs::write(d.path().join("f0"), b"old").unwrap();
            let root = SafeRoot::open(d.path()).unwrap();
            let mut c = Committer::new(fsync, mpsc::channel().0).unwrap();
            let mut items = Vec::new();
            for i in 0..300 {
                items.extend(queue(
                    &mut c,
                    &root,
                    &format!("f{i}"),
                    format!("new {i}").as_bytes(),
                ));
            }
            items.extend(c.commit());
            assert_eq!(items.len(), 300);
            assert!(items.iter().all(|i| i.error.is_none()));
            assert_eq!(std::fs::read(d.path().join("f0")).unwrap(), b"new 0");
            assert_eq!(std::fs::read(d.path().join("f299")).unwrap(), b"new 299");
            assert_eq!(names(d.path()).len(), 300, "no temp file is left");
        }
    }

    #[test]
    fn anonymous_files_are_linked_and_a_name_taken_meanwhile_is_replaced() {
        let d = tempfile::tempdir().unwrap();
        let root = SafeRoot::open(d.path()).unwrap();
        if !fsops::anonymous_files_work(&root.fd_clone()) {
            assert!(
                !crate::sync::fsops::is_root(),
                "root can link anonymous files on ext4/tmpfs"
            );
            return; // not root: the receiver uses named temp files
        }
        assert_eq!(names(d.path()).len(), 0, "the probe is removed");
        let mut c = Committer::new(true, mpsc::channel().0).unwrap();
        let mut items = Vec::new();
        for (name, body) in [("new", b"fresh"), ("raced", b"ours!")] {
            let mut t = fsops::create_anonymous(root.fd_clone()).unwrap();
            t.file.write_all(body).unwrap();
            if name == "raced" {
                std::fs::write(d.path().join("raced"), b"someone else's").unwrap();
            }
            let (path, item) = path_item(name, ">f+++++++++");
            items.extend(c.push(t, &path, item, 5, false));
        }
        items.extend(c.commit());
        assert!(items.iter().all(|i| i.error.is_none()), "{items:?}");
        assert_eq!(std::fs::read(d.path().join("new")).unwrap(), b"fresh");
        assert_eq!(std::fs::read(d.path().join("raced")).unwrap(), b"ours!");
        assert_eq!(
            names(d.path()),
            vec!["new".to_string(), "raced".to_string()]
        );
    }

    #[test]
    fn abandon_keeps_old_copies_and_removes_temp_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("keep"), b"old").unwrap();
        let root = SafeRoot::open(d.path()).unwrap();
        let mut c = Committer::new(true, mpsc::channel().0).unwrap();
        // Stop first, so that nothing queued afterwards may be installed.
        c.stop.store(true, Ordering::SeqCst);
        queue(&mut c, &root, "keep", b"new");
        queue(&mut c, &root, "other", b"new");
        c.abandon();
        assert_eq!(std::fs::read(d.path().join("keep")).unwrap(), b"old");
        assert_eq!(names(d.path()), vec!["keep".to_string()]);
    }
}
