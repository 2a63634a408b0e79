//! The slave's side of the DB job, inside `hasync serve`: it hands out its private
//! staging directory (`DbStage`), and replays a staged script into its local database
//! (`DbReplay`) after checking that the file is a plain file inside that directory and
//! that its BLAKE3 hash is the one the master announced. The database, user and socket
//! come from this node's own `[db]` section when it has one; under `serve --restrict`
//! they must (the master never chooses what the slave's psql connects to). A failed
//! replay is answered with psql's own message and leaves the connection usable.
//! The failback guard: a slave that served as master after a failover holds rows its
//! master lacks; while its replicated tables differ from the last time both nodes were
//! known equal, a replay (which would discard them) is refused unless the master's
//! operator asks for it ([`failover_guard`]).
//! It also applies row-level patches to a staged script (`DbPatchBegin`, see
//! [`super::patch`]): into a temp file, checked, then renamed over the staged one.

use super::PgConn;
use crate::wire::Msg;
use crate::wire::db::{DbPatchBegin, DbReplay, TableDigest};
use crate::wire::frame::ProtocolError;
use crate::wire::message::code;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Instant;

/// What `serve` may do for the DB job.
#[derive(Debug, Clone, Default)]
pub struct DbServe {
    /// This node's staging directory (`state_dir/db-staging`).
    pub staging: PathBuf,
    /// This node's own `[db]` connection, if its config has one.
    pub own: Option<PgConn>,
    /// `serve --restrict`: refuse unless `own` is set.
    pub restricted: bool,
    /// Why DB requests are refused outright (e.g. this node's config is unreadable).
    pub refusal: Option<String>,
    /// Set for one request by the role fence of `serve` (this node is, or serves as,
    /// the master): refused with the peer code (exit 3).
    pub fenced: Option<String>,
    /// This node's `state_dir` (its master check's record, for [`failover_guard`]).
    pub node_state: Option<PathBuf>,
    /// The master's protocol minor (what it can read in the answers).
    pub peer_minor: u16,
}

fn error(c: u8, message: String) -> Msg {
    Msg::Error { code: c, message }
}

fn boxed(c: u8, message: String) -> Box<Msg> {
    Box::new(error(c, message))
}

/// Why this peer refuses DB requests, if it does.
fn refused(db: Option<&DbServe>) -> Option<Msg> {
    let Some(db) = db else {
        return Some(error(
            code::USAGE,
            "this peer does not serve DB requests (hasync serve was started without DB support)"
                .into(),
        ));
    };
    if let Some(r) = &db.fenced {
        return Some(error(code::FENCED, r.clone()));
    }
    if let Some(r) = &db.refusal {
        return Some(error(code::USAGE, r.clone()));
    }
    if db.restricted && db.own.is_none() {
        return Some(error(
            code::USAGE,
            "this peer runs `hasync serve --restrict` and its config has no [db] section: \
             add [db] (database, user, host/port) to the slave's config to allow replication"
                .into(),
        ));
    }
    None
}

/// The answer to a DB request (`DbStage` or `DbReplay`); anything else is a usage error.
pub fn answer(req: Msg, db: Option<&DbServe>) -> Msg {
    if let Some(m) = refused(db) {
        return m;
    }
    let db = db.expect("refused() covers None");
    match req {
        Msg::DbStage => match super::private_dir(&db.staging) {
            Ok(()) => Msg::DbStaged {
                dir: db.staging.as_os_str().as_bytes().to_vec(),
            },
            Err(e) => error(
                code::PARTIAL,
                format!(
                    "cannot prepare the DB staging directory {}: {e}",
                    db.staging.display()
                ),
            ),
        },
        Msg::DbReplay(r) => replay(db, &r),
        Msg::DbCheck(r) => check(db, &r),
        m => error(code::USAGE, format!("{} is not a DB request", m.name())),
    }
}

/// The database this replay goes into: this node's own `[db]`; without one, what the
/// master proposes only when it says `[db] master_chooses_slave_db = true` (never
/// under `--restrict`, refused before this).
fn replay_target(db: &DbServe, r: &DbReplay) -> Result<PgConn, Box<Msg>> {
    if let Some(own) = &db.own {
        return Ok(own.clone());
    }
    if !r.ext.as_ref().is_some_and(|x| x.master_chooses) {
        return Err(boxed(
            code::USAGE,
            "this slave's config has no [db] section, so it does not know which database to \
             replay into: add [db] (database, user, host/port) to the slave's config (for a \
             local peer: [node] peer_config on the master), or set [db] \
             master_chooses_slave_db = true on the master to let it choose; nothing was replayed"
                .into(),
        ));
    }
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Ok(PgConn {
        database: r.target.database.clone(),
        user: r.target.user.clone(),
        host: opt(&r.target.host),
        port: (r.target.port != 0).then_some(r.target.port),
        run_as: opt(&r.target.run_as),
        bin_dir: None,
    })
}

