//! `[db] schedule = "watch"` with a real `hasync daemon` between two real PostgreSQL
//! servers: every commit on the master reaches the slave within 10 s, an idle master
//! costs no dump, a burst of commits coalesces into runs at least `min_interval` apart,
//! and `hasync status` / `/status` / `/metrics` show the DB lag. Each test has a master
//! server of its own: the poll watches the whole cluster, so another test's writes on a
//! shared master would start runs here.

use crate::db::{Case, Opts};
use crate::pg::Pg;
use crate::util::{hasync, text};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A running `hasync daemon` on the case's master config; killed on drop.
struct Daemon {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Daemon {
    fn start(c: &Case) -> Daemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = c.master_cfg();
        let mut text = std::fs::read_to_string(&cfg).unwrap();
        text.push_str(&format!(
            "\n[daemon]\nmetrics_listen = \"127.0.0.1:{port}\"\n"
        ));
        std::fs::write(&cfg, text).unwrap();
        let log = c.dir.path().join("daemon.log");
        let child = hasync()
            .env("HASYNC_LOG", "info")
            .env_remove("HASYNC_CONFIG")
            .arg("--config")
            .arg(&cfg)
            .arg("daemon")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let d = Daemon { child, log, port };
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(15),
                "the daemon does not listen on {port}: {}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's `/status` JSON (the same report as `hasync status --json`).
    fn status(&self) -> Value {
        let resp = crate::daemon::http_get(self.port, "/status");
        let body = resp.split("\r\n\r\n").nth(1).unwrap_or_default();
        serde_json::from_str(body).unwrap_or_else(|e| panic!("bad /status {e}: {resp}"))
    }

    fn metrics(&self) -> String {
        crate::daemon::http_get(self.port, "/metrics")
    }

