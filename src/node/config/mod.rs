//! The node's TOML configuration (`/etc/hasync/hasync.toml`, see `INTERFACE.md`): this
//! module owns reading the file, turning it into typed values ([`Config`] and the types
//! below), filling in defaults, and refusing a bad file before anything runs. Every
//! refusal is a [`ConfigError`] that names the file, the line and column, the table and
//! the key, and says what to write instead. Paths given relative in `[node]` (`root`,
//! `peer_root`, `state_dir`, `sentinel_dir`, `identity`, `known_hosts`) are resolved
//! against the directory that holds the config file, so a profile directory (the demo,
//! the tests) can be moved around as a whole. Nothing here touches the network, the
//! peer or the managed directories; `role_from` is recorded, not resolved.

mod build;
mod error;
mod link;
mod values;

#[cfg(test)]
mod bad_table;
#[cfg(test)]
mod tests;

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

pub use build::cluster::Cluster;
pub use error::{ConfigError, Diagnostic};
pub use link::{Compress, DEFAULT_COMPRESS_LEVEL, MAX_COMPRESS_LEVEL, parse_rate};
pub use values::{deadline_secs, parse_duration};

/// Where the config is read from when neither `--config` nor `$HASYNC_CONFIG` says.
pub const DEFAULT_PATH: &str = "/etc/hasync/hasync.toml";

/// A whole, validated config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file it was read from, as given (used in messages).
    pub path: PathBuf,
    pub node: Node,
    /// `[[peer]]`: the standbys of a node that replicates to several (fan-out); empty
    /// when `[node] peer` names the one peer. See [`Config::for_peer`].
    pub peers: Vec<PeerNode>,
    /// The `[[sync]]` jobs, in file order. Names are unique and no two paths overlap.
    pub sync: Vec<SyncJob>,
    pub db: Option<DbJob>,
    pub services: Option<Services>,
    pub check_master: Option<CheckMaster>,
    pub hooks: Hooks,
    pub daemon: Daemon,
    /// `[cluster]`: leadership on etcd instead of the two-node master check.
    pub cluster: Option<Cluster>,
}

/// `[node]`: who this node is and how to reach its peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// `role = "master" | "slave" | "disabled"`. When the file says `role_from`
    /// instead, this is [`Role::Disabled`] until the caller resolves the role from
    /// that source (a node that does not know its role must do nothing).
    pub role: Role,
    /// `role_from = "wazo"`: read the role from `/etc/xivo/ha.conf` at run time.
    pub role_from: Option<String>,
    /// `peer = "local" | "[user@]host[:port]"`, or [`Peer::WazoHaConf`] for
    /// `peer_from = "wazo"`.
    pub peer: Peer,
    /// `peer_from = "wazo"`: the peer is `root@<remote_address>` of `/etc/xivo/ha.conf`
    /// (under `root`), read at run time (see `master::wazo::effective_peer`).
    pub peer_from: Option<String>,
    /// Not a config key: the `[[peer]]` this copy of the config talks to (set by
    /// [`Config::for_peer`]); `None` for the one peer of `[node] peer`.
    pub peer_name: Option<String>,
    /// SSH private key; relative paths are resolved against the config file's directory.
    pub identity: Option<PathBuf>,
    /// Pinned host keys; relative paths are resolved against the config file's directory.
    pub known_hosts: Option<PathBuf>,
    /// `peer = "local"` only: the config file of the local peer (the `hasync serve`
    /// child reads it as its own); relative: against the config file's directory.
    pub peer_config: Option<PathBuf>,
    /// Where hasync lives on the peer (default `"hasync"`, found on `PATH`).
    pub remote_path: String,
    /// Run state (default `/var/lib/hasync`); relative: against the config file's directory.
    pub state_dir: PathBuf,
    /// Where `is-primary` / `is-secondary` live (default `/var/lib/hasync`; Wazo:
    /// `/var/lib/wazo`); relative: against the config file's directory.
    pub sentinel_dir: PathBuf,
    /// Prefix of the managed paths on this node (default `/`); relative: against the
    /// config file's directory. See [`Config::local_path`].
    pub root: PathBuf,
    /// The same on the peer (default `/`); relative: against the config file's
    /// directory (meaningful for `peer = "local"`). Never contains `..`.
    pub peer_root: PathBuf,
    /// `timeout` (default 30 s): connect deadline, and how long a silent peer or a
    /// cut link may go unnoticed before the run ends with exit 3.
    pub timeout: Duration,
    /// `compress = "auto" | "off" | LEVEL` (default auto: zstd over SSH, none to a
    /// local peer): the default of every `[[sync]]` job.
    pub compress: Compress,
    /// `bwlimit` (rsync's units; default 0: none), in bytes/s: the default of every
    /// `[[sync]]` job.
    pub bwlimit: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Master,
    Slave,
    Disabled,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Slave => "slave",
            Role::Disabled => "disabled",
        }
    }

    /// The role named `s` ("master", "slave", "disabled").
    pub fn from_name(s: &str) -> Option<Role> {
        [Role::Master, Role::Slave, Role::Disabled]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

impl serde::Serialize for Role {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The other node. `"local"` means a local child process (demo and tests).
/// Parses from `"local"` or `"[user@]host[:port]"`, IPv6 as `"[addr]:port"` (or a bare
/// address without port); `host` is stored without brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Local,
    Ssh {
        user: Option<String>,
        host: String,
        port: Option<u16>,
    },
    /// `peer_from = "wazo"`: `root@<remote_address>` of `/etc/xivo/ha.conf`, resolved at
    /// run time by `master::wazo::effective_peer` (never connected to as such).
    WazoHaConf,
}

/// One `[[peer]]` table: a standby this node replicates to, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerNode {
    /// Unique, `[A-Za-z0-9_.-]+`: labels the peer's job runs (`job@name`), state and metrics.
    pub name: String,
    /// `address = "local" | "[user@]host[:port]"`.
    pub peer: Peer,
    /// Default `[node] peer_root`.
    pub peer_root: PathBuf,
    /// A local peer's config file.
    pub peer_config: Option<PathBuf>,
    /// Default `[node] remote_path`.
    pub remote_path: String,
}

