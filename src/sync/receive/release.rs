//! Freeing the inodes of replaced and deleted files, beside the receiver.
//!
//! When a rename replaces a file, or a deletion removes one, the kernel frees
//! the old inode as soon as its last reference goes, and the call that drops the
//! last reference pays for it (on ext4, waiting for the disk; see
//! docs/ARCHITECTURE.md for the measured cost). So the installer and the deletion
//! pass keep an `O_PATH` descriptor of each old inode (see
//! [`crate::sync::fsops::hold_inode`]) and hand it here: a few threads close them, in
//! parallel, because the cost is mostly waiting for the disk.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

/// Threads closing old inodes.
const THREADS: usize = 4;

/// A pool of threads that drop the descriptors sent to it.
pub struct Releaser {
    tx: Option<mpsc::Sender<OwnedFd>>,
    threads: Vec<JoinHandle<()>>,
}

impl Releaser {
    /// Start the pool (threads that cannot be started are done without: the
    /// descriptors are then dropped by the others, or when the pool is dropped).
    pub fn new() -> Releaser {
        let (tx, rx) = mpsc::channel::<OwnedFd>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..THREADS)
            .filter_map(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("release-{i}"))
                    .spawn(move || {
                        loop {
                            // Take one, then free it without holding the lock.
                            let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                            match next {
                                Ok(fd) => drop(fd),
                                Err(_) => return,
                            }
                        }
                    })
                    .ok()
            })
            .collect();
        Releaser {
            tx: Some(tx),
            threads,
        }
    }

    /// Where to send the descriptors of old inodes.
    pub fn sender(&self) -> mpsc::Sender<OwnedFd> {
        self.tx.clone().expect("the releaser is running")
    }

    /// Let the threads finish freeing on their own (the session is over and told the
    /// peer so): [`wait_detached`] waits for them. Freeing a replaced 256 MiB file
    /// took ~110 ms here (a TRIM on a `discard` mount), which the peer need not wait for.
    pub fn detach(mut self) {
        self.tx = None;
        let mut lingering = LINGERING.lock().unwrap_or_else(|e| e.into_inner());
        lingering.retain(|t| !t.is_finished());
        lingering.append(&mut self.threads);
    }
}

/// Threads of detached pools still freeing (finished ones are dropped at each detach).
static LINGERING: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

/// Wait until every detached pool freed what it was sent (a serve calls this after
/// closing its end of the connection; at exit the kernel would do the freeing anyway).
pub fn wait_detached() {
    let threads = std::mem::take(&mut *LINGERING.lock().unwrap_or_else(|e| e.into_inner()));
    for t in threads {
        let _ = t.join();
    }
}

impl Default for Releaser {
    fn default() -> Self {
        Releaser::new()
    }
}

/// Dropping the pool waits until every inode sent so far (by every sender, which must
/// all be dropped by now or soon) is freed.
impl Drop for Releaser {
    fn drop(&mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Descriptors of deleted files under `dir` that this process still holds.
    fn deleted_held(dir: &std::path::Path) -> usize {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
            .filter(|t| t.to_string_lossy().ends_with(" (deleted)"))
            .filter(|t| t.starts_with(dir))
            .count()
    }

    /// Create `n` files in `dir`, open each, delete its name and send the descriptor.
    fn send_deleted(dir: &std::path::Path, tx: &mpsc::Sender<OwnedFd>, n: usize) {
        for i in 0..n {
            let p = dir.join(format!("f{i}"));
            std::fs::write(&p, b"x").unwrap();
            let f = std::fs::File::open(&p).unwrap();
            std::fs::remove_file(&p).unwrap();
            tx.send(OwnedFd::from(f)).unwrap();
        }
    }

    #[test]
    fn every_descriptor_sent_is_closed_when_the_pool_is_dropped() {
        let d = tempfile::tempdir().unwrap();
        let r = Releaser::new();
        send_deleted(d.path(), &r.sender(), 50);
        drop(r);
        // Our process holds no descriptor of a deleted file any more.
        let held = deleted_held(d.path());
        assert_eq!(held, 0);
    }

    #[test]
    fn a_detached_pool_frees_everything_by_wait_detached() {
        let d = tempfile::tempdir().unwrap();
        let r = Releaser::new();
        send_deleted(d.path(), &r.sender(), 20);
        r.detach();
        wait_detached();
        let held = deleted_held(d.path());
        assert_eq!(held, 0);
        assert!(LINGERING.lock().unwrap().is_empty());
    }
}
