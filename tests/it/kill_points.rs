//! Peers dying at random points, 100 runs (extends `interrupt.rs`, which kills
//! only the serve side of pushes): over the local transport, pushes AND pulls,
//! killing the serve child, the client, or both, at seeded random instants.
//! After every run each replica file is old or new (or absent if it was new),
//! no process is left behind, the next run leaves no temporary file, and the
//! last run converges.

use crate::util::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const FILES: usize = 10;
const RUNS: u64 = 100;

fn version(i: usize, v: u64) -> Vec<u8> {
    let mut d = pseudo(150_000 + i * 40_000, i as u64);
    if v % 2 == 1 {
        let at = (i * 7919) % (d.len() - 3000);
        d[at..at + 3000].copy_from_slice(&pseudo(3000, 500 + i as u64));
        d.extend_from_slice(b"odd");
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

fn kill(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
}

/// Wait until `pid` is gone (or a zombie); an orphaned serve must end on its own.
fn wait_gone(pid: u32) {
    let t0 = Instant::now();
    loop {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return,
            Ok(s) if s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')) => return,
            Ok(_) => {}
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "process {pid} is still running 15 s after its peer died"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn temps(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".hasync-tmp."))
        .collect()
}

fn check_old_or_new(dst: &Path, valid: &HashMap<String, [blake3::Hash; 2]>) {
    for (name, hashes) in valid {
        match std::fs::read(dst.join(name)) {
            Ok(data) => assert!(
                hashes.contains(&blake3::hash(&data)),
                "{name} is neither old nor new ({} bytes)",
                data.len()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("{name}: {e}"),
        }
    }
}

#[test]
fn killing_either_peer_at_random_points_in_100_runs_never_corrupts_and_converges() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    // A push mirror (written by serve) and a pull mirror (written by the client).
    let (pushed, pulled) = (d.path().join("pushed"), d.path().join("pulled"));
    let t = Tree::new(&src);
    let mut valid = HashMap::new();
    for i in 0..FILES {
        let name = format!("f{i}");
        valid.insert(
            name.clone(),
            [blake3::hash(&version(i, 0)), blake3::hash(&version(i, 1))],
        );
        t.file(&name, &version(i, 0));
    }
    let mut seed = 0x9E37_79B9u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // A reader checks both mirrors continuously while the runs are killed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (stop, pushed, pulled, valid) =
            (stop.clone(), pushed.clone(), pulled.clone(), valid.clone());
        std::thread::spawn(move || {
            let mut rounds = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for dst in [&pushed, &pulled] {
                    if dst.exists() {
                        check_old_or_new(dst, &valid);
                    }
                }
                rounds += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            rounds
        })
    };
    let (mut killed_serve, mut killed_client, mut completed) = (0, 0, 0);
    let t0 = Instant::now();
    for run in 0..RUNS {
        // Flip a few files between their two versions.
        for i in 0..FILES {
            if rnd() % 3 == 0 {
                t.file(format!("f{i}"), &version(i, run + i as u64));
            }
        }
        let pull = run % 2 == 1;
        let dst = if pull { &pulled } else { &pushed };
        let mut c = hasync();
        if pull {
            c.arg("pull").arg(&src).arg(dst);
        } else {
            c.arg("push").arg(&src).arg(dst);
        }
        let mut client = c
            .arg("--delete")
            .arg("-q")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rnd() % 60_000));
        let serves = children(client.id());
        let who = rnd() % 4; // 0: serve, 1: client, 2: both, 3: nobody
        if matches!(who, 0 | 2) {
            for &p in &serves {
                kill(p);
                killed_serve += 1;
            }
        }
        if matches!(who, 1 | 2) {
            let _ = client.kill();
            killed_client += 1;
        }
        let status = client.wait().unwrap();
        if status.success() {
            completed += 1;
        } else if who == 3 || (who == 0 && serves.is_empty()) {
            panic!("run {run} failed with nobody killed: {status:?}");
        } else {
            assert!(
                matches!(status.code(), Some(1) | Some(3) | None),
                "run {run}: client exit {status:?}"
            );
        }
        for p in serves {
            wait_gone(p);
        }
        check_old_or_new(&pushed, &valid);
        if pulled.exists() {
            check_old_or_new(&pulled, &valid);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let rounds = reader
        .join()
        .expect("a mirror file was neither old nor new");
    assert!(rounds > 10, "the reader barely ran");
    // The next runs converge and leave no temporary file.
    for (cmd, dst) in [("push", &pushed), ("pull", &pulled)] {
        ok(hasync()
            .arg(cmd)
            .arg(&src)
            .arg(dst)
            .arg("--delete")
            .output()
            .unwrap());
        assert_mirror(&src, dst);
        let left = temps(dst);
        assert!(
            left.is_empty(),
            "temp files survived the next run: {left:?}"
        );
    }
    eprintln!(
        "{RUNS} runs in {:?}: serve killed {killed_serve}x, client killed {killed_client}x, {completed} completed",
        t0.elapsed()
    );
    assert!(killed_serve >= 20 && killed_client >= 20);
}