/// One `[[sync]]` job: a set of directories mirrored between the nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncJob {
    /// Unique, `[A-Za-z0-9_.-]+`, not starting with `.` or `-`.
    pub name: String,
    /// Absolute, the same on both nodes, without `..`, normalised (no trailing `/`).
    pub paths: Vec<PathBuf>,
    /// gitignore-style patterns.
    pub exclude: Vec<String>,
    /// Default [`Direction::Push`].
    pub direction: Direction,
    /// Delete on the receiver what the sender no longer has (default `true`).
    pub delete: bool,
    /// Compare by content hash instead of size + mtime (default `false`).
    pub checksum: bool,
    /// Refuse a run that would delete more than this many entries.
    pub max_delete: Option<u64>,
    /// Default [`Schedule::Manual`].
    pub schedule: Schedule,
    /// Allow mirroring an empty or missing source (default `false`: refused, exit 4).
    pub allow_empty_source: bool,
    /// Do not cross file system boundaries (rsync's `-x`): a mount point inside the
    /// tree is mirrored as a directory, what is mounted there is not (nor deleted).
    pub one_file_system: bool,
    /// Mirror owners by number, not by name (default `false`: by name, like `rsync -a`).
    pub numeric_ids: bool,
    /// `jitter = "30s"`: each timed run starts up to this much later, at random
    /// (default 0; ignored by `watch` runs, which follow changes).
    pub jitter: Duration,
    /// `safety_pass`: for a `watch` job, the timed full pass that runs anyway
    /// (default [`Schedule::Hourly`]; `"manual"` disables it). Ignored otherwise.
    pub safety_pass: Schedule,
    /// This job's `compress`, if it says one (else `[node] compress`).
    pub compress: Option<Compress>,
    /// This job's `bwlimit` in bytes/s, if it says one (else `[node] bwlimit`).
    pub bwlimit: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// master -> slave
    Push,
    /// the slave fetches from the master
    Pull,
}

/// When a job runs. Strings: `"hourly"`, `"minutely"`, `"watch"`, `"manual"`, or a cron
/// expression of 5 or 6 whitespace-separated fields (only the shape is checked here).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Schedule {
    Hourly,
    Minutely,
    Cron(String),
    Watch,
    Manual,
}

/// `[db] min_interval`'s default: with `schedule = "watch"`, at most one dump every 5 s
/// under constant writes, while a commit still reaches the slave within 10 s as long as
/// one run takes at most ~4 s (docs/db.md).
pub const DB_MIN_INTERVAL: Duration = Duration::from_secs(5);

