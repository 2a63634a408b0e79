//! The peer side of a connection: `hasync serve` answers one connection on its
//! stdin/stdout and serves sessions until `Bye` or end of input. It owns the root
//! policy (`--restrict` / `--allow`: which roots a peer may open) and the dispatcher
//! that routes each request: `Open` to the sync engine's sender or receiver, the
//! `Db*` messages to the DB job's slave side ([`crate::db::serve`]).

use crate::sync::SyncError;
use crate::sync::fsops::{SafeRoot, TreeRoot};
use crate::sync::receive::{ReceiverConfig, receive_tree};
use crate::sync::send::{fail, send_tree};
use crate::wire::message::{PROTO_MAJOR, PROTO_MINOR};
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
) {
    if compress > 0 {
        rd.accept_compressed();
    }
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
    flush(&mut wr)?;
    if let Some(done) = &policy.handshake_done {
        done.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    loop {
        let open = match recv(&mut rd) {
            Ok(Msg::Open(o)) => o,
            Ok(Msg::Bye) | Err(wire::ProtocolError::Closed) => return Ok(()),
            Ok(Msg::Link { compress, bwlimit }) => {
                link(&mut rd, &mut wr, &rate, compress, bwlimit);
                continue;
            }
            Ok(m @ (Msg::DbStage | Msg::DbReplay(_) | Msg::DbCheck(_))) => {
                // Answered in place; a failed replay does not end the connection.
                let ans = crate::db::serve::answer(m, policy.db.as_ref());
                if matches!(ans, Msg::DbReplayed { .. }) {
                    policy.mark_received(RECEIVED_REPLAY);
                }
                send(&mut wr, &ans)?;
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
