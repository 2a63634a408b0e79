//! Timed jobs, the job lock, status, metrics, failure hooks and retries, `hasync cron`.

use super::*;
use crate::util::*;
use std::process::Stdio;
use std::time::Duration;

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

    // The daemon runs the job (a big file takes a while): a manual sync does not run it.
    let starts = |l: &str| l.matches("starting (watch)").count();
    let before = starts(&daemon.log());
    std::fs::write(d.path().join("m/big"), pseudo(96 << 20, 9)).unwrap();
    std::fs::rename(d.path().join("m/big"), src.join("big")).unwrap();
    wait_for(10, || starts(&daemon.log()) > before, log);
    let o = hasync()
        .arg("--config")
        .arg(&cfg)
        .args(["sync", "w"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5), "{}\n{}", text(&o), log());
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
    let port = free_port();
    let cfg = setup(
        d.path(),
        &format!(
            "{WATCH_JOB}\n[hooks]\non_failure = 'echo \"$HASYNC_EVENT $HASYNC_JOB $HASYNC_ERROR\" >> {}'\n\n\
             [daemon]\nretry_min = \"100ms\"\nretry_max = \"500ms\"\nmetrics_listen = \"127.0.0.1:{port}\"\n",
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
    // The metrics say so too.
    let m = http_get(port, "/metrics");
    assert!(
        m.contains("hasync_job_last_run_success{job=\"w\"} 0"),
        "{m}"
    );
    assert!(
        !m.contains("hasync_job_failures_total{job=\"w\"} 0\n"),
        "{m}"
    );
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
    // ... and the recovery.
    let m = http_get(port, "/metrics");
    assert!(
        m.contains("hasync_job_last_run_success{job=\"w\"} 1"),
        "{m}"
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
