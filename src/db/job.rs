//! The master's side of the DB job, after [`super::plan`] has read the catalog:
//! dump with pg_dump into the private work directory `state_dir/db` (mode
//! 0700, random temp names, never a predictable /tmp path), wrap it into a replay script
//! ([`super::script`]), and compare its BLAKE3 with the last script the slave committed.
//! Unchanged: nothing is shipped or replayed. Changed: the script goes to the slave's
//! staging directory as a row-level patch against the previous one ([`super::patch`]),
//! or through the sync engine (a block delta) when no patch applies, and the slave's
//! `serve` replays it in one transaction. Every run is recorded in
//! [`super::state`]; a failure keeps the last good hash, so the next run replays again.

use super::patch;
use super::plan::{DbPlan, dump_args};
use super::script::{self, DumpSummary};
use super::state::{self, RunRecord};
use super::{DbError, PgConn};
use crate::node::config::{Config, DbJob};
use crate::sync::SyncError;
use crate::sync::client::Client;
use crate::wire::db::{DbPatchBegin, DbReplay, DbReplayExt, DbTarget, TableDigest};
use crate::wire::message::{MINOR_DB_IDENTITY, MINOR_DB_PATCH};
use crate::wire::{Msg, SessionOptions};
use serde::Serialize;
use std::io::{BufReader, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The outcome and figures of one run (`--json`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct DbReport {
    /// `replayed`, `unchanged`, `failed`, or `dry-run`.
    pub outcome: String,
    pub database: String,
    pub dump_bytes: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub bytes_on_wire: u64,
    pub bytes_literal: u64,
    pub bytes_matched: u64,
    pub tables: u64,
    pub rows: u64,
    pub sequences: u64,
    pub dump_ms: u64,
    pub ship_ms: u64,
    pub replay_ms: u64,
    pub duration_ms: u64,
    /// BLAKE3 of the replay script (hex).
    pub hash: String,
    /// How the script travelled: `patch` (rows changed since the last script, see
    /// [`super::patch`]), `delta` (the sync engine's block delta), or empty (not shipped).
    pub shipped_as: String,
    /// Why it was replayed: the master changed, `--force`, or the slave drifted.
    pub reason: String,
    /// How the slave replayed: `rows` (only the changed rows, see
    /// [`super::incremental`]), `script` (the whole script), or empty (not replayed).
    pub replayed_as: String,
    /// With `replayed_as = "rows"`: rows deleted and inserted on the slave.
    pub rows_deleted: u64,
    pub rows_inserted: u64,
    /// After a replay: the slave's tables against the dump's (2.3 peers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<Verify>,
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<DbPlan>,
}

/// The slave checked against the dump after a replay.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verify {
    /// Every table has the dump's rows and checksum on the slave.
    pub ok: bool,
    pub tables: Vec<VerifiedTable>,
}

/// One replicated table: the dump's rows and checksum, and the slave's.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifiedTable {
    pub table: String,
    pub rows: u64,
    pub checksum: String,
    pub slave_rows: Option<u64>,
    pub slave_checksum: Option<String>,
    pub ok: bool,
}

fn local(what: &'static str, p: &Path, source: std::io::Error) -> DbError {
    DbError::File {
        what,
        path: p.to_path_buf(),
        source,
    }
}

fn ms(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}

