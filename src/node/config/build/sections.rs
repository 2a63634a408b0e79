//! The meaning of each table: defaults, then every check that serde cannot make, each
//! reported at the key's line.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::super::values::{is_identifier, is_table_name, job_name_problem, probe_problem};
use super::super::{
    CheckMaster, DbJob, DbKind, Direction, Node, Peer, ProbeMode, Role, Schedule, Services, SyncJob,
};
use super::{Ctx, KeyOrIndex, RawCheckMaster, RawDb, RawNode, RawServices, RawSync, Res};

/// `[node]`. `peer_tables`: the file has `[[peer]]` tables, which replace `peer` and
/// `peer_from` (the caller then fills in the peer from the first table).
pub(super) fn build_node(ctx: &Ctx, raw: RawNode, peer_tables: bool) -> Res<Node> {
    let role = match (raw.role.as_deref(), raw.role_from.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(ctx.err(
                at!["node", "role_from"],
                "is set together with role (keep one: role = \"master\" | \"slave\" | \"disabled\", or role_from = \"wazo\")",
            ));
        }
        (None, None) => {
            return Err(ctx.err(
                at!["node", "role"],
                "is missing (add role = \"master\" | \"slave\" | \"disabled\", or role_from = \"wazo\")",
            ));
        }
        (Some("master"), None) => Role::Master,
        (Some("slave"), None) => Role::Slave,
        (Some("disabled"), None) => Role::Disabled,
        (Some(other), None) => {
            return Err(ctx.err(
                at!["node", "role"],
                format!("{other:?} is not a role (write \"master\", \"slave\" or \"disabled\")"),
            ));
        }
        (None, Some("wazo")) => Role::Disabled,
        (None, Some(other)) => {
            return Err(ctx.err(
                at!["node", "role_from"],
                format!("{other:?} is not a role source (write \"wazo\", or set role instead)"),
            ));
        }
    };
    if peer_tables
        && let Some(key) = [("peer", &raw.peer), ("peer_from", &raw.peer_from)]
            .into_iter()
            .find_map(|(k, v)| v.as_ref().map(|_| k))
    {
        return Err(ctx.err(
            at!["node", key],
            "is set together with [[peer]] tables (keep one: [node] peer for one standby, or one [[peer]] table per standby)",
        ));
    }
    let peer: Peer = match (raw.peer.as_deref(), raw.peer_from.as_deref()) {
        (None, None) if peer_tables => Peer::Local, // replaced by the first [[peer]]
        (Some(_), Some(_)) => {
            return Err(ctx.err(
                at!["node", "peer_from"],
                "is set together with peer (keep one: peer = \"[user@]host[:port]\" | \"local\", or peer_from = \"wazo\")",
            ));
        }
        (None, None) => {
            return Err(ctx.missing(
                at!["node"],
                "peer",
                "missing field `peer` (add peer = \"root@10.0.0.2\" or \"local\", or peer_from = \"wazo\" to [node], or one [[peer]] table per standby)",
            ));
        }
        (Some(p), None) => p
            .parse()
            .map_err(|m: String| ctx.err(at!["node", "peer"], m))?,
        (None, Some("wazo")) => Peer::WazoHaConf,
        (None, Some(other)) => {
            return Err(ctx.err(
                at!["node", "peer_from"],
                format!("{other:?} is not a peer source (write \"wazo\": remote_address of /etc/xivo/ha.conf, or set peer instead)"),
            ));
        }
    };
    let remote_path = raw.remote_path.unwrap_or_else(|| "hasync".to_string());
    ctx.non_empty(
        at!["node", "remote_path"],
        &remote_path,
        "the hasync command on the peer",
    )?;
    // On a remote peer, peer_root is a path on that host: it must be absolute and
    // plain. With the local peer (demo, tests) it is resolved like `root`.
    if let Some(pr) = raw.peer_root.as_deref()
        && !matches!(peer, Peer::Local)
    {
        if !Path::new(pr).is_absolute() {
            return Err(ctx.err(
                at!["node", "peer_root"],
                format!("{pr:?} is relative, but it names a directory on the peer {peer} (write an absolute path such as \"/\")"),
            ));
        }
        if Path::new(pr)
            .components()
            .any(|c| c == Component::ParentDir)
        {
            return Err(ctx.err(
                at!["node", "peer_root"],
                format!("{pr:?} has a \"..\" component, which escapes the directory it names (write the plain absolute path)"),
            ));
        }
    }
    let optional =
        |key: &str, raw: Option<&str>| raw.map(|s| ctx.node_path(key, Some(s), "")).transpose();
    if raw.peer_config.is_some() && !matches!(peer, Peer::Local) {
        return Err(ctx.err(
            at!["node", "peer_config"],
            format!("is the config of a local peer, but the peer is {peer}: remove it (a remote peer reads its own /etc/hasync/hasync.toml)"),
        ));
    }
    Ok(Node {
        role,
        role_from: raw.role_from,
        peer_from: raw.peer_from,
        peer,
        peer_name: None,
        identity: optional("identity", raw.identity.as_deref())?,
        known_hosts: optional("known_hosts", raw.known_hosts.as_deref())?,
        peer_config: optional("peer_config", raw.peer_config.as_deref())?,
        remote_path,
        state_dir: ctx.node_path("state_dir", raw.state_dir.as_deref(), "/var/lib/hasync")?,
        sentinel_dir: ctx.node_path(
            "sentinel_dir",
            raw.sentinel_dir.as_deref(),
            "/var/lib/hasync",
        )?,
        root: ctx.node_path("root", raw.root.as_deref(), "/")?,
        peer_root: ctx.node_path("peer_root", raw.peer_root.as_deref(), "/")?,
        timeout: ctx.nonzero(
            at!["node", "timeout"],
            ctx.duration(
                at!["node", "timeout"],
                raw.timeout.as_deref(),
                Duration::from_secs(30),
            )?,
        )?,
        compress: ctx
            .compress(at!["node", "compress"], raw.compress.as_ref())?
            .unwrap_or_default(),
        bwlimit: ctx
            .bwlimit(at!["node", "bwlimit"], raw.bwlimit.as_ref())?
            .unwrap_or(0),
    })
}

