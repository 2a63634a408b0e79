//! The master check and the slave services: the slave probes
//! its master every `interval`, decides with a pure state machine ([`state`]) when to
//! start its services (failover) and when to stop them again (failback), and applies the
//! decision ([`MasterCheck::step`]): services ([`services`]), hooks, and the state file
//! `state_dir/master.json`. [`probe`] asks the questions, [`check`] combines the answers
//! (witnesses: an isolated slave never promotes itself), [`switch`] owns promote/demote.
//!
//! The library never prints: it logs through `tracing` and returns reports. A daemon
//! embeds [`MasterCheck`] (`new` once, `step` every `interval`); `hasync check-master`
//! loops the same way, and `--once` does one step from the persisted counters (cron).

pub mod check;
pub mod probe;
pub mod services;
pub mod state;
pub mod switch;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::node::config::{CheckMaster, Config, Role};
use crate::node::exit::ExitCode;
use check::CheckReport;
use state::{Decision, MachineState, Thresholds, Verdict};

/// What went wrong, where, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("{} has no [check_master] table (add one with address = \"<master's IP>\")", .0.display())]
    NoCheckMaster(PathBuf),
    #[error("{} has no [services] table (add units = [...] or start/stop commands)", .0.display())]
    NoServices(PathBuf),
    /// A record on disk (state, lock, role, ha.conf) could not be read or written.
    #[error(transparent)]
    Node(#[from] crate::node::store::NodeError),
    #[error("copy-back{}: {reason}", if path.as_os_str().is_empty() { String::new() } else { format!(" of {}", path.display()) })]
    CopyBack { path: PathBuf, reason: String },
}

impl MasterError {
    /// The CLI exit code: 2 config, 3 peer (copy-back), 1 anything else.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            MasterError::NoCheckMaster(_) | MasterError::NoServices(_) => ExitCode::Usage,
            MasterError::CopyBack { .. } => ExitCode::Peer,
            MasterError::Node(e) => e.exit_code(),
        }
    }
}

pub use crate::node::store::{now_ms, read_json, write_json};

/// Identifies `master.json`.
pub const MASTER_FORMAT: &str = "hasync-master-check/1";

/// `state_dir/master.json`: the machine state plus the last check, self-describing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MasterFile {
    /// Always [`MASTER_FORMAT`].
    pub format: String,
    /// The master's address, from `[check_master]`.
    pub address: String,
    #[serde(flatten)]
    pub state: MachineState,
    /// The last check's probes and witnesses (free-form, for people and `status`).
    #[serde(default)]
    pub last_check: Option<serde_json::Value>,
    /// The last failed action (services or hook), if the last transition had one.
    #[serde(default)]
    pub last_error: Option<String>,
    /// A failback's copy-back of the `copy_back` paths to the master has not succeeded
    /// yet: retried at each check that sees the master up; meanwhile this node's role
    /// fence still refuses pushes (it holds files the master lacks).
    #[serde(default)]
    pub copy_back_pending: bool,
}

/// Makes the transport to the peer, for the failback's copy-back (given by the caller:
/// the daemon or `hasync check-master`, which own the node's transports).
pub type PeerConnector = Box<
    dyn Fn() -> Result<std::sync::Arc<dyn crate::transport::Transport + Send + Sync>, String>
        + Send,
>;

pub fn master_file(cfg: &Config) -> PathBuf {
    cfg.node.state_dir.join("master.json")
}

/// Runs a `[hooks]` command for `event`; failures are logged, not returned.
pub fn run_hook(cfg: &Config, event: &str, error: Option<&str>) {
    let cmd = match event {
        "failover" => cfg.hooks.on_failover.as_deref(),
        "failback" => cfg.hooks.on_failback.as_deref(),
        _ => cfg.hooks.on_failure.as_deref(),
    };
    let Some(cmd) = cmd else { return };
    let master = cfg
        .check_master
        .as_ref()
        .map(|c| c.address.as_str())
        .unwrap_or("");
    crate::node::hooks::run(
        cmd,
        event,
        "check_master",
        error.unwrap_or(""),
        &[("HASYNC_MASTER", master)],
    );
}