/// Runs the job once. `connect` opens the connection to the peer (only called when the
/// dump changed). Always returns the report (also on failure, for `--json`); the run is
/// recorded in `state_dir/db.json` either way.
pub fn run(
    cfg: &Config,
    job: &DbJob,
    force: bool,
    connect: &mut dyn FnMut() -> Result<Client, SyncError>,
) -> (DbReport, Result<(), DbError>) {
    let t0 = Instant::now();
    let started = state::now_unix();
    let mut rep = DbReport {
        database: job.database.clone(),
        ..Default::default()
    };
    let state_dir = &cfg.node.state_dir;
    let peer = cfg.node.peer_name.as_deref();
    let mut st = state::load(state_dir, peer);
    let res = run_inner(cfg, job, force, connect, &st, &mut rep);
    rep.duration_ms = ms(t0);
    let rec = RunRecord {
        outcome: String::new(),
        error: None,
        started_unix: started,
        finished_unix: state::now_unix(),
        duration_ms: rep.duration_ms,
        dump_bytes: rep.dump_bytes,
        bytes_on_wire: rep.bytes_on_wire,
    };
    st.job = "db".into();
    match &res {
        Ok(replayed) => {
            rep.outcome = if *replayed { "replayed" } else { "unchanged" }.into();
            if *replayed {
                st.replayed_hash = Some(rep.hash.clone());
                st.replayed_unix = Some(rec.finished_unix);
            }
            st.last_success_unix = Some(rec.finished_unix);
            st.synced_unix = Some(started);
        }
        Err(e) => {
            rep.outcome = "failed".into();
            rep.error = Some(e.to_string());
        }
    }
    st.last_run = Some(RunRecord {
        outcome: rep.outcome.clone(),
        error: rep.error.clone(),
        ..rec
    });
    let saved = state::save(state_dir, peer, &st)
        .map_err(|e| local("cannot record the run in", &state::path(state_dir, peer), e));
    let res = match (res, saved) {
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => {
            rep.outcome = "failed".into();
            rep.error = Some(e.to_string());
            Err(e)
        }
        (Ok(_), Ok(())) => Ok(()),
    };
    (rep, res)
}