/// `[db]`: the database replicated from master to slave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbJob {
    pub kind: DbKind,
    pub database: String,
    /// Default `"public"`.
    pub schema: String,
    /// Plain identifiers, or `schema.table`.
    pub exclude_tables: Vec<String>,
    /// Local connection user on each node (default `"postgres"`).
    pub user: String,
    /// Default [`Schedule::Hourly`]. [`Schedule::Watch`]: the daemon polls the master for
    /// committed transactions every second and replicates soon after one (docs/db.md).
    pub schedule: Schedule,
    /// `min_interval`: with `schedule = "watch"`, the least time between the starts of two
    /// runs (default 5 s): under constant writes, at most one dump per `min_interval`.
    pub min_interval: Duration,
    /// `safety_pass`: with `schedule = "watch"`, the timed run that happens anyway (it
    /// catches a drifted slave); default [`Schedule::Hourly`], `"manual"` for none.
    pub safety_pass: Schedule,
    /// Replicate the schema too, not only the data (default `false`).
    pub with_schema: bool,
    /// libpq `host`: the server's unix-socket directory (or a host name); default: libpq's
    /// own default (the local socket).
    pub host: Option<String>,
    /// libpq `port` (also names the socket file); default: libpq's own default (5432).
    pub port: Option<u16>,
    /// Run `pg_dump`/`psql` as this system user (via `runuser`) when hasync runs as root,
    /// e.g. `"postgres"` for peer authentication; default: as hasync's own user.
    pub run_as: Option<String>,
    /// Directory holding `pg_dump` and `psql`; default: found on `PATH`.
    pub bin_dir: Option<PathBuf>,
    /// A slave without a `[db]` section of its own may replay into the database this
    /// section names (on the slave); default `false`: such a slave refuses.
    pub master_chooses_slave_db: bool,
    /// Not a config key: `hasync db-replicate --discard-failover-writes` sets it for one
    /// run (the slave then replays even though it was written while it served as master).
    pub discard_failover_writes: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DbKind {
    Postgres,
}

/// `[services]`: the slave's services, as systemd `units` or as `start`/`stop` commands
/// (never both; `status` goes with the commands).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Services {
    pub units: Vec<String>,
    pub start: Vec<String>,
    pub stop: Vec<String>,
    pub status: Option<String>,
    /// Default 60 s.
    pub timeout: Duration,
    /// `start` runs every command even after one failed (Wazo's script has no `set -e`);
    /// the action still reports the first failure. Default false.
    pub keep_going: bool,
    /// `guard = "start"`: `status` only skips a start (stop always runs its commands, as
    /// Wazo's does: `wazo-service status all` failing does not mean all is stopped).
    /// Default (`"both"`): it also skips a stop when it says stopped.
    pub stop_unguarded: bool,
}

/// `[check_master]`: how the slave decides the master is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckMaster {
    /// The master's host or address. Empty when omitted on a Wazo node (`[node]
    /// role_from` or `peer_from` = "wazo"): then it is remote_address of ha.conf, read
    /// at run time by `MasterCheck`.
    pub address: String,
    /// `"icmp"`, `"tcp:PORT"`, `"http://..."` / `"https://..."`, `"cmd:SHELL COMMAND"`
    /// (default `["icmp"]`).
    pub probes: Vec<String>,
    /// Default 2 s, never zero.
    pub interval: Duration,
    /// Default 1 s, never zero.
    pub timeout: Duration,
    /// Consecutive failed checks before failover (default 3, never 0).
    pub fail_after: u32,
    /// Consecutive good checks before failback (default 5, never 0).
    pub recover_after: u32,
    /// Minimum time between two role changes (default 30 s).
    pub hold_down: Duration,
    /// Must stay reachable, or the slave is isolated and does nothing.
    pub witness: Vec<String>,
    /// Default [`ProbeMode::All`].
    pub mode: ProbeMode,
    /// `copy_back`: absolute paths pushed back to the peer by `hasync demote --copy-back`
    /// (what the slave wrote while it served: voicemail, recordings). Default empty.
    pub copy_back: Vec<PathBuf>,
    /// Every check that sees the master up stops the slave services, at once and every
    /// time, as Wazo's `xivo-check-master-status` did (`recover_after` and `hold_down`
    /// then apply only to starting). Default false.
    pub stop_while_up: bool,
}