/// Refuses a target that is the master's own database (see [`super::identity`]).
fn check_identity(conn: &PgConn, r: &DbReplay) -> Result<(), Box<Msg>> {
    let Some(x) = &r.ext else {
        return Ok(()); // an older master: only this node's own [db] gets here
    };
    match conn.identity() {
        Ok(t) if super::identity::same(&x.source, &t) => {
            Err(boxed(code::PEER, super::identity::refusal(&t, conn)))
        }
        Ok(_) => Ok(()),
        Err(e) => Err(boxed(
            code::PARTIAL,
            format!(
                "cannot tell which database {} is (its identity is compared with the \
                 master's before a replay), nothing was replayed: {}",
                conn.describe(),
                clip(&e.to_string())
            ),
        )),
    }
}

fn replay(db: &DbServe, r: &DbReplay) -> Msg {
    let t0 = Instant::now();
    let conn = match replay_target(db, r) {
        Ok(c) => c,
        Err(m) => return *m,
    };
    // The decoder already refused names with '/', leading '.', or NUL; O_NOFOLLOW
    // refuses a symlink planted in the staging directory.
    let path = db.staging.join(&r.file);
    let open = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path);
    let mut file = match open {
        Ok(f) => f,
        Err(e) => {
            return error(
                code::PARTIAL,
                format!("cannot open the staged dump {}: {e}", path.display()),
            );
        }
    };
    let len = match file.metadata() {
        Ok(md) if md.is_file() => md.len(),
        _ => {
            return error(
                code::PARTIAL,
                format!("{} is not a regular file", path.display()),
            );
        }
    };
    // Held in memory for the incremental replay, up to a size; bigger ones are hashed
    // as they are read and always replayed whole.
    let mut script = Vec::new();
    let mut h = blake3::Hasher::new();
    let read = if len <= super::incremental::MAX_SCRIPT {
        std::io::Read::read_to_end(&mut file, &mut script).map(|_| {
            h.update(&script);
        })
    } else {
        h.update_reader(&mut file).map(|_| ())
    };
    if let Err(e) = read {
        return error(
            code::PARTIAL,
            format!("cannot read {}: {e}", path.display()),
        );
    }
    if h.finalize().as_bytes() != &r.hash {
        return error(
            code::PARTIAL,
            format!(
                "the staged dump {} does not have the content the master sent (BLAKE3 mismatch); \
                 nothing was replayed, run the job again",
                path.display()
            ),
        );
    }
    if let Err(e) = std::io::Seek::rewind(&mut file) {
        return error(
            code::PARTIAL,
            format!("cannot read {}: {e}", path.display()),
        );
    }
    if let Err(m) = check_identity(&conn, r) {
        return *m;
    }
    if let Err(m) = failover_guard(db, &conn, r) {
        return *m;
    }
    let inc = incremental(db, &conn, &script);
    let (rows_only, how) = match &inc {
        Ok(n) => (Some(*n), "rows".to_string()),
        Err(None) => (None, "script".to_string()),
        Err(Some(e)) => (
            None,
            format!(
                "script (the incremental replay was rolled back: {})",
                clip(e)
            ),
        ),
    };
    let done = match rows_only {
        Some(_) => Ok(()),
        None => conn.replay(file),
    };
    match done {
        Ok(()) => match record_replay(db, &conn, r, &script, how) {
            Ok(verify) => Msg::DbReplayed {
                duration_ms: t0.elapsed().as_millis() as u64,
                verify,
                rows_only: rows_only.filter(|_| db.peer_minor >= crate::wire::message::MINOR_ROLES),
            },
            Err(m) => *m,
        },
        Err(e) => error(
            code::PARTIAL,
            format!(
                "replay into {} failed, the transaction was rolled back and the slave's \
                 database is unchanged; {}",
                conn.describe(),
                clip(&super::psql_error::describe(&e.to_string(), &path))
            ),
        ),
    }
}

