//! Roles: which node is master right now, and the fence that makes a stale master
//! unable to write. This module owns the one answer to "what is this node": its
//! effective role, where that came from, its role epoch, and whether it serves as master
//! because its master check failed over.
//!
//! The effective role, in one documented precedence ([`effective`]):
//! - on a Wazo node (`role_from = "wazo"`) ha.conf is the truth: `node_type` of
//!   `/etc/xivo/ha.conf` (under `root`) when the file exists, else the sentinels
//!   `sentinel_dir/is-primary` / `is-secondary`, else disabled. Promote and demote write
//!   ha.conf's `node_type` (every other key kept) and the sentinels, as Wazo's own HA
//!   endpoint does, so Wazo's tools and hasync never disagree;
//! - elsewhere: the role file `state_dir/role.json` written by promote/demote (so a
//!   demoted old master stays a slave whatever its config says), else the config's
//!   `role`, else (a config that says "disabled") the sentinels.
//!
//! The epoch (`state_dir/epoch.json`): a number that `promote` raises above every epoch
//! this node has seen; every node remembers the highest it has seen (persisted) and the
//! two nodes exchange theirs at each connection ([`NodeRole`], wire message `Role`). A
//! node that claims to be master with an epoch older than its peer's is stale: it was
//! master before its slave was promoted, and [`check_peer`] refuses it until it is
//! demoted. [`check_request`] is the per-request fence of `serve`: no push and no DB
//! replay into a node that is (or serves as) master, no pull from one that is not.
//!
//! Switching roles (`hasync promote`, `hasync demote`) is [`crate::failover::switch`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::{Config, Role};
use super::store::{self, NodeError};

/// `state_dir/role.json`: what promote/demote last did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoleRecord {
    /// `"master"` or `"slave"`.
    pub role: String,
    pub since_unix_ms: u64,
    /// `"promote"` or `"demote"`.
    pub by: String,
    /// The epoch this node held when it switched (promote raises it).
    #[serde(default)]
    pub epoch: u64,
}

pub const SENTINEL_PRIMARY: &str = "is-primary";
pub const SENTINEL_SECONDARY: &str = "is-secondary";

/// Where the effective role came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleSource {
    /// `state_dir/role.json`, written by promote/demote.
    RoleFile,
    /// The config's `[node] role`.
    Config,
    /// `node_type` of Wazo's `/etc/xivo/ha.conf`.
    HaConf,
    /// `sentinel_dir/is-primary` or `is-secondary`.
    Sentinels,
    /// Nothing says: the config's "disabled".
    Default,
}

impl RoleSource {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleSource::RoleFile => "role.json (promote/demote)",
            RoleSource::Config => "the config's [node] role",
            RoleSource::HaConf => "ha.conf node_type",
            RoleSource::Sentinels => "the sentinel files",
            RoleSource::Default => "no role set (disabled)",
        }
    }
}

/// This node as the fence sees it: role (None: unknown, e.g. a `serve` without a
/// config), whether it serves as master after a failover, its epoch, and a name for
/// messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRole {
    pub role: Option<Role>,
    pub source: Option<RoleSource>,
    /// Its master check started the services (failover) and has not failed back, or a
    /// failback's copy-back is still pending: it holds writes the master lacks.
    pub failed_over: bool,
    pub epoch: u64,
    pub node: String,
}

pub fn role_file(cfg: &Config) -> PathBuf {
    cfg.node.state_dir.join("role.json")
}

/// The role recorded by promote/demote, if any.
pub fn recorded_role(cfg: &Config) -> Result<Option<Role>, NodeError> {
    let path = role_file(cfg);
    let Some(rec) = store::read_json::<RoleRecord>(&path)? else {
        return Ok(None);
    };
    match Role::from_name(&rec.role) {
        Some(r @ (Role::Master | Role::Slave)) => Ok(Some(r)),
        _ => Err(NodeError::State {
            path,
            reason: format!(
                "role {:?} is neither \"master\" nor \"slave\" (run hasync promote or hasync demote to rewrite it)",
                rec.role
            ),
        }),
    }
}

/// This node's role now.
pub fn effective_role(cfg: &Config) -> Result<Role, NodeError> {
    Ok(effective(cfg)?.0)
}

