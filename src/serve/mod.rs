//! The peer side of a connection: `hasync serve` answers one connection on its
//! stdin/stdout and serves sessions until `Bye` or end of input. It owns the root
//! policy (`--restrict` / `--allow`: which roots a peer may open) and the dispatcher
//! that routes each request: `Open` to the sync engine's sender or receiver, the
//! `Db*` messages to the DB job's slave side ([`crate::db::serve`]). It also enforces
//! the role fence ([`crate::node::role`]): with its own node's config, it answers the
//! client's `Role`, refuses a stale master, and checks every request against this
//! node's role as it is at that moment (no push or DB replay into a master, no pull
//! from a slave; a copy-back merge passes).

use crate::node::config::{Config, Role};
use crate::node::role::{self, NodeRole, Request};
use crate::sync::SyncError;
use crate::sync::fsops::{SafeRoot, TreeRoot};
use crate::sync::receive::{ReceiverConfig, receive_tree};
use crate::sync::send::{Source, fail, send_tree};
use crate::wire::message::{MINOR_BATCH, MINOR_EAGER_ROLE, PROTO_MAJOR, PROTO_MINOR};
use crate::wire::throttle::{Rate, Throttled};
use crate::wire::{self, FrameReader, FrameWriter, Msg, ServerRole, recv, send};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

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
    /// What the session received, for `hasync serve`'s record (`health::Received`):
    /// [`RECEIVED_TREE`] is or-ed in after each tree received without error,
    /// [`RECEIVED_REPLAY`] after each successful DB replay.
    pub received: Option<std::sync::Arc<std::sync::atomic::AtomicU8>>,
    /// This node's own config: its role and epoch for the fence. `None` (a serve
    /// without a config): the role is unknown and only the peer's side fences.
    pub node: Option<Config>,
}

/// See [`ServePolicy::received`].
pub const RECEIVED_TREE: u8 = 1;
/// See [`ServePolicy::received`].
pub const RECEIVED_REPLAY: u8 = 2;

