//! `[cluster]`: leadership decided by a distributed configuration store (etcd), Patroni's
//! model (docs/cluster.md). This file owns the table's typed value ([`Cluster`]), its
//! defaults and its checks, each reported at the key's line; the leader loop itself is
//! `crate::cluster`.

use std::time::Duration;

use serde::Deserialize;

use super::{Ctx, KeyOrIndex, Res};

/// `[cluster]`: this node is one member of a cluster whose leader holds a key in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// `dcs = "etcd"` (the only store so far).
    pub dcs: String,
    /// etcd client URLs (`http://host:port`), tried in order; at least one.
    pub endpoints: Vec<String>,
    /// Key prefix shared by the members (default `"hasync"`): `/<scope>/leader`,
    /// `/<scope>/members/<name>`.
    pub scope: String,
    /// This member's name (default: the host name); unique in the scope.
    pub name: String,
    /// Election priority (default 1): higher wins; 0 never becomes leader.
    pub priority: u32,
    /// Lease of the leader key (default 30 s).
    pub ttl: Duration,
    /// Time between two loops (renewals, checks) (default 10 s).
    pub loop_wait: Duration,
    /// How long one etcd operation is retried over the endpoints before it counts as
    /// failed (default 10 s); a leader that cannot renew for this long fences itself.
    pub retry_timeout: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    dcs: Option<String>,
    #[serde(default)]
    endpoints: Vec<String>,
    scope: Option<String>,
    name: Option<String>,
    priority: Option<u32>,
    ttl: Option<String>,
    loop_wait: Option<String>,
    retry_timeout: Option<String>,
}

/// A scope or member name: used in etcd keys and file names.
fn key_name_ok(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(['.', '-'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

pub(super) fn build_cluster(ctx: &Ctx, raw: RawCluster) -> Res<Cluster> {
    let dcs = raw.dcs.unwrap_or_else(|| "etcd".into());
    if dcs != "etcd" {
        return Err(ctx.err(
            at!["cluster", "dcs"],
            format!("{dcs:?} is not a supported store (write \"etcd\")"),
        ));
    }
    if raw.endpoints.is_empty() {
        return Err(ctx.missing(
            at!["cluster"],
            "endpoints",
            "has no endpoints (add endpoints = [\"http://10.0.0.1:2379\", ...]: the etcd members' client URLs)",
        ));
    }
    for (i, e) in raw.endpoints.iter().enumerate() {
        let rest = e.strip_prefix("http://");
        let ok = rest.is_some_and(|r| {
            let hostport = r.trim_end_matches('/');
            !hostport.is_empty() && !hostport.contains('/') && hostport.contains(':')
        });
        if !ok {
            return Err(ctx.err(
                at!["cluster", "endpoints", i],
                format!("{e:?} is not an etcd client URL (write \"http://HOST:PORT\", e.g. \"http://10.0.0.1:2379\"; https is not supported yet)"),
            ));
        }
    }
    let scope = raw.scope.unwrap_or_else(|| "hasync".into());
    if !key_name_ok(&scope) {
        return Err(ctx.err(
            at!["cluster", "scope"],
            format!("{scope:?} is not a scope (use letters, digits, '_', '.', '-'; not starting with '.' or '-')"),
        ));
    }
    let name = match raw.name {
        Some(n) => n,
        None => crate::node::role::host_name(),
    };
    if !key_name_ok(&name) {
        return Err(ctx.err(
            at!["cluster", "name"],
            format!("{name:?} is not a member name (use letters, digits, '_', '.', '-'; not starting with '.' or '-')"),
        ));
    }
    let dur = |key: &str, raw: Option<&str>, default: u64| -> Res<Duration> {
        let d = ctx.duration(at!["cluster", key], raw, Duration::from_secs(default))?;
        ctx.nonzero(at!["cluster", key], d)
    };
    let ttl = dur("ttl", raw.ttl.as_deref(), 30)?;
    let loop_wait = dur("loop_wait", raw.loop_wait.as_deref(), 10)?;
    let retry_timeout = dur("retry_timeout", raw.retry_timeout.as_deref(), 10)?;
    if ttl < Duration::from_secs(2) {
        return Err(ctx.err(
            at!["cluster", "ttl"],
            format!("{ttl:?} is shorter than etcd's shortest lease (write at least \"2s\"; the default is \"30s\")"),
        ));
    }
    if loop_wait + 2 * retry_timeout > ttl {
        return Err(ctx.err(
            at!["cluster", "ttl"],
            format!(
                "is too short: loop_wait ({loop_wait:?}) + 2 x retry_timeout ({retry_timeout:?}) = {:?} is more than ttl ({ttl:?}); the leader could lose its key before it notices and fences itself (raise ttl or lower the others; the defaults are 30s, 10s, 10s)",
                loop_wait + 2 * retry_timeout
            ),
        ));
    }
    Ok(Cluster {
        dcs,
        endpoints: raw
            .endpoints
            .into_iter()
            .map(|e| e.trim_end_matches('/').to_string())
            .collect(),
        scope,
        name,
        priority: raw.priority.unwrap_or(1),
        ttl,
        loop_wait,
        retry_timeout,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    fn parse(cluster: &str) -> Result<crate::node::config::Config, String> {
        let text = format!("[node]\nrole = \"slave\"\npeer = \"local\"\n\n[cluster]\n{cluster}");
        crate::node::config::parse(&text, Path::new("/etc/hasync/hasync.toml"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_sub_second_values() {
        let c = parse("endpoints = [\"http://10.0.0.1:2379/\"]\nname = \"a\"\n")
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!(c.endpoints, ["http://10.0.0.1:2379"]);
        assert_eq!((c.scope.as_str(), c.priority), ("hasync", 1));
        assert_eq!(c.ttl, Duration::from_secs(30));
        assert_eq!(
            (c.loop_wait, c.retry_timeout),
            (Duration::from_secs(10), Duration::from_secs(10))
        );
        let c = parse("endpoints = [\"http://e:2379\"]\nname = \"a\"\nttl = \"4s\"\nloop_wait = \"1s\"\nretry_timeout = \"1500ms\"\npriority = 0\n")
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!(c.retry_timeout, Duration::from_millis(1500));
        assert_eq!(c.priority, 0);
    }

    #[test]
    fn refusals_name_the_line_and_key() {
        let e =
            parse("endpoints = [\"http://e:2379\"]\nname = \"a\"\nttl = \"20s\"\n").unwrap_err();
        assert!(
            e.contains("hasync.toml:8:") && e.contains("key \"ttl\"") && e.contains("loop_wait"),
            "{e}"
        );
        let e = parse("endpoints = [\"https://e:2379\"]\n").unwrap_err();
        assert!(
            e.contains("endpoints") && e.contains("http://HOST:PORT"),
            "{e}"
        );
        let e = parse("name = \"a\"\n").unwrap_err();
        assert!(e.contains("endpoints"), "{e}");
        let e = parse("endpoints = [\"http://e:2379\"]\ndcs = \"consul\"\n").unwrap_err();
        assert!(e.contains("dcs") && e.contains("etcd"), "{e}");
        let e = parse("endpoints = [\"http://e:2379\"]\nname = \"a/b\"\n").unwrap_err();
        assert!(e.contains("name"), "{e}");
        let e = parse("endpoints = [\"http://e:2379\"]\nloop_wait = 5\n").unwrap_err();
        assert!(e.contains("a duration is a string"), "{e}");
    }
}
