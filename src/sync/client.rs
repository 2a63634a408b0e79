//! The client side of a connection (push, pull, the DB job, copy-back).
//!
//! The client starts the peer through a [`Transport`], exchanges
//! `Hello`/`HelloOk`, then (protocol 2.5) the role fence: each side sends its `Role`
//! (role, epoch, failover state; [`crate::node::role`]) and refuses a stale master.
//! Then it runs one session per directory pair over the same connection (`Open` ...
//! `Done`), and ends with `Bye`. The peer side is [`crate::serve`].

use super::SyncError;
use super::fsops::TreeRoot;
use super::receive::{ReceiverConfig, receive_tree};
use super::scan::EarlyScan;
use super::send::{Source, send_tree};
use crate::node::config::{Compress, Config, Role};
use crate::node::role::{self, NodeRole};
use crate::transport::{Closer, Transport};
use crate::tree::report::{Reporter, Stats};
use crate::wire::message::{
    MINOR_BATCH, MINOR_COMPRESS, MINOR_EAGER_ROLE, MINOR_ONE_FILE_SYSTEM, MINOR_ROLES, PROTO_MAJOR,
    PROTO_MINOR,
};
use crate::wire::throttle::{Rate, Throttled};
use crate::wire::{
    self, FrameReader, FrameWriter, Msg, Open, ServerRole, SessionOptions, recv, send,
};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
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
    /// The peer's `Role` (2.5 peers); `None`: an older peer.
    peer_role: Option<NodeRole>,
    pub cfg: ReceiverConfig,
    /// Compression and bandwidth cap of the sessions to come (set before `push`/`pull`).
    pub link: LinkOptions,
    /// The transport leaves this host (decides `Compress::Auto`).
    remote: bool,
    /// This side's cap on its writes (the serve caps its own, told by `Link`).
    rate: Rate,
}

/// How the sessions of a connection use the link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkOptions {
    pub compress: Compress,
    /// Bytes per second each side may write (0: no cap).
    pub bwlimit: u64,
}

impl Client {
    /// Start the peer and shake hands, as a node of unknown role (ad hoc `push`/`pull`
    /// without a config): the peer's own fence still applies.
    pub fn connect(transport: &dyn Transport, serve_args: &[String]) -> Result<Client, SyncError> {
        Client::connect_as(transport, serve_args, None)
    }

