//! Files that change while they are being sent (sender side) or while their
//! delta is applied (receiver side). A churn thread keeps replacing a large
//! source file by new complete versions (each of a unique size), truncating it
//! in place and removing it while pushes run. The mirror's copy must always be
//! some complete state the file really had (or absent), a file that changed
//! under the sender is reported (exit 1 naming it) or simply sent in its new
//! state, and once the churn stops the next run converges. On the receiving
//! side, the destination file is swapped with a symlink to a file outside the
//! mirror, or with a directory, while its delta is applied: nothing is ever
//! written through the link, and the next run converges.

use crate::util::*;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Version `k` of the big file: mostly shared blocks (deltas happen), a unique size.
fn version(k: u64) -> Vec<u8> {
    let mut d = pseudo(3_000_000 + k as usize * 4099, 42);
    let at = (k as usize * 65_537) % 2_900_000;
    d[at..at + 4096].copy_from_slice(&pseudo(4096, 1000 + k));
    d
}

/// Replace `p` atomically (write aside, rename over).
fn replace(p: &Path, data: &[u8]) {
    let tmp = p.with_extension("churn-tmp");
    std::fs::write(&tmp, data).unwrap();
    std::fs::rename(&tmp, p).unwrap();
}

/// Replace `p` atomically with `data`, written first at `tmp` (outside the source).
fn put(p: &Path, tmp: &Path, data: &[u8]) {
    std::fs::write(tmp, data).unwrap();
    std::fs::rename(tmp, p).unwrap();
}

