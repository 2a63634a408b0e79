//! The `[db]` job as a daemon [`Job`]: the same dump, ship and replay as
//! `hasync db-replicate` ([`crate::db::job::run`]), on the job's schedule,
//! under the daemon's lock, retries, state and `on_failure` hook. It runs on
//! the master only (the role file, ha.conf and sentinels count); an unchanged
//! dump is recorded as a success with nothing sent. With `schedule = "watch"` the daemon
//! runs it when its poller sees a commit on the master (`daemon::db_watch`), at most
//! once per `min_interval`, and on the `safety_pass` schedule.

use super::{Job, JobReporter, Outcome};
use crate::node::config::{Config, DbJob, Role, Schedule};
use crate::sync::SyncError;
use crate::sync::client::Client;
use crate::transport::Transport;
use crate::tree::report::Stats;
use std::sync::Arc;

/// The daemon's name for the DB job (its lock, state and metrics label).
pub const DB_JOB_NAME: &str = "db";

pub struct DbJobRun {
    /// The config as seen toward the job's peer ([`Config::for_peer`]).
    pub cfg: Arc<Config>,
    /// `db`, or `db@peer` with `[[peer]]` tables.
    unit: String,
}

impl DbJobRun {
    pub fn new(cfg: Arc<Config>) -> DbJobRun {
        let unit = cfg.unit_name(DB_JOB_NAME);
        DbJobRun { cfg, unit }
    }

    fn db(&self) -> &DbJob {
        self.cfg
            .db
            .as_ref()
            .expect("a DbJobRun exists only with a [db] section")
    }
}

impl Job for DbJobRun {
    fn name(&self) -> &str {
        &self.unit
    }
    fn peer(&self) -> Option<&str> {
        self.cfg.node.peer_name.as_deref()
    }
    fn schedule(&self) -> &Schedule {
        &self.db().schedule
    }
    fn safety_pass(&self) -> &Schedule {
        &self.db().safety_pass
    }
    fn min_interval(&self) -> std::time::Duration {
        self.db().min_interval
    }
    fn skip_reason(&self) -> Option<String> {
        match crate::node::role::effective_role(&self.cfg) {
            Ok(Role::Master) => None,
            Ok(role) => Some(format!("the DB job runs on the master (this node: {role})")),
            Err(e) => Some(format!("cannot tell this node's role: {e}")),
        }
    }
    fn run(&self, transport: &dyn Transport, _rep: &mut dyn JobReporter) -> Outcome {
        let mut connect =
            || -> Result<Client, SyncError> { Client::connect_as(transport, &[], Some(&self.cfg)) };
        let (rep, res) = crate::db::job::run(&self.cfg, self.db(), false, &mut connect);
        tracing::info!(
            "job {}: {} ({} dump bytes, {} on the wire)",
            self.unit,
            rep.outcome,
            rep.dump_bytes,
            rep.bytes_on_wire
        );
        let stats = Stats {
            files_total: 1,
            files_transferred: u64::from(rep.outcome == "replayed"),
            bytes_total: rep.dump_bytes,
            bytes_literal: rep.bytes_literal,
            bytes_matched: rep.bytes_matched,
            bytes_sent: rep.bytes_sent,
            bytes_received: rep.bytes_received,
            duration_ms: rep.duration_ms,
            ..Default::default()
        };
        match res {
            Ok(()) => Outcome {
                exit_code: 0,
                error: None,
                stats,
            },
            Err(e) => Outcome {
                exit_code: e.exit_code().code(),
                error: Some(e.to_string()),
                stats,
            },
        }
    }
}
