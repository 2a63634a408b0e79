//! `hasync services`, `check-master --once` and `promote`/`demote` on one machine:
//! real commands that append to a log file, the real binary, `peer = "local"` with
//! temp roots for the copy-back.

use std::path::{Path, PathBuf};

use crate::util::{hasync, text};

fn write(dir: &Path, body: &str) -> PathBuf {
    let cfg = dir.join("hasync.toml");
    std::fs::write(&cfg, body).unwrap();
    cfg
}

fn run(cfg: &Path, args: &[&str]) -> std::process::Output {
    hasync()
        .arg("-c")
        .arg(cfg)
        .args(args)
        .output()
        .expect("run hasync")
}

fn read(p: impl AsRef<Path>) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Three "services" a, b, c; each start/stop appends to log; status = marker file.
fn commands_config(dir: &Path) -> PathBuf {
    let d = dir.display();
    write(
        dir,
        &format!(
            r#"[node]
role = "slave"
peer = "local"
state_dir = "state"

[services]
start = ["echo start-a >> {d}/log", "echo start-b >> {d}/log", "echo start-c >> {d}/log; touch {d}/up"]
stop = ["echo stop-c >> {d}/log", "echo stop-b >> {d}/log", "echo stop-a >> {d}/log; rm {d}/up"]
status = "test -f {d}/up"
timeout = "2s"
"#
        ),
    )
}

