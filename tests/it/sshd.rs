//! A real OpenSSH server for tests: `/usr/sbin/sshd -D -e -f <conf>` on
//! 127.0.0.1 and a free port, with its own host key and AuthorizedKeysFile in
//! a temp dir. Killed on drop, and by a watchdog when the test process exits
//! (so a shared, never-dropped instance does not outlive the test binary).
//!
//! A missing sshd is a failure, never a silent skip: install openssh-server.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const SSHD: &str = "/usr/sbin/sshd";
/// The password-login test user (created on demand).
pub const TEST_USER: &str = "hasynctest";
pub const TEST_PASSWORD: &str = "hasync-test-pw-1";

/// How to configure one sshd.
#[derive(Debug, Clone, Default)]
pub struct SshdOptions {
    /// Allow password logins (and create the `hasynctest` user with `TEST_PASSWORD`).
    pub password_auth: bool,
    /// Extra sshd_config lines.
    pub extra: Vec<String>,
}

pub struct Sshd {
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// The server's public host key line (`ssh-ed25519 AAAA... comment`).
    pub host_key_pub: String,
    /// The AuthorizedKeysFile for every user (besides ~/.ssh/authorized_keys).
    pub authorized_keys: PathBuf,
    /// A client key authorized for root (`client_key`, `.pub` beside it).
    pub client_key: PathBuf,
    pub log: PathBuf,
    /// The watchdog shell; its stdin closing (our exit) kills sshd.
    watchdog: Child,
    watchdog_stdin: Option<ChildStdin>,
    pub pid: u32,
}

fn require_sshd() {
    if !Path::new(SSHD).exists() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{SSHD} is missing: the CI setup must install openssh-server");
        }
        panic!(
            "{SSHD} is missing: install openssh-server (apt-get install -y openssh-server openssh-client); \
             the SSH tests never skip silently"
        );
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Generates an unencrypted ed25519 key at `path` with ssh-keygen; returns the public line.
pub fn keygen(path: &Path) -> String {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(path));
    let mut p = path.as_os_str().to_owned();
    p.push(".pub");
    std::fs::read_to_string(PathBuf::from(p))
        .unwrap()
        .trim()
        .to_string()
}

/// Held by tests that change the test user's ~/.ssh (they run in parallel otherwise).
pub fn lock_test_user() -> std::sync::MutexGuard<'static, ()> {
    static HOME: Mutex<()> = Mutex::new(());
    HOME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Creates (once per process) the `hasynctest` user, and (always) sets its password.
pub fn ensure_test_user() -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let exists = Command::new("id")
        .arg(TEST_USER)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !exists {
        run(Command::new("useradd").args(["-m", "-s", "/bin/sh", TEST_USER]));
    }
    let mut child = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .spawn()
        .expect("chpasswd");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{TEST_USER}:{TEST_PASSWORD}\n").as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "chpasswd failed");
    let home =
        run(Command::new("sh").args(["-c", &format!("getent passwd {TEST_USER} | cut -d: -f6")]));
    PathBuf::from(home.trim())
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.contains(") Z "),
        Err(_) => false,
    }
}

