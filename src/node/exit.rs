//! The process exit codes, one table for every command (the README's "Exit codes"):
//! every error type's `exit_code()` answers one of these.

/// What a command's exit status means. Ordered: when several jobs fail, the run exits
/// with the greatest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitCode {
    /// Everything done.
    Ok = 0,
    /// Done in part, or failed on this node (a file, a dump, a replay, a service).
    Failed = 1,
    /// Bad arguments or configuration: fix the command line or the config file.
    Usage = 2,
    /// The peer, the transport or the protocol failed, or the peer refused.
    Peer = 3,
    /// A safety guard refused the run before anything changed.
    Guard = 4,
    /// Another process holds what this one needs (a second daemon on one state_dir).
    Busy = 5,
}

impl ExitCode {
    /// The number the process exits with.
    pub fn code(self) -> i32 {
        self as i32
    }
}

impl From<ExitCode> for i32 {
    fn from(c: ExitCode) -> i32 {
        c.code()
    }
}