/// The startup warning of a check without a witness: the slave cannot tell "the master
/// is down" from "my own link is down", so a pulled cable on the slave fails over next
/// to a running master (split brain). `None` when a witness is set.
pub fn no_witness_warning(cm: &CheckMaster) -> Option<String> {
    cm.witness.is_empty().then(|| {
        "[check_master] has no witness: if this slave's own link fails it sees the master down and starts its services next to a running master (split brain). Add witness = [\"<gateway or a third host>\"] (see docs/master-check.md)".to_string()
    })
}

/// The master's host from ha.conf's remote_address (Wazo nodes without an address).
fn wazo_master_address(cfg: &Config) -> Result<String, MasterError> {
    crate::node::wazo::remote_address(cfg).map_err(MasterError::from)
}

/// What one [`MasterCheck::step`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Why nothing was checked (this node is not the secondary), if so.
    pub skipped: Option<String>,
    pub check: Option<CheckReport>,
    pub decision: Decision,
    /// The action that failed, if one did.
    pub error: Option<String>,
    /// The state after the step (what `master.json` now holds).
    pub state: MachineState,
}

/// The master check of one node: `new` loads the persisted state, `step` checks once,
/// decides, applies and saves.
pub struct MasterCheck {
    cfg: Config,
    cm: CheckMaster,
    file: MasterFile,
    /// For the failback's copy-back; `None`: no copy-back on failback.
    connector: Option<PeerConnector>,
}

impl MasterCheck {
    pub fn new(cfg: &Config) -> Result<MasterCheck, MasterError> {
        let mut cm = cfg
            .check_master
            .clone()
            .ok_or_else(|| MasterError::NoCheckMaster(cfg.path.clone()))?;
        if cm.address.is_empty() {
            // peer_from = "wazo" without an address: the master is ha.conf's remote_address.
            // Not resolvable yet (no ha.conf on a node where HA is off): `step` retries
            // once this node is the slave, and reports the error then.
            cm.address = wazo_master_address(cfg).unwrap_or_default();
        }
        let mut file = read_json::<MasterFile>(&master_file(cfg))?.unwrap_or(MasterFile {
            format: MASTER_FORMAT.into(),
            address: cm.address.clone(),
            state: MachineState::default(),
            last_check: None,
            last_error: None,
            copy_back_pending: false,
        });
        file.format = MASTER_FORMAT.into();
        file.address = cm.address.clone();
        Ok(MasterCheck {
            cfg: cfg.clone(),
            cm,
            file,
            connector: None,
        })
    }

    /// Copy the `[check_master] copy_back` paths to the master at failback (before the
    /// services stop), over transports made by `connector`.
    pub fn with_copy_back(mut self, connector: PeerConnector) -> MasterCheck {
        self.connector = Some(connector);
        self
    }

    /// The failback's copy-back: pushes the `copy_back` paths to the master (a merge that
    /// never deletes). A failure is logged and leaves `copy_back_pending` set (retried at
    /// the next check that sees the master up); the services stop anyway, since the
    /// master is back. Returns the error, if any.
    fn copy_back_to_master(&mut self) -> Option<String> {
        let paths_set = self
            .cfg
            .check_master
            .as_ref()
            .is_some_and(|c| !c.copy_back.is_empty());
        let connector = self.connector.as_ref()?;
        if !paths_set {
            return None;
        }
        let res = connector().and_then(|t| {
            switch::copy_back(
                &self.cfg,
                t.as_ref(),
                switch::CopyBack::Push,
                &mut crate::tree::report::Silent,
            )
            .map_err(|e| e.to_string())
        });
        match res {
            Ok((stats, _)) => {
                tracing::warn!(
                    "failback: copied {} files ({} bytes) of the copy_back paths to the master",
                    stats.files_transferred,
                    stats.bytes_literal
                );
                self.file.copy_back_pending = false;
                None
            }
            Err(e) => {
                let msg = format!(
                    "failback: copy-back to the master failed, retried at the next check (this node keeps refusing pushes meanwhile): {e}"
                );
                tracing::error!("{msg}");
                self.file.copy_back_pending = true;
                Some(msg)
            }
        }
    }

    pub fn interval(&self) -> Duration {
        self.cm.interval
    }

    pub fn state(&self) -> &MachineState {
        &self.file.state
    }

