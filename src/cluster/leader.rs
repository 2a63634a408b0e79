//! The leader loop of one member (see the module doc of [`crate::cluster`]): a thread of
//! `hasync daemon`, one step every `loop_wait`, and between steps a watch on the key that
//! matters (a member watches the leader key, so a vanished leader is seen at once; the
//! leader watches the switchover key). One step:
//!
//! 1. the lease: the leader renews it first, with a deadline of `retry_timeout` but never
//!    later than `last renewal + ttl - retry_timeout`; if that fails it fences itself
//!    (stops its services, records slave) while its lease is still alive. A member
//!    renews its lease, or grants a new one;
//! 2. its member key (priority, freshness) under that lease;
//! 3. one read of the whole scope (leader, members, switchover);
//! 4. the decision: a leader that no longer holds the key stops its services; a leader
//!    asked to switch over stops its services, then deletes the key; a member that sees
//!    another leader is slave (stops services it may run); with no leader key, the best
//!    candidate ([`super::best_candidate`], or the switchover's target) takes the key by
//!    compare-and-set and is promoted (services start while the lease is kept renewed).
//!
//! When etcd cannot be reached nothing is promoted: a member only waits, and the leader
//! fences itself after `retry_timeout` (Patroni's default; its `failsafe_mode` is not
//! implemented). On a clean daemon stop the leader stops its services and deletes its
//! key (a stopped daemon cannot fence), and every member revokes its lease.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::etcd::{Etcd, Kv};
use super::{ClusterFile, MemberInfo, Switchover};
use crate::failover::switch;
use crate::node::config::{Cluster, Config, Role};
use crate::node::role as roles;
use crate::node::store;
use crate::tree::report::Silent;

/// Starts the loop when the config has a `[cluster]` section.
pub fn spawn(cfg: &Config, stop: Arc<AtomicBool>) -> Option<JoinHandle<()>> {
    cfg.cluster.as_ref()?;
    let cfg = cfg.clone();
    Some(std::thread::spawn(move || run(cfg, stop)))
}

fn run(cfg: Config, stop: Arc<AtomicBool>) {
    let Some(mut l) = Loop::new(cfg) else { return };
    tracing::info!(
        "cluster: member {} of scope {:?} on etcd {} (ttl {:?}, loop_wait {:?}, retry_timeout {:?}, priority {})",
        l.cl.name,
        l.cl.scope,
        l.cl.endpoints.join(", "),
        l.cl.ttl,
        l.cl.loop_wait,
        l.cl.retry_timeout,
        l.cl.priority
    );
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        l.step();
        l.write();
        l.wait(started, &stop);
    }
    l.release();
    l.write();
}

/// One member's loop state.
pub struct Loop {
    cfg: Config,
    cl: Cluster,
    etcd: Etcd,
    /// This member's lease (0: none held).
    lease: i64,
    /// This member holds the leader key.
    leader: bool,
    /// When the last successful renewal (or grant) was sent.
    renewed: Option<Instant>,
    /// The store's revision at the last read (watches start after it).
    revision: u64,
    file: ClusterFile,
}

impl Loop {
    fn new(cfg: Config) -> Option<Loop> {
        let cl = cfg.cluster.clone()?;
        // A request may use a share of retry_timeout, so every endpoint gets a turn.
        let per_request = (cl.retry_timeout / cl.endpoints.len().max(1) as u32)
            .max(Duration::from_millis(300))
            .min(cl.retry_timeout);
        let prev = super::load(&cfg.node.state_dir).ok().flatten();
        let file = ClusterFile {
            scope: cl.scope.clone(),
            member: cl.name.clone(),
            state: "member".into(),
            last_leader_ms: prev.map_or(0, |p| p.last_leader_ms),
            ..ClusterFile::default()
        };
        Some(Loop {
            etcd: Etcd::new(&cl.endpoints, per_request),
            cfg,
            cl,
            lease: 0,
            leader: false,
            renewed: None,
            revision: 0,
            file,
        })
    }

    /// The deadline of an operation started now: `retry_timeout`, and for the leader
    /// never past the moment it must start fencing.
    fn deadline(&self) -> Instant {
        let d = Instant::now() + self.cl.retry_timeout;
        match (self.leader, self.renewed) {
            (true, Some(r)) => d.min(r + self.cl.ttl.saturating_sub(self.cl.retry_timeout)),
            _ => d,
        }
    }