fn wait_ready(pid: u32, port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !alive(pid) {
            return false;
        }
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            // A real sshd greets first.
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 4];
            if std::io::Read::read_exact(&mut s, &mut buf).is_ok() && &buf == b"SSH-" {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

impl Sshd {
    pub fn start() -> Sshd {
        Sshd::start_with(SshdOptions::default())
    }

    /// One sshd shared by the whole test binary (root, key auth). Tests that
    /// mutate authorized_keys or host keys must start their own.
    pub fn shared() -> &'static Sshd {
        static SHARED: OnceLock<Sshd> = OnceLock::new();
        SHARED.get_or_init(Sshd::start)
    }

    pub fn start_with(opts: SshdOptions) -> Sshd {
        require_sshd();
        std::fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        if opts.password_auth {
            ensure_test_user();
        }
        let dir = tempfile::tempdir().unwrap();
        let host_key = dir.path().join("ssh_host_ed25519_key");
        let host_key_pub = keygen(&host_key);
        let client_key = dir.path().join("client_ed25519");
        let client_pub = keygen(&client_key);
        let authorized_keys = dir.path().join("authorized_keys");
        std::fs::write(&authorized_keys, format!("{client_pub}\n")).unwrap();
        let log = dir.path().join("sshd.log");
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let port = crate::util::free_port();
            let conf = dir.path().join("sshd_config");
            let mut c = format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\n\
                 AuthorizedKeysFile {} .ssh/authorized_keys\nPermitRootLogin yes\nStrictModes no\n\
                 UsePAM no\nSetEnv SHLVL=1\nPubkeyAuthentication yes\nKbdInteractiveAuthentication no\n\
                 PasswordAuthentication {}\nMaxStartups 100\nMaxSessions 100\nLogLevel VERBOSE\n",
                host_key.display(),
                dir.path().join("sshd.pid").display(),
                authorized_keys.display(),
                if opts.password_auth { "yes" } else { "no" },
            );
            for l in &opts.extra {
                c.push_str(l);
                c.push('\n');
            }
            std::fs::write(&conf, c).unwrap();
            // The watchdog: starts sshd, prints its pid, kills it when our end of its stdin closes.
            let script = r#"log=$3; "$1" -D -e -f "$2" 2>>"$log" & pid=$!; echo $pid; read _ || true; kill $pid 2>/dev/null; exit 0"#;
            let mut watchdog = Command::new("sh")
                .args(["-c", script, "watchdog", SSHD])
                .arg(&conf)
                .arg(&log)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn sshd watchdog");
            let mut line = String::new();
            BufReader::new(watchdog.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            let pid: u32 = line.trim().parse().expect("sshd pid from the watchdog");
            let watchdog_stdin = watchdog.stdin.take();
            if wait_ready(pid, port, Duration::from_secs(10)) {
                return Sshd {
                    port,
                    dir,
                    host_key_pub,
                    authorized_keys,
                    client_key,
                    log,
                    watchdog,
                    watchdog_stdin,
                    pid,
                };
            }
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            drop(watchdog_stdin);
            let _ = watchdog.wait();
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
        }
        panic!("sshd did not start (5 attempts): {last_log}");
    }

    /// The known_hosts line for this server (`[127.0.0.1]:port ssh-ed25519 AAAA...`).
    pub fn known_hosts_line(&self) -> String {
        let mut it = self.host_key_pub.split_whitespace();
        let (alg, b64) = (it.next().unwrap(), it.next().unwrap());
        format!("[127.0.0.1]:{} {alg} {b64}", self.port)
    }

    /// Writes a known_hosts file that pins this server.
    pub fn write_known_hosts(&self, path: &Path) {
        std::fs::write(path, format!("{}\n", self.known_hosts_line())).unwrap();
    }

    /// Appends a public key line to the AuthorizedKeysFile.
    pub fn authorize(&self, pub_line: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.authorized_keys)
            .unwrap();
        writeln!(f, "{}", pub_line.trim()).unwrap();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The per-connection sshd processes (all descendants of the listener).
    pub fn session_pids(&self) -> Vec<u32> {
        let mut parents = vec![self.pid];
        let mut found = Vec::new();
        loop {
            let mut added = false;
            for e in std::fs::read_dir("/proc").unwrap().flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                if found.contains(&pid) {
                    continue;
                }
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    continue;
                };
                let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
                    continue;
                };
                let ppid: u32 = rest
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                if parents.contains(&ppid) {
                    found.push(pid);
                    parents.push(pid);
                    added = true;
                }
            }
            if !added {
                return found;
            }
        }
    }

    fn signal_sessions(&self, sig: &str) -> usize {
        let pids = self.session_pids();
        for p in &pids {
            let _ = Command::new("kill").args([sig, &p.to_string()]).status();
        }
        pids.len()
    }

    /// SIGKILLs every live connection (the listener stays up).
    pub fn kill_sessions(&self) -> usize {
        self.signal_sessions("-KILL")
    }

    /// SIGSTOPs every live connection: a silent peer, like a cut link.
    pub fn freeze_sessions(&self) -> usize {
        self.signal_sessions("-STOP")
    }

    /// Kills the whole server (listener and connections).
    pub fn kill(&self) {
        let pids = self.session_pids();
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .status();
        for p in pids {
            let _ = Command::new("kill")
                .args(["-KILL", &p.to_string()])
                .status();
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
        drop(self.watchdog_stdin.take());
        let _ = self.watchdog.wait();
    }
}