/// `Ok(true)`: replayed; `Ok(false)`: unchanged.
fn run_inner(
    cfg: &Config,
    job: &DbJob,
    force: bool,
    connect: &mut dyn FnMut() -> Result<Client, SyncError>,
    st: &state::DbState,
    rep: &mut DbReport,
) -> Result<bool, DbError> {
    let work = cfg.node.state_dir.join(super::WORK_DIR);
    let out_dir = work.join("out");
    for d in [&work, &out_dir] {
        super::private_dir(d).map_err(|e| local("cannot prepare the work directory", d, e))?;
    }
    let _lock = lock(&work)?;

    // Dump and wrap.
    let t = Instant::now();
    let plan = super::plan::plan(job)?;
    tracing::debug!("catalog read in {} ms", ms(t));
    let conn = PgConn::from_job(job);
    // What the slave compares its target with: never replay into this very database.
    let source = conn.identity().map_err(|source| DbError::Pg {
        doing: format!(
            "cannot read the identity of {} on this node",
            conn.describe()
        ),
        source,
    })?;
    let tmp = |what: &str| {
        tempfile::Builder::new()
            .prefix(&format!(".{what}-"))
            .tempfile_in(&work)
            .map_err(|e| local("cannot create a temp file in", &work, e))
    };
    // pg_dump's output is turned into the script's body as it arrives (rows sorted per
    // table), then the header (which needs the table list) and the body are joined.
    let key = restrict_key(&work)?;
    let mut body = tmp("body")?;
    let mut summary = DumpSummary::default();
    let mut local_err = None;
    let mut consume = |out: &mut dyn std::io::Read| {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, body.as_file_mut());
        let res = script::write_body(
            &mut BufReader::with_capacity(1 << 20, out),
            job.with_schema,
            &key,
            &mut w,
        )
        .and_then(|s| {
            w.flush()?;
            summary = s;
            Ok(())
        });
        if let Err(e) = &res {
            local_err = Some(std::io::Error::new(e.kind(), e.to_string()));
        }
        res
    };
    let dumped = conn.dump(&dump_args(job, &plan), &mut consume);
    if let Some(e) = local_err {
        return Err(local("cannot write the dump into", &work, e));
    }
    dumped.map_err(|source| DbError::Pg {
        doing: format!("pg_dump of {} failed on this node", conn.describe()),
        source,
    })?;
    let (scr, hash, bytes) = assemble(&work, tmp("script")?, body, &summary, job.with_schema)?;
    rep.dump_bytes = bytes;
    rep.hash = blake3::Hash::from(hash).to_hex().to_string();
    rep.tables = summary.tables.len() as u64;
    rep.rows = summary.rows();
    rep.sequences = summary.sequences;
    rep.dump_ms = ms(t);

    let name = format!("{}.sql", job.database);
    let script = Script {
        dir: &out_dir,
        name: name.clone(),
        hash,
        len: bytes,
        ext: DbReplayExt {
            source,
            master_chooses: job.master_chooses_slave_db,
            tables: summary.tables.iter().map(|t| t.0.clone()).collect(),
            overwrite_failover_writes: job.discard_failover_writes,
        },
        digests: super::digest::of_summary(&summary),
    };
    let mut client = None;
    if !force && st.replayed_hash.as_deref() == Some(rep.hash.as_str()) {
        // The master did not change; has the slave? (Wazo: replays every hour anyway.)
        let mut c = connect().map_err(DbError::Peer)?;
        match drift(&mut c, job, &script) {
            Ok(None) => {
                c.close().map_err(DbError::Peer)?;
                return Ok(false);
            }
            Ok(Some(why)) => rep.reason = why,
            Err(e) => {
                let _ = c.close();
                return Err(e);
            }
        }
        client = Some(c);
    } else if force {
        rep.reason = "forced (--force)".into();
    } else {
        rep.reason = "the master's data changed since the last replay".into();
    }

    // Keep only this script in out/: it is what the slave's staging directory mirrors.
    let target: PathBuf = out_dir.join(&name);
    let t = Instant::now();
    let patch = prepare_patch(&work, &target, scr.path(), bytes);
    tracing::debug!("diffing against the previous script took {} ms", ms(t));
    scr.persist(&target)
        .map_err(|e| local("cannot write", &target, e.error))?;
    if let Ok(rd) = std::fs::read_dir(&out_dir) {
        for e in rd.flatten() {
            if e.file_name().as_bytes() != name.as_bytes() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    // Ship.
    let t = Instant::now();
    let mut client = match client {
        Some(c) => c,
        None => connect().map_err(DbError::Peer)?,
    };
    tracing::debug!("connected in {} ms", ms(t));
    let res = ship_and_replay(&mut client, job, &script, patch, rep, t);
    let closed = client.close();
    res?;
    closed.map_err(DbError::Peer)?;
    record_equal(cfg, &script, rep);
    Ok(true)
}

/// After a verified replay, this node's data equals its peer's: recorded like a replay
/// received, so that, should this node later be a slave that served as master, its
/// failback guard knows what the other node already holds (see `db::serve`).
fn record_equal(cfg: &Config, script: &Script, rep: &DbReport) {
    if !rep.verify.as_ref().is_some_and(|v| v.ok) {
        return;
    }
    let staging = cfg.node.state_dir.join(super::STAGING_DIR);
    let rec = super::digest::Replica {
        replayed_hash: rep.hash.clone(),
        replayed_unix: state::now_unix(),
        tables: script.digests.clone(),
        ..Default::default()
    };
    if let Err(e) = super::digest::save(&staging, &rec) {
        tracing::warn!(
            "cannot record the replicated tables in {}: {e}",
            super::digest::record_path(&staging).display()
        );
    }
}

/// The replay script: the header (which needs the table list), the `body` made from
/// pg_dump's output, the footer, written into `scr`; returns it with its BLAKE3 and size.
fn assemble(
    work: &Path,
    mut scr: tempfile::NamedTempFile,
    mut body: tempfile::NamedTempFile,
    summary: &DumpSummary,
    with_schema: bool,
) -> Result<(tempfile::NamedTempFile, [u8; 32], u64), DbError> {
    let mut hashing = HashingWriter {
        inner: std::io::BufWriter::with_capacity(1 << 20, scr.as_file_mut()),
        hasher: blake3::Hasher::new(),
        bytes: 0,
    };
    body.rewind()
        .map_err(|e| local("cannot read", body.path(), e))?;
    script::write_header(summary, with_schema, &mut hashing)
        .and_then(|_| std::io::copy(body.as_file_mut(), &mut hashing))
        .and_then(|_| script::write_footer(&mut hashing))
        .and_then(|_| hashing.inner.flush())
        .map_err(|e| local("cannot write", work, e))?;
    let (hash, bytes) = (*hashing.hasher.finalize().as_bytes(), hashing.bytes);
    drop(hashing);
    Ok((scr, hash, bytes))
}

/// The replay request for `script` (with `ext` for a 2.3 peer).
fn replay_request(client: &Client, job: &DbJob, script: &Script) -> DbReplay {
    DbReplay {
        file: script.name.clone(),
        hash: script.hash,
        target: DbTarget {
            database: job.database.clone(),
            user: job.user.clone(),
            host: job.host.clone().unwrap_or_default(),
            port: job.port.unwrap_or(0),
            run_as: job.run_as.clone().unwrap_or_default(),
        },
        ext: (client.peer_minor() >= MINOR_DB_IDENTITY).then(|| script.ext.clone()),
    }
}

/// The master's dump is unchanged: `Some(why)` when the slave must be replayed anyway
/// (its data changed since its last replay, or differs from the dump), `None` when it
/// holds what the dump holds (or is too old to tell: then, as before, nothing is done).
fn drift(client: &mut Client, job: &DbJob, script: &Script) -> Result<Option<String>, DbError> {
    if client.peer_minor() < MINOR_DB_IDENTITY {
        return Ok(None);
    }
    let req = Msg::DbCheck(replay_request(client, job, script));
    let (changed, tables) = match client.request(&req) {
        Ok(Msg::DbChecked {
            changed, tables, ..
        }) => (changed, tables),
        Ok(m) => return Err(unexpected(&m, "DbCheck")),
        Err(SyncError::Io(msg)) => return Err(DbError::Replay(msg)),
        Err(e) => return Err(DbError::Peer(e)),
    };
    let diff = super::digest::differences(&script.digests, &tables);
    Ok(match (changed, diff.is_empty()) {
        (_, false) => Some(format!(
            "the slave's data {} (tables differing from the dump: {})",
            if changed {
                "changed since its last replay"
            } else {
                "differs from the master's"
            },
            super::digest::list(&diff)
        )),
        (true, true) => Some(
            "the slave has no record of its last replay (its tables equal the dump; replayed \
             once to record them)"
                .into(),
        ),
        (false, true) => None,
    })
}

fn unexpected(m: &Msg, to: &str) -> DbError {
    DbError::Peer(SyncError::Peer(format!(
        "protocol error: the peer answered {} to {to}",
        m.name()
    )))
}

/// Compares the slave's tables after the replay with the dump's.
fn verify(
    script: &Script,
    slave: Option<Vec<TableDigest>>,
    rep: &mut DbReport,
) -> Result<(), DbError> {
    let Some(slave) = slave else {
        return Ok(()); // an older peer: nothing to compare
    };
    let tables: Vec<VerifiedTable> = script
        .digests
        .iter()
        .map(|m| {
            let s = slave.iter().find(|s| s.table == m.table);
            VerifiedTable {
                table: m.table.clone(),
                rows: m.rows,
                checksum: m.checksum.clone(),
                slave_rows: s.map(|s| s.rows),
                slave_checksum: s.map(|s| s.checksum.clone()),
                ok: s == Some(m),
            }
        })
        .collect();
    let bad: Vec<String> = tables
        .iter()
        .filter(|t| !t.ok)
        .map(|t| t.table.clone())
        .collect();
    rep.verify = Some(Verify {
        ok: bad.is_empty(),
        tables,
    });
    if bad.is_empty() {
        return Ok(());
    }
    Err(DbError::Replay(format!(
        "the replay committed, but the slave's tables differ from the dump afterwards \
         (rows or checksum of {}): something wrote to them during the replay, or the \
         nodes' PostgreSQL write values differently; the next run replays again",
        super::digest::list(&bad)
    )))
}

/// The script to ship: `dir/name`, `len` bytes hashing to `hash`.
struct Script<'a> {
    dir: &'a Path,
    name: String,
    hash: [u8; 32],
    len: u64,
    /// What a 2.3 slave gets with the replay request.
    ext: DbReplayExt,
    /// The dump's tables (rows, checksum), to compare the slave's with.
    digests: Vec<TableDigest>,
}

