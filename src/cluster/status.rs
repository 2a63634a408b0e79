//! `state_dir/cluster.json` for people and machines: the `cluster` object of `hasync
//! status --json` and `/status`, the text lines of `hasync status`, and the Prometheus
//! samples of `/metrics` (`hasync_cluster_leader{member}`, `hasync_cluster_is_leader`,
//! `hasync_cluster_last_renew_timestamp_seconds`). Kept apart from the scheduler's
//! status so the two merge without touching each other.

use serde_json::{Value, json};

use crate::node::config::Config;
use crate::node::store;

/// The `cluster` object: the config's view plus cluster.json (None: no `[cluster]`).
pub fn json(cfg: &Config) -> Option<Value> {
    let c = cfg.cluster.as_ref()?;
    let f = super::load(&cfg.node.state_dir).ok().flatten();
    let now = store::now_ms();
    Some(json!({
        "dcs": c.dcs,
        "endpoints": c.endpoints,
        "scope": c.scope,
        "member": c.name,
        "priority": c.priority,
        "ttl_seconds": c.ttl.as_secs_f64(),
        "loop_wait_seconds": c.loop_wait.as_secs_f64(),
        "retry_timeout_seconds": c.retry_timeout.as_secs_f64(),
        "leader": f.as_ref().and_then(|f| f.leader.clone()),
        "is_leader": f.as_ref().is_some_and(|f| f.state == "leader"),
        "state": f.as_ref().map_or("not started", |f| f.state.as_str()),
        "last_renew_unix_ms": f.as_ref().map(|f| f.last_renew_ms),
        "updated_unix_ms": f.as_ref().map(|f| f.updated_ms),
        "age_seconds": f.as_ref().map(|f| now.saturating_sub(f.updated_ms) as f64 / 1000.0),
        "members": f.as_ref().map(|f| f.members.clone()).unwrap_or_default(),
        "last_error": f.as_ref().and_then(|f| f.last_error.clone()),
    }))
}

/// The lines of `hasync status` (empty: no `[cluster]`).
pub fn text(cfg: &Config) -> Vec<String> {
    let Some(v) = json(cfg) else { return vec![] };
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
    let mut out = vec![format!(
        "cluster: etcd scope {:?}, member {} (priority {}), state {}, leader {}",
        s("scope"),
        s("member"),
        v["priority"],
        s("state"),
        v["leader"].as_str().unwrap_or("none")
    )];
    if let Some(ms) = v["members"].as_array() {
        let names: Vec<String> = ms
            .iter()
            .map(|m| {
                format!(
                    "{} (priority {}{})",
                    m["name"].as_str().unwrap_or("?"),
                    m["priority"],
                    if m["role"] == "leader" {
                        ", leader"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        out.push(format!("  members seen: {}", names.join(", ")));
    }
    if let Some(age) = v["age_seconds"].as_f64() {
        out.push(format!("  last loop: {age:.1}s ago"));
    }
    if let Some(e) = v["last_error"].as_str() {
        out.push(format!("  last error: {e}"));
    }
    out
}

/// The Prometheus samples (empty: no `[cluster]`).
pub fn prometheus(cfg: &Config) -> String {
    let Some(v) = json(cfg) else {
        return String::new();
    };
    let leader = v["leader"].as_str().unwrap_or("");
    let mut out = String::new();
    out.push_str("# HELP hasync_cluster_leader 1 for the member that holds the leader key, as this node last read it.\n# TYPE hasync_cluster_leader gauge\n");
    let mut names: Vec<String> = v["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if !leader.is_empty() && !names.iter().any(|n| n == leader) {
        names.push(leader.to_string());
    }
    for n in &names {
        let esc = n.replace('\\', "\\\\").replace('"', "\\\"");
        out.push_str(&format!(
            "hasync_cluster_leader{{member=\"{esc}\"}} {}\n",
            u8::from(n == leader)
        ));
    }
    out.push_str("# HELP hasync_cluster_is_leader 1 when this node holds the leader key.\n# TYPE hasync_cluster_is_leader gauge\n");
    out.push_str(&format!(
        "hasync_cluster_is_leader {}\n",
        u8::from(v["is_leader"].as_bool() == Some(true))
    ));
    if let Some(ms) = v["last_renew_unix_ms"].as_u64().filter(|m| *m > 0) {
        out.push_str("# HELP hasync_cluster_last_renew_timestamp_seconds The last renewal of this member's lease (Unix time).\n# TYPE hasync_cluster_last_renew_timestamp_seconds gauge\n");
        out.push_str(&format!(
            "hasync_cluster_last_renew_timestamp_seconds {}\n",
            ms as f64 / 1000.0
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_and_json_from_cluster_json() {
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            "[node]\nrole = \"slave\"\npeer = \"local\"\nstate_dir = \"{}\"\n\n[cluster]\nendpoints = [\"http://e:2379\"]\nname = \"b\"\n",
            dir.path().display()
        );
        let cfg = crate::node::config::parse(&toml, &dir.path().join("h.toml")).unwrap();
        assert_eq!(json(&cfg).unwrap()["state"], "not started");
        let member = |n: &str, role: &str| super::super::MemberInfo {
            name: n.into(),
            priority: 1,
            freshness_ms: 1,
            role: role.into(),
            updated_ms: 1,
        };
        let f = super::super::ClusterFile {
            member: "b".into(),
            leader: Some("a".into()),
            state: "member".into(),
            last_renew_ms: 1_000,
            members: vec![member("a", "leader"), member("b", "member")],
            ..Default::default()
        };
        store::write_json(&super::super::cluster_file(dir.path()), &f).unwrap();
        let m = prometheus(&cfg);
        assert!(m.contains("hasync_cluster_leader{member=\"a\"} 1\n"), "{m}");
        assert!(m.contains("hasync_cluster_leader{member=\"b\"} 0\n"), "{m}");
        assert!(m.contains("hasync_cluster_is_leader 0\n"), "{m}");
        let t = text(&cfg).join("\n");
        assert!(
            t.contains("state member, leader a") && t.contains("a (priority 1, leader)"),
            "{t}"
        );
    }
}