    fn thresholds(&self) -> Thresholds {
        Thresholds {
            fail_after: self.cm.fail_after,
            recover_after: self.cm.recover_after,
            hold_down_ms: self.cm.hold_down.as_millis() as u64,
        }
    }

    /// One check: role gate, probes, decision, actions, state file.
    pub fn step(&mut self) -> Result<Event, MasterError> {
        let role = crate::node::role::effective_role(&self.cfg)?;
        if role != Role::Slave {
            let why = format!("this node is not the secondary (role {role}): nothing to check");
            tracing::info!("{why}");
            return Ok(self.skipped(why));
        }
        if self.cm.address.is_empty() {
            self.cm.address = wazo_master_address(&self.cfg)?;
            self.file.address = self.cm.address.clone();
        }
        // One check at a time per node: a cron `--once` run and a loop (or the daemon)
        // must not both decide on the same counters. The lock is released on drop.
        let _lock = match lock(&self.cfg.node.state_dir, false)? {
            Some(l) => l,
            None => {
                let why = format!(
                    "another check-master run holds {}: this check is skipped",
                    self.cfg.node.state_dir.join("master.lock").display()
                );
                tracing::warn!("{why}");
                return Ok(self.skipped(why));
            }
        };
        // Re-read the state: promote/demote or a `--once` run may have changed it.
        if let Some(f) = read_json::<MasterFile>(&master_file(&self.cfg))? {
            self.file.state = f.state;
            self.file.last_error = f.last_error;
            self.file.copy_back_pending = f.copy_back_pending;
        }
        let report = check::run(&self.cm);
        self.apply(report, now_ms())
    }

    /// Feeds a check report taken at `now_ms` (the second half of [`MasterCheck::step`]).
    pub fn apply(&mut self, report: CheckReport, now_ms: u64) -> Result<Event, MasterError> {
        let details = || {
            report
                .probes
                .iter()
                .chain(&report.witnesses)
                .map(|p| format!("{} {}: {:?} ({})", p.probe, p.target, p.result, p.detail))
                .collect::<Vec<_>>()
                .join("; ")
        };
        match report.verdict {
            Verdict::Up => tracing::debug!("master {} up: {}", self.cm.address, details()),
            Verdict::Down => tracing::warn!("master {} down: {}", self.cm.address, details()),
            Verdict::Unknown => tracing::warn!(
                "master {} unknown (a local problem, not counted): {}",
                self.cm.address,
                details()
            ),
            Verdict::Isolated => tracing::error!(
                "ISOLATED: neither the master {} nor any witness answers; this node does nothing (no failover: split brain risk). Check this node's network: {}",
                self.cm.address,
                details()
            ),
        }
        // The services' real state, not what the last decision meant: they may have
        // died (or been started by hand) since.
        let real = self.cfg.services.as_ref().and_then(|svc| {
            let r = services::run(svc, services::Action::Status);
            r.running
        });
        if let Some(r) = real {
            self.file.state.services_active = r;
        }
        let mut decision = self
            .file
            .state
            .step(&self.thresholds(), report.verdict, now_ms);
        if self.cm.stop_while_up && report.verdict == Verdict::Up && decision == Decision::Stay {
            if self.file.state.services_active {
                decision = self.file.state.fail_back_now(now_ms);
            } else {
                return self.routine_stop(report);
            }
        }
        let mut error = None;
        if self.file.copy_back_pending
            && report.verdict == Verdict::Up
            && decision == Decision::Stay
        {
            error = self.copy_back_to_master();
        }
        match decision {
            // The last transition's action failed: try it again while the verdict still
            // calls for it (start and stop are idempotent). No hooks: they ran already.
            Decision::Stay if self.file.last_error.is_some() => {
                let active = self.file.state.services_active;
                let action = match report.verdict {
                    Verdict::Down if real.map_or(active, |r| !r) => Some(services::Action::Start),
                    Verdict::Up if real.map_or(!active, |r| r) => Some(services::Action::Stop),
                    _ => None,
                };
                if let (Some(action), Some(svc)) = (action, &self.cfg.services) {
                    tracing::warn!(
                        "retrying services {} after: {}",
                        action.as_str(),
                        self.file.last_error.as_deref().unwrap_or("")
                    );
                    let r = services::run(svc, action);
                    services::record(&self.cfg.node.state_dir, &r)?;
                    error = r.error;
                    if error.is_none() {
                        tracing::warn!("services {} succeeded on retry", action.as_str());
                    }
                    self.file.last_error = error.clone();
                }
            }
            Decision::Stay => {}
            Decision::Failover | Decision::Failback => {
                let (event, action) = if decision == Decision::Failover {
                    ("failover", services::Action::Start)
                } else {
                    ("failback", services::Action::Stop)
                };
                tracing::warn!(
                    "{event}: master {} is {} ({} checks); {} the slave services",
                    self.cm.address,
                    report.verdict.as_str(),
                    if decision == Decision::Failover {
                        self.cm.fail_after
                    } else {
                        self.cm.recover_after
                    },
                    if decision == Decision::Failover {
                        "starting"
                    } else {
                        "stopping"
                    }
                );
                let copy_error = if decision == Decision::Failback {
                    self.copy_back_to_master()
                } else {
                    None
                };
                match &self.cfg.services {
                    Some(svc) => {
                        let r = services::run(svc, action);
                        services::record(&self.cfg.node.state_dir, &r)?;
                        error = r.error;
                    }
                    None => tracing::warn!("{event}: no [services] configured, only hooks run"),
                }
                error = error.or(copy_error);
                run_hook(&self.cfg, event, error.as_deref());
                if let Some(e) = &error {
                    run_hook(&self.cfg, "failure", Some(e));
                }
                self.file.last_error = error.clone();
            }
        }
        self.checked(report, decision, error)
    }