/// Refuses a replay into a slave that served as master (its master check failed over)
/// after the last time its data and the master's were known equal (its last replay, or
/// its last replay into its peer while it was master), when its replicated tables
/// changed since: the master's dump would discard what it wrote. Nothing is replayed;
/// the message says how to keep the rows or discard them. Older masters (no table
/// list) are not guarded.
fn failover_guard(db: &DbServe, conn: &PgConn, r: &DbReplay) -> Result<(), Box<Msg>> {
    let (Some(dir), Some(x)) = (&db.node_state, &r.ext) else {
        return Ok(());
    };
    let served_ms = crate::node::role::last_transition_ms(dir);
    let rec = super::digest::load(&db.staging).unwrap_or_default();
    if x.overwrite_failover_writes || served_ms == 0 || served_ms / 1000 < rec.replayed_unix {
        return Ok(());
    }
    let now = super::digest::of_database(conn, &x.tables).map_err(|e| {
        boxed(
            code::PARTIAL,
            format!(
                "cannot read the replicated tables of {} (to tell whether it was written during a failover), nothing was replayed: {}",
                conn.describe(),
                clip(&e.to_string())
            ),
        )
    })?;
    let changed = super::digest::differences(&rec.tables, &now);
    if changed.is_empty() && !rec.replayed_hash.is_empty() {
        return Ok(());
    }
    let list = if changed.is_empty() {
        "no replay recorded since".to_string()
    } else {
        let more = changed.len().saturating_sub(5);
        let mut l = changed.into_iter().take(5).collect::<Vec<_>>().join(", ");
        if more > 0 {
            l.push_str(&format!(" and {more} more"));
        }
        format!("changed since the last replay: {l}")
    };
    Err(boxed(
        code::GUARD,
        format!(
            "refused: the database {} on this slave was written while it served as master after a failover ({list}); replaying the master's dump would discard those rows, so nothing was replayed. To keep them, make this node the master until its DB job has replayed them into the other node (`hasync promote` here, `hasync demote` there; docs/master-check.md, failback); to discard them, run `hasync db-replicate --discard-failover-writes` on the master",
            conn.describe()
        ),
    ))
}

/// The private directory (mode 0700: scripts hold the whole database) where this slave
/// keeps the script it replayed last, for the incremental replay, and writes the
/// incremental script: next to the staging directory, which the master mirrors.
fn replayed_dir(staging: &std::path::Path) -> PathBuf {
    staging.with_file_name("db-replayed")
}

fn replayed_copy(staging: &std::path::Path) -> PathBuf {
    replayed_dir(staging).join("last.sql")
}

/// Replays only the rows that changed since the last replay, when this slave's database
/// is known to hold exactly that replay's script ([`super::incremental`] says when).
/// `Err(None)`: not possible; `Err(Some(why))`: it failed and was rolled back. Either
/// way the full replay follows.
fn incremental(db: &DbServe, conn: &PgConn, new: &[u8]) -> Result<(u64, u64), Option<String>> {
    let rec = super::digest::load(&db.staging).ok_or(None)?;
    if new.is_empty() || !rec.equal_to_script || rec.token.is_empty() {
        return Err(None);
    }
    match conn.commit_token() {
        Ok(t) if t == rec.token => {}
        _ => {
            tracing::debug!("db: the slave's cluster was written since its last replay");
            return Err(None);
        }
    }
    let old = std::fs::read(replayed_copy(&db.staging)).map_err(|_| None)?;
    if blake3::hash(&old).to_hex().as_str() != rec.replayed_hash {
        return Err(None);
    }
    let t0 = Instant::now();
    let (sql, deleted, inserted) = super::incremental::script(&old, new).ok_or(None)?;
    let path = replayed_dir(&db.staging).join("incremental.sql");
    let written = std::fs::write(&path, &sql).and_then(|()| std::fs::File::open(&path));
    let res = match written {
        Ok(f) => conn.replay(f).map_err(|e| e.to_string()),
        Err(e) => Err(format!("cannot write {}: {e}", path.display())),
    };
    let _ = std::fs::remove_file(&path);
    match res {
        Ok(()) => {
            tracing::info!(
                "db: replayed the changed rows only ({deleted} deleted, {inserted} inserted, {} ms)",
                t0.elapsed().as_millis()
            );
            Ok((deleted, inserted))
        }
        Err(e) => {
            tracing::warn!("db: the incremental replay was rolled back, full replay instead: {e}");
            Err(Some(e))
        }
    }
}

