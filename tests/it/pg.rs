//! Real PostgreSQL 15 servers for the DB tests. One cluster is made with initdb once
//! per test binary (as the `postgres` system user: initdb and postgres refuse root) and
//! copied for each server; each server listens only on its own unix-socket directory
//! (no TCP), with trust authentication for local connections. The shared master and
//! slave live for the whole binary; a watchdog shell per server stops it (via
//! postmaster.pid) and removes its directory when the test process exits, so no stray
//! postgres outlives `cargo test`. Tests share the servers with a database each.
//!
//! Missing PostgreSQL binaries are a failure, never a silent skip: install postgresql-15.
#![allow(dead_code)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const PG_USER: &str = "postgres";

fn bin(p: &str) -> PathBuf {
    Path::new(PG_BIN).join(p)
}

fn require_pg() {
    if !bin("initdb").exists() || !bin("postgres").exists() {
        let why = if std::env::var("CI").as_deref() == Ok("true") {
            "the CI setup must install postgresql-15"
        } else {
            "install it (apt-get install -y postgresql-15); the DB tests never skip silently"
        };
        panic!("{PG_BIN}/initdb is missing: {why}");
    }
}

/// A shell that waits for its stdin to close (our exit), then stops the postgres of
/// `base` (if running) and removes `base`.
fn cleanup_watchdog(base: &Path) -> (Child, ChildStdin) {
    let script = r#"base=$1; read _ || true
pid=$(head -1 "$base/data/postmaster.pid" 2>/dev/null)
if [ -n "$pid" ]; then kill -INT "$pid" 2>/dev/null; i=0
  while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  kill -KILL "$pid" 2>/dev/null; fi
rm -rf "$base""#;
    let mut c = Command::new("sh")
        .args(["-c", script, "pg-watchdog"])
        .arg(base)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the postgres watchdog");
    let stdin = c.stdin.take().unwrap();
    (c, stdin)
}

fn as_postgres(program: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid",
        PG_USER,
        "--regid",
        PG_USER,
        "--init-groups",
        "--",
    ])
    .arg(program);
    c
}

/// A fresh directory owned by the postgres user, removed by a watchdog at exit.
fn owned_dir(prefix: &str) -> (PathBuf, (Child, ChildStdin)) {
    let base = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap()
        .keep();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700)).unwrap();
    let st = Command::new("chown")
        .arg(format!("{PG_USER}:{PG_USER}"))
        .arg(&base)
        .status()
        .unwrap();
    assert!(st.success(), "chown {}", base.display());
    let w = cleanup_watchdog(&base);
    (base, w)
}

/// The initdb'd cluster every server copies (made once).
fn template() -> &'static Path {
    static T: OnceLock<(PathBuf, Mutex<(Child, ChildStdin)>)> = OnceLock::new();
    &T.get_or_init(|| {
        require_pg();
        let (base, w) = owned_dir("hasync-pgtpl-");
        let out = as_postgres(&bin("initdb"))
            .arg("-D")
            .arg(base.join("data"))
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ])
            .current_dir(&base)
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (base.join("data"), Mutex::new(w))
    })
    .0
}

pub struct Pg {
    /// Directory of the cluster: `data/`, the socket, `log`.
    pub base: PathBuf,
    /// The unix-socket directory (libpq `host`).
    pub sock: PathBuf,
    pub port: u16,
    server: Mutex<Option<Child>>,
    watchdog: Mutex<Option<(Child, ChildStdin)>>,
}

impl Pg {
    /// The shared master server.
    pub fn master() -> &'static Pg {
        static M: OnceLock<Pg> = OnceLock::new();
        M.get_or_init(|| Pg::new(5433))
    }

    /// The shared slave server.
    pub fn slave() -> &'static Pg {
        static S: OnceLock<Pg> = OnceLock::new();
        S.get_or_init(|| Pg::new(5434))
    }

    /// A new server of its own (stopped and removed on drop).
    pub fn new(port: u16) -> Pg {
        let tpl = template();
        let (base, w) = owned_dir("hasync-pg-");
        let st = Command::new("cp")
            .arg("-a")
            .arg(tpl)
            .arg(base.join("data"))
            .status()
            .unwrap();
        assert!(st.success(), "copy the template cluster");
        let pg = Pg {
            sock: base.clone(),
            base,
            port,
            server: Mutex::new(None),
            watchdog: Mutex::new(Some(w)),
        };
        pg.start();
        pg
    }

    pub fn start(&self) {
        let mut server = self.server.lock().unwrap();
        assert!(server.is_none(), "already running");
        let log = std::fs::File::create(self.base.join("log")).unwrap();
        let child = as_postgres(&bin("postgres"))
            .arg("-D")
            .arg(self.base.join("data"))
            .arg("-k")
            .arg(&self.sock)
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=", "-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        *server = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.try_psql("postgres", "SELECT 1").is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "postgres did not start: {}",
                    std::fs::read_to_string(self.base.join("log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fast shutdown (SIGINT), waits for the postmaster to exit.
    pub fn stop(&self) {
        if let Some(mut c) = self.server.lock().unwrap().take() {
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(bin("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
            ])
            .arg("-h")
            .arg(&self.sock)
            .args(["-p", &self.port.to_string(), "-d", db, "-c", sql])
            .output()
            .expect("run psql");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// An interactive psql session on `db`: statements written to its stdin run as
    /// they arrive (for tests that interleave two sessions' locks).
    pub fn session(&self, db: &str) -> Child {
        Command::new(bin("psql"))
            .args(["-X", "-q", "-A", "-t", "-U", "postgres", "-h"])
            .arg(&self.sock)
            .args(["-p", &self.port.to_string(), "-d", db])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run psql")
    }

    /// Runs SQL (several statements allowed, one transaction), panics on error.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let mut child = Command::new(bin("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-1",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
            ])
            .arg("-h")
            .arg(&self.sock)
            .args(["-p", &self.port.to_string(), "-d", db, "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run psql");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(sql.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "psql on :{} {db}: {}\n{sql}",
            self.port,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A fresh, empty database `name`.
    pub fn create_db(&self, name: &str) {
        self.try_psql("postgres", &format!("DROP DATABASE IF EXISTS {name}"))
            .unwrap();
        self.try_psql("postgres", &format!("CREATE DATABASE {name}"))
            .unwrap();
    }

    /// A table's content, ordered by its first column (`COPY ... TO STDOUT`).
    pub fn table(&self, db: &str, table: &str) -> String {
        self.try_psql(
            db,
            &format!("COPY (SELECT * FROM {table} ORDER BY 1) TO STDOUT"),
        )
        .unwrap_or_else(|e| panic!("{table}: {e}"))
    }

    /// A sequence's state: `last_value|is_called`.
    pub fn sequence(&self, db: &str, seq: &str) -> String {
        self.try_psql(db, &format!("SELECT last_value, is_called FROM {seq}"))
            .unwrap_or_else(|e| panic!("{seq}: {e}"))
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.stop();
        if let Some((mut c, stdin)) = self.watchdog.lock().unwrap().take() {
            drop(stdin);
            let _ = c.wait();
        }
    }
}