/// A `[[sync]]` path: absolute, no `..`, not `/`; returned normalised.
fn sync_path(ctx: &Ctx, i: usize, j: usize, s: &str) -> Res<PathBuf> {
    let here = at!["sync", i, "paths", j];
    let p = Path::new(s);
    if !p.is_absolute() {
        let example = format!("/{}", s.trim_start_matches("./"));
        return Err(ctx.err(
            here,
            format!(
                "{s:?} is not an absolute path (write it as it is on the node, e.g. {example:?})"
            ),
        ));
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(ctx.err(
            here,
            format!(
                "{s:?} has a \"..\" component (write the directory's real path without \"..\")"
            ),
        ));
    }
    let normal: PathBuf = p.components().filter(|c| *c != Component::CurDir).collect();
    if normal.parent().is_none() {
        return Err(ctx.err(
            here,
            format!("{s:?} is the whole file system (mirroring it would overwrite the peer's system; list the directories to mirror)"),
        ));
    }
    Ok(normal)
}

pub(super) fn build_sync(ctx: &Ctx, raws: Vec<RawSync>) -> Res<Vec<SyncJob>> {
    let mut jobs: Vec<SyncJob> = Vec::with_capacity(raws.len());
    // (path, job index, path index) of every path seen so far.
    let mut seen: Vec<(PathBuf, usize, usize)> = Vec::new();
    for (i, raw) in raws.into_iter().enumerate() {
        if let Some(m) = job_name_problem(&raw.name) {
            return Err(ctx.err(at!["sync", i, "name"], m));
        }
        if let Some(k) = jobs.iter().position(|j| j.name == raw.name) {
            return Err(ctx.err(
                at!["sync", i, "name"],
                format!(
                    "{:?} is already the name of [[sync]] #{}{} (give each job its own name)",
                    raw.name,
                    k + 1,
                    ctx.line_of(at!["sync", k, "name"])
                ),
            ));
        }
        if raw.paths.is_empty() {
            return Err(ctx.err(
                at!["sync", i, "paths"],
                "is empty (list the directories this job mirrors, e.g. [\"/etc/asterisk\"])",
            ));
        }
        let mut paths = Vec::with_capacity(raw.paths.len());
        for (j, s) in raw.paths.iter().enumerate() {
            let p = sync_path(ctx, i, j, s)?;
            for (q, qi, qj) in &seen {
                if !(p.starts_with(q) || q.starts_with(&p)) {
                    continue;
                }
                let how = if p == *q {
                    "is also"
                } else if p.starts_with(q) {
                    "is inside"
                } else {
                    "contains"
                };
                let (other, what) = if *qi == i {
                    (
                        "listed earlier in this job".to_string(),
                        "keep only the outer directory",
                    )
                } else {
                    let line = ctx.line_of(at!["sync", *qi, "paths", *qj]);
                    (
                        format!("of job {:?} ([[sync]] #{}{line})", jobs[*qi].name, qi + 1),
                        "a directory may belong to one job only: merge the jobs or remove one path",
                    )
                };
                return Err(ctx.err(
                    at!["sync", i, "paths", j],
                    format!("{s:?} {how} {:?} {other} ({what})", q.display().to_string()),
                ));
            }
            seen.push((p.clone(), i, j));
            paths.push(p);
        }
        for (j, pattern) in raw.exclude.iter().enumerate() {
            ctx.non_empty(
                at!["sync", i, "exclude", j],
                pattern,
                "a gitignore-style pattern",
            )?;
        }
        let direction = match raw.direction.as_deref() {
            None | Some("push") => Direction::Push,
            Some("pull") => Direction::Pull,
            Some(other) => {
                return Err(ctx.err(
                    at!["sync", i, "direction"],
                    format!("{other:?} is not a direction (write \"push\": master to slave, or \"pull\": the slave fetches)"),
                ));
            }
        };
        let schedule = ctx.schedule(
            at!["sync", i, "schedule"],
            raw.schedule.as_deref(),
            Schedule::Manual,
        )?;
        if schedule == Schedule::Watch && direction == Direction::Pull {
            return Err(ctx.err(
                at!["sync", i, "schedule"],
                "\"watch\" needs direction = \"push\" (a watched job follows changes to files on this node; a pull job's files are on the peer: use a timed schedule)",
            ));
        }
        let jitter = ctx.duration(
            at!["sync", i, "jitter"],
            raw.jitter.as_deref(),
            Duration::ZERO,
        )?;
        let safety_pass = ctx.schedule(
            at!["sync", i, "safety_pass"],
            raw.safety_pass.as_deref(),
            Schedule::Hourly,
        )?;
        if safety_pass == Schedule::Watch {
            return Err(ctx.err(
                at!["sync", i, "safety_pass"],
                "cannot be \"watch\" (write \"hourly\", a cron expression, or \"manual\" for none)",
            ));
        }
        jobs.push(SyncJob {
            name: raw.name,
            paths,
            exclude: raw.exclude,
            direction,
            delete: raw.delete.unwrap_or(true),
            checksum: raw.checksum.unwrap_or(false),
            max_delete: raw.max_delete,
            schedule,
            allow_empty_source: raw.allow_empty_source.unwrap_or(false),
            one_file_system: raw.one_file_system.unwrap_or(false),
            numeric_ids: raw.numeric_ids.unwrap_or(false),
            jitter,
            safety_pass,
            compress: ctx.compress(at!["sync", i, "compress"], raw.compress.as_ref())?,
            bwlimit: ctx.bwlimit(at!["sync", i, "bwlimit"], raw.bwlimit.as_ref())?,
        });
    }
    Ok(jobs)
}