    /// The DB job's entry of `/status`.
    fn db_job(&self) -> Value {
        let st = self.status();
        st["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == "db")
            .cloned()
            .unwrap_or_else(|| panic!("no db job in {st}"))
    }

    /// Waits until the DB job ran at least once and is idle: nothing pending, no run.
    fn settled(&self, secs: u64) -> Value {
        let t0 = Instant::now();
        loop {
            let j = self.db_job();
            if j["runs_total"].as_u64() > Some(0)
                && j["pending_since"].is_null()
                && j["running_since"].is_null()
            {
                return j;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(secs),
                "the DB job did not settle in {secs}s: {j}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(mut self) -> String {
        let _ = std::process::Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let st = self.child.wait().unwrap();
        let log = self.log();
        assert!(st.success(), "the daemon exited {st}: {log}");
        log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A master server of the test's own (stopped when the test binary exits).
fn own_master(port: u16) -> &'static Pg {
    Box::leak(Box::new(Pg::new(port)))
}

fn watch_case(db: &str, master_port: u16, db_extra: &'static str) -> Case {
    Case::new(
        db,
        Pg::slave(),
        Opts {
            master: Some(own_master(master_port)),
            db_extra,
            ..Default::default()
        },
    )
}

/// Whether the slave has the tenant row `name`.
fn on_slave(c: &Case, name: &str) -> bool {
    c.slave
        .try_psql(
            &c.db,
            &format!("SELECT count(*) FROM tenant WHERE name = '{name}'"),
        )
        .is_ok_and(|o| o.trim() == "1")
}

/// Commits one tenant row on the master (its own psql, one transaction).
fn commit(c: &Case, id: u32, name: &str) {
    c.master.sql(
        &c.db,
        &format!("INSERT INTO tenant (id, name) VALUES ({id}, '{name}')"),
    );
}

/// Seconds from now until `name` is on the slave; panics after `limit`.
fn visible_after(c: &Case, d: &Daemon, name: &str, limit: Duration) -> f64 {
    let t0 = Instant::now();
    while !on_slave(c, name) {
        assert!(
            t0.elapsed() < limit,
            "{name} not on the slave {limit:?} after its commit: {}\n{}",
            d.db_job(),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    t0.elapsed().as_secs_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[test]
fn db_watch_brings_each_of_20_commits_within_10s_and_an_idle_master_costs_no_dump() {
    let c = watch_case(
        "t_watch",
        5436,
        "schedule = \"watch\"\nmin_interval = \"1s\"\nsafety_pass = \"manual\"\n",
    );
    let d = Daemon::start(&c);
    d.settled(30);
    c.assert_replicated();

    let mut lat = Vec::new();
    for i in 0..20 {
        let name = format!("w{i}");
        commit(&c, 100 + i, &name);
        lat.push(visible_after(&c, &d, &name, Duration::from_secs(10)));
        // Commits at varied points of the poll's second.
        std::thread::sleep(Duration::from_millis(130 * (i as u64 % 7)));
    }
    let max = lat.iter().cloned().fold(0.0, f64::max);
    let med = median(&mut lat);
    eprintln!(
        "db watch: 20 commits, commit -> visible on the slave: median {med:.2}s, max {max:.2}s"
    );
    assert!(max <= 10.0, "max {max}");

    // Idle: no commit, so no run (no dump) for 6 s; the lag is 0. The server's autovacuum
    // may ANALYZE the new database's catalogs (a commit): such a window is tried again.
    let mut quiet = false;
    for _ in 0..3 {
        let before = d.settled(20);
        let db_before = c.state();
        let seen = d.status()["db"]["commits_seen"].clone();
        assert!(seen.as_u64() >= Some(1), "{}", d.status());
        std::thread::sleep(Duration::from_secs(6));
        let after = d.db_job();
        if d.status()["db"]["commits_seen"] != seen {
            eprintln!("db watch: a commit during the idle window (autovacuum?); again");
            continue;
        }
        assert_eq!(
            after["runs_total"],
            before["runs_total"],
            "a run while nothing was committed: {after}\n{}",
            d.log()
        );
        assert_eq!(c.state()["last_run"], db_before["last_run"], "a dump ran");
        quiet = true;
        break;
    }
    assert!(
        quiet,
        "the poll saw commits in three idle windows of 6 s: {}",
        d.log()
    );
    let st = d.status();
    assert_eq!(st["db"]["lag_seconds"], 0.0, "{st}");
    assert_eq!(st["db"]["lag_basis"], "watch", "{st}");
    assert_eq!(st["db"]["schedule"], "watch", "{st}");
    assert!(st["db"]["synced_as_of"].is_string(), "{st}");
    let m = d.metrics();
    assert!(m.contains("\nhasync_db_lag_seconds 0\n"), "{m}");
    assert!(m.contains("\nhasync_db_commits_seen_total "), "{m}");
    crate::daemon::health::promtool_clean(d.port);
    let o = hasync()
        .arg("--config")
        .arg(c.master_cfg())
        .arg("status")
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains(
            "db [watch] lag 0s (nothing committed on the master since the slave's last run)"
        ),
        "{out}"
    );

    // The poll is still alive after the idle time: one more commit arrives.
    commit(&c, 200, "after-idle");
    visible_after(&c, &d, "after-idle", Duration::from_secs(10));
    let log = d.stop();
    assert!(log.contains("watching database \"t_watch\""), "{log}");
    c.assert_replicated();
    crate::db::excluded_untouched(&c);
}

#[test]
fn db_watch_coalesces_a_burst_into_runs_min_interval_apart() {
    // The default min_interval (5 s).
    let c = watch_case(
        "t_watch_burst",
        5437,
        "schedule = \"watch\"\nsafety_pass = \"manual\"\n",
    );
    let d = Daemon::start(&c);
    let before = d.settled(30)["runs_total"].as_u64().unwrap();
    // 30 commits over ~3 s, each its own transaction.
    let t0 = Instant::now();
    let mut s = c.master.session(&c.db);
    {
        use std::io::Write;
        let stdin = s.stdin.as_mut().unwrap();
        for i in 0..30 {
            writeln!(
                stdin,
                "INSERT INTO tenant (id, name) VALUES ({}, 'b{i}');",
                300 + i
            )
            .unwrap();
            stdin.flush().unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    drop(s.stdin.take());
    let o = s.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let burst = t0.elapsed().as_secs_f64();
    let last = visible_after(&c, &d, "b29", Duration::from_secs(10));
    let j = d.settled(20);
    let runs = j["runs_total"].as_u64().unwrap() - before;
    eprintln!(
        "db watch burst: 30 commits in {burst:.1}s, on the slave {last:.2}s after the last; {runs} runs"
    );
    assert!(
        (1..=3).contains(&runs),
        "{runs} runs for one burst: {}",
        d.log()
    );
    // The runs of the burst started at least min_interval apart.
    let hist: Value = serde_json::from_slice(
        &std::fs::read(c.dir.path().join("master-state/jobs/db.json")).unwrap(),
    )
    .unwrap();
    let starts: Vec<i64> = hist["runs"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .take(runs as usize)
        .map(|r| {
            chrono::DateTime::parse_from_rfc3339(r["start"].as_str().unwrap())
                .unwrap()
                .timestamp_millis()
        })
        .collect();
    for w in starts.windows(2) {
        assert!(w[0] - w[1] >= 4_990, "runs {}ms apart: {hist}", w[0] - w[1]);
    }
    for i in 0..30 {
        assert!(on_slave(&c, &format!("b{i}")), "b{i} missing");
    }
    d.stop();
    c.assert_replicated();
}

#[test]
fn cron_says_a_watch_db_needs_the_daemon() {
    let c = Case::new(
        "t_watch_cron",
        Pg::slave(),
        Opts {
            db_extra: "schedule = \"watch\"\n",
            ..Default::default()
        },
    );
    let o = hasync()
        .arg("--config")
        .arg(c.master_cfg())
        .arg("cron")
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("# [db]: schedule \"watch\" needs `hasync daemon`"),
        "{out}"
    );
    assert!(!out.contains("db-replicate\n"), "{out}");
}
