//! `hasync daemon`, `status`, `cron` and the job lock, with the real binary: watch
//! mode (new files, subtrees, renames, bursts), timed schedules, signals (SIGHUP
//! reload, SIGTERM), the lock shared with `hasync sync`, status and metrics, failure
//! hooks and retries until the peer is back.

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

/// Polls `cond` every 20 ms until it holds, or panics after `secs` with `what()`.
fn wait_for(secs: u64, mut cond: impl FnMut() -> bool, what: impl Fn() -> String) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out after {secs}s: {}",
            what()
        );
        std::thread::sleep(Duration::from_millis(20));
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
type Entry = (PathBuf, bool, u64, u32, i64, Vec<u8>);

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
            md.mtime() * 1_000_000_000 + md.mtime_nsec(),
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn watch_delivers_new_files_subtrees_renames_and_a_burst_then_sigterm_exits_0() {
    let d = tempfile::tempdir().unwrap();
    let cfg = setup(d.path(), WATCH_JOB);
    let (src, dst) = (d.path().join("m/data"), d.path().join("s/data"));
    let t = Tree::new(&src);
    t.file("before-start", b"written while no daemon ran");
    let daemon = Daemon::start(&cfg);
    let log = || daemon.log();
    wait_for(10, || mirrored(&src, &dst), log);

    t.file("new.txt", b"hello");
    let t0 = Instant::now();
    wait_for(5, || mirrored(&src, &dst), log);
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "slow: {:?}",
        t0.elapsed()
    );

    // A subtree created at once (its inner directories are not watched yet).
    t.file("a/b/c/d/deep.txt", b"deep")
        .file("a/b/x.bin", &pseudo(100_000, 1));
    wait_for(5, || mirrored(&src, &dst), log);

    // Renames of a file and of a directory.
    std::fs::rename(src.join("new.txt"), src.join("renamed.txt")).unwrap();
    std::fs::rename(src.join("a/b"), src.join("a/moved")).unwrap();
    wait_for(5, || mirrored(&src, &dst), log);

    // A burst of 2,000 files in 20 directories.
    for i in 0..2000 {
        t.file(
            format!("burst/{:02}/f{i:04}", i % 20),
            format!("{i}").as_bytes(),
        );
    }
    wait_for(20, || mirrored(&src, &dst), log);

    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(
        temps(d.path()).is_empty(),
        "temp files left: {:?}",
        temps(d.path())
    );
    assert!(!d.path().join("state/daemon.json").exists());
}

