//! Connections: the client side (push, pull) and the `serve` side.
//!
//! The client starts the peer through a [`Transport`], exchanges
//! `Hello`/`HelloOk`, then runs one session per directory pair over the same
//! connection (`Open` ... `Done`), and ends with `Bye`. The server answers one
//! connection on its stdin/stdout and serves sessions until `Bye` or end of
//! input, refusing roots outside what its policy allows.

use super::SyncError;
use super::receiver::{ReceiverConfig, receive_tree};
use super::sender::send_tree;
use crate::protocol::message::{PROTO_MAJOR, PROTO_MINOR};
use crate::protocol::{
    self, FrameReader, FrameWriter, Msg, Open, ServerRole, SessionOptions, recv, send,
};
use crate::report::{Reporter, Stats};
use crate::transport::{Closer, Transport};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

type BoxRead = BufReader<Box<dyn Read + Send>>;
type BoxWrite = BufWriter<Box<dyn Write + Send>>;

/// The initiating side of a connection.
pub struct Client {
    rd: FrameReader<BoxRead>,
    wr: FrameWriter<BoxWrite>,
    closer: Option<Box<dyn Closer>>,
    peer: String,
    /// The peer's protocol minor version (what optional messages it understands).
    peer_minor: u16,
    pub cfg: ReceiverConfig,
}

impl Client {
    /// Start the peer and shake hands.
    pub fn connect(transport: &dyn Transport, serve_args: &[String]) -> Result<Client, SyncError> {
        let conn = transport.connect(serve_args)?;
        let mut client = Client {
            rd: FrameReader::new(BufReader::with_capacity(256 * 1024, conn.reader)),
            wr: FrameWriter::new(BufWriter::with_capacity(256 * 1024, conn.writer)),
            closer: Some(conn.closer),
            peer: transport.describe(),
            peer_minor: 0,
            cfg: ReceiverConfig::default(),
        };
        let hello = Msg::Hello {
            major: PROTO_MAJOR,
            minor: PROTO_MINOR,
            software: protocol::software(),
        };
        let res = (|| -> Result<(), HandshakeError> {
            send(&mut client.wr, &hello).map_err(SyncError::from)?;
            client
                .wr
                .flush()
                .map_err(|e| SyncError::Peer(e.to_string()))?;
            match client.recv_hello()? {
                Msg::HelloOk {
                    major,
                    minor,
                    software,
                } => {
                    protocol::check_version(major, &software).map_err(SyncError::Peer)?;
                    client.peer_minor = minor;
                    Ok(())
                }
                Msg::Error { code, message } => Err(SyncError::from_wire(code, message).into()),
                m => Err(SyncError::Peer(format!(
                    "protocol error: the peer answered {} to Hello",
                    m.name()
                ))
                .into()),
            }
        })();
        match res {
            Ok(()) => Ok(client),
            Err(HandshakeError::Timeout(e)) => {
                // The peer may be wedged: don't wait for it, end it (dropping the closer
                // kills a local child; an SSH channel is closed).
                drop(client.closer.take());
                Err(e)
            }
            Err(HandshakeError::Other(e)) => Err(client.explain(e)),
        }
    }

