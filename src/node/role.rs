//! Roles: which node is master right now. The effective role is, in order: the role file `state_dir/role.json`
//! written by promote/demote (it overrides the config, so an old master that was demoted
//! stays a slave and its sync jobs stop pushing); else the config's `role`; else, with
//! `role_from = "wazo"`, `node_type` of `/etc/xivo/ha.conf` (under `root`); else, for a
//! node whose role is "disabled" or unresolved, the sentinel files
//! `sentinel_dir/is-primary` / `is-secondary` (Wazo's `/var/lib/wazo`). Promote and demote
//! always write both the role file and the sentinels, so Wazo tools that read the
//! sentinels agree with hasync.
//!
//! Switching roles (`hasync promote`, `hasync demote`) is [`crate::failover::switch`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::{Config, Role};
use super::store::{self, NodeError};

/// `state_dir/role.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoleRecord {
    /// `"master"` or `"slave"`.
    pub role: String,
    pub since_unix_ms: u64,
    /// `"promote"` or `"demote"`.
    pub by: String,
}

pub const SENTINEL_PRIMARY: &str = "is-primary";
pub const SENTINEL_SECONDARY: &str = "is-secondary";

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

/// This node's role now (see the module comment for the order).
pub fn effective_role(cfg: &Config) -> Result<Role, NodeError> {
    if let Some(r) = recorded_role(cfg)? {
        return Ok(r);
    }
    if cfg.node.role != Role::Disabled && cfg.node.role_from.is_none() {
        return Ok(cfg.node.role);
    }
    if cfg.node.role_from.as_deref() == Some("wazo")
        && let Some(r) = wazo_role(cfg)?
    {
        return Ok(r);
    }
    let dir = &cfg.node.sentinel_dir;
    let primary = dir.join(SENTINEL_PRIMARY).exists();
    let secondary = dir.join(SENTINEL_SECONDARY).exists();
    Ok(match (primary, secondary) {
        (true, false) => Role::Master,
        (false, true) => Role::Slave,
        _ => cfg.node.role,
    })
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

/// Records `role` in the role file and the sentinels.
pub fn record_role(cfg: &Config, role: Role, by: &str) -> Result<(), NodeError> {
    store::write_json(
        &role_file(cfg),
        &RoleRecord {
            role: role.as_str().to_string(),
            since_unix_ms: store::now_ms(),
            by: by.to_string(),
        },
    )?;
    write_sentinels(&cfg.node.sentinel_dir, role)
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
        record_role(&c, Role::Master, "promote").unwrap();
        assert_eq!(effective_role(&c).unwrap(), Role::Master);
        assert!(t.path().join("sentinels/is-primary").exists());
        record_role(&c, Role::Slave, "demote").unwrap();
        assert_eq!(effective_role(&c).unwrap(), Role::Slave);
        assert!(!t.path().join("sentinels/is-primary").exists());
        assert!(t.path().join("sentinels/is-secondary").exists());
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
