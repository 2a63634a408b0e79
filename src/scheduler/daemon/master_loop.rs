//! The master check inside the daemon: a thread of its own that runs
//! [`MasterCheck::step`] every `[check_master] interval` until the daemon
//! stops. It is not a scheduled [`crate::scheduler::jobs::Job`]: it runs every couple of
//! seconds, keeps its own counters in `state_dir/master.json` and its own lock
//! (`master.lock`, shared with `hasync check-master --once` from cron), and a
//! failed step is simply the next check's business. While this node is not the
//! slave the thread only watches the role (promote/demote switch it at run
//! time) and logs each change once. It keeps the config it started with; a
//! reload that changes `[check_master]` needs a restart (logged by the reload).

use crate::failover::MasterCheck;
use crate::node::config::{Config, Role};
use crate::node::role as roles;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Starts the loop when the config has a `[check_master]` section; with a `[cluster]`
/// section, the etcd leader loop instead ([`crate::cluster::leader`]).
pub fn spawn(cfg: &Config, stop: Arc<AtomicBool>) -> Option<JoinHandle<()>> {
    if cfg.cluster.is_some() {
        if cfg.check_master.is_some() {
            tracing::warn!("[check_master] is ignored: [cluster] decides the leader");
        }
        return crate::cluster::leader::spawn(cfg, stop);
    }
    cfg.check_master.as_ref()?;
    let cfg = cfg.clone();
    Some(std::thread::spawn(move || run(cfg, stop)))
}

fn run(cfg: Config, stop: Arc<AtomicBool>) {
    let mut check = match MasterCheck::new(&cfg) {
        Ok(c) => c.with_copy_back(crate::scheduler::jobs::copy_back_connector(&cfg)),
        Err(e) => {
            tracing::error!("master check: cannot start: {e}");
            return;
        }
    };
    let interval = check.interval();
    tracing::info!("master check: every {interval:?}");
    if let Some(w) = cfg
        .check_master
        .as_ref()
        .and_then(crate::failover::no_witness_warning)
    {
        tracing::warn!("{w}");
    }
    let mut last_role: Option<Role> = None;
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        match roles::effective_role(&cfg) {
            Ok(Role::Slave) => {
                if last_role != Some(Role::Slave) {
                    tracing::info!("master check: this node is the slave, checking the master");
                }
                last_role = Some(Role::Slave);
                match check.step() {
                    Ok(ev) => {
                        if let Some(e) = ev.error {
                            tracing::error!("master check: {e}");
                        }
                    }
                    Err(e) => tracing::error!("master check: {e}"),
                }
            }
            Ok(role) => {
                if last_role != Some(role) {
                    tracing::info!("master check: idle while this node's role is {role}");
                }
                last_role = Some(role);
            }
            Err(e) => tracing::error!("master check: cannot tell this node's role: {e}"),
        }
        // Sleep the rest of the interval, waking often enough to stop promptly.
        while !stop.load(Ordering::SeqCst) && started.elapsed() < interval {
            std::thread::sleep(
                (interval.saturating_sub(started.elapsed())).min(Duration::from_millis(100)),
            );
        }
    }
}
