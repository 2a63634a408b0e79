//! Applying changes on the receiver: rebuilding files, committing them
//! atomically, and the local actions (directories, symlinks, metadata, deletions).
//!
//! A file is rebuilt into a temporary file in its final directory, from
//! `Data` (new bytes) and `Copy` (ranges of the old copy, read with `pread`
//! and bounds-checked), hashed as it is written, checked against the sender's
//! BLAKE3 and size, given its metadata, and only then renamed over the old
//! name by the installer thread of [`super::commit`].

use crate::sync::fsops::{self, DirCache, Meta, SafeRoot, TempFile};
use crate::tree::manifest::Entry;
use crate::tree::path::RelPath;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::mpsc;

/// A file being rebuilt.
pub struct Rebuild {
    pub idx: u32,
    pub delta: bool,
    temp: Option<TempFile>,
    base: Option<File>,
    base_len: u64,
    pub expected: u64,
    written: u64,
    hasher: Hashing,
    pub literal: u64,
    pub matched: u64,
    copy_buf: Vec<u8>,
    /// Start writeback every [`WRITEBACK`] bytes (when the group will be flushed).
    writeback: bool,
    /// Bytes of the temp file whose writeback was started.
    kicked: u64,
}

/// A big file's pages are handed to the disk every 8 MiB while it is rebuilt, so the
/// group's flush (`syncfs`) finds them mostly written instead of writing them all then.
const WRITEBACK: u64 = 8 << 20;

/// What a rebuild needs before the file's data arrives: its temp file, and the
/// old copy for a delta. The receiver's requester thread prepares these ahead of
/// the data, so that creating inodes and opening old copies (a third of the
/// per-file cost for small files) is off the thread that receives.
pub struct Prepared {
    temp: Option<TempFile>,
    base: Option<(File, u64)>,
}

impl Prepared {
    /// Create the temp file for `entry`; `base` is its old copy, already open,
    /// and its length, for a delta. `anonymous`: a new file (nothing by its name) in a file
    /// system where anonymous temp files work ([`fsops::create_anonymous`]).
    pub fn new(
        root: &SafeRoot,
        dirs: &mut DirCache,
        entry: &Entry,
        base: Option<(File, u64)>,
        anonymous: bool,
    ) -> io::Result<Prepared> {
        let (parent, name) = entry
            .path
            .split_last()
            .ok_or_else(|| io::Error::other("cannot write the root as a file"))?;
        let dir = dirs.get(root, &parent)?;
        let temp = match anonymous {
            true => fsops::create_anonymous(dir.clone()).or_else(|_| fsops::create_temp(dir, name)),
            false => fsops::create_temp(dir, name),
        }?;
        Ok(Prepared {
            temp: Some(temp),
            base,
        })
    }
}

impl Drop for Prepared {
    /// An unused temp file (the run failed, or the file came back otherwise) is removed.
    fn drop(&mut self) {
        if let Some(t) = self.temp.take() {
            t.remove();
        }
    }
}