/// A row-level patch from the script in `out/` (what the slave staged last time, if that
/// run got that far) to the new one, written into a temp file of chunk records. `None`
/// when there is no previous script or a patch is not worth it (more than a third of
/// the new script is new lines): the block delta ships it then.
fn prepare_patch(
    work: &Path,
    previous: &Path,
    new: &Path,
    new_len: u64,
) -> Option<(tempfile::NamedTempFile, patch::Made)> {
    let base = std::fs::File::open(previous).ok()?;
    let attempt = || -> std::io::Result<Option<(tempfile::NamedTempFile, patch::Made)>> {
        let new = std::fs::File::open(new)?;
        let mut ops = tempfile::Builder::new()
            .prefix(".patch-")
            .tempfile_in(work)?;
        let mut w = std::io::BufWriter::new(ops.as_file_mut());
        let made = patch::make(&base, &new, new_len / 3, &mut patch::chunk_writer(&mut w))?;
        w.flush()?;
        drop(w);
        Ok(made.map(|m| (ops, m)))
    };
    match attempt() {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(
                "cannot diff the new dump against {}: {e}; shipping it with the block delta",
                previous.display()
            );
            None
        }
    }
}

/// Sends the patch; `Ok(None)` when the slave applied it, `Ok(Some(why))` when it could
/// not (its staged script is not the base, ...), leaving its staged file as it was.
fn send_patch(
    client: &mut Client,
    script: &Script,
    ops: &std::fs::File,
    made: &patch::Made,
) -> Result<Option<String>, DbError> {
    client
        .send(&Msg::DbPatchBegin(DbPatchBegin {
            file: script.name.clone(),
            base: made.base_hash,
            hash: script.hash,
            len: script.len,
        }))
        .map_err(DbError::Peer)?;
    let mut peer_err = None;
    patch::read_chunks(std::io::BufReader::new(ops), |c| {
        client.send(&Msg::DbPatchOps(c.to_vec())).map_err(|e| {
            let msg = e.to_string();
            peer_err = Some(e);
            std::io::Error::other(msg)
        })
    })
    .map_err(|e| match peer_err.take() {
        Some(p) => DbError::Peer(p),
        None => DbError::Local(format!("cannot read the DB patch: {e}")),
    })?;
    match client.request(&Msg::DbPatchEnd).map_err(DbError::Peer)? {
        Msg::DbPatched { ok: true, .. } => Ok(None),
        Msg::DbPatched { message, .. } => Ok(Some(message)),
        m => Err(DbError::Peer(SyncError::Peer(format!(
            "protocol error: the peer answered {} to DbPatchEnd",
            m.name()
        )))),
    }
}

