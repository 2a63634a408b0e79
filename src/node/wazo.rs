//! Wazo's HA settings, `/etc/xivo/ha.conf` (under the node's `root`): the JSON object
//! `{"node_type": "master"|"slave"|"disabled", "remote_address": "<peer IP>"}` written
//! by Wazo's HA setup. This module owns reading it and turning it into the node's role
//! (`role_from = "wazo"`) and peer (`peer_from = "wazo"`: `root@<remote_address>`, as
//! `xivo-sync` connected as root). Both are read at run time, so a node reconfigured
//! by Wazo's tools needs no hasync config change. Every error names the file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::config::{Config, Peer, Role};
use super::store::NodeError;

/// Where Wazo keeps its HA settings, as on the node (joined under `root`).
pub const HA_CONF: &str = "/etc/xivo/ha.conf";

/// The parts of ha.conf hasync reads; other keys are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HaConf {
    pub node_type: String,
    #[serde(default)]
    pub remote_address: String,
}

/// `root/etc/xivo/ha.conf` of this node.
pub fn ha_conf_path(cfg: &Config) -> PathBuf {
    cfg.local_path(Path::new(HA_CONF))
}

/// Reads ha.conf; `None` when it does not exist.
pub fn read_ha_conf(path: &Path) -> Result<Option<HaConf>, NodeError> {
    super::store::read_json_or(path, |e| {
        format!(
            "is not Wazo's HA settings ({e}; expected {{\"node_type\": \"master\"|\"slave\"|\"disabled\", \"remote_address\": \"<peer IP>\"}}: fix it with Wazo's HA setup or edit the file)"
        )
    })
}

/// The role ha.conf gives; `None` when the file does not exist.
pub fn role(cfg: &Config) -> Result<Option<Role>, NodeError> {
    let path = ha_conf_path(cfg);
    let Some(ha) = read_ha_conf(&path)? else {
        return Ok(None);
    };
    match Role::from_name(&ha.node_type) {
        Some(r) => Ok(Some(r)),
        None => Err(NodeError::State {
            path,
            reason: format!(
                "node_type {:?} is not \"master\", \"slave\" or \"disabled\" (fix it with Wazo's HA setup or edit the file)",
                ha.node_type
            ),
        }),
    }
}

/// Sets ha.conf's `node_type` to `role` (every other key, `remote_address` first, kept),
/// atomically, as Wazo's HA endpoint does on a role change. Nothing to do (`Ok(false)`)
/// when the node has no ha.conf: HA is not set up in Wazo, the sentinels then decide.
pub fn write_node_type(cfg: &Config, role: Role) -> Result<bool, NodeError> {
    let path = ha_conf_path(cfg);
    let Some(mut obj) = super::store::read_json_or::<serde_json::Map<String, serde_json::Value>>(
        &path,
        |e| {
            format!(
                "is not Wazo's HA settings ({e}): fix it with Wazo's HA setup before switching roles"
            )
        },
    )?
    else {
        return Ok(false);
    };
    obj.insert("node_type".into(), role.as_str().into());
    super::store::write_json(&path, &obj)?;
    tracing::info!("{}: node_type is now {role}", path.display());
    Ok(true)
}

/// `remote_address` of ha.conf: the peer of a Wazo node. Errors (naming the file) when
/// ha.conf is missing, malformed, or has no `remote_address`.
pub fn remote_address(cfg: &Config) -> Result<String, NodeError> {
    let path = ha_conf_path(cfg);
    let Some(ha) = read_ha_conf(&path)? else {
        return Err(NodeError::State {
            path,
            reason: "does not exist, and hasync takes the peer from its remote_address ([node] peer_from = \"wazo\", or [check_master] without address) (set up HA in Wazo first, or set [node] peer and [check_master] address)".into(),
        });
    };
    let addr = ha.remote_address.trim();
    if addr.is_empty() {
        return Err(NodeError::State {
            path,
            reason: "has no remote_address, and hasync takes the peer from it (set up HA in Wazo, or set [node] peer and [check_master] address)".into(),
        });
    }
    match peer_at(addr) {
        Ok(Peer::Ssh { host, .. }) => Ok(host),
        Ok(other) => Ok(other.to_string()),
        Err(why) => Err(NodeError::State {
            path,
            reason: format!("remote_address {addr:?} is not a host: {why}"),
        }),
    }
}

/// The peer to connect to now: `[node] peer`, or with `peer_from = "wazo"`,
/// `root@<remote_address>` of ha.conf (see [`remote_address`] for the errors).
pub fn effective_peer(cfg: &Config) -> Result<Peer, NodeError> {
    if cfg.node.peer != Peer::WazoHaConf {
        return Ok(cfg.node.peer.clone());
    }
    let host = remote_address(cfg)?;
    Ok(Peer::Ssh {
        user: Some("root".into()),
        host,
        port: None,
    })
}

/// `root@<addr>`, as Wazo's scripts connect (`addr` a host name, IPv4 or IPv6 address).
pub fn peer_at(addr: &str) -> Result<Peer, String> {
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    match format!("root@{addr}").parse::<Peer>()? {
        Peer::Ssh {
            port: Some(_),
            host,
            ..
        } if !host.contains(':') => Err(format!("{addr:?} has a port (write the address alone)")),
        p => Ok(p),
    }
}