/// After a replay (for a 2.3 master): the replicated tables as they now are, recorded
/// in `state_dir/db-replica.json` for the drift check, and sent back for the master
/// to compare with its dump.
fn record_replay(
    db: &DbServe,
    conn: &PgConn,
    r: &DbReplay,
    script: &[u8],
    replayed_as: String,
) -> Result<Option<Vec<TableDigest>>, Box<Msg>> {
    let Some(x) = &r.ext else {
        return Ok(None);
    };
    // The commit token right after the commit, before the read-back: a write in
    // between shows in the read-back, one after it moves the token (see
    // super::incremental for why both are needed).
    let token = conn.commit_token().unwrap_or_default();
    let fail = |what: String| {
        boxed(
            code::PARTIAL,
            format!("the replay committed, but {what}; the next run replays again"),
        )
    };
    let tables = super::digest::of_database(conn, &x.tables).map_err(|e| {
        fail(format!(
            "reading back the replicated tables failed: {}",
            clip(&e.to_string())
        ))
    })?;
    let equal_to_script = !script.is_empty()
        && super::incremental::digests(script).is_some_and(|d| {
            let mut d = d;
            let mut t = tables.clone();
            d.sort_by(|a, b| a.table.cmp(&b.table));
            t.sort_by(|a, b| a.table.cmp(&b.table));
            d == t
        });
    let keep = replayed_copy(&db.staging);
    let kept = equal_to_script
        && super::private_dir(&replayed_dir(&db.staging)).is_ok()
        && std::fs::write(&keep, script).is_ok();
    if !kept {
        let _ = std::fs::remove_file(&keep);
    }
    let rec = super::digest::Replica {
        replayed_hash: blake3::Hash::from(r.hash).to_hex().to_string(),
        replayed_unix: super::state::now_unix(),
        tables: tables.clone(),
        token,
        equal_to_script: kept,
        replayed_as,
    };
    super::digest::save(&db.staging, &rec).map_err(|e| {
        fail(format!(
            "recording it in {} failed: {e}",
            super::digest::record_path(&db.staging).display()
        ))
    })?;
    Ok(Some(tables))
}

/// `DbCheck`: the replicated tables now, and whether they changed since the last replay.
fn check(db: &DbServe, r: &DbReplay) -> Msg {
    let conn = match replay_target(db, r) {
        Ok(c) => c,
        Err(m) => return *m,
    };
    let tables = r.ext.as_ref().map(|x| x.tables.as_slice()).unwrap_or(&[]);
    let now = match super::digest::of_database(&conn, tables) {
        Ok(t) => t,
        Err(e) => {
            return error(
                code::PARTIAL,
                format!(
                    "cannot read the replicated tables of {}: {}",
                    conn.describe(),
                    clip(&e.to_string())
                ),
            );
        }
    };
    let rec = super::digest::load(&db.staging).unwrap_or_default();
    Msg::DbChecked {
        changed: rec.replayed_hash.is_empty()
            || !super::digest::differences(&rec.tables, &now).is_empty(),
        replayed_hash: rec.replayed_hash,
        tables: now,
    }
}

/// Applies a row-level patch: reads its `DbPatchOps` frames through `next` up to
/// `DbPatchEnd` (all of them, even after a failure, so the connection stays in step) and
/// answers `DbPatched`. A refusal of DB requests is answered as for the others; a frame
/// that is not part of a patch ends the connection.
pub fn patch(
    begin: DbPatchBegin,
    db: Option<&DbServe>,
    next: &mut dyn FnMut() -> Result<Msg, ProtocolError>,
) -> Result<Msg, ProtocolError> {
    let refusal = refused(db);
    let mut applier = match (&refusal, db) {
        (None, Some(db)) => open_patch(db, &begin),
        _ => Err(String::new()),
    };
    loop {
        match next()? {
            Msg::DbPatchOps(ops) => {
                if let Ok(a) = &mut applier
                    && let Err(e) = a.apply(&ops)
                {
                    applier = Err(e);
                }
            }
            Msg::DbPatchEnd => break,
            m => {
                return Err(ProtocolError::Unexpected(format!(
                    "{} inside a DB patch",
                    m.name()
                )));
            }
        }
    }
    if let Some(m) = refusal {
        return Ok(m);
    }
    let db = db.expect("not refused");
    let res = applier.and_then(|a| a.finish(&db.staging.join(&begin.file)));
    Ok(match res {
        Ok(()) => Msg::DbPatched {
            ok: true,
            message: String::new(),
        },
        Err(e) => Msg::DbPatched {
            ok: false,
            message: clip(&e).to_string(),
        },
    })
}

fn open_patch(db: &DbServe, b: &DbPatchBegin) -> Result<super::patch::Applier, String> {
    let path = db.staging.join(&b.file);
    let base = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| format!("cannot open the staged dump {}: {e}", path.display()))?;
    super::patch::Applier::new(base, &b.base, &db.staging, b.len, b.hash)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// psql can print a lot (one line per failed statement); keep the message well inside a frame.
