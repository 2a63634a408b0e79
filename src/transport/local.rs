//! The `local` transport: `hasync serve` as a child process on stdin/stdout.
//!
//! Used for local-to-local mirrors, the demo and most tests. It speaks exactly
//! the protocol SSH carries, so everything proven here holds over SSH too.
//!
//! The child is the peer node: it must read the peer's config, never this node's.
//! It gets `--config FILE` for `[node] peer_config` (or a `$HASYNC_CONFIG` that is not
//! this node's own config file), else `--no-config`; `$HASYNC_CONFIG` itself is not
//! passed down, so `HASYNC_CONFIG=master.toml hasync db-replicate` cannot make the
//! child take the master's `[db]` as its own.

use super::{Closer, Connection, Transport, TransportError};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Runs the peer as a child process of this one.
pub struct LocalTransport {
    /// The hasync binary to run (default: this executable).
    pub program: PathBuf,
    /// The peer's config file; `None`: the child reads none (`serve --no-config`).
    pub peer_config: Option<PathBuf>,
}

impl LocalTransport {
    /// A transport that runs this same executable as the peer.
    pub fn new() -> Result<Self, TransportError> {
        let program = std::env::current_exe().map_err(|e| {
            TransportError::Start(format!("cannot find the hasync executable: {e}"))
        })?;
        Ok(LocalTransport {
            program,
            peer_config: None,
        })
    }

    /// The transport to the local peer of the node configured by `cfg`: its child
    /// reads `[node] peer_config`, else `$HASYNC_CONFIG` when that is another file than
    /// `cfg`'s own, else no config.
    pub fn for_config(cfg: &crate::node::config::Config) -> Result<Self, TransportError> {
        let mut t = Self::new()?;
        t.peer_config = cfg.node.peer_config.clone().or_else(|| {
            let env = PathBuf::from(std::env::var_os("HASYNC_CONFIG").filter(|v| !v.is_empty())?);
            (!same_file(&env, &cfg.path)).then_some(env)
        });
        Ok(t)
    }
}

/// Whether `a` and `b` name the same file (by device and inode; by path when either
/// cannot be read).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => (x.dev(), x.ino()) == (y.dev(), y.ino()),
        _ => std::path::absolute(a).ok() == std::path::absolute(b).ok(),
    }
}

impl Transport for LocalTransport {
    fn connect(&self, serve_args: &[String]) -> Result<Connection, TransportError> {
        let mut cmd = Command::new(&self.program);
        cmd.env_remove("HASYNC_CONFIG").arg("serve");
        match &self.peer_config {
            Some(p) => cmd.arg("--config").arg(p),
            None => cmd.arg("--no-config"),
        };
        let mut child = cmd
            .args(serve_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                TransportError::Start(format!("cannot run {}: {e}", self.program.display()))
            })?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let collected = Arc::new(Mutex::new(String::new()));
        let sink = collected.clone();
        // Drain stderr continuously so the child never blocks on a full pipe.
        let stderr_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                if s.len() < 64 * 1024 {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        Ok(Connection {
            reader: Box::new(stdout),
            writer: Box::new(stdin),
            closer: Box::new(LocalCloser {
                child,
                stderr: collected,
                stderr_thread: Some(stderr_thread),
            }),
        })
    }

    fn describe(&self) -> String {
        "local child process".to_string()
    }
}

struct LocalCloser {
    child: Child,
    stderr: Arc<Mutex<String>>,
    stderr_thread: Option<JoinHandle<()>>,
}

impl Closer for LocalCloser {
    fn finish(mut self: Box<Self>) -> Result<(), TransportError> {
        // The peer exits once it sees end-of-input; give it a bounded time.
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(TransportError::Other(
                        "the local peer did not exit; killed it".into(),
                    ));
                }
                Err(e) => {
                    return Err(TransportError::Other(format!(
                        "waiting for the local peer: {e}"
                    )));
                }
            }
        };
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        if status.success() {
            Ok(())
        } else {
            Err(TransportError::PeerFailed {
                status: status.to_string(),
                stderr: self.stderr(),
            })
        }
    }

    fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for LocalCloser {
    fn drop(&mut self) {
        // A connection abandoned mid-run must not leave a child behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