/// Points `cfg` at `addr` (the IP argument of Wazo's scripts): the peer's host (user and
/// port kept; `peer_from = "wazo"` becomes `root@addr`) and `[check_master] address`.
/// A `"local"` peer (demo, tests) stays local.
pub fn override_address(cfg: &mut Config, addr: &str) -> Result<(), String> {
    let at = peer_at(addr)?;
    let Peer::Ssh { host: new_host, .. } = &at else {
        return Err(format!("{addr:?} is not a host"));
    };
    match &mut cfg.node.peer {
        Peer::Local => {}
        Peer::Ssh { host, .. } => host.clone_from(new_host),
        p @ Peer::WazoHaConf => *p = at.clone(),
    }
    if let Some(cm) = &mut cfg.check_master {
        cm.address.clone_from(new_host);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path, node: &str) -> Config {
        crate::node::config::parse(
            &format!("[node]\n{node}\nroot = \"root\"\nstate_dir = \"state\"\n"),
            &dir.join("hasync.toml"),
        )
        .unwrap()
    }

    #[test]
    fn peer_from_wazo_reads_remote_address_at_run_time() {
        let t = tempfile::tempdir().unwrap();
        let c = cfg(t.path(), "role_from = \"wazo\"\npeer_from = \"wazo\"");
        assert_eq!(c.node.peer, Peer::WazoHaConf);
        let e = effective_peer(&c).unwrap_err().to_string();
        assert!(
            e.contains("root/etc/xivo/ha.conf") && e.contains("does not exist"),
            "{e}"
        );
        let ha = t.path().join("root/etc/xivo/ha.conf");
        std::fs::create_dir_all(ha.parent().unwrap()).unwrap();
        std::fs::write(
            &ha,
            r#"{"node_type": "master", "remote_address": "10.0.0.2"}"#,
        )
        .unwrap();
        assert_eq!(effective_peer(&c).unwrap().to_string(), "root@10.0.0.2");
        assert_eq!(role(&c).unwrap(), Some(Role::Master));
        std::fs::write(
            &ha,
            r#"{"node_type": "slave", "remote_address": "fe80::1"}"#,
        )
        .unwrap();
        assert_eq!(effective_peer(&c).unwrap().to_string(), "root@fe80::1");
        std::fs::write(&ha, r#"{"node_type": "slave", "remote_address": ""}"#).unwrap();
        let e = effective_peer(&c).unwrap_err().to_string();
        assert!(
            e.contains("ha.conf") && e.contains("no remote_address"),
            "{e}"
        );
        std::fs::write(&ha, "node_type=master\n").unwrap();
        let e = effective_peer(&c).unwrap_err().to_string();
        assert!(
            e.contains("ha.conf") && e.contains("not Wazo's HA settings"),
            "{e}"
        );
        std::fs::write(&ha, r#"{"node_type": "master", "remote_address": "a b"}"#).unwrap();
        let e = effective_peer(&c).unwrap_err().to_string();
        assert!(e.contains("ha.conf") && e.contains("not a host"), "{e}");
    }

    #[test]
    fn the_ip_argument_overrides_peer_and_master_address() {
        let t = tempfile::tempdir().unwrap();
        let mut c = crate::node::config::parse(
            "[node]\nrole = \"slave\"\npeer = \"admin@10.0.0.9:2222\"\n[check_master]\naddress = \"10.0.0.9\"\n",
            &t.path().join("hasync.toml"),
        )
        .unwrap();
        override_address(&mut c, "192.168.1.2").unwrap();
        assert_eq!(c.node.peer.to_string(), "admin@192.168.1.2:2222");
        assert_eq!(c.check_master.unwrap().address, "192.168.1.2");
        let mut w = cfg(t.path(), "role_from = \"wazo\"\npeer_from = \"wazo\"");
        override_address(&mut w, "10.1.1.1").unwrap();
        assert_eq!(w.node.peer.to_string(), "root@10.1.1.1");
        let mut l = cfg(t.path(), "role = \"master\"\npeer = \"local\"");
        override_address(&mut l, "10.1.1.1").unwrap();
        assert_eq!(l.node.peer, Peer::Local);
        assert!(override_address(&mut l, "a b").is_err());
    }

    #[test]
    fn a_configured_peer_is_used_as_is() {
        let t = tempfile::tempdir().unwrap();
        let c = cfg(t.path(), "role_from = \"wazo\"\npeer = \"local\"");
        assert_eq!(effective_peer(&c).unwrap(), Peer::Local);
    }

    #[test]
    fn peer_and_peer_from_are_exclusive_and_one_is_needed() {
        let file = Path::new("/etc/hasync/hasync.toml");
        let both = "[node]\nrole = \"master\"\npeer = \"local\"\npeer_from = \"wazo\"\n";
        let e = crate::node::config::parse(both, file)
            .unwrap_err()
            .to_string();
        assert!(e.contains(":4:") && e.contains("peer_from"), "{e}");
        let bad = "[node]\nrole = \"master\"\npeer_from = \"xivo\"\n";
        let e = crate::node::config::parse(bad, file)
            .unwrap_err()
            .to_string();
        assert!(e.contains(":3:") && e.contains("\"wazo\""), "{e}");
    }
}
