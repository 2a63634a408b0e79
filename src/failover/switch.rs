//! Switching this node's role: `hasync promote` and `hasync demote`, with copy-back.
//!
//! Copy-back: the paths of `[check_master] copy_back` (what a slave wrote while it
//! served: voicemail, recordings) are pushed to the peer (`demote --copy-back`: this node
//! gives mastership back) or pulled from it (`promote --copy-back`: the returning master
//! fetches them) with the sync engine, merging (never deleting on the receiving side).
//! Which role is in force is [`crate::node::role`].

use std::path::PathBuf;

use serde::Serialize;

use super::MasterError;
use crate::node::config::{Config, Role};
use crate::node::role::record_role;
use crate::sync::SyncError;
use crate::sync::client::Client;
use crate::transport::Transport;
use crate::tree::report::{Reporter, Stats};
use crate::wire::SessionOptions;

/// Which way copy-back goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyBack {
    /// This node's copy_back paths to the peer (demote).
    Push,
    /// The peer's copy_back paths to this node (promote).
    Pull,
}

/// Copies the `copy_back` paths over `transport`, merging (no deletion; sessions
/// flagged `copy_back`, which the peer's role fence lets through as merges). A path
/// missing on the sending side is skipped. Returns the summed stats and the peer's role
/// epoch (a 2.5 peer).
pub fn copy_back(
    cfg: &Config,
    transport: &dyn Transport,
    way: CopyBack,
    rep: &mut dyn Reporter,
) -> Result<(Stats, Option<u64>), MasterError> {
    let paths = cfg
        .check_master
        .as_ref()
        .map(|c| c.copy_back.clone())
        .unwrap_or_default();
    let mut total = Stats::default();
    if paths.is_empty() {
        return Ok((total, None));
    }
    let opts = SessionOptions {
        delete: false,
        checksum: false,
        dry_run: false,
        owners: true,
        allow_empty_source: true,
        max_delete: Some(0),
        excludes: vec![],
        one_file_system: false,
        numeric_ids: false,
        copy_back: true,
    };
    let mut client =
        Client::connect_as(transport, &[], Some(cfg)).map_err(|e| MasterError::CopyBack {
            path: PathBuf::new(),
            reason: match e {
                SyncError::Fenced(_) => e.to_string(),
                e => format!("cannot reach the peer {}: {e}", cfg.node.peer),
            },
        })?;
    let peer_epoch = client.peer_role().map(|r| r.epoch);
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
        total += &s;
    }
    let _ = client.close();
    if total.files_failed > 0 {
        return Err(MasterError::CopyBack {
            path: PathBuf::new(),
            reason: format!("{} files could not be copied", total.files_failed),
        });
    }
    Ok((total, peer_epoch))
}

/// What promote or demote did.
#[derive(Debug, Clone, Serialize)]
pub struct RoleChange {
    #[serde(serialize_with = "role_str")]
    pub role: Role,
    /// The services action (`None`: no `[services]`).
    pub services: Option<super::services::ServicesReport>,
    /// Copy-back stats, when asked for.
    pub copied: Option<Stats>,
    /// The role epoch this node now holds (promote raises it).
    pub epoch: u64,
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
    let (copied, peer_epoch) = match copy_back_over {
        Some(t) => {
            let (s, e) = copy_back(cfg, t, way, rep)?;
            (Some(s), e)
        }
        None => (None, None),
    };
    // Promote raises the epoch above every one this node (and, when it was reached for
    // the copy-back, its peer) has seen: a master that was master before is now stale.
    let own = crate::node::role::epoch(cfg)?;
    let epoch = match role {
        Role::Master => {
            let e = own.max(peer_epoch.unwrap_or(0)) + 1;
            crate::node::role::observe_epoch(cfg, e, by)?;
            e
        }
        _ => own,
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
    record_role(cfg, role, by, epoch)?;
    super::reset_check_state(cfg, false)?;
    tracing::warn!("{by}: this node is now {role} (role epoch {epoch})");
    Ok(RoleChange {
        role,
        services,
        copied,
        epoch,
    })
}

fn role_str<S: serde::Serializer>(r: &Role, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.as_str())
}