pub(super) fn build_db(ctx: &Ctx, raw: RawDb) -> Res<DbJob> {
    let kind = match raw.kind.as_str() {
        "postgres" => DbKind::Postgres,
        other => {
            return Err(ctx.err(
                at!["db", "kind"],
                format!("{other:?} is not a supported database (write \"postgres\")"),
            ));
        }
    };
    ctx.non_empty(
        at!["db", "database"],
        &raw.database,
        "the database name, e.g. \"asterisk\"",
    )?;
    let schema = raw.schema.unwrap_or_else(|| "public".to_string());
    if !is_identifier(&schema) {
        return Err(ctx.err(
            at!["db", "schema"],
            format!(
                "{schema:?} is not a plain schema name (letters, digits and \"_\", e.g. \"public\")"
            ),
        ));
    }
    for (j, t) in raw.exclude_tables.iter().enumerate() {
        if !is_table_name(t) {
            return Err(ctx.err(
                at!["db", "exclude_tables", j],
                format!("{t:?} is not a plain table name (write name or schema.name, with letters, digits and \"_\")"),
            ));
        }
    }
    let user = raw.user.unwrap_or_else(|| "postgres".to_string());
    ctx.non_empty(
        at!["db", "user"],
        &user,
        "the local database user, e.g. \"postgres\"",
    )?;
    let schedule = ctx.schedule(
        at!["db", "schedule"],
        raw.schedule.as_deref(),
        Schedule::Hourly,
    )?;
    let min_interval = ctx.duration(
        at!["db", "min_interval"],
        raw.min_interval.as_deref(),
        super::super::DB_MIN_INTERVAL,
    )?;
    let safety_pass = ctx.schedule(
        at!["db", "safety_pass"],
        raw.safety_pass.as_deref(),
        Schedule::Hourly,
    )?;
    if safety_pass == Schedule::Watch {
        return Err(ctx.err(
            at!["db", "safety_pass"],
            "cannot be \"watch\" (write \"hourly\", a cron expression, or \"manual\" for none)",
        ));
    }
    if let Some(h) = &raw.host {
        ctx.non_empty(
            at!["db", "host"],
            h,
            "the socket directory, e.g. \"/var/run/postgresql\"",
        )?;
    }
    if raw.port == Some(0) {
        return Err(ctx.err(
            at!["db", "port"],
            "is 0 (write e.g. 5432, or remove the key)",
        ));
    }
    if let Some(u) = &raw.run_as {
        ctx.non_empty(at!["db", "run_as"], u, "a system user, e.g. \"postgres\"")?;
    }
    if let Some(b) = raw.bin_dir.as_ref().filter(|b| !b.is_absolute()) {
        return Err(ctx.err(
            at!["db", "bin_dir"],
            format!(
                "{} is not an absolute path (write e.g. \"/usr/lib/postgresql/15/bin\")",
                b.display()
            ),
        ));
    }
    Ok(DbJob {
        kind,
        database: raw.database,
        schema,
        exclude_tables: raw.exclude_tables,
        user,
        schedule,
        min_interval,
        safety_pass,
        with_schema: raw.with_schema.unwrap_or(false),
        host: raw.host,
        port: raw.port,
        run_as: raw.run_as,
        bin_dir: raw.bin_dir,
        master_chooses_slave_db: raw.master_chooses_slave_db.unwrap_or(false),
        discard_failover_writes: false,
    })
}