#[test]
fn timed_job_runs_on_a_six_field_schedule_with_status_and_metrics() {
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = setup(
        d.path(),
        &format!(
            "[[sync]]\nname = \"t\"\npaths = [\"/data\"]\nschedule = \"*/2 * * * * *\"\n\n\
             [[sync]]\nname = \"hourly\"\npaths = [\"/other\"]\nschedule = \"hourly\"\n\n\
             [daemon]\nmetrics_listen = \"127.0.0.1:{port}\"\n"
        ),
    );
    let (src, dst) = (d.path().join("m/data"), d.path().join("s/data"));
    Tree::new(&src).file("f", b"1");
    let daemon = Daemon::start(&cfg);
    let log = || daemon.log();
    // Not a watch job: nothing runs before the first even second.
    wait_for(5, || mirrored(&src, &dst), log);
    let status = || {
        let o = hasync()
            .arg("--config")
            .arg(&cfg)
            .args(["status", "--json"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    wait_for(
        8,
        || status()["jobs"][0]["runs_total"].as_u64() >= Some(3),
        log,
    );
    let s = status();
    assert_eq!(
        s["daemon_pid"].as_u64(),
        Some(daemon.child.id() as u64),
        "{s}"
    );
    assert_eq!(s["role"], "master");
    let j = &s["jobs"][0];
    assert_eq!(j["name"], "t");
    assert!(j["last_success"].is_string(), "{s}");
    assert!(j["lag_seconds"].as_f64().unwrap() < 5.0, "{s}");
    assert!(j["next_run"].is_string(), "{s}");
    let starts: Vec<i64> = {
        let st: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.path().join("state/jobs/t.json")).unwrap())
                .unwrap();
        st["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| chrono_secs(r["start"].as_str().unwrap()))
            .collect()
    };
    for w in starts.windows(2) {
        assert!(w[1] - w[0] >= 1, "runs too close: {starts:?}");
    }
    // The hourly job has not run, but has a next run on the hour.
    let h = &s["jobs"][1];
    assert!(h["last_run"].is_null(), "{s}");
    assert!(h["next_run"].as_str().unwrap().contains(":00:00"), "{s}");

    let text_status = ok(hasync()
        .arg("--config")
        .arg(&cfg)
        .arg("status")
        .output()
        .unwrap());
    for w in [
        "role: master",
        "daemon: running",
        "job t",
        "last success",
        "next run",
    ] {
        assert!(text_status.contains(w), "{w}: {text_status}");
    }

    let m = http_get(port, "/metrics");
    assert!(m.starts_with("HTTP/1.1 200"), "{m}");
    for name in [
        "hasync_job_last_success_timestamp_seconds{job=\"t\"}",
        "hasync_job_last_duration_seconds{job=\"t\"}",
        "hasync_job_runs_total{job=\"t\"}",
        "hasync_job_failures_total{job=\"t\"} 0",
        "hasync_job_lag_seconds{job=\"t\"}",
        "# TYPE hasync_job_runs_total counter",
    ] {
        assert!(m.contains(name), "{name} missing: {m}");
    }
    let st = http_get(port, "/status");
    assert!(st.contains("\"last_success\""), "{st}");
    assert!(http_get(port, "/nope").starts_with("HTTP/1.1 404"));
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// Seconds since the epoch of an RFC 3339 timestamp (enough for comparisons here).
fn chrono_secs(s: &str) -> i64 {
    // "2026-11-25T15:06:21.082003Z": compare within a day by h/m/s.
    let time = &s[11..19];
    let p: Vec<i64> = time.split(':').map(|x| x.parse().unwrap()).collect();
    let day: i64 = s[8..10].parse().unwrap();
    ((day * 24 + p[0]) * 60 + p[1]) * 60 + p[2]
}

#[test]
fn sighup_with_a_broken_config_keeps_running_and_a_second_daemon_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let cfg = setup(d.path(), WATCH_JOB);
    let (src, dst) = (d.path().join("m/data"), d.path().join("s/data"));
    let t = Tree::new(&src);
    t.file("one", b"1");
    let daemon = Daemon::start(&cfg);
    let log = || daemon.log();
    wait_for(10, || mirrored(&src, &dst), log);

    let o = hasync()
        .arg("--config")
        .arg(&cfg)
        .arg("daemon")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(text(&o).contains("already runs"), "{}", text(&o));

    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        good.replace("schedule = \"watch\"", "schedule = \"every tuesday\""),
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    wait_for(
        5,
        || daemon.log().contains("keeping the current configuration"),
        log,
    );
    assert!(
        daemon.log().contains("schedule"),
        "the reason is logged: {}",
        daemon.log()
    );
    // Still running, still watching.
    t.file("two", b"2");
    wait_for(5, || mirrored(&src, &dst), log);

    // A good config is taken: a second job appears.
    std::fs::write(
        &cfg,
        format!("{good}\n[[sync]]\nname = \"more\"\npaths = [\"/more\"]\nschedule = \"watch\"\nsafety_pass = \"manual\"\n"),
    )
    .unwrap();
    Tree::new(&d.path().join("m/more")).file("m", b"m");
    daemon.signal(libc::SIGHUP);
    wait_for(
        5,
        || daemon.log().contains("configuration reloaded (2 jobs)"),
        log,
    );
    wait_for(
        5,
        || mirrored(&d.path().join("m/more"), &d.path().join("s/more")),
        log,
    );
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
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

#[test]
fn the_job_lock_is_shared_by_the_daemon_and_manual_syncs() {
    let d = tempfile::tempdir().unwrap();
    let cfg = setup(d.path(), WATCH_JOB);
    let (src, dst) = (d.path().join("m/data"), d.path().join("s/data"));
    let t = Tree::new(&src);
    t.file("one", b"1");
    let daemon = Daemon::start(&cfg);
    let log = || daemon.log();
    wait_for(10, || mirrored(&src, &dst), log);

    // Another run holds the job: the daemon waits for it, a manual sync says so (exit 5).
    let lock = HeldLock::take(&d.path().join("state"), "w");
    t.file("two", b"2");
    wait_for(
        5,
        || daemon.log().contains("already running in another process"),
        log,
    );
    assert!(!dst.join("two").exists(), "ran while the lock was held");
    let o = hasync()
        .arg("--config")
        .arg(&cfg)
        .args(["sync", "w"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(text(&o).contains("already running"), "{}", text(&o));
    // --wait waits for the lock.
    let mut waiting = hasync()
        .arg("--config")
        .arg(&cfg)
        .args(["sync", "--wait", "-q", "w"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(waiting.try_wait().unwrap().is_none(), "--wait did not wait");
    drop(lock);
    assert_eq!(waiting.wait().unwrap().code(), Some(0));
    wait_for(5, || mirrored(&src, &dst), log);
    // The manual run is in the job's history, next to the daemon's.
    let st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("state/jobs/w.json")).unwrap())
            .unwrap();
    let triggers: Vec<&str> = st["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["trigger"].as_str().unwrap())
        .collect();
    assert!(
        triggers.contains(&"manual") && triggers.contains(&"watch"),
        "{triggers:?}"
    );
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn a_failing_job_calls_on_failure_retries_and_delivers_once_the_peer_is_back() {
    let d = tempfile::tempdir().unwrap();
    let hook_log = d.path().join("hook.log");
    let cfg = setup(
        d.path(),
        &format!(
            "{WATCH_JOB}\n[hooks]\non_failure = 'echo \"$HASYNC_EVENT $HASYNC_JOB $HASYNC_ERROR\" >> {}'\n\n\
             [daemon]\nretry_min = \"100ms\"\nretry_max = \"500ms\"\n",
            hook_log.display()
        ),
    );
    let (src, dst) = (d.path().join("m/data"), d.path().join("s/data"));
    let t = Tree::new(&src);
    t.file("one", b"1");
    // The peer cannot write: its root is a file.
    std::fs::write(d.path().join("s"), b"not a directory").unwrap();
    let daemon = Daemon::start(&cfg);
    let log = || daemon.log();
    wait_for(10, || hook_log.exists(), log);
    let hook = std::fs::read_to_string(&hook_log).unwrap();
    assert!(hook.starts_with("failure w "), "{hook}");
    assert!(
        hook.len() > "failure w \n".len(),
        "HASYNC_ERROR is empty: {hook}"
    );
    wait_for(10, || daemon.log().matches("retrying in").count() >= 3, log);
    // Changes while the peer is unusable are kept, then delivered.
    t.file("two", b"2").file("sub/three", b"3");
    std::thread::sleep(Duration::from_millis(300));
    let o = ok(hasync()
        .arg("--config")
        .arg(&cfg)
        .args(["status", "--json"])
        .output()
        .unwrap());
    let s: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert!(s["jobs"][0]["pending_since"].is_string(), "{s}");
    assert!(s["jobs"][0]["last_error"].is_string(), "{s}");
    // One hook call per failure streak, not one per retry.
    assert_eq!(
        std::fs::read_to_string(&hook_log).unwrap().lines().count(),
        1
    );
    std::fs::remove_file(d.path().join("s")).unwrap();
    wait_for(10, || mirrored(&src, &dst), log);
    wait_for(
        5,
        || {
            let o = hasync()
                .arg("--config")
                .arg(&cfg)
                .args(["status", "--json"])
                .output()
                .unwrap();
            let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            s["jobs"][0]["pending_since"].is_null() && s["jobs"][0]["consecutive_failures"] == 0
        },
        log,
    );
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn cron_prints_cron_d_lines_for_the_schedules() {
    let d = tempfile::tempdir().unwrap();
    let cfg = setup(
        d.path(),
        "[[sync]]\nname = \"asterisk\"\npaths = [\"/a\"]\nschedule = \"hourly\"\n\
         [[sync]]\nname = \"five\"\npaths = [\"/b\"]\nschedule = \"*/5 * * * 1-5\"\n\
         [[sync]]\nname = \"secs\"\npaths = [\"/c\"]\nschedule = \"*/2 * * * * *\"\n\
         [[sync]]\nname = \"zero\"\npaths = [\"/e\"]\nschedule = \"0 30 3 * * *\"\n\
         [[sync]]\nname = \"w\"\npaths = [\"/d\"]\nschedule = \"watch\"\n\
         [[sync]]\nname = \"m\"\npaths = [\"/f\"]\n",
    );
    let out = ok(hasync()
        .arg("--config")
        .arg(&cfg)
        .arg("cron")
        .output()
        .unwrap());
    let cfg_s = cfg.display().to_string();
    assert!(out.starts_with("# /etc/cron.d/hasync"), "{out}");
    assert!(
        out.contains(&format!(
            "0 * * * * root {} --config {cfg_s} -q sync asterisk",
            bin().display()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "*/5 * * * 1-5 root {} --config {cfg_s} -q sync five",
            bin().display()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "30 3 * * * root {} --config {cfg_s} -q sync zero",
            bin().display()
        )),
        "{out}"
    );
    assert!(
        out.contains("# job secs: schedule \"*/2 * * * * *\" has seconds"),
        "{out}"
    );
    assert!(
        out.contains("# job w: schedule \"watch\" needs `hasync daemon`"),
        "{out}"
    );
    assert!(out.contains("# job m: schedule \"manual\""), "{out}");
    assert!(out.contains("UTC"), "{out}");
    // Every non-comment line is VAR=value or a cron line with the user.
    for l in out.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        assert!(l.contains('=') || l.contains(" root "), "{l}");
    }
}

#[test]
fn bad_schedules_are_config_errors_naming_the_key() {
    let d = tempfile::tempdir().unwrap();
    let cfg = setup(
        d.path(),
        "[[sync]]\nname = \"a\"\npaths = [\"/a\"]\nschedule = \"0 * * * 8\"\n",
    );
    for cmd in ["daemon", "cron", "status"] {
        let o = hasync()
            .arg("--config")
            .arg(&cfg)
            .arg(cmd)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(
            e.contains("\"schedule\"") && e.contains("day of week"),
            "{e}"
        );
    }
}

#[test]
fn sigterm_during_a_run_lets_it_finish_and_leaves_no_temp_file() {
    let d = tempfile::tempdir().unwrap();
    let cfg = setup(d.path(), WATCH_JOB);
    let (src, dst) = (d.path().join("m/data"), d.path().join("s/data"));
    Tree::new(&src).file("small", b"s");
    let daemon = Daemon::start(&cfg);
    let log = || daemon.log();
    wait_for(10, || mirrored(&src, &dst), log);
    let starts = |l: &str| l.matches("starting (watch)").count();
    let before = starts(&daemon.log());
    // Written outside the tree, then renamed in: one event, a complete file.
    std::fs::write(d.path().join("m/big"), pseudo(96 << 20, 7)).unwrap();
    std::fs::rename(d.path().join("m/big"), src.join("big")).unwrap();
    wait_for(10, || starts(&daemon.log()) > before, log);
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        temps(d.path()).is_empty(),
        "temp files left: {:?}",
        temps(d.path())
    );
    if log.contains("waiting for 1 runs in progress") {
        // Stopped mid-run: the run finished first.
        assert!(mirrored(&src, &dst), "{log}");
    }
}

#[test]
fn a_watched_directory_created_or_recreated_later_is_watched_again() {
    let d = tempfile::tempdir().unwrap();
    let cfg = setup(
        d.path(),
        &format!("{WATCH_JOB}\n[daemon]\nretry_min = \"100ms\"\nretry_max = \"1s\"\n"),
    );
    let (src, dst) = (d.path().join("m/data"), d.path().join("s/data"));
    std::fs::remove_dir(&src).unwrap();
    let daemon = Daemon::start(&cfg);
    let log = || daemon.log();
    // Missing source: refused (never wipes the mirror), retried.
    wait_for(10, || daemon.log().contains("cannot watch"), log);
    wait_for(10, || daemon.log().contains("does not exist"), log);
    Tree::new(&src).file("a", b"a");
    wait_for(10, || mirrored(&src, &dst), log);
    Tree::new(&src).file("b", b"b");
    wait_for(5, || mirrored(&src, &dst), log);
    // Deleted and created again: a new directory, watched again.
    std::fs::rename(&src, d.path().join("m/old")).unwrap();
    Tree::new(&src).file("c", b"c");
    wait_for(10, || mirrored(&src, &dst), log);
    Tree::new(&src).file("d", b"d");
    let t0 = Instant::now();
    wait_for(5, || mirrored(&src, &dst), log);
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "not watched: {}",
        log()
    );
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
}
