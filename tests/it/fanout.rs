//! Fan-out (issue 22): a master with `[[peer]]` tables replicates to every standby, each
//! over its own connection, under its own lock and state (`job@peer`). Standby `b` is a
//! real `hasync serve` (local child, with its own config); standby `c` is dead in the
//! worst way: a TCP port that accepts and never answers, so each run toward it hangs
//! until `timeout`. The tests check that `b` converges anyway, and soon (while `c`'s run
//! still hangs), through `hasync sync` and through the daemon; that `status` (text,
//! JSON, metrics) shows both peers; and, over the test's real sshd, that two SSH standbys
//! both converge.

use crate::util::{free_port, hasync, json, snapshot, text, wait_for};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// How long a run toward the silent peer hangs before it fails.
const DEAD_TIMEOUT_S: u64 = 6;

/// A port that accepts TCP connections and never sends a byte (they are kept open
/// until the test binary exits).
fn silent_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    port
}

/// Master `a` with standbys `b` (alive, local) and `c` (silent), in `dir`.
struct FanOut {
    dir: PathBuf,
    metrics: u16,
}

impl FanOut {
    fn new(dir: &Path, schedule: &str) -> FanOut {
        for n in ["a", "b"] {
            std::fs::create_dir_all(dir.join(format!("{n}-root/spool"))).unwrap();
        }
        std::fs::write(dir.join("a-root/spool/first"), b"one").unwrap();
        let kh = dir.join("known_hosts");
        std::fs::write(&kh, "").unwrap();
        let metrics = free_port();
        let a = format!(
            r#"[node]
role = "master"
root = "a-root"
state_dir = "a-state"
sentinel_dir = "a-state"
known_hosts = "{kh}"
timeout = "{DEAD_TIMEOUT_S}s"

[[peer]]
name = "b"
address = "local"
peer_config = "b.toml"
peer_root = "b-root"

[[peer]]
name = "c"
address = "root@127.0.0.1:{silent}"

[[sync]]
name = "files"
paths = ["/spool"]
schedule = "{schedule}"

[daemon]
metrics_listen = "127.0.0.1:{metrics}"
retry_min = "1s"
retry_max = "2s"
"#,
            kh = kh.display(),
            silent = silent_port(),
        );
        std::fs::write(dir.join("a.toml"), a).unwrap();
        let b = "[node]\nrole = \"slave\"\npeer = \"local\"\nroot = \"b-root\"\n\
                 state_dir = \"b-state\"\nsentinel_dir = \"b-state\"\n";
        std::fs::write(dir.join("b.toml"), b).unwrap();
        FanOut {
            dir: dir.to_path_buf(),
            metrics,
        }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        hasync()
            .arg("--config")
            .arg(self.dir.join("a.toml"))
            .args(args)
            .output()
            .unwrap()
    }

    fn has(&self, node: &str, rel: &str) -> bool {
        self.dir.join(format!("{node}-root/spool/{rel}")).exists()
    }
}

/// The JSON job report of `name` toward `peer` in `hasync sync --json`'s output.
fn job_of<'a>(v: &'a serde_json::Value, peer: &str) -> &'a serde_json::Value {
    v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["peer"] == peer)
        .unwrap_or_else(|| panic!("no job toward {peer} in {v}"))
}