pub(super) fn build_services(ctx: &Ctx, raw: RawServices) -> Res<Services> {
    let has_commands = !raw.start.is_empty() || !raw.stop.is_empty() || raw.status.is_some();
    if !raw.units.is_empty() && has_commands {
        let key = if !raw.start.is_empty() {
            "start"
        } else if !raw.stop.is_empty() {
            "stop"
        } else {
            "status"
        };
        return Err(ctx.err(
            at!["services", key],
            "is set together with units (set either units = [...] for systemd, or start/stop/status commands, not both)",
        ));
    }
    if raw.units.is_empty() && !has_commands {
        return Err(ctx.err(
            at!["services"],
            "names no services (add units = [\"asterisk.service\"], or start = [...] and stop = [...] commands)",
        ));
    }
    if has_commands {
        for (key, list, other) in [("start", &raw.start, "stop"), ("stop", &raw.stop, "start")] {
            if list.is_empty() {
                return Err(ctx.err(
                    at!["services", key],
                    format!("is missing while {other} is set (the slave must be able to start and to stop its services)"),
                ));
            }
        }
    }
    for (key, list) in [
        ("units", &raw.units),
        ("start", &raw.start),
        ("stop", &raw.stop),
    ] {
        for (j, s) in list.iter().enumerate() {
            ctx.non_empty(at!["services", key, j], s, "a unit name or command")?;
        }
    }
    if let Some(status) = &raw.status {
        ctx.non_empty(at!["services", "status"], status, "a shell command")?;
    }
    let timeout = ctx.duration(
        at!["services", "timeout"],
        raw.timeout.as_deref(),
        Duration::from_secs(60),
    )?;
    let stop_unguarded = match raw.guard.as_deref() {
        None | Some("both") => false,
        Some("start") => true,
        Some(other) => {
            return Err(ctx.err(
                at!["services", "guard"],
                format!("{other:?} is not a guard (write \"both\": status skips a start when running and a stop when stopped, or \"start\": only a start, stop always runs)"),
            ));
        }
    };
    Ok(Services {
        keep_going: raw.keep_going.unwrap_or(false),
        stop_unguarded,
        units: raw.units,
        start: raw.start,
        stop: raw.stop,
        status: raw.status,
        timeout: ctx.nonzero(at!["services", "timeout"], timeout)?,
    })
}