impl Rebuild {
    /// Start rebuilding `entry` into a temp file; for a delta, the old copy is the base.
    /// `anonymous`: as in [`Prepared::new`].
    /// `base_path`: the old copy (the entry's own path, or a partial of a cut run).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        root: &SafeRoot,
        dirs: &mut DirCache,
        entry: &Entry,
        base_path: &RelPath,
        idx: u32,
        delta: bool,
        writeback: bool,
        anonymous: bool,
    ) -> io::Result<Rebuild> {
        let base = match delta {
            true => {
                let f = root.open_file(base_path)?;
                let len = f.metadata()?.len();
                Some((f, len))
            }
            false => None,
        };
        let prepared = Prepared::new(root, dirs, entry, base, anonymous)?;
        Rebuild::with(prepared, entry, idx, delta, writeback)
    }

    /// Start rebuilding `entry` into what was prepared for it. A delta needs
    /// the prepared base.
    pub fn with(
        mut prepared: Prepared,
        entry: &Entry,
        idx: u32,
        delta: bool,
        writeback: bool,
    ) -> io::Result<Rebuild> {
        let (base, base_len) = match prepared.base.take() {
            Some((f, len)) if delta => (Some(f), len),
            None if delta => return Err(io::Error::other("no old copy to apply a delta to")),
            _ => (None, 0),
        };
        let temp = prepared.temp.take().expect("a prepared temp file");
        let hasher = Hashing::new(entry.size, base.as_ref());
        Ok(Rebuild {
            idx,
            delta,
            temp: Some(temp),
            base,
            base_len,
            expected: entry.size,
            written: 0,
            hasher,
            literal: 0,
            matched: 0,
            copy_buf: Vec::new(),
            writeback,
            kicked: 0,
        })
    }

    fn out(&mut self) -> &mut File {
        &mut self
            .temp
            .as_mut()
            .expect("temp file present until finished")
            .file
    }

    fn check_room(&self, n: u64) -> Result<(), String> {
        if self
            .written
            .checked_add(n)
            .is_none_or(|w| w > self.expected)
        {
            return Err(format!(
                "the sender sent more than the file's {} bytes",
                self.expected
            ));
        }
        Ok(())
    }

    /// New bytes from the sender.
    pub fn data(&mut self, d: Vec<u8>) -> Result<(), RebuildError> {
        self.check_room(d.len() as u64)
            .map_err(RebuildError::Protocol)?;
        self.out().write_all(&d).map_err(RebuildError::Io)?;
        self.written += d.len() as u64;
        self.literal += d.len() as u64;
        if let Some(done) = self.hasher.take(d) {
            crate::tree::bufpool::give(done);
        }
        self.kick_writeback();
        Ok(())
    }

    /// A range of the old copy.
    pub fn copy(&mut self, offset: u64, len: u64) -> Result<(), RebuildError> {
        if self.base.is_none() {
            return Err(RebuildError::Protocol(
                "copy instruction for a file sent whole".into(),
            ));
        }
        if len == 0
            || offset
                .checked_add(len)
                .is_none_or(|end| end > self.base_len)
        {
            return Err(RebuildError::Protocol(format!(
                "copy of {len} bytes at {offset} lies outside the old file ({} bytes)",
                self.base_len
            )));
        }
        self.check_room(len).map_err(RebuildError::Protocol)?;
        let mut done = 0u64;
        if self.hasher.hashes_base() {
            // Big file: the kernel copies the range (one copy, no round trip through
            // our memory) and the hash thread reads the same range of the old copy.
            let base = self.base.as_ref().expect("checked above");
            let out = &self.temp.as_ref().expect("temp present").file;
            done = kernel_copy(base, out, offset, len).map_err(RebuildError::Io)?;
            if done > 0 {
                self.hasher.take_base(offset, done);
            }
        }
        while done < len {
            let n = ((len - done) as usize).min(COPY_CHUNK);
            let mut buf = match &self.hasher {
                Hashing::Inline(_) => std::mem::take(&mut self.copy_buf),
                Hashing::Thread { .. } => crate::tree::bufpool::take(n),
            };
            buf.resize(n, 0);
            let base = self.base.as_ref().expect("checked above");
            base.read_exact_at(&mut buf, offset + done)
                .map_err(RebuildError::Io)?;
            self.out().write_all(&buf).map_err(RebuildError::Io)?;
            if let Some(back) = self.hasher.take(buf) {
                self.copy_buf = back;
            }
            done += n as u64;
        }
        self.written += len;
        self.matched += len;
        self.kick_writeback();
        Ok(())
    }

    /// Starts writing the newest [`WRITEBACK`] bytes to disk without waiting for it:
    /// `POSIX_FADV_DONTNEED` on dirty pages starts their writeback (and drops nothing
    /// that is not yet written). Advice only: an error changes nothing.
    fn kick_writeback(&mut self) {
        if !self.writeback || self.written - self.kicked < WRITEBACK {
            return;
        }
        let (from, len) = (self.kicked, self.written - self.kicked);
        let _ = rustix::fs::fadvise(
            &*self.out(),
            from,
            std::num::NonZeroU64::new(len),
            rustix::fs::Advice::DontNeed,
        );
        self.kicked = self.written;
    }

    /// The sender's end marker: check size and hash, then set metadata.
    /// On success the temp file is ready to be renamed over the final name.
    pub fn finish(
        mut self,
        size: u64,
        hash: &[u8; 32],
        meta: &Meta,
    ) -> Result<TempFile, RebuildError> {
        if size != self.expected || self.written != size {
            let msg = format!(
                "size mismatch: expected {}, got {}",
                self.expected, self.written
            );
            self.discard();
            return Err(RebuildError::Verify(msg));
        }
        let hasher = std::mem::replace(
            &mut self.hasher,
            Hashing::Inline(Box::new(blake3::Hasher::new())),
        );
        if hasher.finalize().as_ref().map(|h| h.as_bytes()) != Some(hash) {
            self.discard();
            return Err(RebuildError::Verify(
                "BLAKE3 of the rebuilt file does not match the sender's".into(),
            ));
        }
        let temp = self.temp.take().expect("temp present");
        if let Err(e) = fsops::set_meta_fd(&temp.file, meta) {
            temp.remove();
            return Err(RebuildError::Io(e));
        }
        Ok(temp)
    }

    /// Leave the temp file (named) as it is: what arrived of a big file before the
    /// connection was lost, for the next run to resume from (`resume.rs`).
    pub fn keep_partial(&mut self) {
        if let Some(t) = self.temp.take() {
            if t.name.is_none() {
                return; // anonymous: vanishes when closed, as before
            }
            tracing::debug!("keeping a partial of {} bytes", self.written);
        }
    }

    /// Drop the temp file (abort, verification failure, error).
    pub fn discard(&mut self) {
        if let Some(t) = self.temp.take() {
            t.remove();
        }
    }
}