#[test]
fn hasync_sync_reaches_the_live_standby_while_the_dead_one_hangs() {
    let t = tempfile::tempdir().unwrap();
    let f = FanOut::new(t.path(), "manual");
    let t0 = Instant::now();
    let o = f.run(&["sync", "--json"]);
    let took = t0.elapsed();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let v = json(&o);
    assert_eq!(job_of(&v, "b")["ok"], true, "{v}");
    assert_eq!(job_of(&v, "c")["ok"], false, "{v}");
    let err = job_of(&v, "c")["error"].as_str().unwrap().to_string();
    assert!(err.contains("cannot reach the peer"), "{err}");
    assert!(f.has("b", "first"));
    // The peers ran side by side: the whole run took about one timeout, and b's run
    // (recorded under its own name) ended long before c's.
    assert!(took < Duration::from_secs(DEAD_TIMEOUT_S + 5), "{took:?}");
    let end = |unit: &str| {
        let j: serde_json::Value = serde_json::from_slice(
            &std::fs::read(f.dir.join(format!("a-state/jobs/{unit}.json"))).unwrap(),
        )
        .unwrap();
        chrono::DateTime::parse_from_rfc3339(j["runs"][0]["end"].as_str().unwrap()).unwrap()
    };
    let gap = end("files@c") - end("files@b");
    println!("fan-out: hasync sync took {took:?}; b's run ended {gap} before c's");
    assert!(gap.num_milliseconds() > 3000, "b ended only {gap} before c");
    // --peer picks one: fast, and c is not contacted.
    std::fs::write(f.dir.join("a-root/spool/second"), b"two").unwrap();
    let t0 = Instant::now();
    let o = f.run(&["sync", "--peer", "b"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(t0.elapsed() < Duration::from_secs(DEAD_TIMEOUT_S - 1));
    assert!(f.has("b", "second"));
    let o = f.run(&["sync", "--peer", "nope"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no [[peer]] named \"nope\"") && err.contains("peers: b, c"),
        "{err}"
    );
    // A dry run toward both lists b's change and changes nothing.
    std::fs::write(f.dir.join("a-root/spool/third"), b"3").unwrap();
    let o = f.run(&["sync", "--dry-run", "--peer", "b"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("spool/third"),
        "{}",
        text(&o)
    );
    assert!(!f.has("b", "third"));
}

/// A running `hasync daemon` (killed on drop).
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status_json(f: &FanOut) -> serde_json::Value {
    let o = f.run(&["status", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn peer_state(v: &serde_json::Value, name: &str) -> String {
    v["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .map(|p| p["state"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

#[test]
fn the_daemon_keeps_the_live_standby_in_step_and_status_shows_both_peers() {
    let t = tempfile::tempdir().unwrap();
    let f = FanOut::new(t.path(), "watch");
    let log = std::fs::File::create(f.dir.join("daemon.log")).unwrap();
    let _d = Daemon(
        hasync()
            .env("HASYNC_LOG", "info")
            .arg("--config")
            .arg(f.dir.join("a.toml"))
            .arg("daemon")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let daemon_log = || std::fs::read_to_string(f.dir.join("daemon.log")).unwrap_or_default();
    wait_for(
        10,
        || f.has("b", "first"),
        || format!("first copy: {}", daemon_log()),
    );
    // While the run toward c hangs (or backs off), every change reaches b quickly.
    for i in 0..3 {
        let name = format!("w{i}");
        std::fs::write(f.dir.join("a-root/spool").join(&name), b"x").unwrap();
        let t0 = Instant::now();
        wait_for(
            10,
            || f.has("b", &name),
            || format!("{name}: {}", daemon_log()),
        );
        let took = t0.elapsed();
        println!("fan-out: {name} reached b in {took:?} while c hangs");
        assert!(
            took < Duration::from_secs(3),
            "{name} took {took:?} to reach b (the dead peer must not delay it)"
        );
        std::thread::sleep(Duration::from_millis(700));
    }
    wait_for(
        DEAD_TIMEOUT_S + 10,
        || peer_state(&status_json(&f), "c") == "failing",
        || format!("c never failed: {}", status_json(&f)),
    );
    let v = status_json(&f);
    assert_eq!(peer_state(&v, "b"), "ok", "{v}");
    let names: Vec<&str> = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["files@b", "files@c"], "{v}");
    let o = f.run(&["status"]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(out.contains("peers:"), "{out}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(name) && l.contains("lag"))
            .unwrap_or_else(|| panic!("no line for peer {name}: {out}"))
            .to_string()
    };
    assert!(line("b ").contains(" ok "), "{out}");
    assert!(line("c ").contains("failing"), "{out}");
    let metrics = crate::daemon::http_get(f.metrics, "/metrics");
    assert!(
        metrics.contains("hasync_job_last_run_success{job=\"files\",peer=\"b\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hasync_job_last_run_success{job=\"files\",peer=\"c\"} 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hasync_peer_jobs_failing{peer=\"c\"} 1\n"),
        "{metrics}"
    );
    assert_eq!(
        snapshot(&f.dir.join("a-root/spool")),
        snapshot(&f.dir.join("b-root/spool"))
    );
}

#[test]
fn two_standbys_over_ssh_each_get_their_own_session_and_converge() {
    let sshd = crate::sshd::Sshd::shared();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let key = d.join("key");
    let pub_line = crate::sshd::keygen(&key);
    sshd.authorize(&pub_line);
    let kh = d.join("known_hosts");
    sshd.write_known_hosts(&kh);
    let src = d.join("a-root/spool");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..20 {
        std::fs::write(
            src.join(format!("f{i}")),
            crate::util::pseudo(10_000 + i, i as u64),
        )
        .unwrap();
    }
    let mut cfg = format!(
        "[node]\nrole = \"master\"\nroot = \"a-root\"\nstate_dir = \"a-state\"\n\
         sentinel_dir = \"a-state\"\nidentity = \"{}\"\nknown_hosts = \"{}\"\nremote_path = \"{}\"\n",
        key.display(),
        kh.display(),
        crate::util::bin().display()
    );
    for n in ["s1", "s2"] {
        cfg += &format!(
            "[[peer]]\nname = \"{n}\"\naddress = \"root@127.0.0.1:{}\"\npeer_root = \"{}\"\n",
            sshd.port,
            d.join(format!("{n}-root")).display()
        );
    }
    cfg += "[[sync]]\nname = \"files\"\npaths = [\"/spool\"]\n";
    std::fs::write(d.join("a.toml"), cfg).unwrap();
    let o = hasync()
        .arg("--config")
        .arg(d.join("a.toml"))
        .args(["sync", "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v = json(&o);
    for n in ["s1", "s2"] {
        assert_eq!(job_of(&v, n)["files_transferred"], 20, "{v}");
        assert_eq!(snapshot(&src), snapshot(&d.join(format!("{n}-root/spool"))));
    }
}

/// The DB job fans out too: `db@b` and `db@c`, each with its own record; a dead `c`
/// leaves `b` replayed.
#[test]
fn db_replicate_replays_into_every_standby_and_a_dead_one_does_not_stop_the_other() {
    use crate::db::{Case, Opts, REPLICATED, SCHEMA};
    use crate::pg::Pg;
    let case = Case::new("fanout_db", Pg::slave(), Opts::default());
    let d = case.dir.path();
    // Standby c: the same server as b, its own database.
    let slave = Pg::slave();
    slave.create_db("fanout_db_c");
    slave.sql("fanout_db_c", SCHEMA);
    let b_cfg = std::fs::read_to_string(case.slave_cfg()).unwrap();
    let c_cfg = b_cfg
        .replace("database = \"fanout_db\"", "database = \"fanout_db_c\"")
        .replace("slave-state", "c-state");
    std::fs::write(d.join("c.toml"), c_cfg).unwrap();
    let master = std::fs::read_to_string(case.master_cfg()).unwrap();
    let kh = d.join("known_hosts");
    std::fs::write(&kh, "").unwrap();
    let write_master = |c_address: &str, extra: &str| {
        let text = master.replace("peer = \"local\"\n", "").replace(
            "peer_root = \"slave-root\"\npeer_config = \"slave.toml\"\n",
            extra,
        ) + "[[peer]]\nname = \"b\"\naddress = \"local\"\npeer_config = \"slave.toml\"\n"
            + &format!("[[peer]]\nname = \"c\"\naddress = \"{c_address}\"\n");
        std::fs::write(case.master_cfg(), text).unwrap();
    };
    write_master("local\"\npeer_config = \"c.toml", "");
    let o = case.run(&["--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v = json(&o);
    for p in ["b", "c"] {
        assert_eq!(v["peers"][p]["outcome"], "replayed", "{v}");
    }
    let tables =
        |db: &str, pg: &Pg| -> Vec<String> { REPLICATED.iter().map(|t| pg.table(db, t)).collect() };
    let on_master = tables("fanout_db", case.master);
    assert_eq!(tables("fanout_db", slave), on_master);
    assert_eq!(tables("fanout_db_c", slave), on_master);
    for rec in ["db@b.json", "db@c.json"] {
        assert!(d.join("master-state").join(rec).exists(), "{rec}");
    }
    // c goes silent: b still gets the new row, the run exits 3 and says why for c.
    write_master(
        &format!("root@127.0.0.1:{}", silent_port()),
        &format!("timeout = \"3s\"\nknown_hosts = \"{}\"\n", kh.display()),
    );
    case.master.sql(
        "fanout_db",
        "INSERT INTO tenant (id, name) VALUES (3, 'initech');",
    );
    let o = case.run(&["--json"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let v = json(&o);
    assert_eq!(v["peers"]["b"]["outcome"], "replayed", "{v}");
    assert_eq!(v["peers"]["c"]["outcome"], "failed", "{v}");
    assert!(slave.table("fanout_db", "tenant").contains("initech"));
    assert!(!slave.table("fanout_db_c", "tenant").contains("initech"));
    // --peer b alone: unchanged since its last replay, c not contacted.
    let t0 = Instant::now();
    let o = case.run(&["--peer", "b"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(t0.elapsed() < Duration::from_secs(3), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("unchanged"),
        "{}",
        text(&o)
    );
}
