//! `hasync switchover --to NODE`: a planned move of the leadership. It writes
//! `/<scope>/switchover` = `{from, to}` (under a lease of its own, so a forgotten request
//! vanishes); the leader sees it at once (it watches that key), stops its services while
//! it still holds the key, then deletes the key; every other member waits while the
//! request names someone else, and the target takes the key and starts its services.
//! This side only checks the target, writes the request and waits for the leader key to
//! name the target. Refused: an unknown member, one of priority 0, the current leader,
//! no leader at all.

use std::time::{Duration, Instant};

use super::etcd::Etcd;
use super::{MemberInfo, Switchover};
use crate::node::config::{Cluster, Config};
use crate::node::exit::ExitCode;

/// Why a switchover did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SwitchoverError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Etcd(String),
    #[error("{0}")]
    TimedOut(String),
}

impl SwitchoverError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            SwitchoverError::Refused(_) => ExitCode::Usage,
            SwitchoverError::Etcd(_) => ExitCode::Peer,
            SwitchoverError::TimedOut(_) => ExitCode::Failed,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Done {
    pub from: String,
    pub to: String,
    pub seconds: f64,
}

/// How long to wait by default: the old leader's stop and the target's next loop.
pub fn default_wait(c: &Cluster) -> Duration {
    2 * (c.ttl + c.loop_wait)
}

fn etcd_of(c: &Cluster) -> Etcd {
    Etcd::new(&c.endpoints, c.retry_timeout.min(Duration::from_secs(2)))
}

/// Moves the leadership to `to`, waiting up to `wait`.
pub fn switchover(cfg: &Config, to: &str, wait: Duration) -> Result<Done, SwitchoverError> {
    let c = cfg.cluster.as_ref().ok_or_else(|| {
        SwitchoverError::Refused(format!(
            "{} has no [cluster] section: switchover is for nodes whose leader is kept in etcd (on a pair, use hasync demote, then hasync promote on the other node)",
            cfg.path.display()
        ))
    })?;
    let mut etcd = etcd_of(c);
    let started = Instant::now();
    let dl = || Instant::now() + c.retry_timeout;
    let e = |e: super::etcd::EtcdError| SwitchoverError::Etcd(format!("{e} (is etcd up?)"));
    let (kvs, _) = etcd.list(&super::scope_prefix(c), dl()).map_err(e)?;
    let prefix = super::members_prefix(c);
    let members: Vec<MemberInfo> = kvs
        .iter()
        .filter(|kv| kv.key.starts_with(&prefix))
        .filter_map(|kv| serde_json::from_str(&kv.value).ok())
        .collect();
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    let leader = kvs
        .iter()
        .find(|kv| kv.key == super::leader_key(c))
        .map(|kv| kv.value.clone());
    let Some(target) = members.iter().find(|m| m.name == to) else {
        return Err(SwitchoverError::Refused(format!(
            "--to {to}: no such member in scope {:?} (members alive now: {})",
            c.scope,
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        )));
    };
    if target.priority == 0 {
        return Err(SwitchoverError::Refused(format!(
            "--to {to}: that member has priority 0 and never becomes leader (give it priority >= 1 in its [cluster])"
        )));
    }
    let Some(from) = leader else {
        return Err(SwitchoverError::Refused(format!(
            "no member holds the leader key of scope {:?} now: nothing to switch over (the best member takes it by itself within loop_wait)",
            c.scope
        )));
    };
    if from == to {
        return Err(SwitchoverError::Refused(format!(
            "--to {to}: it is already the leader"
        )));
    }
    let lease = etcd.grant(wait.max(c.ttl), dl()).map_err(e)?;
    let req = Switchover {
        from: from.clone(),
        to: to.to_string(),
    };
    let value = serde_json::to_string(&req).unwrap_or_default();
    etcd.put(&super::switchover_key(c), &value, lease, dl())
        .map_err(e)?;
    tracing::info!("switchover: asked {from} to hand the leadership to {to}");
    while started.elapsed() < wait {
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(Some(kv)) = etcd.get(&super::leader_key(c), dl())
            && kv.value == to
        {
            let _ = etcd.revoke(lease, dl());
            return Ok(Done {
                from,
                to: to.to_string(),
                seconds: started.elapsed().as_secs_f64(),
            });
        }
    }
    let _ = etcd.revoke(lease, dl());
    Err(SwitchoverError::TimedOut(format!(
        "switchover from {from} to {to}: {to} did not take the leader key within {wait:?} (the request is withdrawn; see hasync status on both nodes)"
    )))
}