    /// Start the peer and shake hands as the node of `me` (its role and epoch travel
    /// in `Role`; a stale master is refused here or by the peer, exit 3).
    pub fn connect_as(
        transport: &dyn Transport,
        serve_args: &[String],
        me: Option<&Config>,
    ) -> Result<Client, SyncError> {
        let conn = transport.connect(serve_args)?;
        let rate = Rate::default();
        let writer: Box<dyn Write + Send> = Box::new(Throttled::new(conn.writer, rate.clone()));
        let mut client = Client {
            rd: FrameReader::new(BufReader::with_capacity(256 * 1024, conn.reader)),
            wr: FrameWriter::new(BufWriter::with_capacity(256 * 1024, writer)),
            closer: Some(conn.closer),
            peer: transport.describe(),
            peer_minor: 0,
            peer_role: None,
            cfg: ReceiverConfig::default(),
            link: LinkOptions::default(),
            remote: transport.is_remote(),
            rate,
        };
        let hello = Msg::Hello {
            major: PROTO_MAJOR,
            minor: PROTO_MINOR,
            software: wire::software(),
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
                    wire::check_version(major, &software).map_err(SyncError::Peer)?;
                    client.peer_minor = minor;
                    client.exchange_roles(me)
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

    /// The role fence of protocol 2.5: sends this node's `Role`, reads the peer's (or
    /// its refusal), refuses a stale master on either side ([`role::check_peer`]) and
    /// remembers a higher epoch when this node is not the master.
    fn exchange_roles(&mut self, me_cfg: Option<&Config>) -> Result<(), HandshakeError> {
        if self.peer_minor < MINOR_ROLES {
            return Ok(());
        }
        let me = match me_cfg {
            Some(c) => role::node_role(c)
                .map_err(|e| SyncError::Usage(format!("cannot tell this node's role: {e}")))?,
            None => role::unknown_node(),
        };
        // A 2.7 serve sent its `Role` with `HelloOk` and answers ours only to refuse it
        // (the refusal is then the answer to our next request); an older one answers it.
        let eager = self.peer_minor >= MINOR_EAGER_ROLE;
        if !eager {
            send(&mut self.wr, &Msg::Role(me.clone())).map_err(SyncError::from)?;
            self.wr
                .flush()
                .map_err(|e| SyncError::Peer(e.to_string()))?;
        }
        let peer = match self.recv_hello()? {
            Msg::Role(p) => p,
            Msg::Error { code, message } => {
                return Err(SyncError::from_wire(code, message).into());
            }
            m => {
                return Err(SyncError::Peer(format!(
                    "protocol error: the peer answered {} to Role",
                    m.name()
                ))
                .into());
            }
        };
        role::check_peer(&me, &peer).map_err(SyncError::Fenced)?;
        if eager {
            send(&mut self.wr, &Msg::Role(me.clone())).map_err(SyncError::from)?;
        }
        if let Some(c) = me_cfg
            && me.role != Some(Role::Master)
            && peer.epoch > me.epoch
            && let Err(e) = role::observe_epoch(c, peer.epoch, &peer.node)
        {
            tracing::warn!("cannot remember the peer's role epoch {}: {e}", peer.epoch);
        }
        self.peer_role = Some(peer);
        Ok(())
    }

    /// The peer's role, epoch and failover state (a 2.5 peer), as it said at connect.
    pub fn peer_role(&self) -> Option<&NodeRole> {
        self.peer_role.as_ref()
    }

    /// Read the answer to Hello, giving up after [`handshake_timeout`]: a peer that
    /// never answers must not hang the client (the read runs on a helper thread,
    /// which ends when the connection is dropped).
    fn recv_hello(&mut self) -> Result<Msg, HandshakeError> {
        let timeout = handshake_timeout()?;
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
        if e.is_peer()
            && let Some(c) = self.closer.take()
        {
            let msg = e.to_string();
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

    /// Send `Link` and `Open`. With `wait` read the answer; without, the caller goes
    /// on at once (a push sends its manifest in the same round trip) and its first
    /// `recv` takes the `OpenOk`, or hands back the refusal ([`FrameReader::expect_open_ok`]).
    fn open(
        &mut self,
        role: ServerRole,
        root: &[u8],
        opts: &SessionOptions,
        wait: bool,
    ) -> Result<(), SyncError> {
        if opts.one_file_system && self.peer_minor < MINOR_ONE_FILE_SYSTEM {
            return Err(SyncError::Usage(format!(
                "{}'s hasync speaks protocol 2.{}, which has no --one-file-system (2.{} has): \
                 upgrade it, or run without -x",
                self.peer, self.peer_minor, MINOR_ONE_FILE_SYSTEM
            )));
        }
        self.send_link()?;
        send(
            &mut self.wr,
            &Msg::Open(Open {
                role,
                root: root.to_vec(),
                options: SessionOptions {
                    // An older serve has no fence to pass, and would refuse the flag.
                    copy_back: opts.copy_back && self.peer_minor >= MINOR_ROLES,
                    ..opts.clone()
                },
            }),
        )?;
        self.wr
            .flush()
            .map_err(|e| SyncError::Peer(e.to_string()))?;
        if !wait {
            self.rd.expect_open_ok();
            return Ok(());
        }
        match recv(&mut self.rd)? {
            Msg::OpenOk => Ok(()),
            Msg::Error { code, message } => Err(SyncError::from_wire(code, message)),
            m => Err(SyncError::Peer(format!(
                "protocol error: the peer answered {} to Open",
                m.name()
            ))),
        }
    }

    /// Tell a 2.6 peer how this session uses the link (`Link`, before `Open`), and set
    /// this side to match. An older peer gets neither compression nor its own cap:
    /// only this side's writes are capped.
    fn send_link(&mut self) -> Result<(), SyncError> {
        let level = self.link.compress.level(self.remote);
        self.rate.set(self.link.bwlimit);
        if self.peer_minor < MINOR_COMPRESS {
            return Ok(());
        }
        let compress = level.unwrap_or(0) as u8;
        send(
            &mut self.wr,
            &Msg::Link {
                compress,
                bwlimit: self.link.bwlimit,
            },
        )?;
        if level.is_some() {
            self.rd.accept_compressed();
        }
        self.wr.set_batching(self.peer_minor >= MINOR_BATCH);
        self.wr.set_compression(level);
        Ok(())
    }

    fn measured(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<Stats, SyncError>,
    ) -> Result<Stats, SyncError> {
        let (r0, w0, t0) = (self.rd.bytes, self.wr.bytes, Instant::now());
        let (rr0, wr0) = (self.rd.raw_bytes, self.wr.raw_bytes);
        let res = f(self);
        match res {
            Ok(mut s) => {
                s.bytes_received = self.rd.bytes - r0;
                s.bytes_sent = self.wr.bytes - w0;
                s.bytes_received_uncompressed = self.rd.raw_bytes - rr0;
                s.bytes_sent_uncompressed = self.wr.raw_bytes - wr0;
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
        self.push_scanned(src, dest, opts, rep, None)
    }

    /// [`Client::push`], with the source's scan when it was started before the
    /// connection ([`EarlyScan::start`]; a scan of another root or other options is
    /// not used).
    pub fn push_scanned(
        &mut self,
        src: &Path,
        dest: &Path,
        opts: &SessionOptions,
        rep: &mut dyn Reporter,
        early: Option<EarlyScan>,
    ) -> Result<Stats, SyncError> {
        self.measured(|c| {
            c.open(
                ServerRole::Receive,
                dest.as_os_str().as_bytes(),
                opts,
                false,
            )?;
            let minor = c.peer_minor;
            let root = TreeRoot::Named(src.to_path_buf());
            let source = Source { root: &root, early };
            send_tree(&mut c.rd, &mut c.wr, source, opts, rep, true, minor)
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
        let cfg = ReceiverConfig {
            peer_minor: self.peer_minor,
            ..self.cfg
        };
        self.measured(|c| {
            c.open(ServerRole::Send, src.as_os_str().as_bytes(), opts, true)?;
            let root = TreeRoot::Named(dest.to_path_buf());
            receive_tree(&mut c.rd, &mut c.wr, &root, opts, cfg, rep, true)
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
            Some(c) => c.finish_clean().map_err(SyncError::from),
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

impl From<wire::ProtocolError> for HandshakeError {
    fn from(e: wire::ProtocolError) -> Self {
        HandshakeError::Other(e.into())
    }
}

/// Default deadline for the peer's answer to `Hello`, in seconds.
pub const HANDSHAKE_TIMEOUT_SECS: f64 = 30.0;

/// How long the client waits for the peer's answer to `Hello`:
/// `$HASYNC_HANDSHAKE_TIMEOUT` (seconds) or [`HANDSHAKE_TIMEOUT_SECS`]; a bad value is
/// a usage error.
pub fn handshake_timeout() -> Result<std::time::Duration, SyncError> {
    crate::node::config::deadline_secs(
        None,
        "handshake-timeout",
        "HASYNC_HANDSHAKE_TIMEOUT",
        HANDSHAKE_TIMEOUT_SECS,
    )
    .map_err(SyncError::Usage)
}