/// This node's role now and where it came from (see the module comment for the order).
pub fn effective(cfg: &Config) -> Result<(Role, RoleSource), NodeError> {
    let sentinels = || {
        let dir = &cfg.node.sentinel_dir;
        match (
            dir.join(SENTINEL_PRIMARY).exists(),
            dir.join(SENTINEL_SECONDARY).exists(),
        ) {
            (true, false) => Some(Role::Master),
            (false, true) => Some(Role::Slave),
            _ => None,
        }
    };
    if cfg.node.role_from.as_deref() == Some("wazo") {
        if let Some(r) = wazo_role(cfg)? {
            return Ok((r, RoleSource::HaConf));
        }
        return Ok(match sentinels() {
            Some(r) => (r, RoleSource::Sentinels),
            None => (cfg.node.role, RoleSource::Default),
        });
    }
    if let Some(r) = recorded_role(cfg)? {
        return Ok((r, RoleSource::RoleFile));
    }
    if cfg.node.role != Role::Disabled {
        return Ok((cfg.node.role, RoleSource::Config));
    }
    Ok(match sentinels() {
        Some(r) => (r, RoleSource::Sentinels),
        None => (Role::Disabled, RoleSource::Default),
    })
}

/// This node for the fence: [`effective`], [`epoch`], [`failed_over`], its host name.
pub fn node_role(cfg: &Config) -> Result<NodeRole, NodeError> {
    let (role, source) = effective(cfg)?;
    Ok(NodeRole {
        role: Some(role),
        source: Some(source),
        failed_over: failed_over(&cfg.node.state_dir),
        epoch: epoch(cfg)?,
        node: host_name(),
    })
}

/// A node whose role is unknown (no config): what an unconfigured client or serve says.
pub fn unknown_node() -> NodeRole {
    NodeRole {
        role: None,
        source: None,
        failed_over: false,
        epoch: 0,
        node: host_name(),
    }
}

/// This machine's host name (for messages).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this node".into())
}

/// Wazo's `/etc/xivo/ha.conf` (under `root`): `{"node_type": "master"|"slave"|"disabled", ...}`.
/// `None` when the file does not exist. See [`super::wazo`].
pub fn wazo_role(cfg: &Config) -> Result<Option<Role>, NodeError> {
    super::wazo::role(cfg)
}

/// Makes the sentinels say `role` (creates one, removes the other).
pub fn write_sentinels(dir: &Path, role: Role) -> Result<(), NodeError> {
    let (present, absent) = match role {
        Role::Master => (SENTINEL_PRIMARY, SENTINEL_SECONDARY),
        _ => (SENTINEL_SECONDARY, SENTINEL_PRIMARY),
    };
    let io = |path: PathBuf, what: &'static str| {
        move |e: std::io::Error| NodeError::Io {
            path: path.clone(),
            what,
            source: e,
        }
    };
    std::fs::create_dir_all(dir).map_err(io(dir.to_path_buf(), "create the sentinel directory"))?;
    let p = dir.join(present);
    std::fs::write(&p, b"").map_err(io(p.clone(), "create the sentinel file"))?;
    let a = dir.join(absent);
    match std::fs::remove_file(&a) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(a, "remove the sentinel file")(e)),
    }
}

/// Records `role`: the role file, on a Wazo node ha.conf's `node_type` (when ha.conf
/// exists), and the sentinels. `epoch` is the epoch the node now holds.
pub fn record_role(cfg: &Config, role: Role, by: &str, epoch: u64) -> Result<(), NodeError> {
    if cfg.node.role_from.as_deref() == Some("wazo") {
        super::wazo::write_node_type(cfg, role)?;
    }
    store::write_json(
        &role_file(cfg),
        &RoleRecord {
            role: role.as_str().to_string(),
            since_unix_ms: store::now_ms(),
            by: by.to_string(),
            epoch,
        },
    )?;
    write_sentinels(&cfg.node.sentinel_dir, role)
}

/// `state_dir/epoch.json`: the highest role epoch this node has seen.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EpochRecord {
    pub epoch: u64,
    pub updated_unix_ms: u64,
    /// Who raised it: "promote", or the peer it was learnt from.
    pub from: String,
}

pub fn epoch_file(cfg: &Config) -> PathBuf {
    cfg.node.state_dir.join("epoch.json")
}

