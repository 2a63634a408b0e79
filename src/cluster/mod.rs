//! LEADERSHIP ON ETCD (`[cluster]`, docs/cluster.md): which of three or more nodes is the
//! master, decided by etcd rather than by the two-node master check. This module owns
//! Patroni's model as hasync applies it: each member keeps `/<scope>/members/<name>`
//! (its priority and the freshness of its data) under a lease of `ttl` that it renews
//! every `loop_wait`; the leader also holds `/<scope>/leader` = its name under the same
//! lease. When that key is absent, the eligible member (priority > 0) with the highest
//! priority, then the freshest data, then the smallest name, takes it by compare-and-set
//! and is promoted (its services start, its role becomes master, its role epoch rises
//! above the key's etcd revision); a leader that cannot renew within `retry_timeout`
//! stops its services and becomes slave before its lease can expire (self-fencing); a
//! member that sees another leader is slave. `hasync switchover --to NODE` asks the
//! leader to step down for a named member. The loop runs on a thread of `hasync
//! daemon` ([`leader::spawn`]) and records what it sees in `state_dir/cluster.json`
//! ([`ClusterFile`]), which `hasync status` and `/metrics` show ([`status`]).
//!
//! The pieces: [`etcd`] (a small blocking client of etcd's v3 JSON gateway, with the
//! endpoint and retry policy), [`leader`] (the loop), [`switchover`] (the planned
//! move), [`status`] (cluster.json for people and Prometheus), and here the records
//! and the election rule ([`best_candidate`]), pure and unit-tested.

pub mod etcd;
pub mod leader;
pub mod status;
pub mod switchover;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::node::config::Cluster;
use crate::node::store::{self, NodeError};

/// `/<scope>/leader`.
pub fn leader_key(c: &Cluster) -> String {
    format!("/{}/leader", c.scope)
}

/// `/<scope>/members/`.
pub fn members_prefix(c: &Cluster) -> String {
    format!("/{}/members/", c.scope)
}

/// `/<scope>/switchover`: a pending planned move ([`Switchover`]).
pub fn switchover_key(c: &Cluster) -> String {
    format!("/{}/switchover", c.scope)
}

/// The scope's prefix: every key of the cluster.
pub fn scope_prefix(c: &Cluster) -> String {
    format!("/{}/", c.scope)
}

/// The value of a member key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub name: String,
    pub priority: u32,
    /// When this member's data was last known complete, Unix ms: now for the leader
    /// (it is the source), else its last successful sync or replay received
    /// (`received.json`) or the last moment it was leader, whichever is newer.
    pub freshness_ms: u64,
    /// `"leader"` or `"member"`.
    pub role: String,
    /// When the member wrote this, Unix ms.
    pub updated_ms: u64,
}

/// The value of `/<scope>/switchover`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switchover {
    /// The leader when it was asked.
    pub from: String,
    /// The member that should take over.
    pub to: String,
}

/// The election rule: among eligible members (priority > 0), the highest priority,
/// then the freshest data, then the smallest name. `None`: nobody is eligible.
pub fn best_candidate(members: &[MemberInfo]) -> Option<&MemberInfo> {
    members.iter().filter(|m| m.priority > 0).min_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(b.freshness_ms.cmp(&a.freshness_ms))
            .then(a.name.cmp(&b.name))
    })
}

/// `state_dir/cluster.json`: what the loop last saw and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterFile {
    pub scope: String,
    /// This member's name.
    pub member: String,
    /// The leader's name, as last read (None: no leader key, or etcd not reachable).
    pub leader: Option<String>,
    /// This member's state: `"leader"`, `"member"`, `"fenced"` (stopped its services after
    /// losing etcd), `"unreachable"` (no etcd answer), `"stopped"` (the daemon stopped).
    pub state: String,
    /// The last successful renewal of this member's lease, Unix ms.
    pub last_renew_ms: u64,
    /// The last loop, Unix ms.
    pub updated_ms: u64,
    /// The last moment this member was leader, Unix ms (0: never).
    pub last_leader_ms: u64,
    /// The members seen at the last successful read.
    pub members: Vec<MemberInfo>,
    /// The last etcd or service error, if the last loop had one.
    pub last_error: Option<String>,
    /// The etcd create revision of the leader key as last read.
    pub leader_revision: u64,
}

pub fn cluster_file(state_dir: &Path) -> PathBuf {
    state_dir.join("cluster.json")
}

/// `cluster.json` of `state_dir` (None: no file yet).
pub fn load(state_dir: &Path) -> Result<Option<ClusterFile>, NodeError> {
    store::read_json(&cluster_file(state_dir))
}

/// The freshness of this node's data from what `hasync serve` recorded in
/// `state_dir/received.json` (the newer of `last_sync` and `last_replay`), Unix ms.
pub fn received_ms(state_dir: &Path) -> u64 {
    let v = store::read_json::<serde_json::Value>(&state_dir.join("received.json"))
        .ok()
        .flatten();
    let at = |k: &str| {
        v.as_ref()
            .and_then(|v| v.get(k))
            .and_then(|s| s.as_str())
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map_or(0, |t| t.timestamp_millis().max(0) as u64)
    };
    at("last_sync").max(at("last_replay"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, priority: u32, freshness_ms: u64) -> MemberInfo {
        MemberInfo {
            name: name.into(),
            priority,
            freshness_ms,
            role: "member".into(),
            updated_ms: 0,
        }
    }

    #[test]
    fn priority_then_freshness_then_name() {
        let ms = [m("a", 1, 10), m("b", 2, 5), m("c", 2, 7), m("d", 0, 99)];
        assert_eq!(best_candidate(&ms).unwrap().name, "c");
        let ms = [m("b", 1, 5), m("a", 1, 5)];
        assert_eq!(best_candidate(&ms).unwrap().name, "a");
        assert!(best_candidate(&[m("x", 0, 1)]).is_none());
    }
}
