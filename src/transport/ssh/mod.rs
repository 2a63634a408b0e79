//! The SSH transport: russh client, host keys pinned in a known_hosts file,
//! `hasync serve` exec'd on the peer, its stdin/stdout bridged to the engine.
//!
//! One tokio runtime (two worker threads, created on first use) carries every
//! SSH session of the process; the engine only sees blocking `Read`/`Write`.
//! Because the transport calls `block_on`, call it from plain threads (or
//! `spawn_blocking`), never from inside another tokio runtime.

mod location;
mod session;
mod stream;
mod tcp;

pub use location::{SshTarget, command_line, parse_location, shell_quote};
pub use session::{Auth, load_identity};

use super::{Connection, Transport, TransportError};
use russh::client;
use session::HostKeyVerdict;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::runtime::Runtime;

/// How to reach and trust the peer.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// Private key file; `None`: ssh-agent (`SSH_AUTH_SOCK`), then ~/.ssh/id_{ed25519,ecdsa,rsa}.
    pub identity: Option<PathBuf>,
    /// The pinned host keys (hasync's own file, not ~/.ssh/known_hosts unless told so).
    pub known_hosts: PathBuf,
    /// Trust and record an unknown host key (never a changed one).
    pub accept_new: bool,
    /// The hasync program on the peer, used verbatim as the start of the command line.
    pub remote_path: String,
    /// Deadline for TCP connect + handshake + authentication.
    pub connect_timeout: Duration,
    /// The session dies after this long without any traffic.
    pub idle_timeout: Duration,
    /// Keepalive interval; three unanswered keepalives end the session.
    pub keepalive: Duration,
}

impl Default for SshOptions {
    fn default() -> Self {
        SshOptions {
            identity: None,
            known_hosts: PathBuf::from("/var/lib/hasync/known_hosts"),
            accept_new: false,
            remote_path: "hasync".to_string(),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            keepalive: Duration::from_secs(5),
        }
    }
}

impl SshOptions {
    /// Sets the deadlines from one "dead peer" timeout: connecting may take that
    /// long, and a link that stops answering is noticed within about that long
    /// (three missed keepalives at a third of it each).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        let timeout = timeout.max(Duration::from_millis(300));
        self.connect_timeout = timeout;
        self.keepalive = timeout / 3;
        self.idle_timeout = timeout.max(Duration::from_secs(60));
        self
    }
}

/// Everything that can go wrong reaching the peer over SSH. All map to exit code 3.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("cannot connect to {target}: {reason}")]
    Connect { target: String, reason: String },
    #[error(
        "timed out after {secs}s connecting to {target} (connect, handshake and authentication)"
    )]
    Timeout { target: String, secs: f64 },
    #[error(
        "the host key of {host} is not known: {key_type} {fingerprint} (not in {}); \
         if this is really your peer, re-run with --accept-new (or `hasync init`) to trust it",
        known_hosts.display()
    )]
    HostKeyUnknown {
        host: String,
        key_type: String,
        fingerprint: String,
        known_hosts: PathBuf,
    },
    #[error(
        "REFUSED: THE HOST KEY OF {host} HAS CHANGED! It now presents {key_type} {fingerprint}, \
         which differs from the key pinned in {} line {line}. Someone may be intercepting the \
         connection (man-in-the-middle), or the peer was reinstalled. If you know the new key is \
         right, remove line {line} from {} and run `hasync init` again.",
        known_hosts.display(), known_hosts.display()
    )]
    HostKeyChanged {
        host: String,
        key_type: String,
        fingerprint: String,
        known_hosts: PathBuf,
        line: usize,
    },
    #[error("known_hosts: {0}")]
    KnownHosts(String),
    #[error("authentication failed for {user} on {host}: {detail}")]
    AuthFailed {
        user: String,
        host: String,
        detail: String,
    },
    #[error("cannot use the identity {}: {reason}", path.display())]
    Identity { path: PathBuf, reason: String },
    #[error("ssh: {0}")]
    Protocol(String),
}

