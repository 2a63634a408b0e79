//! What a load balancer, keepalived or a script asks a node (issue 21): is it the node
//! that serves (`/primary`), a healthy standby (`/replica`, optionally fresh enough), and
//! which role it has (`/role`). This module owns those answers, shared by the daemon's
//! HTTP endpoints and `hasync status --check`, and the standby's record of what it
//! received (`state_dir/received.json`, written by `hasync serve` after a session that
//! received a tree or replayed a DB script), which is where a standby's lag comes from:
//! on a pair that pushes, the slave runs no job of its own.
//!
//! The answers read only state files (`role.json`, `master.json`, `received.json`, the
//! job histories) and, on a master with `[daemon] peer_health`, the peer's `/role`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::node::config::{Config, Role};

/// `state_dir/received.json`: when this node last received something from its peer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Received {
    /// End of the last `hasync serve` session that received a tree, all of it well.
    pub last_sync: Option<DateTime<Utc>>,
    /// End of the last session that replayed a DB script successfully.
    pub last_replay: Option<DateTime<Utc>>,
    /// The lag history for the status page's chart: per 5-minute bucket (its start,
    /// Unix seconds), the longest gap between two sessions that ended in it (seconds).
    /// At most 24 hours of buckets.
    pub lag_max: Vec<(i64, f64)>,
}

/// The width of a [`Received::lag_max`] bucket, in seconds.
pub const LAG_BUCKET: i64 = 300;

impl Received {
    /// The newer of the two.
    pub fn last(&self) -> Option<DateTime<Utc>> {
        self.last_sync.max(self.last_replay)
    }

    /// Adds the gap from the previous session to one that ended at `at`.
    fn note_gap(&mut self, at: DateTime<Utc>) {
        let Some(prev) = self.last().filter(|p| *p <= at) else {
            return;
        };
        let gap = (at - prev).num_milliseconds() as f64 / 1000.0;
        let bucket = at.timestamp().div_euclid(LAG_BUCKET) * LAG_BUCKET;
        match self.lag_max.last_mut() {
            Some((b, g)) if *b == bucket => *g = g.max(gap),
            _ => self.lag_max.push((bucket, gap)),
        }
        let oldest = at.timestamp() - 86_400;
        self.lag_max.retain(|(b, _)| *b >= oldest);
    }
}

pub fn received_file(state_dir: &Path) -> PathBuf {
    state_dir.join("received.json")
}