    /// Read the answer to Hello, giving up after [`handshake_timeout`]: a peer that
    /// never answers must not hang the client (the read runs on a helper thread,
    /// which ends when the connection is dropped).
    fn recv_hello(&mut self) -> Result<Msg, HandshakeError> {
        let timeout = handshake_timeout();
        let mut rd = std::mem::replace(
            &mut self.rd,
            FrameReader::new(BufReader::new(Box::new(std::io::empty()))),
        );
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let r = recv(&mut rd);
            let _ = tx.send((rd, r));
        });
        match rx.recv_timeout(timeout) {
            Ok((rd, r)) => {
                self.rd = rd;
                Ok(r?)
            }
            Err(_) => Err(HandshakeError::Timeout(SyncError::Peer(format!(
                "{} did not answer the handshake (Hello) within {:.1} s",
                self.peer,
                timeout.as_secs_f64()
            )))),
        }
    }

    /// Add what the peer printed on stderr to a connection error; that is usually the real cause.
    fn explain(&mut self, e: SyncError) -> SyncError {
        if let SyncError::Peer(msg) = &e
            && let Some(c) = self.closer.take()
        {
            drop(std::mem::replace(
                &mut self.wr,
                FrameWriter::new(BufWriter::new(Box::new(std::io::sink()))),
            ));
            let stderr = c.stderr();
            let finished = c.finish();
            let detail = match finished {
                Err(fe) => fe.to_string(),
                Ok(()) => stderr.trim().to_string(),
            };
            if !detail.is_empty() && !msg.contains(detail.as_str()) {
                return SyncError::Peer(format!("{msg} ({} said: {detail})", self.peer));
            }
        }
        e
    }

    fn open(
        &mut self,
        role: ServerRole,
        root: &[u8],
        opts: &SessionOptions,
    ) -> Result<(), SyncError> {
        send(
            &mut self.wr,
            &Msg::Open(Open {
                role,
                root: root.to_vec(),
                options: opts.clone(),
            }),
        )?;
        self.wr
            .flush()
            .map_err(|e| SyncError::Peer(e.to_string()))?;
        match recv(&mut self.rd)? {
            Msg::OpenOk => Ok(()),
            Msg::Error { code, message } => Err(SyncError::from_wire(code, message)),
            m => Err(SyncError::Peer(format!(
                "protocol error: the peer answered {} to Open",
                m.name()
            ))),
        }
    }

    fn measured(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<Stats, SyncError>,
    ) -> Result<Stats, SyncError> {
        let (r0, w0, t0) = (self.rd.bytes, self.wr.bytes, Instant::now());
        let res = f(self);
        match res {
            Ok(mut s) => {
                s.bytes_received = self.rd.bytes - r0;
                s.bytes_sent = self.wr.bytes - w0;
                s.duration_ms = t0.elapsed().as_millis() as u64;
                Ok(s)
            }
            Err(e) => Err(self.explain(e)),
        }
    }

    /// Mirror the local `src` into `dest` on the peer.
    pub fn push(
        &mut self,
        src: &Path,
        dest: &Path,
        opts: &SessionOptions,
        rep: &mut dyn Reporter,
    ) -> Result<Stats, SyncError> {
        self.measured(|c| {
            c.open(ServerRole::Receive, dest.as_os_str().as_bytes(), opts)?;
            let minor = c.peer_minor;
            send_tree(&mut c.rd, &mut c.wr, src, opts, rep, true, minor)
        })
    }

    /// Mirror `src` on the peer into the local `dest`.
    pub fn pull(
        &mut self,
        src: &Path,
        dest: &Path,
        opts: &SessionOptions,
        rep: &mut dyn Reporter,
    ) -> Result<Stats, SyncError> {
        let cfg = self.cfg;
        self.measured(|c| {
            c.open(ServerRole::Send, src.as_os_str().as_bytes(), opts)?;
            receive_tree(&mut c.rd, &mut c.wr, dest, opts, cfg, rep, true)
        })
    }

    /// Send one request outside a sync session (the DB job's) and return the answer; a
    /// peer `Error` becomes the matching [`SyncError`].
    pub fn request(&mut self, m: &Msg) -> Result<Msg, SyncError> {
        let res = send(&mut self.wr, m)
            .map_err(SyncError::from)
            .and_then(|_| {
                self.wr
                    .flush()
                    .map_err(|e| SyncError::Peer(e.to_string()))?;
                match recv(&mut self.rd)? {
                    Msg::Error { code, message } => Err(SyncError::from_wire(code, message)),
                    m => Ok(m),
                }
            });
        res.map_err(|e| self.explain(e))
    }

    /// Send one message that has no answer of its own (a part of a multi-frame request;
    /// [`Client::request`] sends the last one and reads the answer).
    pub fn send(&mut self, m: &Msg) -> Result<(), SyncError> {
        send(&mut self.wr, m).map_err(|e| {
            let e = SyncError::from(e);
            self.explain(e)
        })
    }

    /// The peer's protocol minor version.
    pub fn peer_minor(&self) -> u16 {
        self.peer_minor
    }

    /// Bytes sent and received on this connection so far.
    pub fn wire_bytes(&self) -> (u64, u64) {
        (self.wr.bytes, self.rd.bytes)
    }

    /// Say goodbye and wait for the peer to exit.
    pub fn close(mut self) -> Result<(), SyncError> {
        let _ = send(&mut self.wr, &Msg::Bye);
        let _ = self.wr.flush();
        drop(self.wr);
        drop(self.rd);
        match self.closer.take() {
            Some(c) => c.finish().map_err(SyncError::from),
            None => Ok(()),
        }
    }
}

