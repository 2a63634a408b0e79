//! Interruption: the serve side is killed at random points during transfers,
//! many times. At every moment each file on the mirror holds either its old or
//! its new content (a reader thread checks continuously), and the next run
//! converges with no temporary file left behind.

use crate::util::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const FILES: usize = 24;

fn version(i: usize, v: usize) -> Vec<u8> {
    // Version 1 shares most blocks with version 0, so both whole and delta transfers happen.
    let mut d = pseudo(1_500_000 + i * 10_000, i as u64);
    if v == 1 {
        for k in 0..4 {
            let at = (k * 300_000 + i * 1000) % (d.len() - 5000);
            d[at..at + 5000].copy_from_slice(&pseudo(5000, 1000 + i as u64 * 7 + k as u64));
        }
        d.extend_from_slice(b"v1");
    }
    d
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn check_old_or_new(dst: &Path, valid: &HashMap<String, [blake3::Hash; 2]>) {
    for (name, hashes) in valid {
        match std::fs::read(dst.join(name)) {
            Ok(data) => {
                let h = blake3::hash(&data);
                assert!(
                    hashes.contains(&h),
                    "{name} is neither old nor new ({} bytes)",
                    data.len()
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("{name}: {e}"),
        }
    }
}

#[test]
fn killing_the_serve_side_never_leaves_a_half_written_file() {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    let t = Tree::new(&src);
    let mut valid = HashMap::new();
    for i in 0..FILES {
        let name = format!("f{i:02}");
        valid.insert(
            name.clone(),
            [blake3::hash(&version(i, 0)), blake3::hash(&version(i, 1))],
        );
        t.file(&name, &version(i, 0));
    }
    ok(hasync().arg("push").arg(&src).arg(&dst).output().unwrap());

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, dst, valid) = (stop.clone(), dst.clone(), valid.clone());
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(Ordering::Relaxed) {
                check_old_or_new(&dst, &valid);
                rounds += 1;
            }
            rounds
        })
    };

    let mut killed = 0;
    let mut seed = 99u64;
    for round in 0..20 {
        for i in 0..FILES {
            t.file(format!("f{i:02}"), &version(i, (round + 1) % 2));
        }
        let mut client = hasync()
            .arg("push")
            .arg(&src)
            .arg(&dst)
            .arg("--delete")
            .arg("-q")
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(5 + seed % 120));
        for pid in children(client.id()) {
            unsafe_free_kill(pid);
            killed += 1;
        }
        let status = client.wait().unwrap();
        assert!(
            matches!(status.code(), Some(0) | Some(3)),
            "client exit {status:?}"
        );
        check_old_or_new(&dst, &valid);
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = reader.join().unwrap();
    assert!(rounds > 0);
    assert!(
        killed >= 10,
        "the serve side was killed only {killed} times"
    );

    // The next run converges and cleans up.
    ok(hasync()
        .arg("push")
        .arg(&src)
        .arg(&dst)
        .arg("--delete")
        .output()
        .unwrap());
    assert_mirror(&src, &dst);
    let temps: Vec<PathBuf> = std::fs::read_dir(&dst)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".hasync-tmp."))
        .collect();
    assert!(temps.is_empty(), "temp files left: {temps:?}");
}

/// SIGKILL through the `kill` command (the test crate forbids unsafe code too).
fn unsafe_free_kill(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
}
