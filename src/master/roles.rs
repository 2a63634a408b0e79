//! Roles: which node is master right now, and switching it (`hasync promote`, `hasync
//! demote`). The effective role is, in order: the role file `state_dir/role.json`
//! written by promote/demote (it overrides the config, so an old master that was demoted
//! stays a slave and its sync jobs stop pushing); else the config's `role`; else, with
//! `role_from = "wazo"`, `node_type` of `/etc/xivo/ha.conf` (under `root`); else, for a
//! node whose role is "disabled" or unresolved, the sentinel files
//! `sentinel_dir/is-primary` / `is-secondary` (Wazo's `/var/lib/wazo`). Promote and demote
//! always write both the role file and the sentinels, so Wazo tools that read the
//! sentinels agree with hasync.
//!
//! Copy-back: the paths of `[check_master] copy_back` (what a slave wrote while it
//! served: voicemail, recordings) are pushed to the peer (`demote --copy-back`: this node
//! gives mastership back) or pulled from it (`promote --copy-back`: the returning master
//! fetches them) with the sync engine, merging (never deleting on the receiving side).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::MasterError;
use crate::config::{Config, Role};
use crate::engine::session::Client;
use crate::protocol::SessionOptions;
use crate::report::{Reporter, Stats};
use crate::transport::Transport;

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
pub fn recorded_role(cfg: &Config) -> Result<Option<Role>, MasterError> {
    let path = role_file(cfg);
    let Some(rec) = super::read_json::<RoleRecord>(&path)? else {
        return Ok(None);
    };
    match rec.role.as_str() {
        "master" => Ok(Some(Role::Master)),
        "slave" => Ok(Some(Role::Slave)),
        other => Err(MasterError::State {
            path,
            reason: format!(
                "role {other:?} is neither \"master\" nor \"slave\" (run hasync promote or hasync demote to rewrite it)"
            ),
        }),
    }
}