/// How probe results combine: `All` = the master is up only if every probe answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeMode {
    All,
    Any,
}

/// `[hooks]`: commands run with `HASYNC_EVENT`, `HASYNC_JOB`, `HASYNC_ERROR` set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    pub on_failure: Option<String>,
    pub on_failover: Option<String>,
    pub on_failback: Option<String>,
}

/// `[daemon]`: how `hasync daemon` schedules and retries (see `docs/daemon.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemon {
    /// `ip:port` for the status/metrics HTTP listener (page, JSON, metrics, health).
    pub metrics_listen: Option<String>,
    /// `ip:port` for a second listener with the health endpoints only
    /// (`/primary`, `/replica`, `/health`, `/role`), e.g. on the LAN for a load balancer.
    pub health_listen: Option<String>,
    /// `ip:port` of the peer's health listener: a master asks its `/role` to learn
    /// whether the slave has taken over (then its own `/primary` answers 503).
    pub peer_health: Option<String>,
    /// `timezone = "utc" | "local"`: the zone cron expressions are read in (default UTC).
    pub timezone: crate::node::schedule::TimeZoneChoice,
    /// `retry_min`: the first retry delay after a failed run (default 5 s, doubled each time).
    pub retry_min: Duration,
    /// `retry_max`: the cap of the retry delay (default 5 min).
    pub retry_max: Duration,
}

impl Default for Daemon {
    fn default() -> Self {
        Daemon {
            metrics_listen: None,
            health_listen: None,
            peer_health: None,
            timezone: crate::node::schedule::TimeZoneChoice::Utc,
            retry_min: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
        }
    }
}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        reason: error::io_reason(&source),
        source,
    })?;
    // Relative paths in the file are resolved against its directory: make that absolute.
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    parse(&text, &path)
}

/// Parses and validates config `text`. `path` is used in messages and to resolve the
/// relative paths of `[node]` against its directory (`path.parent()`).
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    build::build(text, path)
}

impl Config {
    /// One config per peer this node replicates to: itself for `[node] peer`, else one
    /// copy per `[[peer]]` (see [`Config::for_peer`]), in file order.
    pub fn per_peer(&self) -> Vec<Config> {
        match self.peers.is_empty() {
            true => vec![self.clone()],
            false => self.peers.iter().map(|p| self.for_peer(p)).collect(),
        }
    }

    /// This config as seen by the code that talks to one peer: `[node]`'s peer keys
    /// are those of `p`, and `node.peer_name` is its name.
    pub fn for_peer(&self, p: &PeerNode) -> Config {
        let mut c = self.clone();
        c.node.peer = p.peer.clone();
        c.node.peer_root = p.peer_root.clone();
        c.node.peer_config = p.peer_config.clone();
        c.node.remote_path = p.remote_path.clone();
        c.node.peer_name = Some(p.name.clone());
        c
    }

    /// The `[[peer]]` called `name`.
    pub fn peer_named(&self, name: &str) -> Option<&PeerNode> {
        self.peers.iter().find(|p| p.name == name)
    }

    /// The name a job's runs go by toward this config's peer: `job` for the one peer of
    /// `[node] peer`, `job@peer` with `[[peer]]` tables (their locks, state and logs).
    pub fn unit_name(&self, job: &str) -> String {
        match &self.node.peer_name {
            None => job.to_string(),
            Some(p) => format!("{job}@{p}"),
        }
    }

    /// The `[[sync]]` job called `name`.
    pub fn job(&self, name: &str) -> Option<&SyncJob> {
        self.sync.iter().find(|j| j.name == name)
    }

    /// Where the managed path `p` (absolute, as on the node) lives on this node:
    /// `root` joined with `p`. `..` in `p` is resolved lexically and never climbs above
    /// `root`.
    pub fn local_path(&self, p: &Path) -> PathBuf {
        join_under(&self.node.root, p)
    }

    /// The same as [`Config::local_path`] for the peer: `peer_root` joined with `p`.
    pub fn peer_path(&self, p: &Path) -> PathBuf {
        join_under(&self.node.peer_root, p)
    }
}

fn join_under(root: &Path, p: &Path) -> PathBuf {
    let mut rel: Vec<&std::ffi::OsStr> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => rel.push(s),
            Component::ParentDir => {
                rel.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    let mut out = root.to_path_buf();
    out.extend(rel);
    out
}
