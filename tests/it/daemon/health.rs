//! Issue 21: the health endpoints, `status --check`, the status page and the metrics of
//! two real daemons, a master and its slave, on loopback ports. The master pushes to
//! the slave's tree through a local `hasync serve` child that loads the *slave's*
//! config (`HASYNC_CONFIG`, as sshd's forced command would on a real slave), so the
//! slave records what it received; the slave's master check probes the master's
//! listener. A real HAProxy (`option httpchk GET /primary`) sits in front of both, and
//! the status page is rendered by a real headless chromium.

use super::mirrored;
use crate::util::free_port;
use crate::util::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Panics (never skips) unless `program` is installed.
fn require(program: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "this test needs `{program}`: install the Debian package {package} (scripts/test does)"
    );
}

/// A child process killed on drop, its stderr in `log`.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(mut c: Command, log: PathBuf) -> Proc {
        let child = c
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(log.with_extension("out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Proc { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `(status code, body)` of `METHOD path`; code 0 when nothing answers.
fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (code, body.to_string())
}

fn code(port: u16, path: &str) -> u16 {
    http(port, "GET", path).0
}

/// Two nodes in one temp dir: `m/` (master) and `s/` (slave), each with its config,
/// state and tree; the master's job pushes `m/root/data` to `s/root/data`.
struct Pair {
    dir: PathBuf,
    m_port: u16,
    s_port: u16,
    s_health: u16,
    master: Option<Proc>,
    slave: Option<Proc>,
}

impl Pair {
    fn new(dir: &Path, master_schedule: &str) -> Pair {
        let (m_port, s_port, s_health) = (free_port(), free_port(), free_port());
        let d = dir.display();
        for n in ["m/root/data", "s/root", "m/sentinels", "s/sentinels"] {
            std::fs::create_dir_all(dir.join(n)).unwrap();
        }
        std::fs::write(dir.join("m/root/data/a.txt"), "hello\n").unwrap();
        std::fs::write(
            dir.join("m/hasync.toml"),
            format!(
                r#"[node]
role = "master"
peer = "local"
root = "root"
peer_root = "{d}/s/root"
state_dir = "state"
sentinel_dir = "sentinels"
identity = "/root/.ssh/page_test_secret_key"
[daemon]
metrics_listen = "127.0.0.1:{m_port}"
peer_health = "127.0.0.1:{s_port}"
[[sync]]
name = "data"
paths = ["/data"]
delete = true
schedule = "{master_schedule}"
safety_pass = "manual"
[[sync]]
name = "broken"
paths = ["/missing"]
delete = true
schedule = "manual"
"#
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("s/hasync.toml"),
            format!(
                r#"[node]
role = "slave"
peer = "local"
root = "root"
state_dir = "state"
sentinel_dir = "sentinels"
[daemon]
metrics_listen = "127.0.0.1:{s_port}"
health_listen = "127.0.0.1:{s_health}"
[services]
start = ["touch {d}/s/services-up"]
stop = ["rm -f {d}/s/services-up"]
status = "test -e {d}/s/services-up"
[check_master]
address = "127.0.0.1"
probes = ["tcp:{m_port}"]
interval = "200ms"
timeout = "300ms"
fail_after = 2
recover_after = 2
hold_down = "1s"
"#
            ),
        )
        .unwrap();
        Pair {
            dir: dir.to_path_buf(),
            m_port,
            s_port,
            s_health,
            master: None,
            slave: None,
        }
    }

    fn cfg(&self, node: &str) -> PathBuf {
        self.dir.join(node).join("hasync.toml")
    }

    fn start(&self, node: &str) -> Proc {
        let mut c = hasync();
        c.env("HASYNC_LOG", "info")
            // The master's `hasync serve` child plays the slave's side: it loads the
            // slave's config (the daemon itself takes --config).
            .env("HASYNC_CONFIG", self.cfg("s"))
            .arg("--config")
            .arg(self.cfg(node))
            .arg("daemon");
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let log = self.dir.join(format!("{node}-{n}.log"));
        let p = Proc::spawn(c, log);
        let port = if node == "m" {
            self.m_port
        } else {
            self.s_port
        };
        wait_for(
            20,
            || code(port, "/health") == 200,
            || format!("{node} daemon: {}", p.log()),
        );
        p
    }

    fn start_master(&mut self) {
        self.master = Some(self.start("m"));
    }

    /// SIGKILL: the master dies as a crashed machine would, without a goodbye.
    fn kill_master(&mut self) -> Instant {
        let mut p = self.master.take().expect("master runs");
        p.child.kill().unwrap();
        let t = Instant::now();
        let _ = p.child.wait();
        t
    }

    fn start_slave(&mut self) {
        self.slave = Some(self.start("s"));
    }

    /// Waits until the slave has received the master's first push.
    fn wait_first_sync(&self) {
        let (m, s) = (self.dir.join("m/root/data"), self.dir.join("s/root/data"));
        wait_for(20, || mirrored(&m, &s), || self.logs());
        let rec = self.dir.join("s/state/received.json");
        wait_for(
            10,
            || rec.exists(),
            || format!("no {}: {}", rec.display(), self.logs()),
        );
    }

    fn logs(&self) -> String {
        let l = |p: &Option<Proc>| p.as_ref().map(|p| p.log()).unwrap_or_default();
        format!(
            "master log:\n{}\nslave log:\n{}",
            l(&self.master),
            l(&self.slave)
        )
    }

    fn check(&self, node: &str, args: &[&str]) -> i32 {
        let o = hasync()
            .arg("--config")
            .arg(self.cfg(node))
            .args(["status", "--check"])
            .args(args)
            .output()
            .unwrap();
        o.status.code().unwrap_or(-1)
    }
}

/// The status codes of every endpoint on `port`, as `path=code` words.
fn codes(port: u16) -> String {
    [
        "/primary",
        "/replica",
        "/replica?lag=60s",
        "/replica?lag=1s",
        "/health",
        "/role",
    ]
    .iter()
    .map(|p| format!("{p}={}", code(port, p)))
    .collect::<Vec<_>>()
    .join(" ")
}

#[test]
fn daemon_health_endpoints_for_master_standby_lagging_and_failed_over() {
    let tmp = tempfile::tempdir().unwrap();
    let mut pair = Pair::new(tmp.path(), "watch");
    pair.start_slave();
    pair.start_master();
    pair.wait_first_sync();
    let (m, s, sh) = (pair.m_port, pair.s_port, pair.s_health);
    // Master: serves; not a replica.
    assert_eq!(
        codes(m),
        "/primary=200 /replica=503 /replica?lag=60s=503 /replica?lag=1s=503 /health=200 /role=200",
        "{}",
        pair.logs()
    );
    assert_eq!(http(m, "GET", "/role").1, "master\n");
    let (c, body) = http(m, "HEAD", "/primary");
    assert_eq!((c, body.as_str()), (200, ""), "HEAD has no body");
    assert_eq!(http(m, "HEAD", "/replica").0, 503);
    assert_eq!(http(m, "POST", "/primary").0, 405);
    // Standby, fresh: a replica, not a primary; the health listener answers the same.
    assert_eq!(code(s, "/replica?lag=60s"), 200, "{}", pair.logs());
    for port in [s, sh] {
        assert_eq!(code(port, "/primary"), 503);
        assert_eq!(code(port, "/replica"), 200);
        assert_eq!(code(port, "/health"), 200);
        assert_eq!(http(port, "GET", "/role").1, "slave\n");
        assert_eq!(http(port, "HEAD", "/replica").0, 200);
    }
    assert_eq!(code(s, "/replica?lag=forever"), 400);
    let o = hasync()
        .arg("--config")
        .arg(pair.cfg("s"))
        .arg("status")
        .output()
        .unwrap();
    assert!(text(&o).contains("received: last sync 20"), "{}", text(&o));
    // health_listen has the health endpoints only.
    for p in ["/", "/metrics", "/status"] {
        assert_eq!(code(sh, p), 404, "{p} on health_listen");
        assert_eq!(code(s, p), 200, "{p} on metrics_listen");
    }
    assert_eq!(pair.check("m", &["primary"]), 0);
    assert_eq!(pair.check("m", &["replica"]), 1);
    assert_eq!(pair.check("s", &["primary"]), 1);
    assert_eq!(pair.check("s", &["replica", "--max-lag", "60s"]), 0);
    assert_eq!(pair.check("s", &["primary", "--max-lag", "60s"]), 2);
    // Standby past ?lag: nothing changes on the master, so nothing is pushed.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        codes(s),
        "/primary=503 /replica=200 /replica?lag=60s=200 /replica?lag=1s=503 /health=200 /role=200"
    );
    assert_eq!(pair.check("s", &["replica", "--max-lag", "1s"]), 1);
    // The master dies: the slave fails over and serves.
    pair.kill_master();
    wait_for(10, || code(s, "/primary") == 200, || pair.logs());
    assert!(tmp.path().join("s/services-up").exists());
    assert_eq!(
        codes(s),
        "/primary=200 /replica=503 /replica?lag=60s=503 /replica?lag=1s=503 /health=200 /role=200"
    );
    assert_eq!(http(s, "GET", "/role").1, "slave serving\n");
    assert_eq!(pair.check("s", &["primary"]), 0);
    assert_eq!(pair.check("s", &["replica"]), 1);
    // The master returns: it yields while its slave serves, then takes over at failback.
    pair.start_master();
    let (c, why) = http(m, "GET", "/primary");
    if c == 503 {
        assert!(why.contains("has taken over"), "{why}");
    }
    wait_for(15, || code(s, "/primary") == 503, || pair.logs());
    wait_for(5, || code(m, "/primary") == 200, || pair.logs());
    assert!(!tmp.path().join("s/services-up").exists());
    assert_eq!(http(s, "GET", "/role").1, "slave\n");
    promtool_clean(m);
    promtool_clean(s);
    let metrics = http(s, "GET", "/metrics").1;
    assert!(
        metrics.contains("hasync_role{role=\"slave\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("hasync_services_active 0\n"), "{metrics}");
    assert!(metrics.contains("hasync_last_received_timestamp_seconds{kind=\"sync\"} "));
    let metrics = http(m, "GET", "/metrics").1;
    assert!(
        metrics.contains("hasync_role{role=\"master\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("hasync_last_success_timestamp_seconds{job=\"data\"} "));
}

/// `promtool check metrics` on the node's /metrics: no lint problem.
pub(crate) fn promtool_clean(port: u16) {
    require("promtool", "prometheus");
    let text = http(port, "GET", "/metrics").1;
    let mut c = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(
        o.status.success() && o.stdout.is_empty() && o.stderr.is_empty(),
        "promtool: {}\n{text}",
        crate::util::text(&o)
    );
}

/// A real HAProxy in front of both nodes' listeners, health-checked on /primary.
fn haproxy(dir: &Path, pair: &Pair) -> (Proc, u16) {
    require("haproxy", "haproxy");
    let front = free_port();
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            r#"global
    maxconn 256
defaults
    mode http
    timeout connect 500ms
    timeout client 5s
    timeout server 5s
frontend clients
    bind 127.0.0.1:{front}
    default_backend pair
backend pair
    option httpchk GET /primary
    http-check expect status 200
    default-server inter 200ms fall 2 rise 1
    server master 127.0.0.1:{} check
    server slave 127.0.0.1:{} check
"#,
            pair.m_port, pair.s_port
        ),
    )
    .unwrap();
    let o = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(o.status.success(), "haproxy -c: {}", text(&o));
    let mut c = Command::new("haproxy");
    c.arg("-db").arg("-f").arg(&cfg);
    let p = Proc::spawn(c, dir.join("haproxy.log"));
    wait_for(10, || code(front, "/health") != 0, || p.log());
    (p, front)
}

/// Which node a client reaches through HAProxy: the `/role` it is answered.
fn reached(front: u16) -> String {
    let (c, body) = http(front, "GET", "/role");
    if c == 200 {
        body.trim().to_string()
    } else {
        format!("HTTP {c}")
    }
}

/// Polls through HAProxy every 20 ms until a client reaches `want`; returns how long
/// it took from `since`, and every distinct answer seen on the way with when it was
/// first seen (from `since`).
fn until_reached(
    front: u16,
    want: &str,
    since: Instant,
    limit: Duration,
) -> (Duration, Vec<(String, Duration)>) {
    let mut seen: Vec<(String, Duration)> = Vec::new();
    loop {
        let r = reached(front);
        if seen.last().map(|s| &s.0) != Some(&r) {
            seen.push((r.clone(), since.elapsed()));
        }
        if r == want {
            return (since.elapsed(), seen);
        }
        assert!(
            since.elapsed() < limit,
            "clients never reached {want} within {limit:?}: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn daemon_haproxy_follows_failover_and_failback() {
    let tmp = tempfile::tempdir().unwrap();
    let mut pair = Pair::new(tmp.path(), "watch");
    pair.start_slave();
    pair.start_master();
    pair.wait_first_sync();
    let (_proxy, front) = haproxy(tmp.path(), &pair);
    wait_for(10, || reached(front) == "master", || pair.logs());
    let mut failovers = Vec::new();
    for trial in 0..3 {
        // Clients reach the master, and only the master (once HAProxy has marked the
        // stopped slave down: its checks run every 200 ms).
        let mut streak = 0;
        wait_for(
            5,
            || {
                streak = if reached(front) == "master" {
                    streak + 1
                } else {
                    0
                };
                streak >= 10
            },
            || format!("trial {trial}: clients do not stay on the master"),
        );
        let died = pair.kill_master();
        let (t, seen) = until_reached(front, "slave serving", died, Duration::from_secs(10));
        eprintln!(
            "trial {trial}: failover through HAProxy in {:.2}s ({seen:?})",
            t.as_secs_f64()
        );
        failovers.push(t);
        // The master comes back: clients stay on the slave until its failback, then
        // follow the master; they are never sent to a node that does not serve.
        pair.start_master();
        let back = Instant::now();
        assert_eq!(reached(front), "slave serving", "before the failback");
        let (t, seen) = until_reached(front, "master", back, Duration::from_secs(20));
        eprintln!(
            "trial {trial}: back on the master {:.2}s after its restart ({seen:?})",
            t.as_secs_f64()
        );
        // At the failback the slave stops its services and answers 503 on /primary;
        // until HAProxy's checks notice (fall 2 x inter 200ms) clients still reach it
        // as a standby ("slave"). That window is HAProxy's to bound, and it must stay
        // short; no other node or answer is ever seen.
        let standby_from = seen.iter().find(|s| s.0 == "slave").map(|s| s.1);
        if let Some(from) = standby_from {
            let window = t - from;
            eprintln!(
                "trial {trial}: clients reached the stopped slave for {:.2}s",
                window.as_secs_f64()
            );
            assert!(window < Duration::from_secs(2), "{seen:?}");
        }
        assert!(
            seen.iter()
                .all(|s| ["slave serving", "slave", "master", "HTTP 503"].contains(&s.0.as_str())),
            "{seen:?}"
        );
        assert!(
            !tmp.path().join("s/services-up").exists(),
            "failback stopped the services"
        );
    }
    failovers.sort();
    let median = failovers[failovers.len() / 2];
    let max = *failovers.last().unwrap();
    eprintln!(
        "failover through HAProxy: median {:.2}s, max {:.2}s over {} trials",
        median.as_secs_f64(),
        max.as_secs_f64(),
        failovers.len()
    );
    assert!(max < Duration::from_secs(10), "{failovers:?}");
}

#[test]
fn daemon_status_page_in_headless_chromium() {
    require("chromium", "chromium");
    let tmp = tempfile::tempdir().unwrap();
    let mut pair = Pair::new(tmp.path(), "*/1 * * * * *");
    pair.start_slave();
    pair.start_master();
    pair.wait_first_sync();
    // A few runs for the chart, and one failed run for "recent errors".
    let state = tmp.path().join("m/state");
    let runs = || {
        std::fs::read_to_string(state.join("jobs/data.json"))
            .map(|t| t.matches("\"trigger\"").count())
            .unwrap_or(0)
    };
    wait_for(20, || runs() >= 3, || pair.logs());
    let o = hasync()
        .arg("--config")
        .arg(pair.cfg("m"))
        .args(["sync", "broken"])
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    let url = format!("http://127.0.0.1:{}/", pair.m_port);
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let o = chromium(
        tmp.path(),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=412,1600",
            &url,
        ],
    );
    assert!(o.status.success(), "chromium --screenshot: {}", text(&o));
    let png = std::fs::read(&shot).unwrap_or_default();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "screenshot {} bytes",
        png.len()
    );
    eprintln!("status page screenshot: {}", shot.display());
    let o = chromium(tmp.path(), &["--dump-dom", &url]);
    assert!(o.status.success(), "chromium --dump-dom: {}", text(&o));
    let dom = String::from_utf8_lossy(&o.stdout).into_owned();
    for want in [
        "<span id=\"role\" class=\"badge serving\">master</span>",
        "<tr class=\"job\" data-job=\"data\">",
        "<tr class=\"job\" data-job=\"broken\">",
        "<section id=\"errors\"",
        "<tr class=\"error\">",
        "<svg id=\"chart-durations\"",
        "<circle class=\"point\"",
        "http-equiv=\"refresh\"",
        "name=\"viewport\"",
        "yes: master",
    ] {
        assert!(dom.contains(want), "the page has no {want:?}:\n{dom}");
    }
    // Nothing secret, nothing fetched from elsewhere.
    for never in [
        "page_test_secret_key",
        "hasync.toml",
        "<script",
        "http://",
        "https://",
    ] {
        let rest = dom.replace(&url, "");
        assert!(!rest.contains(never), "the page shows {never:?}:\n{dom}");
    }
    // The slave's page: the master check and the lag it received.
    let s_dom = String::from_utf8_lossy(
        &chromium(
            tmp.path(),
            &["--dump-dom", &format!("http://127.0.0.1:{}/", pair.s_port)],
        )
        .stdout,
    )
    .into_owned();
    for want in [
        "class=\"badge standby\">slave</span>",
        "<section id=\"master-check\"",
        "last sync received",
        "<svg id=\"chart-lag\"",
        "<polyline",
    ] {
        assert!(
            s_dom.contains(want),
            "the slave's page has no {want:?}:\n{s_dom}"
        );
    }
}

/// Headless Debian chromium with a fresh profile and no network of its own.
fn chromium(dir: &Path, args: &[&str]) -> std::process::Output {
    let profile = tempfile::tempdir_in(dir).unwrap();
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .output()
        .unwrap()
}