fn hash_of(p: &Path) -> Option<blake3::Hash> {
    match std::fs::read(p) {
        Ok(d) => Some(blake3::hash(&d)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("{}: {e}", p.display()),
    }
}

#[test]
fn a_source_file_changing_while_sent_is_never_installed_corrupt() {
    let d = tempfile::tempdir().unwrap();
    // The churn's temp file lives outside the source, so it is never scanned.
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    Tree::new(&src).file("other", b"stable");
    let big = src.join("big");
    let valid: Arc<Mutex<HashSet<blake3::Hash>>> = Arc::default();
    let v0 = version(0);
    valid.lock().unwrap().insert(blake3::hash(&v0));
    replace(&big, &v0);
    ok(hasync().arg("push").arg(&src).arg(&dst).output().unwrap());

    let stop = Arc::new(AtomicBool::new(false));
    let changes = Arc::new(AtomicU64::new(0));
    let churn = {
        let (stop, changes, valid, big) =
            (stop.clone(), changes.clone(), valid.clone(), big.clone());
        let aside = d.path().join("aside");
        std::thread::spawn(move || {
            let mut k = 1u64;
            while !stop.load(Ordering::SeqCst) {
                let v = version(k);
                // Record before it can be seen.
                valid.lock().unwrap().insert(blake3::hash(&v));
                match k % 4 {
                    // Replaced, then truncated in place: a prefix of unique size (an atomic state).
                    3 => {
                        let half = v.len() / 2 + 1;
                        valid.lock().unwrap().insert(blake3::hash(&v[..half]));
                        put(&big, &aside, &v);
                        let f = std::fs::File::options().write(true).open(&big).unwrap();
                        f.set_len(half as u64).unwrap();
                    }
                    // Vanishes for a moment.
                    2 => {
                        let _ = std::fs::remove_file(&big);
                        std::thread::sleep(std::time::Duration::from_millis(3));
                        put(&big, &aside, &v);
                    }
                    _ => put(&big, &aside, &v),
                }
                changes.fetch_add(1, Ordering::SeqCst);
                k += 1;
                std::thread::sleep(std::time::Duration::from_millis(2 + k % 7));
            }
        })
    };

    let mut failed_runs = 0;
    for _ in 0..16 {
        let o = hasync()
            .arg("push")
            .arg(&src)
            .arg(&dst)
            .arg("--delete")
            .output()
            .unwrap();
        match o.status.code() {
            Some(0) => {}
            Some(1) => {
                failed_runs += 1;
                let err = String::from_utf8_lossy(&o.stderr);
                assert!(
                    err.contains("big"),
                    "exit 1 without naming the file: {}",
                    text(&o)
                );
            }
            _ => panic!("unexpected exit: {}", text(&o)),
        }
        if let Some(h) = hash_of(&dst.join("big")) {
            assert!(
                valid.lock().unwrap().contains(&h),
                "the mirror's big is not a state the source ever had"
            );
        }
        assert_eq!(std::fs::read(dst.join("other")).unwrap(), b"stable");
    }
    stop.store(true, Ordering::SeqCst);
    churn.join().unwrap();
    assert!(changes.load(Ordering::SeqCst) >= 16, "the churn barely ran");
    eprintln!(
        "source churn: {} changes, {failed_runs} of 16 runs reported a changed file",
        changes.load(Ordering::SeqCst)
    );
    // Converges once the source is quiet.
    ok(hasync()
        .arg("push")
        .arg(&src)
        .arg(&dst)
        .arg("--delete")
        .output()
        .unwrap());
    assert_mirror(&src, &dst);
}

#[test]
fn a_destination_file_swapped_for_a_symlink_or_directory_during_its_delta_is_safe() {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    let outside = d.path().join("outside");
    let bait = pseudo(3_000_000, 9);
    std::fs::write(&outside, &bait).unwrap();
    Tree::new(&src);
    Tree::new(&dst);
    let target = dst.join("big");
    let mut k = 0u64;
    let mut swaps_total = 0;
    for round in 0..10u64 {
        // The mirror has an old copy, the source a new version: a delta.
        replace(&target, &version(k));
        k += 1;
        replace(&src.join("big"), &version(k));
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicU64::new(0));
        let swapper = {
            let (stop, swaps, target, outside) =
                (stop.clone(), swaps.clone(), target.clone(), outside.clone());
            let aside: PathBuf = d.path().join("aside");
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    // Move the file away, put a symlink (even rounds) or a
                    // directory (odd rounds) in its place, then restore.
                    if std::fs::rename(&target, &aside).is_err() {
                        std::thread::yield_now();
                        continue;
                    }
                    if round % 2 == 0 {
                        let _ = std::os::unix::fs::symlink(&outside, &target);
                    } else {
                        let _ = std::fs::create_dir(&target);
                    }
                    std::thread::sleep(std::time::Duration::from_micros(300));
                    let _ = std::fs::remove_file(&target);
                    let _ = std::fs::remove_dir(&target);
                    let _ = std::fs::rename(&aside, &target);
                    swaps.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
                // If a push installed a new file meanwhile, keep it.
                if !target.exists() && aside.exists() {
                    let _ = std::fs::rename(&aside, &target);
                }
            })
        };
        let o = hasync()
            .arg("push")
            .arg(&src)
            .arg(&dst)
            .arg("--delete")
            .output()
            .unwrap();
        stop.store(true, Ordering::SeqCst);
        swapper.join().unwrap();
        swaps_total += swaps.load(Ordering::SeqCst);
        assert!(
            matches!(o.status.code(), Some(0) | Some(1)),
            "unexpected exit: {}",
            text(&o)
        );
        assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
        assert_eq!(
            std::fs::read(&outside).unwrap(),
            bait,
            "the file outside the mirror was written through the symlink"
        );
        assert!(!outside.is_symlink());
        // Whatever is in place is a complete old or new version (or was just restored).
        if let Ok(m) = std::fs::symlink_metadata(&target)
            && m.is_file()
        {
            let h = hash_of(&target).unwrap();
            assert!(
                h == blake3::hash(&version(k)) || h == blake3::hash(&version(k - 1)),
                "the mirror's big is neither old nor new"
            );
        }
        // Converges.
        let _ = std::fs::remove_file(d.path().join("aside"));
        ok(hasync()
            .arg("push")
            .arg(&src)
            .arg(&dst)
            .arg("--delete")
            .output()
            .unwrap());
        assert_mirror(&src, &dst);
        k += 1;
    }
    assert!(swaps_total >= 10, "only {swaps_total} swaps happened");
}