/// The highest epoch this node has seen (0: none yet).
pub fn epoch(cfg: &Config) -> Result<u64, NodeError> {
    Ok(store::read_json::<EpochRecord>(&epoch_file(cfg))?.map_or(0, |r| r.epoch))
}

/// Raises the remembered epoch to `seen` if it is higher (under `state_dir/epoch.lock`,
/// so two sessions at once never lower it). Returns whether it rose.
pub fn observe_epoch(cfg: &Config, seen: u64, from: &str) -> Result<bool, NodeError> {
    let lock = cfg.node.state_dir.join("epoch.lock");
    let _held = store::lock_file(&lock, true).map_err(|source| NodeError::Io {
        path: lock.clone(),
        what: "lock",
        source,
    })?;
    if seen <= epoch(cfg)? {
        return Ok(false);
    }
    store::write_json(
        &epoch_file(cfg),
        &EpochRecord {
            epoch: seen,
            updated_unix_ms: store::now_ms(),
            from: from.to_string(),
        },
    )?;
    tracing::info!("role epoch is now {seen} (from {from})");
    Ok(true)
}

/// Whether the master check of the node with `state_dir` serves as master: it failed
/// over (services started, not failed back) or a failback's copy-back is pending. Read
/// from `state_dir/master.json` (owned by [`crate::failover`]); no file: no.
pub fn failed_over(state_dir: &Path) -> bool {
    let v = store::read_json::<serde_json::Value>(&state_dir.join("master.json"))
        .ok()
        .flatten();
    let flag = |k: &str| v.as_ref().and_then(|v| v.get(k)).and_then(|b| b.as_bool());
    flag("services_active") == Some(true) || flag("copy_back_pending") == Some(true)
}

/// When the master check of the node with `state_dir` last changed the services
/// (failover or failback), in Unix ms; 0: never.
pub fn last_transition_ms(state_dir: &Path) -> u64 {
    store::read_json::<serde_json::Value>(&state_dir.join("master.json"))
        .ok()
        .flatten()
        .and_then(|v| v.get("last_transition_unix_ms").and_then(|t| t.as_u64()))
        .unwrap_or(0)
}

/// "node-b (master from role.json (promote/demote), epoch 2)".
pub fn describe(n: &NodeRole) -> String {
    let role = match n.role {
        None => "role unknown: no config".to_string(),
        Some(r) if n.failed_over => format!("{r}, serving as master after a failover"),
        Some(r) => match n.source {
            Some(s) => format!("{r} from {}", s.as_str()),
            None => r.to_string(),
        },
    };
    format!("{} ({role}, epoch {})", n.node, n.epoch)
}

/// What a peer asks of a `serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Write into this node's tree (`Open` to receive).
    Push,
    /// Read this node's tree (`Open` to send).
    Pull,
    /// A merge that never deletes (`--copy-back`), either way.
    CopyBack,
    /// Stage, patch or replay the DB job's dump into this node's database.
    Db,
}

/// The handshake check, on either side: `me` refuses a `peer` that claims mastership
/// with an older epoch (a stale master), and refuses to act when `me` is a master whose
/// epoch is older than the peer's (this node is the stale one). `Err` says why and what
/// to do. A peer of unknown role or epoch (an older protocol, no config) passes.
pub fn check_peer(me: &NodeRole, peer: &NodeRole) -> Result<(), String> {
    if peer.role == Some(Role::Master) && peer.epoch < me.epoch {
        return Err(format!(
            "refused: {} claims to be master with role epoch {}, but {} has seen epoch {} (a node was promoted since): it is a stale master and may not write. Run `hasync demote` on {} (see docs/master-check.md, failback)",
            describe(peer),
            peer.epoch,
            describe(me),
            me.epoch,
            peer.node
        ));
    }
    if me.role == Some(Role::Master) && me.epoch < peer.epoch {
        return Err(format!(
            "refused: {} is a stale master: its peer {} has seen role epoch {} (it or another node was promoted after this one). Run `hasync demote` on {} (see docs/master-check.md, failback)",
            describe(me),
            describe(peer),
            peer.epoch,
            me.node
        ));
    }
    Ok(())
}