/// This node's role now (see the module comment for the order).
pub fn effective_role(cfg: &Config) -> Result<Role, MasterError> {
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
pub fn wazo_role(cfg: &Config) -> Result<Option<Role>, MasterError> {
    super::wazo::role(cfg)
}

/// Makes the sentinels say `role` (creates one, removes the other).
pub fn write_sentinels(dir: &Path, role: Role) -> Result<(), MasterError> {
    let (present, absent) = match role {
        Role::Master => (SENTINEL_PRIMARY, SENTINEL_SECONDARY),
        _ => (SENTINEL_SECONDARY, SENTINEL_PRIMARY),
    };
    let io = |path: PathBuf, what: &'static str| {
        move |e: std::io::Error| MasterError::Io {
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
pub fn record_role(cfg: &Config, role: Role, by: &str) -> Result<(), MasterError> {
    super::write_json(
        &role_file(cfg),
        &RoleRecord {
            role: role.as_str().to_string(),
            since_unix_ms: super::now_ms(),
            by: by.to_string(),
        },
    )?;
    write_sentinels(&cfg.node.sentinel_dir, role)
}

/// Which way copy-back goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyBack {
    /// This node's copy_back paths to the peer (demote).
    Push,
    /// The peer's copy_back paths to this node (promote).
    Pull,
}

/// Copies the `copy_back` paths over `transport`, merging (no deletion). A path missing
/// on the sending side is skipped. Returns the summed stats.
pub fn copy_back(
    cfg: &Config,
    transport: &dyn Transport,
    way: CopyBack,
    rep: &mut dyn Reporter,
) -> Result<Stats, MasterError> {
    let paths = cfg
        .check_master
        .as_ref()
        .map(|c| c.copy_back.clone())
        .unwrap_or_default();
    let mut total = Stats::default();
    if paths.is_empty() {
        return Ok(total);
    }
    let opts = SessionOptions {
        delete: false,
        checksum: false,
        dry_run: false,
        owners: true,
        allow_empty_source: true,
        max_delete: Some(0),
        excludes: vec![],
    };
    let mut client = Client::connect(transport, &[]).map_err(|e| MasterError::CopyBack {
        path: PathBuf::new(),
        reason: format!("cannot reach the peer {}: {e}", cfg.node.peer),
    })?;
    for p in &paths {
        let (local, peer) = (cfg.local_path(p), cfg.peer_path(p));
        if way == CopyBack::Push && !local.exists() {
            tracing::warn!(
                "copy-back: {} does not exist here, skipped",
                local.display()
            );
            continue;
        }
        let res = match way {
            CopyBack::Push => client.push(&local, &peer, &opts, rep),
            CopyBack::Pull => {
                if let Err(e) = std::fs::create_dir_all(&local) {
                    return Err(MasterError::CopyBack {
                        path: local,
                        reason: format!("cannot create it: {e}"),
                    });
                }
                client.pull(&peer, &local, &opts, rep)
            }
        };
        let s = res.map_err(|e| MasterError::CopyBack {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        tracing::info!(
            path = %p.display(),
            files = s.files_transferred,
            "copy-back of {} done",
            p.display()
        );
        total.files_total += s.files_total;
        total.files_transferred += s.files_transferred;
        total.bytes_literal += s.bytes_literal;
        total.bytes_sent += s.bytes_sent;
        total.files_failed += s.files_failed;
    }
    let _ = client.close();
    if total.files_failed > 0 {
        return Err(MasterError::CopyBack {
            path: PathBuf::new(),
            reason: format!("{} files could not be copied", total.files_failed),
        });
    }
    Ok(total)
}

/// What promote or demote did.
#[derive(Debug, Clone, Serialize)]
pub struct RoleChange {
    #[serde(serialize_with = "role_str")]
    pub role: Role,
    /// The services action (`None`: no `[services]`).
    pub services: Option<super::services::Report>,
    /// Copy-back stats, when asked for.
    pub copied: Option<Stats>,
}

impl RoleChange {
    /// The failed services step, as a sentence.
    pub fn error(&self) -> Option<&str> {
        self.services.as_ref().and_then(|r| r.error.as_deref())
    }
}

/// `hasync promote`: (optionally pull the copy_back paths from the peer,) start the
/// services, then record role master (role file + sentinels). A failed copy-back stops
/// here and changes nothing else; a failed service start still records the new role
/// (this node is the master now, with a service to fix) and is in the returned report.
pub fn promote(
    cfg: &Config,
    copy_back_over: Option<&dyn Transport>,
    rep: &mut dyn Reporter,
) -> Result<RoleChange, MasterError> {
    change(cfg, Role::Master, copy_back_over, rep)
}

/// `hasync demote`: (optionally push the copy_back paths to the peer first, while this
/// node is still master,) stop the services, then record role slave. A failed copy-back
/// stops here: this node stays master and nothing is lost.
pub fn demote(
    cfg: &Config,
    copy_back_over: Option<&dyn Transport>,
    rep: &mut dyn Reporter,
) -> Result<RoleChange, MasterError> {
    change(cfg, Role::Slave, copy_back_over, rep)
}

fn change(
    cfg: &Config,
    role: Role,
    copy_back_over: Option<&dyn Transport>,
    rep: &mut dyn Reporter,
) -> Result<RoleChange, MasterError> {
    // A check in flight must not write its counters over the reset below.
    let _lock = super::lock(&cfg.node.state_dir, true)?;
    let (way, action, by) = match role {
        Role::Master => (CopyBack::Pull, super::services::Action::Start, "promote"),
        _ => (CopyBack::Push, super::services::Action::Stop, "demote"),
    };
    let copied = match copy_back_over {
        Some(t) => Some(copy_back(cfg, t, way, rep)?),
        None => None,
    };
    let services = cfg.services.as_ref().map(|svc| {
        let r = super::services::run(svc, action);
        (r, cfg.node.state_dir.clone())
    });
    let services = match services {
        Some((r, dir)) => {
            super::services::record(&dir, &r)?;
            Some(r)
        }
        None => None,
    };
    record_role(cfg, role, by)?;
    super::reset_check_state(cfg, false)?;
    tracing::warn!("{by}: this node is now {role}");
    Ok(RoleChange {
        role,
        services,
        copied,
    })
}

fn role_str<S: serde::Serializer>(r: &Role, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path, role_line: &str) -> Config {
        let path = dir.join("hasync.toml");
        crate::config::parse(
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
