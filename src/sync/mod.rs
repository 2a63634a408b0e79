//! The file-sync engine: one side sends its tree, the other receives it.
//!
//! - [`scan`] reads a tree into a manifest (with the gitignore-style excludes);
//! - [`send`] scans its root, sends the manifest, then answers the receiver's
//!   requests with whole files or deltas ([`delta`]);
//! - [`receive`] validates the manifest, scans its own tree, plans ([`plan`]),
//!   requests what it needs (many files in flight, a bounded window), rebuilds each
//!   file into a temp file, verifies BLAKE3 and renames it over; then deletions, then
//!   directory metadata. Its module doc holds the map of every thread of a sync;
//! - [`fsops`] is every file system call, confined beneath a root;
//! - [`client`] is the connection around them on the initiating side (push, pull);
//!   the peer side is [`crate::serve`].
//!
//! Either side can be local or remote: in a push the client sends and the
//! peer receives; in a pull it is the other way round.
//!
//! # Error policy
//!
//! - A problem with one entry (cannot create, write, verify, delete it) is not an
//!   error of the run: it becomes an [`Item`](crate::tree::report::Item) with
//!   `error` set, counted in `files_failed`, and the run goes on (exit 1 at the end).
//! - A problem that stops the run is a [`SyncError`], whose variant is its exit code:
//!   `Usage` (2, bad arguments or setup), `Peer` (3, the peer, the transport or the
//!   protocol), `Guard` (4, a safety check refused before anything changed), `Io` (1,
//!   a local problem that stops the whole run).
//! - A typed cause (an `io::Error`, a [`ProtocolError`], a [`TransportError`], in the DB
//!   job a `PgError`) is kept in its variant as the error's `source()`, and its text is
//!   part of the variant's message: hasync prints an error with `{}` and never walks the
//!   chain, so nothing is printed twice, and a caller that needs the cause matches on it.
//! - Context (which path, which root, what to do) is added where the error is made,
//!   in the message, by the function that knows it; callers above pass it on
//!   unchanged. Errors from the peer come back through [`SyncError::from_wire`], their
//!   text escaped (the peer may be hostile).
//! - The side that fails tells the other with an `Error` message ([`send::fail`])
//!   before it returns, so both ends exit with the same code.

pub mod client;
pub mod delta;
pub mod fsops;
pub mod owners;
pub mod plan;
pub mod receive;
pub mod scan;
pub mod send;

use crate::node::exit::ExitCode;
use crate::transport::TransportError;
use crate::wire::ProtocolError;
use crate::wire::message::code;

/// Why a sync could not run or finish. Each variant maps to one exit code. The text is
/// the whole message (what, where, the cause); a typed cause is also the `source()`.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Bad arguments or a bad local setup (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The peer, the transport or the protocol failed (exit 3).
    #[error("{0}")]
    Peer(String),
    /// The role fence refused the session or request (a stale master, a push into a
    /// master, a pull from a slave: [`crate::node::role`]); nothing was written (exit 3).
    #[error("{0}")]
    Fenced(String),
    /// A safety guard refused the run before anything changed (exit 4).
    #[error("{0}")]
    Guard(String),
    /// A local file system problem that stops the whole run (exit 1... or 3 for the peer's).
    #[error("{0}")]
    Io(String),
    /// A file system call on a root failed and stops the run (exit 1): `path` is the root
    /// as shown (control characters escaped).
    #[error("cannot {what} {path}: {source}")]
    File {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The peer broke the protocol, or the connection failed while reading a frame (exit 3).
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The transport (SSH, the local child) failed (exit 3).
    #[error("{0}")]
    Transport(#[from] TransportError),
}

impl SyncError {
    /// The process exit code for this error (see README "Exit codes").
    pub fn exit_code(&self) -> ExitCode {
        match self {
            SyncError::Usage(_) => ExitCode::Usage,
            SyncError::Peer(_)
            | SyncError::Fenced(_)
            | SyncError::Protocol(_)
            | SyncError::Transport(_) => ExitCode::Peer,
            SyncError::Guard(_) => ExitCode::Guard,
            SyncError::Io(_) | SyncError::File { .. } => ExitCode::Failed,
        }
    }

    /// Whether the peer, the transport or the protocol failed (exit 3; not a refusal
    /// by the role fence, which is an answer, not a failure to reach the peer).
    pub fn is_peer(&self) -> bool {
        matches!(self.exit_code(), ExitCode::Peer) && !matches!(self, SyncError::Fenced(_))
    }

    /// A failed file system call on `root` (shown escaped).
    pub fn file(what: &'static str, root: &std::path::Path, source: std::io::Error) -> SyncError {
        SyncError::File {
            what,
            path: crate::tree::path::escape_bytes(root.as_os_str().as_encoded_bytes()),
            source,
        }
    }

    /// The wire code carried in an `Error` message.
    pub fn wire_code(&self) -> u8 {
        if let SyncError::Fenced(_) = self {
            return code::FENCED;
        }
        match self.exit_code() {
            ExitCode::Usage => code::USAGE,
            ExitCode::Guard => code::GUARD,
            ExitCode::Failed => code::PARTIAL,
            _ => code::PEER,
        }
    }

    /// Rebuild an error the peer reported.
    pub fn from_wire(c: u8, message: String) -> SyncError {
        // The peer may be hostile: its text must not carry control characters to our output.
        // Lines stay lines (a psql error is several); anything else is escaped.
        let lines: Vec<String> = message
            .lines()
            .map(crate::tree::path::escape_controls)
            .collect();
        let message = format!("peer: {}", lines.join("\n"));
        match c {
            code::USAGE => SyncError::Usage(message),
            code::GUARD => SyncError::Guard(message),
            code::PARTIAL => SyncError::Io(message),
            code::FENCED => SyncError::Fenced(message),
            _ => SyncError::Peer(message),
        }
    }
}

/// Wall time per phase of one side of a session, logged at debug level
/// (`HASYNC_LOG=debug`) when the side ends: where a slow run spends its time.
pub(crate) struct Phases {
    side: &'static str,
    start: std::time::Instant,
    last: std::time::Instant,
    done: Vec<(&'static str, u128)>,
}

impl Phases {
    pub(crate) fn new(side: &'static str) -> Phases {
        let now = std::time::Instant::now();
        Phases {
            side,
            start: now,
            last: now,
            done: Vec::new(),
        }
    }

    /// The phase named `name` ends now.
    pub(crate) fn mark(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.done.push((name, (now - self.last).as_micros()));
        self.last = now;
    }
}

impl Drop for Phases {
    fn drop(&mut self) {
        if tracing::enabled!(tracing::Level::DEBUG) {
            let list: Vec<String> = self
                .done
                .iter()
                .map(|(n, us)| format!("{n} {:.1}", *us as f64 / 1000.0))
                .collect();
            tracing::debug!(
                "{} phases (ms): {}; total {:.1}",
                self.side,
                list.join(", "),
                self.start.elapsed().as_micros() as f64 / 1000.0
            );
        }
    }
}