impl Drop for Rebuild {
    fn drop(&mut self) {
        self.discard();
    }
}

/// Copy `len` bytes at `offset` of `base` to the current position of `out`
/// with `copy_file_range`. Returns how many bytes were copied: fewer than `len`
/// only when the kernel cannot copy between these files (another file system),
/// and the caller copies the rest itself.
fn kernel_copy(base: &File, out: &File, offset: u64, len: u64) -> io::Result<u64> {
    use rustix::io::Errno;
    let mut off = offset;
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(1 << 30) as usize;
        match rustix::fs::copy_file_range(base, Some(&mut off), out, None, n) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the old copy shrank while it was read",
                ));
            }
            Ok(k) => done += k as u64,
            Err(Errno::INTR) => {}
            Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) if done == 0 => {
                return Ok(0);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

/// Bytes read from the old copy per `pread` + `write` for a `Copy`.
const COPY_CHUNK: usize = 1 << 20;
/// Files at least this big are hashed on a helper thread while they are rebuilt.
const REBUILD_HASH_THREAD_MIN: u64 = 8 * 1024 * 1024;

/// What the hash thread hashes next: bytes, or a range of the old copy that
/// was copied into the new file in the kernel (the thread reads it itself).
enum Piece {
    Bytes(Vec<u8>),
    Base { offset: u64, len: u64 },
}

/// The BLAKE3 of a file being rebuilt: inline for small files; for big ones on
/// a helper thread, so that hashing overlaps reading the old copy and writing
/// the new one. Buffers go to the thread and back to [`crate::tree::bufpool`] (at
/// most a few MiB in flight).
enum Hashing {
    Inline(Box<blake3::Hasher>),
    Thread {
        tx: mpsc::SyncSender<Piece>,
        handle: std::thread::JoinHandle<Option<blake3::Hasher>>,
        /// The thread has its own handle on the old copy.
        has_base: bool,
    },
}

impl Hashing {
    fn new(size: u64, base: Option<&File>) -> Hashing {
        if size < REBUILD_HASH_THREAD_MIN {
            return Hashing::Inline(Box::new(blake3::Hasher::new()));
        }
        let base = base.and_then(|b| b.try_clone().ok());
        let has_base = base.is_some();
        let (tx, rx) = mpsc::sync_channel::<Piece>(4);
        let spawned = std::thread::Builder::new()
            .name("rebuild-hash".into())
            .spawn(move || {
                let mut h = blake3::Hasher::new();
                let mut own = Vec::new();
                for piece in rx {
                    match piece {
                        Piece::Bytes(buf) => {
                            h.update(&buf);
                            crate::tree::bufpool::give(buf);
                        }
                        Piece::Base { offset, len } => {
                            // `None` (a failed read) fails the verification: retried whole.
                            let base = base.as_ref()?;
                            hash_range(&mut h, base, offset, len, &mut own).ok()?;
                        }
                    }
                }
                Some(h)
            });
        match spawned {
            Ok(handle) => Hashing::Thread {
                tx,
                handle,
                has_base,
            },
            Err(_) => Hashing::Inline(Box::new(blake3::Hasher::new())),
        }
    }

    /// Whether ranges of the old copy can be hashed by the thread ([`Self::take_base`]).
    fn hashes_base(&self) -> bool {
        matches!(self, Hashing::Thread { has_base: true, .. })
    }

    /// Hash `buf` (in order). Inline, the buffer is handed back for reuse.
    fn take(&mut self, buf: Vec<u8>) -> Option<Vec<u8>> {
        match self {
            Hashing::Inline(h) => {
                h.update(&buf);
                Some(buf)
            }
            Hashing::Thread { tx, .. } => {
                // If the thread is gone, finalize() reports it.
                let _ = tx.send(Piece::Bytes(buf));
                None
            }
        }
    }

    /// Hash a range of the old copy (in order); only when [`Self::hashes_base`].
    fn take_base(&mut self, offset: u64, len: u64) {
        if let Hashing::Thread { tx, .. } = self {
            let _ = tx.send(Piece::Base { offset, len });
        }
    }

    /// The hash of everything taken; `None` if the helper thread died or failed to read.
    fn finalize(self) -> Option<blake3::Hash> {
        match self {
            Hashing::Inline(h) => Some(h.finalize()),
            Hashing::Thread { tx, handle, .. } => {
                drop(tx);
                handle.join().ok().flatten().map(|h| h.finalize())
            }
        }
    }
}

/// Hash `len` bytes of `file` at `offset`, reading through `buf`.
fn hash_range(
    h: &mut blake3::Hasher,
    file: &File,
    offset: u64,
    len: u64,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    buf.resize(COPY_CHUNK, 0);
    let mut done = 0u64;
    while done < len {
        let n = ((len - done) as usize).min(COPY_CHUNK);
        file.read_exact_at(&mut buf[..n], offset + done)?;
        h.update(&buf[..n]);
        done += n as u64;
    }
    Ok(())
}

/// What went wrong while rebuilding one file.
#[derive(Debug)]
pub enum RebuildError {
    /// The sender broke the protocol: the session ends.
    Protocol(String),
    /// A local I/O error (disk full, permissions): this file fails, the run goes on.
    Io(io::Error),
    /// The result did not verify: retried whole once, then this file fails.
    Verify(String),
}

/// Create a directory (no-op for the root, which exists by now).
pub fn make_dir(root: &SafeRoot, dirs: &mut DirCache, path: &RelPath) -> io::Result<()> {
    let Some((parent, name)) = path.split_last() else {
        return Ok(());
    };
    let dir = dirs.get(root, &parent)?;
    fsops::mkdir(&dir, name)
}

/// Create or atomically replace a symlink.
pub fn make_symlink(
    root: &SafeRoot,
    dirs: &mut DirCache,
    entry: &Entry,
    meta: &Meta,
) -> io::Result<()> {
    let (parent, name) = entry
        .path
        .split_last()
        .ok_or_else(|| io::Error::other("root cannot be a symlink"))?;
    let dir = dirs.get(root, &parent)?;
    let tmp = fsops::create_temp_symlink(&dir, name, &entry.target)?;
    let res =
        fsops::set_symlink_meta(&dir, &tmp, meta).and_then(|_| fsops::rename(&dir, &tmp, name));
    if res.is_err() {
        let _ = fsops::remove(&dir, &tmp, false);
    }
    res
}

/// Apply metadata to an existing file, directory or symlink.
pub fn set_meta(
    root: &SafeRoot,
    dirs: &mut DirCache,
    entry: &Entry,
    meta: &Meta,
) -> io::Result<()> {
    use crate::tree::manifest::Kind;
    match entry.kind {
        Kind::Dir => {
            let fd = root.open_dir(&entry.path)?;
            fsops::set_meta_fd(&*fd, meta)
        }
        Kind::File => {
            let f = root.open_file(&entry.path)?;
            fsops::set_meta_fd(&f, meta)
        }
        Kind::Symlink => {
            let (parent, name) = entry
                .path
                .split_last()
                .ok_or_else(|| io::Error::other("root"))?;
            let dir = dirs.get(root, &parent)?;
            fsops::set_symlink_meta(&dir, name, meta)
        }
    }
}

/// Set only the mtime of a directory whose mode and owner already match: one
/// call on its parent's cached descriptor instead of opening it.
pub fn set_dir_mtime(
    root: &SafeRoot,
    dirs: &mut DirCache,
    entry: &Entry,
    meta: &Meta,
) -> io::Result<()> {
    match entry.path.split_last() {
        Some((parent, name)) => {
            let dir = dirs.get(root, &parent)?;
            fsops::set_mtime_at(&dir, name, meta.mtime)
        }
        None => set_meta(root, dirs, entry, meta),
    }
}

/// Remove an entry (a directory must be empty by now).
pub fn remove(
    root: &SafeRoot,
    dirs: &mut DirCache,
    path: &RelPath,
    is_dir: bool,
) -> io::Result<()> {
    let (dir, name) = parent_of(root, dirs, path)?;
    fsops::remove(&dir, name, is_dir)
}

/// The open directory holding `path` (never the root itself), and its last name.
fn parent_of<'p>(
    root: &SafeRoot,
    dirs: &mut DirCache,
    path: &'p RelPath,
) -> io::Result<(std::sync::Arc<std::os::fd::OwnedFd>, &'p [u8])> {
    let (parent, name) = path
        .split_last()
        .ok_or_else(|| io::Error::other("refusing to remove the root"))?;
    Ok((dirs.get(root, &parent)?, name))
}

