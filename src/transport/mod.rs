//! Transports: how the two ends of a sync get a byte stream to each other.
//!
//! A transport starts `hasync serve` on the peer (a local child process, or a
//! command executed over SSH) and hands the engine a plain blocking
//! `Read`/`Write` pair. The engine does not know which transport it runs on:
//! the same protocol runs over a pipe to a child and over an SSH channel.
//! Closing a connection waits for the peer and turns its exit status and its
//! stderr into an error that says what went wrong on the other side.

pub mod init;
pub mod local;
pub mod ssh;

use std::io::{Read, Write};

/// What went wrong while reaching or talking to the peer. Always maps to exit code 3.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer could not be started or reached at all.
    #[error("cannot start the peer: {0}")]
    Start(String),
    /// The peer ended with an error; `stderr` is what it printed.
    #[error("the peer failed ({status}){}", fmt_stderr(.stderr))]
    PeerFailed { status: String, stderr: String },
    /// Anything else about the connection (I/O, SSH, authentication, host key...).
    #[error("{0}")]
    Other(String),
}

fn fmt_stderr(s: &str) -> String {
    let s = s.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!(": {s}")
    }
}

/// A live connection to a peer running `hasync serve`.
pub struct Connection {
    /// Bytes from the peer.
    pub reader: Box<dyn Read + Send>,
    /// Bytes to the peer.
    pub writer: Box<dyn Write + Send>,
    /// Waits for the peer to finish once both sides are done.
    pub closer: Box<dyn Closer>,
}

/// Ends a connection: waits for the peer's exit and reports how it went.
pub trait Closer: Send {
    /// Wait (bounded) for the peer to exit after the writer was dropped.
    /// An error carries the peer's exit status and stderr.
    fn finish(self: Box<Self>) -> Result<(), TransportError>;
    /// The peer's stderr collected so far (for error messages when the stream broke).
    fn stderr(&self) -> String;
    /// [`Closer::finish`] after a clean goodbye (`Bye`): a transport may stop waiting
    /// once the peer ended its output, without waiting for its exit.
    fn finish_clean(self: Box<Self>) -> Result<(), TransportError> {
        self.finish()
    }
}

/// Something that can start a `hasync serve` peer and connect to it.
pub trait Transport {
    /// Start the peer and connect. `serve_args` are extra arguments for `hasync serve`.
    fn connect(&self, serve_args: &[String]) -> Result<Connection, TransportError>;
    /// Human-readable description of the peer, for messages ("local child", "root@10.0.0.2").
    fn describe(&self) -> String;
    /// Does the connection leave this host (SSH)? Decides `compress = "auto"`.
    fn is_remote(&self) -> bool {
        false
    }
}