/// The per-request fence of a `serve` whose node is `me`: no push and no DB job into a
/// master (or a slave that serves as master after a failover), no pull from a node that
/// is not the master. A copy-back (a merge that never deletes) is allowed either way.
/// A node of unknown role (a serve without a config) allows everything, as before.
pub fn check_request(me: &NodeRole, peer: &NodeRole, req: Request) -> Result<(), String> {
    let Some(role) = me.role else { return Ok(()) };
    let acting_master = role == Role::Master || me.failed_over;
    let what = match req {
        Request::Push if acting_master => "a push (writes into this node's files)",
        Request::Db if acting_master => "the DB job (a replay into this node's database)",
        Request::Pull if role != Role::Master => "a pull (reads this node's files as the master's)",
        _ => return Ok(()),
    };
    let todo = match req {
        Request::Pull => format!(
            "pull from the master instead; if {} should be the master, run `hasync promote` on it",
            me.node
        ),
        _ if me.failed_over => format!(
            "{} holds what it wrote while it served; let its master check fail back (it copies the `copy_back` paths to the master first), see docs/master-check.md, failback",
            me.node
        ),
        _ => format!(
            "only the master writes to its slave; if {} should be the slave, run `hasync demote` on it",
            me.node
        ),
    };
    Err(format!(
        "refused {what} from {}: this node is {}; nothing was written. To fix: {todo}",
        describe(peer),
        describe(me)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path, role_line: &str) -> Config {
        let path = dir.join("hasync.toml");
        crate::node::config::parse(
            &format!(
                "[node]\n{role_line}\npeer = \"local\"\nstate_dir = \"state\"\nsentinel_dir = \"sentinels\"\nroot = \"root\"\n"
            ),
            &path,
        )
        .unwrap()
    }

    #[test]
    fn role_file_overrides_the_config_and_sentinels_follow() {
        let t = tempfile::tempdir().unwrap();
        let c = cfg(t.path(), "role = \"slave\"");
        assert_eq!(effective_role(&c).unwrap(), Role::Slave);
        record_role(&c, Role::Master, "promote", 1).unwrap();
        assert_eq!(effective_role(&c).unwrap(), Role::Master);
        assert!(t.path().join("sentinels/is-primary").exists());
        record_role(&c, Role::Slave, "demote", 1).unwrap();
        assert_eq!(effective_role(&c).unwrap(), Role::Slave);
        assert!(!t.path().join("sentinels/is-primary").exists());
        assert!(t.path().join("sentinels/is-secondary").exists());
    }

    fn node(role: Option<Role>, epoch: u64, failed_over: bool) -> NodeRole {
        NodeRole {
            role,
            source: role.map(|_| RoleSource::Config),
            failed_over,
            epoch,
            node: "n".into(),
        }
    }

    #[test]
    fn a_stale_master_is_refused_on_either_side() {
        let (m1, m2) = (
            node(Some(Role::Master), 1, false),
            node(Some(Role::Master), 2, false),
        );
        let (s1, s2) = (
            node(Some(Role::Slave), 1, false),
            node(Some(Role::Slave), 2, false),
        );
        // A master older than the node it talks to: refused by that node and by itself.
        assert!(check_peer(&s2, &m1).unwrap_err().contains("stale master"));
        assert!(
            check_peer(&m1, &s2)
                .unwrap_err()
                .contains("is a stale master")
        );
        assert!(check_peer(&m2, &m1).is_err() && check_peer(&m1, &m2).is_err());
        // A current master, a slave behind (it learns the epoch), unknown peers: pass.
        assert!(check_peer(&s1, &m2).is_ok() && check_peer(&m2, &s1).is_ok());
        assert!(check_peer(&m1, &s1).is_ok());
        assert!(check_peer(&s2, &node(None, 0, false)).is_ok());
        assert!(check_peer(&node(None, 0, false), &m1).is_ok());
    }

    #[test]
    fn the_request_fence_follows_this_nodes_role() {
        let peer = node(Some(Role::Master), 1, false);
        let master = node(Some(Role::Master), 1, false);
        let slave = node(Some(Role::Slave), 1, false);
        let serving = node(Some(Role::Slave), 1, true);
        let unknown = node(None, 0, false);
        for (me, push, pull, db) in [
            (&master, false, true, false),
            (&slave, true, false, true),
            (&serving, false, false, false),
            (&unknown, true, true, true),
        ] {
            assert_eq!(
                check_request(me, &peer, Request::Push).is_ok(),
                push,
                "{me:?}"
            );
            assert_eq!(
                check_request(me, &peer, Request::Pull).is_ok(),
                pull,
                "{me:?}"
            );
            assert_eq!(check_request(me, &peer, Request::Db).is_ok(), db, "{me:?}");
            assert!(check_request(me, &peer, Request::CopyBack).is_ok());
        }
        let e = check_request(&master, &peer, Request::Push).unwrap_err();
        assert!(
            e.contains("hasync demote") && e.contains("nothing was written"),
            "{e}"
        );
        let e = check_request(&serving, &peer, Request::Db).unwrap_err();
        assert!(e.contains("failover") && e.contains("fail back"), "{e}");
        let e = check_request(&slave, &peer, Request::Pull).unwrap_err();
        assert!(e.contains("pull from the master"), "{e}");
    }

    #[test]
    fn the_epoch_only_rises() {
        let t = tempfile::tempdir().unwrap();
        let c = cfg(t.path(), "role = \"slave\"");
        assert_eq!(epoch(&c).unwrap(), 0);
        assert!(observe_epoch(&c, 3, "peer").unwrap());
        assert!(!observe_epoch(&c, 2, "peer").unwrap());
        assert_eq!(epoch(&c).unwrap(), 3);
        assert_eq!(node_role(&c).unwrap().epoch, 3);
    }

    #[test]
    fn on_a_wazo_node_promote_and_demote_rewrite_ha_conf() {
        let t = tempfile::tempdir().unwrap();
        let c = cfg(t.path(), "role_from = \"wazo\"");
        let ha = t.path().join("root/etc/xivo/ha.conf");
        std::fs::create_dir_all(ha.parent().unwrap()).unwrap();
        std::fs::write(
            &ha,
            r#"{"node_type": "slave", "remote_address": "10.0.0.1", "extra": 1}"#,
        )
        .unwrap();
        assert_eq!(effective(&c).unwrap(), (Role::Slave, RoleSource::HaConf));
        record_role(&c, Role::Master, "promote", 1).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&ha).unwrap()).unwrap();
        assert_eq!(v["node_type"], "master");
        assert_eq!(v["remote_address"], "10.0.0.1");
        assert_eq!(v["extra"], 1);
        assert!(t.path().join("sentinels/is-primary").exists());
        assert_eq!(effective(&c).unwrap(), (Role::Master, RoleSource::HaConf));
        // ha.conf stays the truth: a node_type changed by Wazo wins over role.json.
        std::fs::write(
            &ha,
            r#"{"node_type": "slave", "remote_address": "10.0.0.1"}"#,
        )
        .unwrap();
        assert_eq!(effective(&c).unwrap(), (Role::Slave, RoleSource::HaConf));
        // Without ha.conf (HA not set up in Wazo) the sentinels written by demote decide.
        std::fs::remove_file(&ha).unwrap();
        record_role(&c, Role::Slave, "demote", 1).unwrap();
        assert_eq!(effective(&c).unwrap(), (Role::Slave, RoleSource::Sentinels));
        assert!(!ha.exists());
    }

    #[test]
    fn wazo_nodes_read_ha_conf_then_the_sentinels() {
        let t = tempfile::tempdir().unwrap();
        let c = cfg(t.path(), "role_from = \"wazo\"");
        assert_eq!(effective_role(&c).unwrap(), Role::Disabled);
        write_sentinels(&t.path().join("sentinels"), Role::Slave).unwrap();
        assert_eq!(effective_role(&c).unwrap(), Role::Slave);
        let ha = t.path().join("root/etc/xivo/ha.conf");
        std::fs::create_dir_all(ha.parent().unwrap()).unwrap();
        std::fs::write(
            &ha,
            r#"{"node_type": "master", "remote_address": "10.0.0.2"}"#,
        )
        .unwrap();
        assert_eq!(effective_role(&c).unwrap(), Role::Master);
        std::fs::write(&ha, r#"{"node_type": "primary"}"#).unwrap();
        let e = effective_role(&c).unwrap_err().to_string();
        assert!(e.contains("ha.conf") && e.contains("primary"), "{e}");
        // A disabled node with no sentinels stays disabled.
        let d = cfg(t.path(), "role = \"disabled\"");
        std::fs::remove_dir_all(t.path().join("sentinels")).unwrap();
        assert_eq!(effective_role(&d).unwrap(), Role::Disabled);
    }
}