fn ship_and_replay(
    client: &mut Client,
    job: &DbJob,
    script: &Script,
    patch: Option<(tempfile::NamedTempFile, patch::Made)>,
    rep: &mut DbReport,
    t: Instant,
) -> Result<(), DbError> {
    let dir = match client.request(&Msg::DbStage).map_err(DbError::Peer)? {
        Msg::DbStaged { dir } => PathBuf::from(std::ffi::OsStr::from_bytes(&dir)),
        m => {
            return Err(DbError::Peer(SyncError::Peer(format!(
                "protocol error: the peer answered {} to DbStage",
                m.name()
            ))));
        }
    };
    let (sent0, received0) = client.wire_bytes();
    if let Some((ops, made)) = patch.filter(|_| client.peer_minor() >= MINOR_DB_PATCH) {
        let ops = ops
            .reopen()
            .map_err(|e| local("cannot read", ops.path(), e))?;
        match send_patch(client, script, &ops, &made)? {
            None => {
                rep.shipped_as = "patch".into();
                rep.bytes_literal = made.literal;
                rep.bytes_matched = made.copied;
            }
            Some(why) => tracing::info!(
                "the slave could not apply the row-level patch ({why}); \
                 shipping the dump with the block delta instead"
            ),
        }
    }
    if rep.shipped_as.is_empty() {
        let opts = SessionOptions {
            delete: true,
            checksum: true,
            ..Default::default()
        };
        let s = client
            .push(script.dir, &dir, &opts, &mut crate::tree::report::Silent)
            .map_err(DbError::Peer)?;
        rep.shipped_as = "delta".into();
        rep.bytes_literal = s.bytes_literal;
        rep.bytes_matched = s.bytes_matched;
    }
    let (sent, received) = client.wire_bytes();
    rep.bytes_sent = sent - sent0;
    rep.bytes_received = received - received0;
    rep.bytes_on_wire = rep.bytes_sent + rep.bytes_received;
    rep.ship_ms = ms(t);
    let t = Instant::now();
    let req = Msg::DbReplay(replay_request(client, job, script));
    let res = client.request(&req);
    rep.replay_ms = ms(t);
    match res {
        Ok(Msg::DbReplayed {
            verify: v,
            rows_only,
            ..
        }) => {
            rep.replayed_as = if rows_only.is_some() {
                "rows"
            } else {
                "script"
            }
            .into();
            if let Some((d, i)) = rows_only {
                (rep.rows_deleted, rep.rows_inserted) = (d, i);
            }
            verify(script, v, rep)
        }
        Ok(m) => Err(unexpected(&m, "DbReplay")),
        // The slave answered with its psql's failure: a replay error, not a transport one.
        Err(SyncError::Io(msg)) => Err(DbError::Replay(msg)),
        Err(e) => Err(DbError::Peer(e)),
    }
}

