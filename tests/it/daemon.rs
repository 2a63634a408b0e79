//! `hasync daemon`, `status`, `cron` and the job lock, with the real binary: watch
//! mode (new files, subtrees, renames, bursts), timed schedules, signals (SIGHUP
//! reload, SIGTERM), the lock shared with `hasync sync`, status and metrics, failure
//! hooks and retries until the peer is back. This file holds the harness; the
//! tests are in `daemon/watch.rs` (watch mode, signals) and `daemon/jobs.rs` (timed
//! jobs, locking, status, metrics, hooks, cron).

pub(crate) mod health;
mod jobs;
mod ssh;
mod watch;

use crate::util::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A running `hasync daemon`; killed on drop. Its stderr goes to `log`.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(cfg: &Path) -> Daemon {
        let log = cfg.with_extension("log");
        let child = hasync()
            .env("HASYNC_LOG", "info")
            .arg("--config")
            .arg(cfg)
            .arg("daemon")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: i32) {
        let rc = unsafe_kill(self.child.id(), sig);
        assert_eq!(rc, 0, "kill failed");
    }

    /// Sends SIGTERM and returns the exit code.
    fn stop(mut self) -> (Option<i32>, String) {
        self.signal(libc::SIGTERM);
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st.code(), self.log());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "daemon did not stop: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[allow(unsafe_code)]
fn unsafe_kill(pid: u32, sig: i32) -> i32 {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid as i32, sig) }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `dst` mirrors `src` now. Unlike `snapshot`, tolerates files vanishing
/// while it looks (the daemon may be writing the mirror): then it is not a mirror yet.
fn mirrored(src: &Path, dst: &Path) -> bool {
    match (quiet_snapshot(src), quiet_snapshot(dst)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Path, is a directory, size, mode, mtime, content.
type Entry = (PathBuf, bool, u64, u32, (i64, i64), Vec<u8>);

/// (path, kind, size, mode, mtime, content) of every entry, or `None` if any of them
/// changed under our feet.
fn quiet_snapshot(root: &Path) -> Option<Vec<Entry>> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.ok()?;
        let md = e.path().symlink_metadata().ok()?;
        let data = if md.is_file() {
            std::fs::read(e.path()).ok()?
        } else {
            Vec::new()
        };
        out.push((
            e.path().strip_prefix(root).ok()?.to_path_buf(),
            md.is_dir(),
            if md.is_file() { md.len() } else { 0 },
            md.mode(),
            (md.mtime(), md.mtime_nsec()),
            data,
        ));
    }
    Some(out)
}

fn temps(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .map(|e| e.path().to_path_buf())
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with(".hasync-tmp") || n.starts_with(".hasync-state")
        })
        .collect()
}

/// A master tree `m`, the peer's `s`, state in `state`, and `body` after [node].
fn setup(d: &Path, body: &str) -> PathBuf {
    std::fs::create_dir_all(d.join("m/data")).unwrap();
    let cfg = d.join("hasync.toml");
    std::fs::write(
        &cfg,
        format!(
            "[node]\nrole = \"master\"\npeer = \"local\"\nroot = \"m\"\npeer_root = \"s\"\nstate_dir = \"state\"\n\n{body}"
        ),
    )
    .unwrap();
    cfg
}

const WATCH_JOB: &str =
    "[[sync]]\nname = \"w\"\npaths = [\"/data\"]\nschedule = \"watch\"\nsafety_pass = \"manual\"\n";

pub fn http_get(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Seconds since the epoch of an RFC 3339 timestamp (enough for comparisons here).
fn chrono_secs(s: &str) -> i64 {
    // "2026-11-25T15:06:21.082003Z": compare within a day by h/m/s.
    let time = &s[11..19];
    let p: Vec<i64> = time.split(':').map(|x| x.parse().unwrap()).collect();
    let day: i64 = s[8..10].parse().unwrap();
    ((day * 24 + p[0]) * 60 + p[1]) * 60 + p[2]
}

/// Takes the job's lock the way hasync does (flock), from this test process.
struct HeldLock {
    _file: std::fs::File,
}

impl HeldLock {
    #[allow(unsafe_code)]
    fn take(state: &Path, job: &str) -> HeldLock {
        use std::os::fd::AsRawFd;
        std::fs::create_dir_all(state.join("locks")).unwrap();
        let f = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(state.join(format!("locks/{job}.lock")))
            .unwrap();
        // SAFETY: flock(2) on a file descriptor we own.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(rc, 0, "lock taken by someone else");
        HeldLock { _file: f }
    }
}