fn clip(s: &str) -> &str {
    const MAX: usize = 16 * 1024;
    if s.len() <= MAX {
        return s;
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::db::DbTarget;

    fn served(dir: &std::path::Path, restricted: bool, own: bool) -> DbServe {
        DbServe {
            staging: dir.join("db-staging"),
            own: own.then(|| PgConn {
                database: "x".into(),
                user: "nobody".into(),
                bin_dir: Some("/nonexistent".into()),
                ..Default::default()
            }),
            restricted,
            ..Default::default()
        }
    }

    fn req(file: &str, hash: [u8; 32]) -> Msg {
        Msg::DbReplay(DbReplay {
            file: file.into(),
            hash,
            target: DbTarget::default(),
            ext: None,
        })
    }

    fn err_text(m: Msg) -> String {
        match m {
            Msg::Error { message, .. } => message,
            m => panic!("expected an error, got {}", m.name()),
        }
    }

    #[test]
    fn stage_makes_a_private_directory() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let db = served(d.path(), false, false);
        match answer(Msg::DbStage, Some(&db)) {
            Msg::DbStaged { dir } => assert_eq!(dir, db.staging.as_os_str().as_bytes()),
            m => panic!("{}", m.name()),
        }
        let mode = std::fs::metadata(&db.staging).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn restricted_serve_without_its_own_db_section_refuses() {
        let d = tempfile::tempdir().unwrap();
        let db = served(d.path(), true, false);
        assert!(err_text(answer(Msg::DbStage, Some(&db))).contains("no [db] section"));
        assert!(err_text(answer(req("x.sql", [0; 32]), Some(&db))).contains("no [db] section"));
        assert!(!db.staging.exists());
        assert!(err_text(answer(Msg::DbStage, None)).contains("does not serve DB"));
    }

    #[test]
    fn replay_checks_the_hash_and_refuses_symlinks_before_running_psql() {
        let d = tempfile::tempdir().unwrap();
        let db = served(d.path(), true, true);
        super::super::private_dir(&db.staging).unwrap();
        std::fs::write(db.staging.join("x.sql"), b"SELECT 1;\n").unwrap();
        let e = err_text(answer(req("x.sql", [0; 32]), Some(&db)));
        assert!(e.contains("BLAKE3 mismatch"), "{e}");
        std::os::unix::fs::symlink("/etc/passwd", db.staging.join("l.sql")).unwrap();
        let h = *blake3::hash(&std::fs::read("/etc/passwd").unwrap()).as_bytes();
        let e = err_text(answer(req("l.sql", h), Some(&db)));
        assert!(e.contains("cannot open the staged dump"), "{e}");
        // The right hash gets as far as running psql (absent here): its error is reported.
        let h = *blake3::hash(b"SELECT 1;\n").as_bytes();
        let e = err_text(answer(req("x.sql", h), Some(&db)));
        assert!(e.contains("cannot run /nonexistent/psql"), "{e}");
    }

    #[test]
    fn patch_frames_are_drained_when_refused_and_strays_end_the_connection() {
        let d = tempfile::tempdir().unwrap();
        let begin = DbPatchBegin {
            file: "x.sql".into(),
            base: [0; 32],
            hash: [0; 32],
            len: 1,
        };
        // A restricted serve without [db]: every frame up to the end is read, then refused.
        let db = served(d.path(), true, false);
        let mut frames = vec![Msg::DbPatchOps(vec![1, 1, b'a']), Msg::DbPatchEnd].into_iter();
        let ans = patch(begin.clone(), Some(&db), &mut || Ok(frames.next().unwrap())).unwrap();
        assert!(err_text(ans).contains("no [db] section"));
        assert!(frames.next().is_none(), "all frames consumed");
        // No staged base: answered "not applied" (the master falls back), frames drained.
        let db = served(d.path(), false, true);
        super::super::private_dir(&db.staging).unwrap();
        let mut frames = vec![Msg::DbPatchOps(vec![1, 1, b'a']), Msg::DbPatchEnd].into_iter();
        match patch(begin.clone(), Some(&db), &mut || Ok(frames.next().unwrap())).unwrap() {
            Msg::DbPatched { ok, message } => {
                assert!(
                    !ok && message.contains("cannot open the staged dump"),
                    "{message}"
                )
            }
            m => panic!("{}", m.name()),
        }
        // Anything but ops or the end inside a patch ends the connection.
        let mut frames = vec![Msg::DbStage].into_iter();
        assert!(patch(begin, Some(&db), &mut || Ok(frames.next().unwrap())).is_err());
    }
}