/// How the handshake failed: a timeout skips waiting for the peer's exit.
enum HandshakeError {
    Timeout(SyncError),
    Other(SyncError),
}

impl From<SyncError> for HandshakeError {
    fn from(e: SyncError) -> Self {
        HandshakeError::Other(e)
    }
}

impl From<protocol::ProtocolError> for HandshakeError {
    fn from(e: protocol::ProtocolError) -> Self {
        HandshakeError::Other(e.into())
    }
}

/// Default deadline for the peer's answer to `Hello`, in seconds.
pub const HANDSHAKE_TIMEOUT_SECS: f64 = 30.0;

/// How long the client waits for the peer's answer to `Hello`:
/// `$HASYNC_HANDSHAKE_TIMEOUT` (seconds) or [`HANDSHAKE_TIMEOUT_SECS`].
pub fn handshake_timeout() -> std::time::Duration {
    std::env::var("HASYNC_HANDSHAKE_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(std::time::Duration::from_secs_f64(HANDSHAKE_TIMEOUT_SECS))
}

/// What a `serve` process may do.
#[derive(Debug, Clone, Default)]
pub struct ServePolicy {
    /// When set, only these directories (and what is beneath them) may be opened.
    pub allowed_roots: Option<Vec<PathBuf>>,
    pub cfg: ReceiverConfig,
    /// The DB job's requests (`DbStage`, `DbReplay`); `None`: refused.
    pub db: Option<crate::db::serve::DbServe>,
    /// Set once the peer's `Hello` was answered: `hasync serve`'s handshake
    /// watchdog (`serve --handshake-timeout`) gives up on a peer that stalls before.
    pub handshake_done: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl ServePolicy {
    fn check_root(&self, raw: &[u8]) -> Result<PathBuf, SyncError> {
        let p = PathBuf::from(std::ffi::OsStr::from_bytes(raw));
        if !p.is_absolute() || raw.contains(&0) {
            return Err(SyncError::Usage(format!(
                "{} is not an absolute path",
                p.display()
            )));
        }
        if p.components().any(|c| c == Component::ParentDir) {
            return Err(SyncError::Usage(format!("{} contains '..'", p.display())));
        }
        if let Some(allowed) = &self.allowed_roots {
            let Some(base) = allowed.iter().find(|a| p.starts_with(a)) else {
                return Err(SyncError::Usage(format!(
                    "{} is outside the directories this peer serves; allowed: {}",
                    p.display(),
                    allowed
                        .iter()
                        .map(|a| a.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            no_symlink_below(base, &p)?;
        }
        Ok(p)
    }
}

/// Refuses `p` if a component below the allowed directory `base` is a symlink.
/// The comparison with the allowed roots is lexical: without this, a peer that
/// first mirrored a symlink `x -> /etc` into an allowed directory could then
/// open `<allowed>/x` as a root and write through it. (The allowed directory
/// itself is the admin's choice and may be reached through symlinks.)
fn no_symlink_below(base: &Path, p: &Path) -> Result<(), SyncError> {
    let rest = p.strip_prefix(base).unwrap_or(Path::new(""));
    let mut cur = base.to_path_buf();
    for c in rest.components() {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(SyncError::Usage(format!(
                    "{} is refused: {} is a symlink (a served root is never reached through a symlink)",
                    p.display(),
                    cur.display()
                )));
            }
            Ok(_) => {}
            Err(_) => break, // missing from here on: created as real directories
        }
    }
    Ok(())
}

/// Serve one connection on `input`/`output` (the peer side).
pub fn serve<R: Read + Send, W: Write + Send>(
    input: R,
    output: W,
    policy: &ServePolicy,
) -> Result<(), SyncError> {
    let mut rd = FrameReader::new(BufReader::with_capacity(256 * 1024, input));
    let mut wr = FrameWriter::new(BufWriter::with_capacity(256 * 1024, output));
    let flush =
        |wr: &mut FrameWriter<BufWriter<W>>| wr.flush().map_err(|e| SyncError::Peer(e.to_string()));
    let first = match recv(&mut rd) {
        Ok(m) => m,
        Err(e) => return Err(super::sender::fail(&mut wr, e.into())),
    };
    let peer_minor;
    match first {
        Msg::Hello {
            major,
            minor,
            software,
        } => {
            peer_minor = minor;
            if let Err(msg) = protocol::check_version(major, &software) {
                let _ = send(
                    &mut wr,
                    &Msg::Error {
                        code: protocol::message::code::PEER,
                        message: msg.clone(),
                    },
                );
                let _ = flush(&mut wr);
                return Err(SyncError::Peer(msg));
            }
        }
        m => {
            return Err(super::sender::fail(
                &mut wr,
                SyncError::Peer(format!("protocol error: expected Hello, got {}", m.name())),
            ));
        }
    }
    send(
        &mut wr,
        &Msg::HelloOk {
            major: PROTO_MAJOR,
            minor: PROTO_MINOR,
            software: protocol::software(),
        },
    )?;
    flush(&mut wr)?;
    if let Some(done) = &policy.handshake_done {
        done.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    loop {
        let open = match recv(&mut rd) {
            Ok(Msg::Open(o)) => o,
            Ok(Msg::Bye) | Err(protocol::ProtocolError::Closed) => return Ok(()),
            Ok(m @ (Msg::DbStage | Msg::DbReplay(_) | Msg::DbCheck(_))) => {
                // Answered in place; a failed replay does not end the connection.
                send(&mut wr, &crate::db::serve::answer(m, policy.db.as_ref()))?;
                flush(&mut wr)?;
                continue;
            }
            Ok(Msg::DbPatchBegin(b)) => {
                let ans = crate::db::serve::patch(b, policy.db.as_ref(), &mut || recv(&mut rd));
                match ans {
                    Ok(m) => {
                        send(&mut wr, &m)?;
                        flush(&mut wr)?;
                        continue;
                    }
                    Err(e) => return Err(super::sender::fail(&mut wr, e.into())),
                }
            }
            Ok(m) => {
                return Err(super::sender::fail(
                    &mut wr,
                    SyncError::Peer(format!("protocol error: expected Open, got {}", m.name())),
                ));
            }
            Err(e) => return Err(super::sender::fail(&mut wr, e.into())),
        };
        let root = match policy.check_root(&open.root) {
            Ok(r) => r,
            Err(e) => return Err(super::sender::fail(&mut wr, e)),
        };
        send(&mut wr, &Msg::OpenOk)?;
        flush(&mut wr)?;
        let mut silent = crate::report::Silent;
        let res = match open.role {
            ServerRole::Send => send_tree(
                &mut rd,
                &mut wr,
                &root,
                &open.options,
                &mut silent,
                false,
                peer_minor,
            ),
            ServerRole::Receive => receive_tree(
                &mut rd,
                &mut wr,
                &root,
                &open.options,
                policy.cfg,
                &mut silent,
                false,
            ),
        };
        if let Err(e) = res {
            return Err(super::sender::fail(&mut wr, e));
        }
    }
}