/// This node's `\restrict` key for replay scripts (see [`script::write_script`]): made
/// once from the system's random source, kept in the private work directory.
fn restrict_key(work: &Path) -> Result<String, DbError> {
    let p = work.join("restrict-key");
    if let Ok(k) = std::fs::read_to_string(&p) {
        let k = k.trim();
        if k.len() >= 32 && k.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Ok(k.to_string());
        }
    }
    let mut seed = [0u8; 32];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom")
            .map_err(|e| local("cannot open", Path::new("/dev/urandom"), e))?,
        &mut seed,
    )
    .map_err(|e| local("cannot read", Path::new("/dev/urandom"), e))?;
    let key = blake3::hash(&seed).to_hex().to_string();
    let mut tmp = tempfile::Builder::new()
        .prefix(".restrict-key-")
        .tempfile_in(work)
        .map_err(|e| local("cannot create a temp file in", work, e))?;
    tmp.write_all(key.as_bytes())
        .map_err(|e| local("cannot write", tmp.path(), e))?;
    tmp.persist(&p)
        .map_err(|e| local("cannot write", &p, e.error))?;
    Ok(key)
}

/// Only one run of the job at a time on this node (cron and a manual run may overlap).
fn lock(work: &Path) -> Result<std::fs::File, DbError> {
    let p = work.join("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(|e| local("cannot open the lock file", &p, e))?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|_| {
        DbError::Local(format!(
            "another DB replication run holds {}; wait for it to finish",
            p.display()
        ))
    })?;
    Ok(f)
}

struct HashingWriter<W: Write> {
    inner: W,
    hasher: blake3::Hasher,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
