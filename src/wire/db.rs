//! The wire form of the DB job's requests (`DbStage`, `DbReplay`): what the master asks
//! the slave's `serve` to do with a staged dump. The master names a file in the slave's
//! staging directory and its BLAKE3 hash, and proposes connection parameters; the slave
//! may override them with its own `[db]` section (and must, under `serve --restrict`).
//! The script travels either through the sync engine (a block delta) or, when the slave
//! still holds the script the master shipped last time, as a row-level patch against it
//! (`DbPatchBegin`, `DbPatchOps`..., `DbPatchEnd`, see [`crate::db::patch`]).
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

/// Replay the staged dump `file` (a plain file name inside the slave's staging
/// directory) whose content must hash to `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbReplay {
    pub file: String,
    pub hash: [u8; 32],
    pub target: DbTarget,
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
        Ok(DbReplay { file, hash, target })
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
