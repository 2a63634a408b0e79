//! hasync: keeps the standby node of a two-node HA pair in step with its master.
//!
//! The library plans and applies; the binary (`main.rs`) only parses arguments,
//! calls in here and maps errors to exit codes. See `docs/ARCHITECTURE.md`.

pub mod bufpool;
pub mod config;
pub mod daemon;
pub mod db;
pub mod delta;
pub mod engine;
pub mod envpath;
pub mod fsops;
pub mod hooks;
pub mod init;
pub mod jobs;
pub mod manifest;
pub mod master;
pub mod path;
pub mod plan;
pub mod protocol;
pub mod report;
pub mod scan;
pub mod schedule;
pub mod state;
pub mod status;
pub mod transport;
pub mod watch;