#[test]
fn master_services_commands_are_ordered_and_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = commands_config(dir);
    let o = run(&cfg, &["services", "status"]);
    assert_eq!(o.status.code(), Some(1), "stopped: {}", text(&o));
    for _ in 0..2 {
        let o = run(&cfg, &["services", "start"]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    assert_eq!(read(dir.join("log")), "start-a\nstart-b\nstart-c\n");
    let o = run(&cfg, &["services", "status"]);
    assert_eq!(o.status.code(), Some(0), "running: {}", text(&o));
    for _ in 0..2 {
        let o = run(&cfg, &["services", "stop"]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    assert_eq!(
        read(dir.join("log")),
        "start-a\nstart-b\nstart-c\nstop-c\nstop-b\nstop-a\n"
    );
    let rec: serde_json::Value =
        serde_json::from_str(&read(dir.join("state/services.json"))).unwrap();
    assert_eq!(rec["action"], "stop");
    assert_eq!(rec["steps"][1]["skipped"], "status says stopped");
}

#[test]
fn master_services_failure_stops_the_start_and_timeouts_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let d = dir.display();
    let cfg = write(
        dir,
        &format!(
            r#"[node]
role = "slave"
peer = "local"
state_dir = "state"
[services]
start = ["echo a >> {d}/log", "echo boom >&2; exit 7", "echo c >> {d}/log"]
stop = ["sleep 30", "echo stopped >> {d}/log"]
timeout = "300ms"
"#
        ),
    );
    let o = run(&cfg, &["services", "start"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("exited with 7") && err.contains("boom"),
        "{err}"
    );
    assert_eq!(
        read(dir.join("log")),
        "a\n",
        "c must not start after b failed"
    );
    let t0 = std::time::Instant::now();
    let o = run(&cfg, &["services", "stop", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(t0.elapsed() < std::time::Duration::from_secs(5));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["steps"][0]["timed_out"], true, "{r}");
    assert!(r["error"].as_str().unwrap().contains("timed out"), "{r}");
    // Stop goes on after a failure: every service gets its stop.
    assert_eq!(read(dir.join("log")), "a\nstopped\n");
}

#[test]
fn master_services_units_use_systemctl_in_order_and_reverse() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A stand-in systemctl on PATH: records calls; a unit is active when its file exists.
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let d = dir.display();
    std::fs::write(
        bin.join("systemctl"),
        format!(
            "#!/bin/sh\necho \"$*\" >> {d}/calls\ncase $1 in\n  is-active) test -f {d}/$3 ;;\n  start) touch {d}/$2 ;;\n  stop) rm {d}/$2 ;;\nesac\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        bin.join("systemctl"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let cfg = write(
        dir,
        "[node]\nrole = \"slave\"\npeer = \"local\"\nstate_dir = \"state\"\n[services]\nunits = [\"a.service\", \"b.service\"]\n",
    );
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let go = |args: &[&str]| {
        hasync()
            .env("PATH", &path)
            .arg("-c")
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap()
    };
    std::fs::write(dir.join("b.service"), "").unwrap(); // b already runs
    assert_eq!(go(&["services", "start"]).status.code(), Some(0));
    assert_eq!(go(&["services", "status"]).status.code(), Some(0));
    assert_eq!(go(&["services", "stop"]).status.code(), Some(0));
    assert_eq!(
        read(dir.join("calls")),
        "is-active --quiet a.service\nstart a.service\nis-active --quiet b.service\n\
         is-active --quiet a.service\nis-active --quiet b.service\n\
         is-active --quiet b.service\nstop b.service\nis-active --quiet a.service\nstop a.service\n"
    );
}

#[test]
fn master_check_once_keeps_counters_between_runs_like_cron() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let d = dir.display();
    // A port nobody listens on: the master's service is down.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = write(
        dir,
        &format!(
            r#"[node]
role = "slave"
peer = "local"
state_dir = "state"
sentinel_dir = "sentinels"
[services]
start = ["touch {d}/up"]
stop = ["rm {d}/up"]
status = "test -f {d}/up"
[check_master]
address = "127.0.0.1"
probes = ["tcp:{port}"]
fail_after = 3
[hooks]
on_failover = "echo $HASYNC_EVENT $HASYNC_JOB $HASYNC_MASTER > {d}/hook"
"#
        ),
    );
    for i in 1..=3 {
        let o = run(&cfg, &["check-master", "--once", "--json"]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(j["state_file"]["consecutive_down"], i);
        assert_eq!(j["state_file"]["master"], "down");
        assert_eq!(j["state_file"]["format"], "hasync-master-check/1");
        assert_eq!(dir.join("up").exists(), i == 3, "run {i}: {j}");
        assert_eq!(
            j["event"]["decision"],
            if i == 3 { "failover" } else { "stay" }
        );
    }
    assert_eq!(read(dir.join("hook")), "failover check_master 127.0.0.1\n");
    // A node that is no longer secondary does nothing.
    let o = run(&cfg, &["promote"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = run(&cfg, &["check-master", "--once"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("not the secondary"),
        "{}",
        text(&o)
    );
}

#[test]
fn master_promote_demote_round_trip_switches_roles_and_copies_back() {
    let tmp = tempfile::tempdir().unwrap();
    // Two nodes on one machine: `a` served as master during a failover, `b` is the old
    // master coming back. Each has its own root; a's peer_root is b's root.
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for n in [&a, &b] {
        std::fs::create_dir_all(n.join("root")).unwrap();
    }
    let vm = "var/spool/asterisk/voicemail";
    let node = |me: &Path, peer: &Path, role: &str| {
        let d = me.display();
        write(
            me,
            &format!(
                r#"[node]
role = "{role}"
peer = "local"
state_dir = "state"
sentinel_dir = "sentinels"
root = "root"
peer_root = "{}/root"
[services]
start = ["touch {d}/up"]
stop = ["rm {d}/up"]
status = "test -f {d}/up"
[check_master]
address = "127.0.0.1"
copy_back = ["/{vm}"]
[[sync]]
name = "conf"
paths = ["/etc/conf"]
"#,
                peer.display()
            ),
        )
    };
    let cfg_a = node(&a, &b, "slave");
    let cfg_b = node(&b, &a, "master");
    // a took over and recorded messages; b has an older message of its own.
    std::fs::create_dir_all(a.join("root").join(vm).join("1000")).unwrap();
    std::fs::write(a.join("root").join(vm).join("1000/msg0001.wav"), b"new").unwrap();
    std::fs::create_dir_all(b.join("root").join(vm).join("1000")).unwrap();
    std::fs::write(b.join("root").join(vm).join("1000/msg0000.wav"), b"old").unwrap();
    std::fs::create_dir_all(a.join("root/etc/conf")).unwrap();
    std::fs::write(a.join("root/etc/conf/x"), b"a's conf").unwrap();

    // The slave a is promoted by hand: services up, sentinels and role file say master.
    let o = run(&cfg_a, &["promote"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(a.join("up").exists());
    assert!(a.join("sentinels/is-primary").exists() && !a.join("sentinels/is-secondary").exists());
    let role: serde_json::Value = serde_json::from_str(&read(a.join("state/role.json"))).unwrap();
    assert_eq!(role["role"], "master");
    // Its sync jobs now push, although its config says slave.
    let o = run(&cfg_a, &["sync"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(read(b.join("root/etc/conf/x")), "a's conf");

    // The old master b rejoins as slave.
    let o = run(&cfg_b, &["demote"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(b.join("sentinels/is-secondary").exists() && !b.join("sentinels/is-primary").exists());

    // Failback: a pushes what it recorded to b, then gives mastership back.
    let o = run(&cfg_a, &["demote", "--copy-back", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["role"], "slave");
    assert_eq!(j["copied"]["files_transferred"], 1, "{j}");
    assert_eq!(
        read(b.join("root").join(vm).join("1000/msg0001.wav")),
        "new"
    );
    assert_eq!(
        read(b.join("root").join(vm).join("1000/msg0000.wav")),
        "old",
        "copy-back merges, it never deletes"
    );
    assert!(!a.join("up").exists());
    assert!(a.join("sentinels/is-secondary").exists() && !a.join("sentinels/is-primary").exists());
    let o = run(&cfg_b, &["promote"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(b.join("up").exists());
    // a's push jobs are now skipped: it is the slave again.
    let o = run(&cfg_a, &["sync"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("skipped"),
        "{}",
        text(&o)
    );
}

#[test]
fn master_failed_failover_runs_on_failure_and_is_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let d = dir.display();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // The start fails until the file `fixed` exists.
    let cfg = write(
        dir,
        &format!(
            r#"[node]
role = "slave"
peer = "local"
state_dir = "state"
[services]
start = ["test -f {d}/fixed && touch {d}/up"]
stop = ["rm {d}/up"]
status = "test -f {d}/up"
[check_master]
address = "127.0.0.1"
probes = ["tcp:{port}"]
fail_after = 1
[hooks]
on_failover = "echo \"$HASYNC_EVENT [$HASYNC_ERROR]\" >> {d}/hooks"
on_failure = "echo \"$HASYNC_EVENT [$HASYNC_ERROR]\" >> {d}/hooks"
"#
        ),
    );
    let o = run(&cfg, &["check-master", "--once", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        j["state_file"]["last_error"]
            .as_str()
            .unwrap()
            .contains("exited with 1"),
        "{j}"
    );
    let hooks = read(dir.join("hooks"));
    assert!(hooks.starts_with("failover [services start:"), "{hooks}");
    assert!(hooks.contains("\nfailure [services start:"), "{hooks}");
    std::fs::write(dir.join("fixed"), "").unwrap();
    let o = run(&cfg, &["check-master", "--once", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(dir.join("up").exists(), "retried: {j}");
    assert_eq!(j["state_file"]["last_error"], serde_json::Value::Null);
    assert_eq!(
        j["state_file"]["failovers"], 1,
        "a retry is not a new failover"
    );
}

#[test]
fn master_check_skips_while_another_run_holds_the_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = write(
        dir,
        "[node]\nrole = \"slave\"\npeer = \"local\"\nstate_dir = \"state\"\n\
         [check_master]\naddress = \"127.0.0.1\"\nprobes = [\"cmd:exit 1\"]\nfail_after = 1\n",
    );
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let f = std::fs::File::create(dir.join("state/master.lock")).unwrap();
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let o = run(&cfg, &["check-master", "--once"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("another check-master run"),
        "{}",
        text(&o)
    );
    assert!(!dir.join("state/master.json").exists());
    drop(f);
    let o = run(&cfg, &["check-master", "--once", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["event"]["decision"], "failover", "{}", text(&o));
}

/// The daemon runs the master check on its own thread: a master service that goes
/// away (a TCP port that stops listening) starts the slave's services within
/// fail_after x interval, and its return stops them again.
#[test]
fn master_check_runs_inside_the_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let d = dir.display();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mport = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = write(
        dir,
        &format!(
            r#"[node]
role = "slave"
peer = "local"
state_dir = "state"
sentinel_dir = "sentinels"
[services]
start = ["touch {d}/up"]
stop = ["rm {d}/up"]
status = "test -f {d}/up"
[check_master]
address = "127.0.0.1"
probes = ["tcp:{port}"]
interval = "200ms"
timeout = "150ms"
fail_after = 3
recover_after = 2
hold_down = "300ms"
[daemon]
metrics_listen = "127.0.0.1:{mport}"
"#
        ),
    );
    let log = dir.join("daemon.log");
    let mut daemon = hasync()
        .env("HASYNC_LOG", "info")
        .arg("-c")
        .arg(&cfg)
        .arg("daemon")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let wait_for = |what: &str, cond: &dyn Fn() -> bool| {
        let t0 = std::time::Instant::now();
        while !cond() {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(15),
                "{what} did not happen: {}",
                read(&log)
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    // The master answers: nothing starts.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    assert!(!dir.join("up").exists(), "{}", read(&log));
    // The master's service goes away: failover.
    drop(listener);
    wait_for("failover", &|| dir.join("up").exists());
    // It comes back on the same port: failback.
    let _back = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    wait_for("failback", &|| !dir.join("up").exists());
    // `hasync status` and the metrics show the master check.
    let o = run(&cfg, &["status", "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st["master_check"]["failovers"], 1, "{st}");
    assert_eq!(st["master_check"]["master"], "up", "{st}");
    let o = run(&cfg, &["status"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("failovers:    1"),
        "{}",
        text(&o)
    );
    let metrics = crate::daemon::http_get(mport, "/metrics");
    assert!(
        metrics.contains("hasync_master_failovers_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hasync_master_state{state=\"up\"} 1"),
        "{metrics}"
    );
    let _ = std::process::Command::new("kill")
        .arg(daemon.id().to_string())
        .status();
    let status = daemon.wait().unwrap();
    assert!(status.success(), "{}", read(&log));
    let state: serde_json::Value =
        serde_json::from_str(&read(dir.join("state/master.json"))).unwrap();
    assert_eq!(state["failovers"], 1, "{state}");
    assert_eq!(state["failbacks"], 1, "{state}");
}