impl From<SshError> for TransportError {
    fn from(e: SshError) -> Self {
        match e {
            SshError::Connect { .. } | SshError::Timeout { .. } => {
                TransportError::Start(e.to_string())
            }
            other => TransportError::Other(other.to_string()),
        }
    }
}

/// The process-wide runtime for SSH sessions.
pub(crate) fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hasync-ssh")
            .enable_all()
            .build()
            .expect("cannot start the SSH runtime")
    })
}

/// What `exec` captured.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    pub status: Option<u32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// An authenticated SSH session kept open (for `init`, probes, several commands).
pub struct SshSession {
    inner: session::Session,
    target: SshTarget,
    options: SshOptions,
    timeout: Duration,
}

impl SshSession {
    /// Opens and authenticates. `auth` selects password or keys/agent.
    pub fn open(
        target: &SshTarget,
        opts: &SshOptions,
        auth: &Auth,
    ) -> Result<SshSession, SshError> {
        let inner = runtime().block_on(session::open(target, opts, auth))?;
        Ok(SshSession {
            inner,
            target: target.clone(),
            options: opts.clone(),
            timeout: opts.idle_timeout,
        })
    }

    /// True when the host key was unknown and has just been recorded.
    pub fn host_key_learned(&self) -> bool {
        self.inner.verdict == HostKeyVerdict::Learned
    }

    /// Runs `command` (no pty), feeds it `stdin`, and collects its output,
    /// within the idle timeout.
    pub fn exec(&self, command: &str, stdin: &[u8]) -> Result<ExecOutput, SshError> {
        let handle = &self.inner.handle;
        let fut = async move {
            let mut ch = handle
                .channel_open_session()
                .await
                .map_err(|e| SshError::Protocol(e.to_string()))?;
            ch.exec(true, command)
                .await
                .map_err(|e| SshError::Protocol(e.to_string()))?;
            if !stdin.is_empty() {
                ch.data_bytes(stdin.to_vec())
                    .await
                    .map_err(|e| SshError::Protocol(e.to_string()))?;
            }
            ch.eof()
                .await
                .map_err(|e| SshError::Protocol(e.to_string()))?;
            let mut out = ExecOutput::default();
            while let Some(msg) = ch.wait().await {
                match msg {
                    russh::ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
                    russh::ChannelMsg::ExtendedData { data, .. } => {
                        out.stderr.push_str(&String::from_utf8_lossy(&data))
                    }
                    russh::ChannelMsg::ExitStatus { exit_status } => out.status = Some(exit_status),
                    russh::ChannelMsg::Failure => {
                        return Err(SshError::Protocol(
                            "the server refused to run the command".into(),
                        ));
                    }
                    russh::ChannelMsg::Close => break,
                    _ => {}
                }
            }
            Ok(out)
        };
        let limit = self.timeout;
        match runtime().block_on(async move { tokio::time::timeout(limit, fut).await }) {
            Ok(r) => r,
            Err(_) => Err(SshError::Timeout {
                target: self.target.to_string(),
                secs: self.timeout.as_secs_f64(),
            }),
        }
    }

    /// Starts `<remote_path> serve <serve_args>` on this session (a new
    /// channel; the session stays open for more).
    pub fn serve(&self, serve_args: &[String]) -> Result<Connection, SshError> {
        start_serve(
            &self.inner.handle,
            &self.inner.state,
            &self.target,
            &self.options,
            serve_args,
            false,
        )
    }

    /// True once the session is over (peer gone, keepalive timeout...).
    pub fn is_closed(&self) -> bool {
        self.inner.handle.is_closed()
    }

    /// Ends the session politely.
    pub fn close(self) {
        let h = self.inner.handle;
        let _ = runtime().block_on(async move {
            tokio::time::timeout(
                Duration::from_secs(2),
                h.disconnect(russh::Disconnect::ByApplication, "", "en"),
            )
            .await
        });
    }
}

