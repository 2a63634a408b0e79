//! Symlink-swap races (the rsync CVE-2024-12087/12088 family): while syncs
//! run, a thread keeps replacing a directory by a symlink to somewhere else
//! and back, thousands of times. On the receiving side nothing may ever be
//! written outside the destination; on the sending side nothing from outside
//! the source may ever be sent. Every path is opened beneath its root with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, which this proves.

use crate::util::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Swaps `dir` with a symlink to `target` and back until stopped; counts swaps.
fn swapper(
    dir: PathBuf,
    target: PathBuf,
    stop: Arc<AtomicBool>,
    swaps: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let aside = dir.with_extension("aside");
        while !stop.load(Ordering::SeqCst) {
            if std::fs::rename(&dir, &aside).is_ok() {
                let _ = std::os::unix::fs::symlink(&target, &dir);
                std::thread::yield_now();
                let _ = std::fs::remove_file(&dir);
                let _ = std::fs::rename(&aside, &dir);
                swaps.fetch_add(1, Ordering::SeqCst);
            }
        }
        // Leave the real directory in place.
        if dir.is_symlink() {
            let _ = std::fs::remove_file(&dir);
        }
        if aside.exists() {
            let _ = std::fs::rename(&aside, &dir);
        }
    })
}

fn run_for(limit: Duration, min_swaps: u64, swaps: &AtomicU64, mut one: impl FnMut(usize)) {
    let t0 = Instant::now();
    let mut i = 0;
    while t0.elapsed() < limit || swaps.load(Ordering::SeqCst) < min_swaps {
        one(i);
        i += 1;
        assert!(t0.elapsed() < limit * 4, "too few swaps happened");
    }
}

fn files_under(p: &Path) -> Vec<String> {
    walkdir::WalkDir::new(p)
        .min_depth(1)
        .into_iter()
        .filter_map(|e| e.ok())
        .map(|e| e.path().display().to_string())
        .collect()
}

#[test]
fn receiver_never_writes_through_a_swapped_directory() {
    let d = tempfile::tempdir().unwrap();
    let (src, dst, outside) = (
        d.path().join("src"),
        d.path().join("dst"),
        d.path().join("outside"),
    );
    std::fs::create_dir(&outside).unwrap();
    let t = Tree::new(&src);
    for i in 0..50 {
        t.file(format!("d/f{i:02}"), format!("v0 {i}").as_bytes());
    }
    ok(hasync().arg("push").arg(&src).arg(&dst).output().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let h = swapper(dst.join("d"), outside.clone(), stop.clone(), swaps.clone());
    run_for(Duration::from_secs(3), 2000, &swaps, |round| {
        for i in 0..50 {
            std::fs::write(src.join(format!("d/f{i:02}")), format!("v{round} {i}")).unwrap();
        }
        // Errors are expected (the directory keeps vanishing); escapes are not.
        let _ = hasync()
            .arg("push")
            .arg(&src)
            .arg(&dst)
            .arg("--delete")
            .output()
            .unwrap();
        assert!(
            files_under(&outside).is_empty(),
            "written outside the root: {:?}",
            files_under(&outside)
        );
    });
    stop.store(true, Ordering::SeqCst);
    h.join().unwrap();
    assert!(files_under(&outside).is_empty());
    // Calm again: the next run converges.
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
fn sender_never_sends_what_a_swapped_directory_points_to() {
    let d = tempfile::tempdir().unwrap();
    let (src, dst, secret) = (
        d.path().join("src"),
        d.path().join("dst"),
        d.path().join("secret"),
    );
    // The secret directory has the same names as the real one, with other content.
    let (t, s) = (Tree::new(&src), Tree::new(&secret));
    for i in 0..50 {
        t.file(format!("d/f{i:02}"), b"public");
        s.file(format!("f{i:02}"), b"SECRET");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let h = swapper(src.join("d"), secret.clone(), stop.clone(), swaps.clone());
    run_for(Duration::from_secs(3), 2000, &swaps, |round| {
        let out = dst.join(format!("r{}", round % 4));
        let _ = hasync()
            .arg("push")
            .arg(&src)
            .arg(&out)
            .arg("--delete")
            .output()
            .unwrap();
        for f in files_under(&out) {
            let p = Path::new(&f);
            if p.is_file() {
                assert_ne!(
                    std::fs::read(p).unwrap(),
                    b"SECRET",
                    "{f} came from outside the source"
                );
            }
        }
    });
    stop.store(true, Ordering::SeqCst);
    h.join().unwrap();
}