/// `wazo`: `[node] role_from` or `peer_from` is `"wazo"`, which lets `address` be
/// omitted (the master is then the remote_address of ha.conf, read at run time).
pub(super) fn build_check_master(ctx: &Ctx, raw: RawCheckMaster, wazo: bool) -> Res<CheckMaster> {
    let cm = |key: &str| at!["check_master", key].to_vec();
    let address = match raw.address {
        Some(a) => {
            if a.trim().is_empty() || a.contains(char::is_whitespace) {
                return Err(ctx.err(
                    &cm("address"),
                    format!("{a:?} is not a host name or address (write the master's address, e.g. \"10.0.0.1\")"),
                ));
            }
            a
        }
        // Empty: resolved from ha.conf by `MasterCheck::new`.
        None if wazo => String::new(),
        None => {
            return Err(ctx.missing(
                at!["check_master"],
                "address",
                "missing field `address` (add address = \"<master's IP>\", or set [node] role_from = \"wazo\" to use remote_address of /etc/xivo/ha.conf)",
            ));
        }
    };
    let probes = raw.probes.unwrap_or_else(|| vec!["icmp".to_string()]);
    if probes.is_empty() {
        return Err(ctx.err(
            &cm("probes"),
            "is empty (list at least one probe, e.g. [\"icmp\"])",
        ));
    }
    for (j, p) in probes.iter().enumerate() {
        if let Some(m) = probe_problem(p) {
            return Err(ctx.err(at!["check_master", "probes", j], m));
        }
    }
    let interval = ctx.duration(
        &cm("interval"),
        raw.interval.as_deref(),
        Duration::from_secs(1),
    )?;
    let timeout = ctx.duration(
        &cm("timeout"),
        raw.timeout.as_deref(),
        Duration::from_secs(1),
    )?;
    let hold_down = ctx.duration(
        &cm("hold_down"),
        raw.hold_down.as_deref(),
        Duration::from_secs(30),
    )?;
    for (key, value) in [
        ("fail_after", raw.fail_after),
        ("recover_after", raw.recover_after),
    ] {
        if value == Some(0) {
            return Err(ctx.err(
                &cm(key),
                "is 0 (it counts consecutive checks: write 1 or more)",
            ));
        }
    }
    for (j, w) in raw.witness.iter().enumerate() {
        ctx.non_empty(
            at!["check_master", "witness", j],
            w,
            "a host name or address",
        )?;
    }
    let mode = match raw.mode.as_deref() {
        None | Some("all") => ProbeMode::All,
        Some("any") => ProbeMode::Any,
        Some(other) => {
            return Err(ctx.err(
                &cm("mode"),
                format!("{other:?} is not a mode (write \"all\": every probe must answer, or \"any\": one is enough)"),
            ));
        }
    };
    let mut copy_back = Vec::with_capacity(raw.copy_back.len());
    for (j, s) in raw.copy_back.iter().enumerate() {
        let here = at!["check_master", "copy_back", j];
        let p = Path::new(s);
        if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
            return Err(ctx.err(
                here,
                format!("{s:?} is not a plain absolute path (write the directory as it is on the node, e.g. \"/var/spool/asterisk/voicemail\")"),
            ));
        }
        let normal: PathBuf = p.components().filter(|c| *c != Component::CurDir).collect();
        if normal.parent().is_none() {
            return Err(ctx.err(
                here,
                format!("{s:?} is the whole file system (list the directories written during a failover)"),
            ));
        }
        copy_back.push(normal);
    }
    Ok(CheckMaster {
        copy_back,
        address,
        probes,
        interval: ctx.nonzero(&cm("interval"), interval)?,
        timeout: ctx.nonzero(&cm("timeout"), timeout)?,
        fail_after: raw.fail_after.unwrap_or(3),
        recover_after: raw.recover_after.unwrap_or(5),
        hold_down,
        witness: raw.witness,
        mode,
        stop_while_up: raw.stop_while_up.unwrap_or(false),
    })
}