/// The record; an empty one when there is none or it cannot be read.
pub fn load_received(state_dir: &Path) -> Received {
    std::fs::read(received_file(state_dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Records a session that ended at `at`: `sync` if it received a tree, `replay` if it
/// replayed a DB script. Serialized by a lock (`locks/.received.lock`).
pub fn record_received(
    state_dir: &Path,
    sync: bool,
    replay: bool,
    at: DateTime<Utc>,
) -> std::io::Result<()> {
    let _lock = crate::scheduler::state::JobLock::lock(state_dir, ".received")?;
    let mut r = load_received(state_dir);
    r.note_gap(at);
    if sync {
        r.last_sync = Some(at);
    }
    if replay {
        r.last_replay = Some(at);
    }
    crate::scheduler::state::write_json(&received_file(state_dir), &r)
}

/// An answer: `ok` (HTTP 200, exit 0) or not (503, exit 1), and why, in one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub ok: bool,
    pub why: String,
}

fn answer(ok: bool, why: impl Into<String>) -> Answer {
    Answer {
        ok,
        why: why.into(),
    }
}

/// Whether this node's slave services run because of a failover (`master.json`).
pub fn services_active(cfg: &Config) -> bool {
    crate::failover::read_json::<crate::failover::MasterFile>(&crate::failover::master_file(cfg))
        .ok()
        .flatten()
        .is_some_and(|f| f.state.services_active)
}

/// The body of `/role`: `master`, `slave`, `slave serving` (its services run because
/// of a failover), `disabled`, or `unknown` (the role source cannot be read).
pub fn role_line(cfg: &Config) -> String {
    match crate::node::role::effective_role(cfg) {
        Ok(Role::Slave) if services_active(cfg) => "slave serving".into(),
        Ok(r) => r.as_str().into(),
        Err(_) => "unknown".into(),
    }
}

/// What the peer's `/role` says; `None` when it does not answer within `timeout`.
pub fn ask_peer_role(addr: &str, timeout: Duration) -> Option<String> {
    let sa: std::net::SocketAddr = addr.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&sa, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    s.write_all(b"GET /role HTTP/1.0\r\nHost: hasync\r\n\r\n")
        .ok()?;
    let mut buf = Vec::new();
    s.take(4096).read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.lines().next().unwrap_or("").trim().to_string())
}

/// How long a master waits for its peer's `/role`.
pub const PEER_TIMEOUT: Duration = Duration::from_millis(800);

/// `/primary`: whether this node is the one that serves. A master serves unless its
/// peer (`[daemon] peer_health`) says `slave serving`; a slave serves while its services
/// run because of a failover; a disabled node never.
pub fn primary(cfg: &Config) -> Answer {
    let peer = cfg
        .daemon
        .peer_health
        .as_deref()
        .map(|a| (a, ask_peer_role(a, PEER_TIMEOUT)));
    primary_with(cfg, peer)
}

/// [`primary`] with the peer's answer given (`(address, its /role)`), for tests.
pub fn primary_with(cfg: &Config, peer: Option<(&str, Option<String>)>) -> Answer {
    match crate::node::role::effective_role(cfg) {
        Ok(Role::Master) => match peer {
            Some((a, Some(r))) if r == "slave serving" => answer(
                false,
                format!(
                    "master, but the slave at {a} has taken over (it serves until its failback)"
                ),
            ),
            Some((a, None)) => answer(true, format!("master (the peer at {a} does not answer)")),
            _ => answer(true, "master, the slave has not taken over"),
        },
        Ok(Role::Slave) if services_active(cfg) => {
            answer(true, "slave serving: its services run since a failover")
        }
        Ok(Role::Slave) => answer(false, "slave, standing by (the master serves)"),
        Ok(Role::Disabled) => answer(false, "disabled"),
        Err(e) => answer(false, format!("cannot tell this node's role: {e}")),
    }
}

/// Seconds since this node last received a sync or a replay, or one of its own jobs
/// last succeeded (the newest of those); `None` before any.
pub fn lag_seconds(cfg: &Config, now: DateTime<Utc>) -> Option<f64> {
    let own = crate::scheduler::jobs::jobs_of(&std::sync::Arc::new(cfg.clone()))
        .iter()
        .filter(|j| j.skip_reason().is_none())
        .filter_map(|j| crate::scheduler::state::load_job(&cfg.node.state_dir, j.name()).ok())
        .filter_map(|st| st.last_success.map(|r| r.end))
        .max();
    let last = load_received(&cfg.node.state_dir).last().max(own)?;
    Some((now - last).num_milliseconds().max(0) as f64 / 1000.0)
}

/// `/replica`: a slave that does not serve; with `max_lag`, also one whose last
/// successful sync or replay (see [`lag_seconds`]) is at most that old.
pub fn replica(cfg: &Config, max_lag: Option<Duration>, now: DateTime<Utc>) -> Answer {
    match crate::node::role::effective_role(cfg) {
        Ok(Role::Slave) if services_active(cfg) => {
            return answer(false, "slave serving (failed over): not a standby");
        }
        Ok(Role::Slave) => {}
        Ok(r) => return answer(false, format!("{r}: not a standby")),
        Err(e) => return answer(false, format!("cannot tell this node's role: {e}")),
    }
    let lag = lag_seconds(cfg, now);
    match (max_lag, lag) {
        (None, Some(l)) => answer(true, format!("standby, lag {l:.1}s")),
        (None, None) => answer(true, "standby, nothing received yet"),
        (Some(m), None) => answer(
            false,
            format!(
                "standby, nothing received yet (lag limit {:.1}s)",
                m.as_secs_f64()
            ),
        ),
        (Some(m), Some(l)) => answer(
            l <= m.as_secs_f64(),
            format!("standby, lag {l:.1}s (limit {:.1}s)", m.as_secs_f64()),
        ),
    }
}

/// Parses a `?lag=` / `--max-lag` value: `60s`, `5m`, `1h`, `500ms`, or plain seconds.
pub fn parse_lag(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad = || {
        format!(
            "{text:?} is not a duration (write e.g. \"60s\", \"5m\", \"1h\", \"500ms\" or a number of seconds)"
        )
    };
    let (num, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(n * scale).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path, role: &str) -> Config {
        let text = format!(
            "[node]\nrole = \"{role}\"\npeer = \"local\"\nstate_dir = \"{}\"\n",
            dir.display()
        );
        crate::node::config::parse(&text, &dir.join("hasync.toml")).unwrap()
    }

    #[test]
    fn lag_values_parse() {
        assert_eq!(parse_lag("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_lag("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_lag("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_lag("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_lag("2.5"), Ok(Duration::from_millis(2500)));
        for bad in ["", "s", "10 parsecs", "-1s", "1d"] {
            assert!(parse_lag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_master_yields_to_a_slave_that_serves() {
        let d = tempfile::tempdir().unwrap();
        let c = cfg(d.path(), "master");
        assert!(primary_with(&c, None).ok);
        assert!(primary_with(&c, Some(("x", None))).ok);
        assert!(primary_with(&c, Some(("x", Some("slave".into())))).ok);
        let a = primary_with(&c, Some(("10.0.0.2:9469", Some("slave serving".into()))));
        assert!(!a.ok);
        assert!(a.why.contains("10.0.0.2:9469"), "{}", a.why);
        assert!(!replica(&c, None, Utc::now()).ok);
        assert_eq!(role_line(&c), "master");
    }

    #[test]
    fn a_standby_answers_replica_until_its_lag_is_too_old() {
        let d = tempfile::tempdir().unwrap();
        let c = cfg(d.path(), "slave");
        let now = Utc::now();
        assert!(!primary_with(&c, None).ok);
        assert!(replica(&c, None, now).ok);
        assert!(!replica(&c, Some(Duration::from_secs(60)), now).ok);
        record_received(d.path(), true, false, now - chrono::Duration::seconds(90)).unwrap();
        assert!(!replica(&c, Some(Duration::from_secs(60)), now).ok);
        record_received(d.path(), false, true, now - chrono::Duration::seconds(30)).unwrap();
        assert!(replica(&c, Some(Duration::from_secs(60)), now).ok);
        let r = load_received(d.path());
        assert!(r.last_sync.is_some() && r.last_replay.is_some());
        assert_eq!(lag_seconds(&c, now), Some(30.0));
        // The first record has no gap; the second's is 60 s.
        assert_eq!(r.lag_max.iter().map(|(_, g)| *g).sum::<f64>(), 60.0);
        assert_eq!(role_line(&c), "slave");
    }
}
