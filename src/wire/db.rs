//! The wire form of the DB job's requests (`DbStage`, `DbReplay`): what the master asks
//! the slave's `serve` to do with a staged dump. The master names a file in the slave's
//! staging directory and its BLAKE3 hash, and proposes connection parameters; the slave
//! may override them with its own `[db]` section (and must, under `serve --restrict`).
//! The script travels either through the sync engine (a block delta) or, when the slave
//! still holds the script the master shipped last time, as a row-level patch against it
//! (`DbPatchBegin`, `DbPatchOps`..., `DbPatchEnd`, see [`crate::db::patch`]).
//! Since 2.3 a replay request carries [`DbReplayExt`]: the identity of the master's
//! source cluster (the slave refuses to replay into that same database), whether the
//! master may choose the slave's connection, and the replicated tables (the slave
//! checks them after the replay, [`TableDigest`]); `DbCheck` asks the slave whether its
//! data changed since its last replay (drift). Older peers neither send nor get these.
//! Every string is bounded before allocation, like every other message.

use super::frame::{Dec, Enc, ProtocolError, malformed};

/// A patch chunk (`DbPatchOps`) is sent once it holds this many bytes of ops.
pub const PATCH_CHUNK: usize = 768 * 1024;
/// Longest literal op in a patch (a longer run of new lines is split).
pub const PATCH_MAX_LITERAL: usize = 128 * 1024;
/// Largest patch chunk accepted from the wire.
pub const PATCH_CHUNK_MAX: usize = PATCH_CHUNK + PATCH_MAX_LITERAL + 64;

/// Longest database, user or system-user name on the wire.
pub const MAX_NAME: usize = 256;
/// Longest host (socket directory) on the wire.
pub const MAX_HOST: usize = 4096;

/// Where the slave's replay should connect, as the master proposes it. Empty strings and
/// port 0 mean "the default" (libpq's local socket, hasync's own user).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbTarget {
    pub database: String,
    pub user: String,
    pub host: String,
    pub port: u16,
    pub run_as: String,
}

/// Most replicated tables named in one request.
pub const MAX_TABLES: usize = 100_000;
/// Longest qualified table name on the wire.
pub const MAX_TABLE: usize = 1024;

/// Which PostgreSQL database the master dumps: its cluster's system identifier
/// (`pg_control_system()`), its data directory and the database name. The slave refuses
/// a replay whose target has the same identity. 0 / empty: unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DbSource {
    pub system_identifier: u64,
    pub data_directory: String,
    pub database: String,
}

impl DbSource {
    fn encode(&self, e: &mut Enc) {
        e.u64(self.system_identifier)
            .str(&self.data_directory)
            .str(&self.database);
    }
    fn decode(d: &mut Dec) -> Result<DbSource, ProtocolError> {
        Ok(DbSource {
            system_identifier: d.u64("system identifier")?,
            data_directory: d.string(MAX_HOST, "data directory")?,
            database: d.string(MAX_NAME, "database")?,
        })
    }
}

/// What a 2.3 master adds to a replay (and sends in `DbCheck`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbReplayExt {
    pub source: DbSource,
    /// `[db] master_chooses_slave_db = true`: a slave without its own `[db]` (and not
    /// under `serve --restrict`) may replay into the database `target` names.
    pub master_chooses: bool,
    /// The replicated tables, qualified as in the script: checked after the replay.
    pub tables: Vec<String>,
    /// `db-replicate --discard-failover-writes` (2.5, sent only when set): replay even
    /// though the slave's data changed while it served as master after a failover.
    pub overwrite_failover_writes: bool,
}

impl DbReplayExt {
    pub(crate) fn encode(&self, e: &mut Enc) {
        self.source.encode(e);
        e.bool(self.master_chooses);
        e.u32(self.tables.len() as u32);
        for t in &self.tables {
            e.str(t);
        }
        if self.overwrite_failover_writes {
            e.bool(true);
        }
    }
    pub(crate) fn decode(d: &mut Dec) -> Result<DbReplayExt, ProtocolError> {
        let source = DbSource::decode(d)?;
        let master_chooses = d.bool("master chooses")?;
        let n = d.count(MAX_TABLES, 4, "tables")?;
        let mut tables = Vec::with_capacity(n);
        for _ in 0..n {
            tables.push(d.string(MAX_TABLE, "table")?);
        }
        let overwrite_failover_writes = !d.at_end() && d.bool("overwrite failover writes")?;
        Ok(DbReplayExt {
            source,
            master_chooses,
            tables,
            overwrite_failover_writes,
        })
    }
}