    fn step(&mut self) {
        self.file.last_error = None;
        if self.leader {
            if let Err(why) = self.renew() {
                self.fence(&why);
                return;
            }
        } else if let Err(e) = self.ensure_lease() {
            self.unreachable(e);
            return;
        }
        let me = self.member_info();
        let value = serde_json::to_string(&me).unwrap_or_default();
        let key = format!("{}{}", super::members_prefix(&self.cl), self.cl.name);
        if let Err(e) = self.etcd.put(&key, &value, self.lease, self.deadline()) {
            self.unreachable(e.to_string());
            return;
        }
        let (kvs, rev) = match self
            .etcd
            .list(&super::scope_prefix(&self.cl), self.deadline())
        {
            Ok(r) => r,
            Err(e) => {
                self.unreachable(e.to_string());
                return;
            }
        };
        self.revision = rev;
        let leader_key = super::leader_key(&self.cl);
        let leader = kvs.iter().find(|kv| kv.key == leader_key).cloned();
        let prefix = super::members_prefix(&self.cl);
        let members: Vec<MemberInfo> = kvs
            .iter()
            .filter(|kv| kv.key.starts_with(&prefix))
            .filter_map(|kv| serde_json::from_str(&kv.value).ok())
            .collect();
        let sw: Option<Switchover> = kvs
            .iter()
            .find(|kv| kv.key == super::switchover_key(&self.cl))
            .and_then(|kv| serde_json::from_str(&kv.value).ok());
        self.file.leader = leader.as_ref().map(|kv| kv.value.clone());
        self.file.leader_revision = leader.as_ref().map_or(0, |kv| kv.create_revision);
        self.file.members = members.clone();
        if self.leader {
            self.as_leader(leader.as_ref(), sw.as_ref());
        } else {
            self.as_member(leader.as_ref(), &members, sw.as_ref());
        }
    }

    /// The leader's renewal; `Err`: why it must fence.
    fn renew(&mut self) -> Result<(), String> {
        let sent = Instant::now();
        match self.etcd.keepalive(self.lease, self.deadline()) {
            Ok(true) => {
                self.renewed = Some(sent);
                self.file.last_renew_ms = store::now_ms();
                Ok(())
            }
            Ok(false) => Err("the leader lease expired".into()),
            Err(e) => Err(format!(
                "cannot renew the leader lease within retry_timeout ({e})"
            )),
        }
    }