impl ServePolicy {
    fn mark_received(&self, what: u8) {
        if let Some(r) = &self.received {
            r.fetch_or(what, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// This node for the fence, as it is now (promote/demote take effect at once).
    fn me(&self) -> Result<NodeRole, String> {
        match &self.node {
            None => Ok(role::unknown_node()),
            Some(cfg) => role::node_role(cfg).map_err(|e| {
                format!("refused: this node cannot tell its own role ({e}); nothing was done")
            }),
        }
    }

    /// The answer to the client's `Role`: this node's, after refusing a stale master on
    /// either side and remembering a higher epoch (when this node is not the master).
    fn answer_role(&self, peer: &NodeRole) -> Result<NodeRole, String> {
        let mut me = self.me()?;
        role::check_peer(&me, peer)?;
        if let Some(cfg) = &self.node
            && me.role != Some(Role::Master)
            && peer.epoch > me.epoch
        {
            if let Err(e) = role::observe_epoch(cfg, peer.epoch, &peer.node) {
                return Err(format!("refused: cannot record the peer's role epoch: {e}"));
            }
            me.epoch = peer.epoch;
        }
        Ok(me)
    }

    /// The fence for one request ([`role::check_request`]), logged when it refuses.
    fn fence(&self, peer: &NodeRole, req: Request) -> Result<(), String> {
        let res = self.me().and_then(|me| role::check_request(&me, peer, req));
        if let Err(e) = &res {
            tracing::warn!("{e}");
        }
        res
    }

    /// The root a peer asked to open, checked against the policy. A restricted serve
    /// opens it here, once, beneath the outermost allowed directory that holds it
    /// ([`SafeRoot::open_confined`]: no symlink below that directory is ever followed;
    /// with `create`, a missing root is made) and the session uses only that descriptor:
    /// a symlink that another session mirrors meanwhile cannot move it. The outermost
    /// rather than the longest match: an allowed directory nested in another is inside a
    /// tree that peers write to, so it is itself walked to without following symlinks.
    fn check_root(&self, raw: &[u8], create: bool) -> Result<TreeRoot, SyncError> {
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
        let Some(allowed) = &self.allowed_roots else {
            return Ok(TreeRoot::Named(p));
        };
        // Component-wise: /x/data holds /x/data/y, not /x/database.
        let Some(base) = allowed
            .iter()
            .filter(|a| p.starts_with(a))
            .min_by_key(|a| a.components().count())
        else {
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
        let rest = p.strip_prefix(base).unwrap_or(Path::new(""));
        let dir = SafeRoot::open_confined(base, rest, create)
            .map_err(|e| SyncError::Usage(format!("cannot open {}: {e}", p.display())))?;
        Ok(TreeRoot::Confined { path: p, dir })
    }
}

/// Apply the client's `Link` (protocol 2.6) to the sessions to come: compress this
/// side's frames at `compress` (0: stop), accept compressed frames, cap this side's
/// writes at `bwlimit` bytes/s (0: no cap).
fn link<R: Read, W: Write>(
    rd: &mut FrameReader<R>,
    wr: &mut FrameWriter<W>,
    rate: &Rate,
    compress: u8,
    bwlimit: u64,
    peer_minor: u16,
) {
    if compress > 0 {
        rd.accept_compressed();
    }
    wr.set_batching(peer_minor >= MINOR_BATCH);
    wr.set_compression((compress > 0).then_some(compress as i32));
    rate.set(bwlimit);
}

/// Serve one connection on `input`/`output` (the peer side).
pub fn serve<R: Read + Send, W: Write + Send>(
    input: R,
    output: W,
    policy: &ServePolicy,
) -> Result<(), SyncError> {
    let mut rd = FrameReader::new(BufReader::with_capacity(256 * 1024, input));
    // The client's `Link` (2.6) sets this side's bandwidth cap.
    let rate = Rate::default();
    let output = Throttled::new(output, rate.clone());
    let mut wr = FrameWriter::new(BufWriter::with_capacity(256 * 1024, output));
    let flush = |wr: &mut FrameWriter<BufWriter<Throttled<W>>>| {
        wr.flush().map_err(|e| SyncError::Peer(e.to_string()))
    };
    let first = match recv(&mut rd) {
        Ok(m) => m,
        Err(e) => return Err(fail(&mut wr, e.into())),
    };
    let peer_minor;
    match first {
        Msg::Hello {
            major,
            minor,
            software,
        } => {
            peer_minor = minor;
            if let Err(msg) = wire::check_version(major, &software) {
                let _ = send(
                    &mut wr,
                    &Msg::Error {
                        code: wire::message::code::PEER,
                        message: msg.clone(),
                    },
                );
                let _ = flush(&mut wr);
                return Err(SyncError::Peer(msg));
            }
        }
        m => {
            return Err(fail(
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
            software: wire::software(),
        },
    )?;
    if peer_minor >= MINOR_EAGER_ROLE {
        // 2.7: this node's role goes with HelloOk; the client checks it while its own
        // `Role` is on the way (answered only by a refusal).
        match policy.me() {
            Ok(me) => send(&mut wr, &Msg::Role(me))?,
            Err(message) => return Err(fail(&mut wr, SyncError::Fenced(message))),
        }
    }
    flush(&mut wr)?;
    if let Some(done) = &policy.handshake_done {
        done.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    // Until a 2.5 client says otherwise (its `Role`), the peer's role is unknown.
    let mut peer = NodeRole {
        node: "the peer".into(),
        ..role::unknown_node()
    };
    loop {
        let mut open = match recv(&mut rd) {
            Ok(Msg::Open(o)) => o,
            Ok(Msg::Bye) | Err(wire::ProtocolError::Closed) => return Ok(()),
            Ok(Msg::Role(p)) => {
                let ans = match policy.answer_role(&p) {
                    Ok(me) => Msg::Role(me),
                    Err(message) => {
                        tracing::warn!("{message}");
                        return Err(fail(&mut wr, SyncError::Fenced(message)));
                    }
                };
                peer = p;
                if peer_minor < MINOR_EAGER_ROLE {
                    send(&mut wr, &ans)?;
                    flush(&mut wr)?;
                }
                continue;
            }
            Ok(Msg::Link { compress, bwlimit }) => {
                link(&mut rd, &mut wr, &rate, compress, bwlimit, peer_minor);
                continue;
            }
            Ok(m @ (Msg::DbStage | Msg::DbReplay(_) | Msg::DbCheck(_))) => {
                // Answered in place; a failed replay does not end the connection.
                let ans = match policy.fence(&peer, Request::Db) {
                    Ok(()) => {
                        let db = policy
                            .db
                            .clone()
                            .map(|d| crate::db::serve::DbServe { peer_minor, ..d });
                        crate::db::serve::answer(m, db.as_ref())
                    }
                    Err(message) => Msg::Error {
                        code: wire::message::code::FENCED,
                        message,
                    },
                };
                if matches!(ans, Msg::DbReplayed { .. }) {
                    policy.mark_received(RECEIVED_REPLAY);
                }
                send(&mut wr, &ans)?;
                flush(&mut wr)?;
                continue;
            }
            Ok(Msg::DbPatchBegin(b)) => {
                let fenced = policy.fence(&peer, Request::Db).err();
                let db = policy.db.clone().map(|d| crate::db::serve::DbServe {
                    fenced: fenced.clone(),
                    ..d
                });
                let ans = crate::db::serve::patch(b, db.as_ref(), &mut || recv(&mut rd));
                match ans {
                    Ok(m) => {
                        send(&mut wr, &m)?;
                        flush(&mut wr)?;
                        continue;
                    }
                    Err(e) => return Err(fail(&mut wr, e.into())),
                }
            }
            Ok(m) => {
                return Err(fail(
                    &mut wr,
                    SyncError::Peer(format!("protocol error: expected Open, got {}", m.name())),
                ));
            }
            Err(e) => return Err(fail(&mut wr, e.into())),
        };
        let req = match open.role {
            _ if open.options.copy_back => Request::CopyBack,
            ServerRole::Receive => Request::Push,
            ServerRole::Send => Request::Pull,
        };
        if let Err(message) = policy.fence(&peer, req) {
            return Err(fail(&mut wr, SyncError::Fenced(message)));
        }
        if open.options.copy_back {
            // A copy-back passed the fence as a merge: it never deletes.
            open.options.delete = false;
            open.options.max_delete = Some(0);
        }
        let create = open.role == ServerRole::Receive && !open.options.dry_run;
        let root = match policy.check_root(&open.root, create) {
            Ok(r) => r,
            Err(e) => return Err(fail(&mut wr, e)),
        };
        send(&mut wr, &Msg::OpenOk)?;
        flush(&mut wr)?;
        let mut silent = crate::tree::report::Silent;
        let res = match open.role {
            ServerRole::Send => send_tree(
                &mut rd,
                &mut wr,
                Source {
                    root: &root,
                    early: None,
                },
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
                ReceiverConfig {
                    peer_minor,
                    ..policy.cfg
                },
                &mut silent,
                false,
            ),
        };
        match res {
            Err(e) => return Err(fail(&mut wr, e)),
            Ok(st) if open.role == ServerRole::Receive && !open.options.dry_run => {
                if st.files_failed == 0 {
                    policy.mark_received(RECEIVED_TREE);
                }
            }
            Ok(_) => {}
        }
    }
}
