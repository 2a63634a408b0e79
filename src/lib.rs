//! hasync: keeps the standby node of a two-node HA pair in step with its master.
//!
//! The library plans and applies; the binary (`main.rs`) only parses arguments,
//! calls in here and maps errors to exit codes. One top-level module per domain, each
//! depending only on those listed before it (see `docs/ARCHITECTURE.md`):
//!
//! - [`node`]: this node's config, role, records on disk, outside commands;
//! - [`tree`]: paths, manifest entries, reports: what a tree is;
//! - [`wire`]: frames, messages, the handshake: the protocol between two nodes;
//! - [`transport`]: how the two ends get a byte stream (local child, SSH), and `init`;
//! - [`sync`]: the file-sync engine (scan, plan, delta, send, receive) and its client;
//! - [`db`]: PostgreSQL dump-and-replay, both sides;
//! - [`serve`]: the peer side of a connection, its root policy and dispatcher;
//! - [`failover`]: the master check, the slave services, promote/demote;
//! - [`cluster`]: leadership on etcd for three or more nodes (`[cluster]`);
//! - [`scheduler`]: jobs, the daemon, state between runs, status.

pub mod cluster;
pub mod db;
pub mod failover;
pub mod node;
pub mod scheduler;
pub mod serve;
pub mod sync;
pub mod transport;
pub mod tree;
pub mod wire;