/// Like [`remove`], but a removed file's inode is sent to `release`, whose
/// thread frees it (on ext4 freeing even a small file costs ~0.1 ms: done
/// beside the next removals instead of between them).
pub fn remove_releasing(
    root: &SafeRoot,
    dirs: &mut DirCache,
    path: &RelPath,
    is_dir: bool,
    release: &mpsc::Sender<std::os::fd::OwnedFd>,
) -> io::Result<()> {
    if is_dir {
        return remove(root, dirs, path, true);
    }
    let (dir, name) = parent_of(root, dirs, path)?;
    if let Some(old) = fsops::remove_keeping(&dir, name)? {
        let _ = release.send(old);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_copy_appends_at_the_file_position_and_the_thread_hashes_the_same_bytes() {
        let d = tempfile::tempdir().unwrap();
        let base_bytes: Vec<u8> = (0..3 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
        std::fs::write(d.path().join("base"), &base_bytes).unwrap();
        let base = File::open(d.path().join("base")).unwrap();
        let mut out = File::create(d.path().join("out")).unwrap();
        out.write_all(b"head").unwrap();
        assert_eq!(kernel_copy(&base, &out, 1000, 2 << 20).unwrap(), 2 << 20);
        out.write_all(b"tail").unwrap();
        let mut want = b"head".to_vec();
        want.extend_from_slice(&base_bytes[1000..1000 + (2 << 20)]);
        want.extend_from_slice(b"tail");
        assert_eq!(std::fs::read(d.path().join("out")).unwrap(), want);

        let mut h = Hashing::new(REBUILD_HASH_THREAD_MIN, Some(&base));
        assert!(h.hashes_base());
        h.take(b"head".to_vec());
        h.take_base(1000, 2 << 20);
        h.take(b"tail".to_vec());
        assert_eq!(h.finalize(), Some(blake3::hash(&want)));

        // A range the old copy no longer has fails the hash (the file is retried whole).
        let mut h = Hashing::new(REBUILD_HASH_THREAD_MIN, Some(&base));
        h.take_base(3 << 20, 10);
        assert_eq!(h.finalize(), None);
    }
}