    /// Saves a step that checked the master (its report in `master.json`) and says
    /// what it did.
    fn checked(
        &mut self,
        report: CheckReport,
        decision: Decision,
        error: Option<String>,
    ) -> Result<Event, MasterError> {
        self.file.last_check = serde_json::to_value(&report).ok();
        write_json(&master_file(&self.cfg), &self.file)?;
        Ok(Event {
            skipped: None,
            check: Some(report),
            decision,
            error,
            state: self.file.state.clone(),
        })
    }

    /// A step that checked nothing, and why.
    fn skipped(&self, why: String) -> Event {
        Event {
            skipped: Some(why),
            check: None,
            decision: Decision::Stay,
            error: None,
            state: self.file.state.clone(),
        }
    }

    /// `stop_while_up` with the services not (all) running: Wazo's stop runs anyway at
    /// every check that sees the master up (a half-started slave, the "wazo" group
    /// left on), without hooks or a transition.
    fn routine_stop(&mut self, report: CheckReport) -> Result<Event, MasterError> {
        let mut error = None;
        if let Some(svc) = &self.cfg.services {
            tracing::info!(
                "master {} up: stopping the slave services (stop_while_up)",
                self.cm.address
            );
            let r = services::run(svc, services::Action::Stop);
            services::record(&self.cfg.node.state_dir, &r)?;
            if let Some(running) = r.running {
                self.file.state.services_active = running;
            }
            error = r.error;
        }
        self.file.last_error = error.clone();
        self.checked(report, Decision::Stay, error)
    }

    /// The state file as it now stands (for `--json`).
    pub fn file(&self) -> &MasterFile {
        &self.file
    }
}

/// Takes `state_dir/master.lock` (flock, exclusive); without `wait`, `None` when another
/// process holds it. Held until the returned file is dropped.
pub(crate) fn lock(state_dir: &Path, wait: bool) -> Result<Option<std::fs::File>, MasterError> {
    let path = state_dir.join("master.lock");
    crate::node::store::lock_file(&path, wait).map_err(|source| {
        MasterError::Node(crate::node::store::NodeError::Io {
            path,
            what: "lock",
            source,
        })
    })
}

/// Forgets the check's counters and marks the services as not run by a failover (after
/// promote or demote the node starts a new life). The failover count is kept.
pub fn reset_check_state(cfg: &Config, services_active: bool) -> Result<(), MasterError> {
    let path = master_file(cfg);
    let Some(mut f) = read_json::<MasterFile>(&path)? else {
        return Ok(());
    };
    f.state.services_active = services_active;
    f.state.consecutive_down = 0;
    f.state.consecutive_up = 0;
    Ok(write_json(&path, &f)?)
}