/// One replicated table as a node holds it: its rows, and the BLAKE3 of its rows as
/// pg_dump writes them in `COPY` text format, sorted bytewise, each ending in `\n`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableDigest {
    pub table: String,
    pub rows: u64,
    /// Hex BLAKE3.
    pub checksum: String,
}

pub(crate) fn encode_digests(e: &mut Enc, v: &[TableDigest]) {
    e.u32(v.len() as u32);
    for t in v {
        e.str(&t.table).u64(t.rows).str(&t.checksum);
    }
}

pub(crate) fn decode_digests(d: &mut Dec) -> Result<Vec<TableDigest>, ProtocolError> {
    let n = d.count(MAX_TABLES, 16, "table digests")?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(TableDigest {
            table: d.string(MAX_TABLE, "table")?,
            rows: d.u64("rows")?,
            checksum: d.string(64, "checksum")?,
        });
    }
    Ok(v)
}

/// Replay the staged dump `file` (a plain file name inside the slave's staging
/// directory) whose content must hash to `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbReplay {
    pub file: String,
    pub hash: [u8; 32],
    pub target: DbTarget,
    /// Sent by 2.3 masters to 2.3 peers.
    pub ext: Option<DbReplayExt>,
}

impl DbReplay {
    pub(crate) fn encode(&self, e: &mut Enc) {
        e.str(&self.file);
        e.0.extend_from_slice(&self.hash);
        let t = &self.target;
        e.str(&t.database)
            .str(&t.user)
            .str(&t.host)
            .u16(t.port)
            .str(&t.run_as);
        if let Some(x) = &self.ext {
            x.encode(e);
        }
    }

    pub(crate) fn decode(d: &mut Dec) -> Result<DbReplay, ProtocolError> {
        let file = staged_name(d)?;
        let hash = d.fixed::<32>("dump hash")?;
        let target = DbTarget {
            database: d.string(MAX_NAME, "database")?,
            user: d.string(MAX_NAME, "database user")?,
            host: d.string(MAX_HOST, "database host")?,
            port: d.u16("database port")?,
            run_as: d.string(MAX_NAME, "run_as user")?,
        };
        let ext = if d.at_end() {
            None
        } else {
            Some(DbReplayExt::decode(d)?)
        };
        Ok(DbReplay {
            file,
            hash,
            target,
            ext,
        })
    }
}

/// A plain file name inside the staging directory: no `/`, no leading `.`, no NUL.
fn staged_name(d: &mut Dec) -> Result<String, ProtocolError> {
    let file = d.string(255, "staged file name")?;
    if file.is_empty() || file.contains('/') || file.starts_with('.') || file.contains('\0') {
        return Err(malformed(format!(
            "staged file name {file:?} is not a plain file name"
        )));
    }
    Ok(file)
}

/// Start of a row-level patch of the staged script `file`: it applies to the content
/// hashing to `base`, and gives `len` bytes hashing to `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbPatchBegin {
    pub file: String,
    pub base: [u8; 32],
    pub hash: [u8; 32],
    pub len: u64,
}

impl DbPatchBegin {
    pub(crate) fn encode(&self, e: &mut Enc) {
        e.str(&self.file);
        e.0.extend_from_slice(&self.base);
        e.0.extend_from_slice(&self.hash);
        e.u64(self.len);
    }

    pub(crate) fn decode(d: &mut Dec) -> Result<DbPatchBegin, ProtocolError> {
        Ok(DbPatchBegin {
            file: staged_name(d)?,
            base: d.fixed::<32>("base hash")?,
            hash: d.fixed::<32>("patched hash")?,
            len: d.u64("patched length")?,
        })
    }
}