/// Opens a channel on `handle` and execs `<remote_path> serve <serve_args>`.
fn start_serve(
    handle: &Arc<client::Handle<session::ClientHandler>>,
    state: &Arc<Mutex<session::SessionState>>,
    target: &SshTarget,
    opts: &SshOptions,
    serve_args: &[String],
    owns_session: bool,
) -> Result<Connection, SshError> {
    let rt = runtime();
    let mut args = vec!["serve".to_string()];
    args.extend(serve_args.iter().cloned());
    let cmd = command_line(&opts.remote_path, &args);
    let limit = opts.connect_timeout;
    let channel = rt.block_on(async {
        let open = async {
            let ch = handle.channel_open_session().await?;
            ch.exec(true, cmd.as_str()).await?;
            Ok::<_, russh::Error>(ch)
        };
        match tokio::time::timeout(limit, open).await {
            Ok(Ok(ch)) => Ok(ch),
            Ok(Err(e)) => Err(SshError::Protocol(format!("cannot start `{cmd}`: {e}"))),
            Err(_) => Err(SshError::Timeout {
                target: target.to_string(),
                secs: limit.as_secs_f64(),
            }),
        }
    })?;
    stream::start(
        rt,
        handle.clone(),
        state.clone(),
        channel,
        target.to_string(),
        opts.remote_path.clone(),
        opts.idle_timeout,
        owns_session,
    )
    .map_err(|e| SshError::Protocol(e.to_string()))
}

type Cached = (
    Arc<client::Handle<session::ClientHandler>>,
    Arc<Mutex<session::SessionState>>,
);

/// Starts `hasync serve` on the peer over SSH.
///
/// The SSH session is kept open for the transport's life and reused by later
/// `connect` calls (a new channel each; ~0.2 s saved per run): keep one
/// transport per peer in long-lived processes. A dead cached session is
/// replaced transparently. Dropping the transport disconnects.
pub struct SshTransport {
    pub target: SshTarget,
    pub options: SshOptions,
    cache: Mutex<Option<Cached>>,
}

impl SshTransport {
    pub fn new(target: SshTarget, options: SshOptions) -> Self {
        SshTransport {
            target,
            options,
            cache: Mutex::new(None),
        }
    }

    /// Like `Transport::connect`, with the SSH-specific error kept whole
    /// (host key unknown / changed, authentication failed...).
    pub fn connect_ssh(&self, serve_args: &[String]) -> Result<Connection, SshError> {
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .filter(|(h, _)| !h.is_closed());
        let start = |handle: &_, state: &_| {
            start_serve(
                handle,
                state,
                &self.target,
                &self.options,
                serve_args,
                false,
            )
        };
        // A stale cached session falls through to a fresh one.
        if let Some((handle, state)) = cached
            && let Ok(conn) = start(&handle, &state)
        {
            *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = Some((handle, state));
            return Ok(conn);
        }
        let sess =
            runtime().block_on(session::open(&self.target, &self.options, &Auth::Default))?;
        let session::Session { handle, state, .. } = sess;
        let conn = start(&handle, &state)?;
        *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = Some((handle, state));
        Ok(conn)
    }
}

impl Drop for SshTransport {
    fn drop(&mut self) {
        let cached = self.cache.lock().unwrap_or_else(|e| e.into_inner()).take();
        // With connections still open, just let go: the session ends with the
        // last of them (russh stops once every handle and channel is dropped).
        if let Some((h, _)) = cached.filter(|(h, _)| Arc::strong_count(h) == 1) {
            runtime().spawn(async move {
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    h.disconnect(russh::Disconnect::ByApplication, "", "en"),
                )
                .await;
            });
        }
    }
}

impl Transport for SshTransport {
    fn connect(&self, serve_args: &[String]) -> Result<Connection, TransportError> {
        self.connect_ssh(serve_args).map_err(TransportError::from)
    }

    fn describe(&self) -> String {
        self.target.to_string()
    }

    fn is_remote(&self) -> bool {
        true
    }
}