    /// A member's lease: renewed, or granted anew (after an expiry or at start).
    fn ensure_lease(&mut self) -> Result<(), String> {
        let sent = Instant::now();
        if self.lease != 0 {
            match self.etcd.keepalive(self.lease, self.deadline()) {
                Ok(true) => {
                    self.renewed = Some(sent);
                    self.file.last_renew_ms = store::now_ms();
                    return Ok(());
                }
                Ok(false) => {
                    tracing::info!("cluster: this member's lease expired, taking a new one");
                    self.lease = 0;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        let sent = Instant::now();
        self.lease = self
            .etcd
            .grant(self.cl.ttl, self.deadline())
            .map_err(|e| e.to_string())?;
        self.renewed = Some(sent);
        self.file.last_renew_ms = store::now_ms();
        Ok(())
    }

    fn unreachable(&mut self, e: String) {
        if self.file.state != "unreachable" && self.file.state != "fenced" {
            tracing::warn!(
                "cluster: etcd not reachable: {e}; nobody can be promoted until it answers"
            );
        }
        if self.file.state != "fenced" {
            self.file.state = "unreachable".into();
        }
        self.file.leader = None;
        self.file.last_error = Some(e);
    }

    fn member_info(&self) -> MemberInfo {
        let now = store::now_ms();
        let freshness_ms = if self.leader {
            now
        } else {
            super::received_ms(&self.cfg.node.state_dir).max(self.file.last_leader_ms)
        };
        MemberInfo {
            name: self.cl.name.clone(),
            priority: self.cl.priority,
            freshness_ms,
            role: if self.leader { "leader" } else { "member" }.into(),
            updated_ms: now,
        }
    }

    fn as_leader(&mut self, leader: Option<&Kv>, sw: Option<&Switchover>) {
        let me = self.cl.name.clone();
        match leader {
            Some(kv) if kv.value == me => {}
            other => {
                let who = other.map_or("nobody".to_string(), |kv| kv.value.clone());
                self.fence(&format!(
                    "the leader key is no longer this member's (held by {who})"
                ));
                return;
            }
        }
        if let Some(sw) = sw.filter(|s| s.to != me) {
            tracing::warn!(
                "cluster: switchover to {}: stopping this node's services",
                sw.to
            );
            let (res, renewed) = self.renewing(|cfg| switch::demote(cfg, None, &mut Silent));
            self.note_change("demote", res);
            self.leader = false;
            self.file.last_leader_ms = store::now_ms();
            if !renewed {
                self.file.last_error = Some("the lease was not renewed during the stop".into());
            }
            let key = super::leader_key(&self.cl);
            match self.etcd.delete_if(&key, &me, self.deadline()) {
                Ok(_) => tracing::info!("cluster: released the leader key for {}", sw.to),
                Err(e) => self.file.last_error = Some(e.to_string()),
            }
            self.file.state = "member".into();
            return;
        }
        self.file.state = "leader".into();
        self.file.last_leader_ms = store::now_ms();
    }

    fn as_member(&mut self, leader: Option<&Kv>, members: &[MemberInfo], sw: Option<&Switchover>) {
        let me = self.cl.name.clone();
        match leader {
            Some(kv) if kv.value == me => self.adopt(kv),
            Some(kv) => {
                if self.file.state != "member" {
                    tracing::info!("cluster: {} is the leader; this member follows", kv.value);
                }
                self.file.state = "member".into();
                let _ = roles::observe_epoch(&self.cfg, kv.create_revision + 1, "cluster");
                self.ensure_slave(&format!("{} is the leader", kv.value));
            }
            None => {
                self.ensure_slave("no member holds the leader key");
                self.file.state = "member".into();
                if self.cl.priority == 0 {
                    return;
                }
                let target = sw
                    .map(|s| s.to.clone())
                    .filter(|t| members.iter().any(|m| &m.name == t && m.priority > 0));
                let mine = match &target {
                    Some(t) => *t == me,
                    None => super::best_candidate(members).is_some_and(|b| b.name == me),
                };
                if mine {
                    self.take(target.is_some());
                }
            }
        }
    }

    /// The leader key names this member but it does not hold it (the daemon restarted
    /// within the lease, or etcd came back): it is leader again if the key's lease lives.
    fn adopt(&mut self, kv: &Kv) {
        let sent = Instant::now();
        match self.etcd.keepalive(kv.lease, self.deadline()) {
            Ok(true) => {
                if kv.lease != self.lease && self.lease != 0 {
                    let _ = self.etcd.revoke(self.lease, self.deadline());
                }
                self.lease = kv.lease;
                self.renewed = Some(sent);
                tracing::info!(
                    "cluster: the leader key is still this member's: resuming as leader"
                );
                self.become_leader(kv.create_revision);
            }
            Ok(false) => {}
            Err(e) => self.file.last_error = Some(e.to_string()),
        }
    }

    /// Compare-and-set on the leader key; promote on success.
    fn take(&mut self, switchover: bool) {
        let key = super::leader_key(&self.cl);
        match self
            .etcd
            .create(&key, &self.cl.name, self.lease, self.deadline())
        {
            Ok(Some(rev)) => {
                tracing::warn!(
                    "cluster: this member ({}) took the leader key",
                    self.cl.name
                );
                if switchover {
                    let _ = self
                        .etcd
                        .delete(&super::switchover_key(&self.cl), self.deadline());
                }
                self.become_leader(rev);
            }
            Ok(None) => tracing::info!("cluster: another member took the leader key first"),
            Err(e) => self.file.last_error = Some(e.to_string()),
        }
    }

    fn become_leader(&mut self, revision: u64) {
        // The new epoch rises above every leader key's revision so far.
        let _ = roles::observe_epoch(&self.cfg, revision, "cluster");
        self.leader = true;
        self.file.state = "leader".into();
        self.file.leader = Some(self.cl.name.clone());
        self.file.leader_revision = revision;
        let (res, renewed) = self.renewing(|cfg| switch::promote(cfg, None, &mut Silent));
        self.note_change("promote", res);
        self.file.last_leader_ms = store::now_ms();
        if !renewed {
            self.fence("the lease could not be renewed while the services started");
        }
    }

    /// Runs `f` (a service action) on a scoped thread while this thread keeps the
    /// lease renewed every `loop_wait`. Returns `f`'s result and whether every renewal
    /// succeeded.
    fn renewing<T: Send>(&mut self, f: impl FnOnce(&Config) -> T + Send) -> (T, bool) {
        let cfg = self.cfg.clone();
        let mut ok = true;
        let out = std::thread::scope(|s| {
            let h = s.spawn(move || f(&cfg));
            let mut last = Instant::now();
            while !h.is_finished() {
                std::thread::sleep(Duration::from_millis(20));
                if ok && last.elapsed() >= self.cl.loop_wait {
                    last = Instant::now();
                    ok = self.renew().is_ok();
                }
            }
            h.join()
        });
        match out {
            Ok(v) => (v, ok),
            Err(p) => std::panic::resume_unwind(p),
        }
    }

    fn note_change(
        &mut self,
        what: &str,
        res: Result<switch::RoleChange, crate::failover::MasterError>,
    ) {
        match res {
            Ok(c) => {
                if let Some(e) = c.error() {
                    tracing::error!("cluster: {what}: {e}");
                    self.file.last_error = Some(e.to_string());
                }
            }
            Err(e) => {
                tracing::error!("cluster: {what}: {e}");
                self.file.last_error = Some(e.to_string());
            }
        }
    }

    /// Stops this node's services and records slave: this member must not serve.
    fn fence(&mut self, why: &str) {
        tracing::warn!("cluster: {why}: stopping this node's services (self-fencing)");
        let res = switch::demote(&self.cfg, None, &mut Silent);
        self.note_change("fence", res);
        if self.file.last_error.is_none() {
            self.file.last_error = Some(why.to_string());
        }
        self.leader = false;
        self.lease = 0;
        self.file.state = "fenced".into();
        self.file.last_leader_ms = store::now_ms();
    }

    /// A member that is not leader must not run the services.
    fn ensure_slave(&mut self, why: &str) {
        if roles::effective_role(&self.cfg).ok() == Some(Role::Master) {
            tracing::warn!("cluster: {why}: this node is not the leader, stopping its services");
            let res = switch::demote(&self.cfg, None, &mut Silent);
            self.note_change("demote", res);
        }
    }

    /// Sleeps the rest of `loop_wait` from `started`, waking early when the watched key
    /// changes (members: the leader key; the leader: the switchover key) or on `stop`.
    fn wait(&mut self, started: Instant, stop: &AtomicBool) {
        let mut until = started + self.cl.loop_wait;
        if let (true, Some(r)) = (self.leader, self.renewed) {
            until = until.min(r + self.cl.ttl.saturating_sub(self.cl.retry_timeout));
        }
        let key = if self.leader {
            super::switchover_key(&self.cl)
        } else {
            super::leader_key(&self.cl)
        };
        while !stop.load(Ordering::SeqCst) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            // Short watches, so a stop is seen within ~0.5 s.
            let slice = left.min(Duration::from_millis(500));
            let watching = self.revision > 0 && self.file.state != "unreachable";
            if !watching {
                std::thread::sleep(slice.min(Duration::from_millis(100)));
                continue;
            }
            match self.etcd.watch(&key, self.revision, slice) {
                Ok(true) => return,
                Ok(false) => {}
                Err(_) => std::thread::sleep(slice.min(Duration::from_millis(100))),
            }
        }
    }

    /// The daemon stops: the leader stops its services and deletes its key; the lease
    /// is revoked, so the member key vanishes at once.
    fn release(&mut self) {
        if self.leader {
            tracing::info!(
                "cluster: daemon stopping: stopping the services and releasing the leader key"
            );
            let res = switch::demote(&self.cfg, None, &mut Silent);
            self.note_change("demote", res);
            let dl = Instant::now() + self.cl.retry_timeout;
            let _ = self
                .etcd
                .delete_if(&super::leader_key(&self.cl), &self.cl.name, dl);
            self.leader = false;
            self.file.last_leader_ms = store::now_ms();
        }
        if self.lease != 0 {
            let _ = self
                .etcd
                .revoke(self.lease, Instant::now() + self.cl.retry_timeout);
            self.lease = 0;
        }
        self.file.state = "stopped".into();
    }

    fn write(&mut self) {
        self.file.updated_ms = store::now_ms();
        if let Err(e) =
            store::write_json(&super::cluster_file(&self.cfg.node.state_dir), &self.file)
        {
            tracing::error!("cluster: cannot record cluster.json: {e}");
        }
    }
}
