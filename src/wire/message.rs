//! hasync's messages and their binary encoding.
//!
//! Each message is one frame: a tag byte, then its fields in a fixed order,
//! encoded with [`Enc`] and decoded with [`Dec`], which bounds every length and
//! count. Decoding never trusts the peer: paths are validated as [`RelPath`],
//! kinds and enums are checked, and trailing bytes are an error.

use super::db::{DbPatchBegin, DbReplay, TableDigest, decode_digests, encode_digests};
use super::frame::{Dec, Enc, ProtocolError, malformed};
use crate::tree::manifest::Entry;
use crate::tree::path::RelPath;
use crate::tree::report::{Item, Stats};

/// Protocol major version: peers with another major refuse each other.
pub const PROTO_MAJOR: u16 = 2;
/// Minor version: additions that older peers of the same major can ignore.
/// 2.1: DB patch messages; 2.2: the compact manifest; 2.3: DB source identity,
/// verification and drift (`DbReplayExt`, `DbCheck`); 2.4: mtimes of any `i64`
/// seconds in the compact manifest, the owner names table (`OwnerNames`), and `Open`'s
/// optional `one_file_system` flag (sent only when set: an older serve refuses trailing
/// bytes); 2.5: the role fence (`Role` after the handshake: each side's role, epoch and
/// failover state) and `Open`'s optional `copy_back` flag; 2.6: `Link` (compression and
/// bandwidth limit of a session) and zstd frames (`wire/compress.rs`); 2.7: the serve
/// sends its `Role` right after `HelloOk`, unasked, and answers the client's `Role` only
/// to refuse it (one round trip fewer per connection); the receiver's `Signing` hint;
/// compressed batches (`Batch`: small frames share one zstd flush).
pub const PROTO_MINOR: u16 = 7;
/// The first minor version that exchanges `Role` after `HelloOk` and reads `copy_back`.
pub const MINOR_ROLES: u16 = 5;
/// The first minor version whose serve sends its `Role` with `HelloOk`, unasked.
pub const MINOR_EAGER_ROLE: u16 = 7;
/// The first minor version that reads compressed batches (`wire/compress.rs`).
pub const MINOR_BATCH: u16 = 7;
/// The first minor version whose sender reads `Signing`.
pub const MINOR_SIGNING: u16 = 7;
/// The first minor version whose serve reads `Link` and compressed frames.
pub const MINOR_COMPRESS: u16 = 6;
/// The first minor version whose serve understands the DB patch messages.
pub const MINOR_DB_PATCH: u16 = 1;
/// The first minor version whose serve understands `DbReplayExt` and `DbCheck`.
pub const MINOR_DB_IDENTITY: u16 = 3;
/// The first minor version whose serve understands `Open`'s `one_file_system`.
pub const MINOR_ONE_FILE_SYSTEM: u16 = 4;
/// First bytes of every session, so a peer that is not hasync is recognised at once.
pub const MAGIC: &[u8; 8] = b"HASYNC\x00\x01";
/// Most entries per manifest frame.
pub const MAX_BATCH: usize = 65_536;
/// Most exclusion patterns in a request.
pub const MAX_EXCLUDES: usize = 10_000;
/// Longest message string (errors, patterns).
pub const MAX_STR: usize = 64 * 1024;
/// Most (id, name) pairs in one `OwnerNames` message.
pub const MAX_NAMES_BATCH: usize = 65_536;
/// Longest user or group name carried.
pub const MAX_OWNER_NAME: usize = 255;
/// The first minor version whose receiver reads `OwnerNames`.
pub const MINOR_OWNER_NAMES: u16 = 4;
/// Largest data chunk in one frame.
pub const MAX_DATA_CHUNK: usize = 1024 * 1024;

/// Which side the server plays in a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerRole {
    /// The server sends its tree (the client pulls).
    Send,
    /// The server receives into its tree (the client pushes).
    Receive,
}

/// Options of one sync session, chosen by the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionOptions {
    pub delete: bool,
    pub checksum: bool,
    pub dry_run: bool,
    /// Mirror uid/gid (only effective when the receiver runs as root).
    pub owners: bool,
    pub allow_empty_source: bool,
    pub max_delete: Option<u64>,
    pub excludes: Vec<String>,
    /// Do not descend into directories of other file systems (rsync's `-x`).
    pub one_file_system: bool,
    /// Owners by number only (`--numeric-ids`): never on the wire, since only the
    /// client's own side acts on it (as sender it sends no `OwnerNames`, as receiver
    /// it ignores them).
    pub numeric_ids: bool,
    /// A copy-back (`promote`/`demote --copy-back`, failback): a merge that never
    /// deletes. A serve lets it through its role fence, and forces `delete` off and
    /// `max_delete` to 0 (protocol 2.5; sent only when set).
    pub copy_back: bool,
}

/// A request to open a session on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    pub role: ServerRole,
    /// Absolute path of the tree on the server.
    pub root: Vec<u8>,
    pub options: SessionOptions,
}

/// What the receiver wants for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// Index of the file in the manifest.
    pub idx: u32,
    /// The signature of the receiver's old copy, if a delta is wanted.
    pub signature: Option<Vec<u8>>,
}

/// Error codes carried by `Error`, chosen to map onto exit codes.
pub mod code {
    pub const PARTIAL: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const PEER: u8 = 3;
    pub const GUARD: u8 = 4;
    /// The role fence refused (2.5; an older peer reads it as a peer error, exit 3 too).
    pub const FENCED: u8 = 5;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Hello {
        major: u16,
        minor: u16,
        software: String,
    },
    HelloOk {
        major: u16,
        minor: u16,
        software: String,
    },
    Open(Open),
    OpenOk,
    /// The role fence (2.5): sent by the client right after `HelloOk`, answered by the
    /// serve with its own (or `Error` when it refuses the client).
    Role(crate::node::role::NodeRole),
    /// A fatal error on the peer: the session (or connection) ends.
    Error {
        code: u8,
        message: String,
    },
    Manifest(Vec<Entry>),
    ManifestEnd {
        count: u64,
        scan_errors: u64,
    },
    /// Names of the uids (`groups` false) or gids (true) that the manifest's entries
    /// use, sent once per session between the manifest batches and `ManifestEnd`
    /// (2.4 receivers; see `sync::owners`). Ids without a name are left out.
    OwnerNames {
        groups: bool,
        names: Vec<(u32, Vec<u8>)>,
    },
    Want(Want),
    WantsEnd,
    FileBegin {
        idx: u32,
        delta: bool,
    },
    Data(Vec<u8>),
    Copy {
        offset: u64,
        len: u64,
    },
    FileEnd {
        size: u64,
        hash: [u8; 32],
    },
    /// The sender could not send the file (vanished, changed, unreadable).
    FileAbort {
        idx: u32,
        reason: String,
    },
    /// The receiver is about to sign its old copy of entry `idx` for a delta (2.7;
    /// receiver -> sender, no answer, a hint): the sender starts reading its own copy
    /// meanwhile, so the two reads overlap instead of following each other.
    Signing {
        idx: u32,
    },
    Item(Item),
    Done(Stats),
    Bye,
    /// How the link is used from the next `Open` on (2.6; client -> serve, just before
    /// `Open`, no answer): `compress` is the zstd level (0: none) of both directions,
    /// `bwlimit` the serve's cap on the bytes it writes (bytes/s, 0: none).
    Link {
        compress: u8,
        bwlimit: u64,
    },
    /// Ask the server for its private DB staging directory (created mode 0700).
    DbStage,
    /// The staging directory's absolute path on the server.
    DbStaged {
        dir: Vec<u8>,
    },
    /// Replay a staged dump into the server's local database (see [`super::db`]).
    DbReplay(DbReplay),
    /// The replay committed; `verify`: the replicated tables as the slave now holds
    /// them (2.3 peers, when asked with `DbReplayExt`).
    DbReplayed {
        duration_ms: u64,
        verify: Option<Vec<TableDigest>>,
        /// (2.5, after `verify`, sent only when set) the slave replayed only the changed
        /// rows: how many it deleted and inserted.
        rows_only: Option<(u64, u64)>,
    },
    /// Has the slave's data changed since its last replay? (2.3; the request names the
    /// script the master would replay, and always carries `ext`.)
    DbCheck(DbReplay),
    /// The slave's answer: `replayed_hash` is the BLAKE3 (hex) of the script of its last
    /// replay (empty: none recorded), `changed` whether its tables differ from what that
    /// replay left, `tables` the tables as it holds them now.
    DbChecked {
        replayed_hash: String,
        changed: bool,
        tables: Vec<TableDigest>,
    },
    /// Start of a row-level patch of a staged dump (then `DbPatchOps`..., `DbPatchEnd`).
    DbPatchBegin(DbPatchBegin),
    /// A chunk of patch ops (see [`crate::db::patch`]).
    DbPatchOps(Vec<u8>),
    DbPatchEnd,
    /// The patch's outcome: `ok`, or why it could not be applied (the staged file is
    /// unchanged; the master then ships the script with the sync engine).
    DbPatched {
        ok: bool,
        message: String,
    },
}

pub(crate) mod tag {
    pub const HELLO: u8 = 1;
    pub const HELLO_OK: u8 = 2;
    pub const OPEN: u8 = 3;
    pub const OPEN_OK: u8 = 4;
    /// The role fence (protocol 2.5).
    pub const ROLE: u8 = 60;
    pub const ERROR: u8 = 5;
    pub const MANIFEST: u8 = 10;
    pub const MANIFEST_END: u8 = 11;
    /// The manifest in its compact encoding (protocol 2.2, see `manifest_wire`).
    pub const MANIFEST_COMPACT: u8 = 14;
    /// The names of the manifest's owners (protocol 2.4).
    pub const OWNER_NAMES: u8 = 15;
    pub const WANT: u8 = 12;
    pub const WANTS_END: u8 = 13;
    /// 2.7.
    pub const SIGNING: u8 = 16;
    pub const FILE_BEGIN: u8 = 20;
    pub const DATA: u8 = 21;
    pub const COPY: u8 = 22;
    pub const FILE_END: u8 = 23;
    pub const FILE_ABORT: u8 = 24;
    pub const ITEM: u8 = 30;
    pub const DONE: u8 = 31;
    pub const BYE: u8 = 40;
    /// Compression and bandwidth of the sessions to come (protocol 2.6); 71 is a
    /// compressed frame (`wire/compress.rs`).
    pub const LINK: u8 = 70;
    pub const DB_STAGE: u8 = 50;
    pub const DB_STAGED: u8 = 51;
    pub const DB_REPLAY: u8 = 52;
    pub const DB_REPLAYED: u8 = 53;
    pub const DB_PATCH_BEGIN: u8 = 54;
    pub const DB_PATCH_OPS: u8 = 55;
    pub const DB_PATCH_END: u8 = 56;
    pub const DB_PATCHED: u8 = 57;
    pub const DB_CHECK: u8 = 58;
    pub const DB_CHECKED: u8 = 59;
}

impl Msg {
    /// A short name for error messages ("unexpected Data").
    pub fn name(&self) -> &'static str {
        match self {
            Msg::Hello { .. } => "Hello",
            Msg::HelloOk { .. } => "HelloOk",
            Msg::Open(_) => "Open",
            Msg::OpenOk => "OpenOk",
            Msg::Role(_) => "Role",
            Msg::Error { .. } => "Error",
            Msg::Manifest(_) => "Manifest",
            Msg::ManifestEnd { .. } => "ManifestEnd",
            Msg::OwnerNames { .. } => "OwnerNames",
            Msg::Want(_) => "Want",
            Msg::WantsEnd => "WantsEnd",
            Msg::FileBegin { .. } => "FileBegin",
            Msg::Data(_) => "Data",
            Msg::Copy { .. } => "Copy",
            Msg::FileEnd { .. } => "FileEnd",
            Msg::FileAbort { .. } => "FileAbort",
            Msg::Item(_) => "Item",
            Msg::Done(_) => "Done",
            Msg::Bye => "Bye",
            Msg::Link { .. } => "Link",
            Msg::Signing { .. } => "Signing",
            Msg::DbStage => "DbStage",
            Msg::DbStaged { .. } => "DbStaged",
            Msg::DbReplay(_) => "DbReplay",
            Msg::DbReplayed { .. } => "DbReplayed",
            Msg::DbCheck(_) => "DbCheck",
            Msg::DbChecked { .. } => "DbChecked",
            Msg::DbPatchBegin(_) => "DbPatchBegin",
            Msg::DbPatchOps(_) => "DbPatchOps",
            Msg::DbPatchEnd => "DbPatchEnd",
            Msg::DbPatched { .. } => "DbPatched",
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut e;
        match self {
            Msg::Hello {
                major,
                minor,
                software,
            }
            | Msg::HelloOk {
                major,
                minor,
                software,
            } => {
                e = Enc::tag(if matches!(self, Msg::Hello { .. }) {
                    tag::HELLO
                } else {
                    tag::HELLO_OK
                });
                e.0.extend_from_slice(MAGIC);
                e.u16(*major).u16(*minor).str(software);
            }
            Msg::Open(o) => {
                e = Enc::tag(tag::OPEN);
                e.u8(match o.role {
                    ServerRole::Send => 0,
                    ServerRole::Receive => 1,
                })
                .bytes(&o.root);
                let s = &o.options;
                e.bool(s.delete)
                    .bool(s.checksum)
                    .bool(s.dry_run)
                    .bool(s.owners)
                    .bool(s.allow_empty_source);
                e.bool(s.max_delete.is_some())
                    .u64(s.max_delete.unwrap_or(0));
                e.u32(s.excludes.len() as u32);
                for x in &s.excludes {
                    e.str(x);
                }
                if s.one_file_system || s.copy_back {
                    e.bool(s.one_file_system);
                }
                if s.copy_back {
                    e.bool(true);
                }
            }
            Msg::OpenOk => e = Enc::tag(tag::OPEN_OK),
            Msg::Role(r) => {
                e = Enc::tag(tag::ROLE);
                encode_role(&mut e, r);
            }
            Msg::Error { code, message } => {
                e = Enc::tag(tag::ERROR);
                e.u8(*code).str(message);
            }
            Msg::Manifest(entries) => {
                return super::manifest_wire::encode(entries, super::manifest_wire::Form::Compact);
            }
            Msg::ManifestEnd { count, scan_errors } => {
                e = Enc::tag(tag::MANIFEST_END);
                e.u64(*count).u64(*scan_errors);
            }
            Msg::OwnerNames { groups, names } => {
                e = Enc::tag(tag::OWNER_NAMES);
                e.bool(*groups).u32(names.len() as u32);
                for (id, name) in names {
                    e.u32(*id).bytes(name);
                }
            }
            Msg::Want(w) => {
                e = Enc::tag(tag::WANT);
                e.u32(w.idx).bool(w.signature.is_some());
                if let Some(s) = &w.signature {
                    e.bytes(s);
                }
            }
            Msg::WantsEnd => e = Enc::tag(tag::WANTS_END),
            Msg::FileBegin { idx, delta } => {
                e = Enc::tag(tag::FILE_BEGIN);
                e.u32(*idx).bool(*delta);
            }
            Msg::Data(d) => {
                e = Enc::tag(tag::DATA);
                e.0.extend_from_slice(d);
            }
            Msg::Copy { offset, len } => {
                e = Enc::tag(tag::COPY);
                e.u64(*offset).u64(*len);
            }
            Msg::FileEnd { size, hash } => {
                e = Enc::tag(tag::FILE_END);
                e.u64(*size);
                e.0.extend_from_slice(hash);
            }
            Msg::FileAbort { idx, reason } => {
                e = Enc::tag(tag::FILE_ABORT);
                e.u32(*idx).str(reason);
            }
            Msg::Item(it) => {
                e = Enc::tag(tag::ITEM);
                e.str(&it.code).bytes(it.path.as_bytes()).bytes(&it.target);
                e.bool(it.error.is_some())
                    .str(it.error.as_deref().unwrap_or(""));
            }
            Msg::Done(s) => {
                e = Enc::tag(tag::DONE);
                for v in s.counters() {
                    e.u64(v);
                }
            }
            Msg::Bye => e = Enc::tag(tag::BYE),
            Msg::Signing { idx } => {
                e = Enc::tag(tag::SIGNING);
                e.u32(*idx);
            }
            Msg::Link { compress, bwlimit } => {
                e = Enc::tag(tag::LINK);
                e.u8(*compress).u64(*bwlimit);
            }
            Msg::DbStage => e = Enc::tag(tag::DB_STAGE),
            Msg::DbStaged { dir } => {
                e = Enc::tag(tag::DB_STAGED);
                e.bytes(dir);
            }
            Msg::DbReplay(r) => {
                e = Enc::tag(tag::DB_REPLAY);
                r.encode(&mut e);
            }
            Msg::DbReplayed {
                duration_ms,
                verify,
                rows_only,
            } => {
                e = Enc::tag(tag::DB_REPLAYED);
                e.u64(*duration_ms);
                if let Some(v) = verify {
                    encode_digests(&mut e, v);
                    if let Some((deleted, inserted)) = rows_only {
                        e.u64(*deleted).u64(*inserted);
                    }
                }
            }
            Msg::DbCheck(r) => {
                e = Enc::tag(tag::DB_CHECK);
                r.encode(&mut e);
            }
            Msg::DbChecked {
                replayed_hash,
                changed,
                tables,
            } => {
                e = Enc::tag(tag::DB_CHECKED);
                e.str(replayed_hash).bool(*changed);
                encode_digests(&mut e, tables);
            }
            Msg::DbPatchBegin(b) => {
                e = Enc::tag(tag::DB_PATCH_BEGIN);
                b.encode(&mut e);
            }
            Msg::DbPatchOps(ops) => {
                e = Enc::tag(tag::DB_PATCH_OPS);
                e.bytes(ops);
            }
            Msg::DbPatchEnd => e = Enc::tag(tag::DB_PATCH_END),
            Msg::DbPatched { ok, message } => {
                e = Enc::tag(tag::DB_PATCHED);
                e.bool(*ok).str(message);
            }
        }
        e.0
    }

    pub fn decode(buf: &[u8]) -> Result<Msg, ProtocolError> {
        let mut d = Dec::new(buf);
        let t = d.u8("message tag")?;
        let msg = match t {
            tag::HELLO | tag::HELLO_OK => {
                let magic = d.fixed::<8>("magic")?;
                if &magic != MAGIC {
                    return Err(malformed("the peer is not speaking hasync's protocol"));
                }
                let major = d.u16("major")?;
                let minor = d.u16("minor")?;
                let software = d.string(256, "software")?;
                if t == tag::HELLO {
                    Msg::Hello {
                        major,
                        minor,
                        software,
                    }
                } else {
                    Msg::HelloOk {
                        major,
                        minor,
                        software,
                    }
                }
            }
            tag::OPEN => decode_open(&mut d)?,
            tag::OPEN_OK => Msg::OpenOk,
            tag::ROLE => Msg::Role(decode_role(&mut d)?),
            tag::ERROR => Msg::Error {
                code: d.u8("code")?,
                message: d.string(MAX_STR, "error")?,
            },
            tag::MANIFEST | tag::MANIFEST_COMPACT => Msg::Manifest(super::manifest_wire::decode(
                &mut d,
                t == tag::MANIFEST_COMPACT,
                MAX_BATCH,
            )?),
            tag::MANIFEST_END => Msg::ManifestEnd {
                count: d.u64("count")?,
                scan_errors: d.u64("scan errors")?,
            },
            tag::OWNER_NAMES => decode_owner_names(&mut d)?,
            tag::WANT => {
                let idx = d.u32("index")?;
                let signature = if d.bool("has signature")? {
                    Some(d.bytes(super::frame::MAX_FRAME, "signature")?.to_vec())
                } else {
                    None
                };
                Msg::Want(Want { idx, signature })
            }
            tag::WANTS_END => Msg::WantsEnd,
            tag::FILE_BEGIN => Msg::FileBegin {
                idx: d.u32("index")?,
                delta: d.bool("delta")?,
            },
            tag::DATA => {
                let rest = d.rest();
                if rest.len() > MAX_DATA_CHUNK {
                    return Err(malformed("data chunk too large"));
                }
                Msg::Data(rest.to_vec())
            }
            tag::COPY => Msg::Copy {
                offset: d.u64("offset")?,
                len: d.u64("length")?,
            },
            tag::FILE_END => Msg::FileEnd {
                size: d.u64("size")?,
                hash: d.fixed::<32>("hash")?,
            },
            tag::FILE_ABORT => Msg::FileAbort {
                idx: d.u32("index")?,
                reason: d.string(MAX_STR, "reason")?,
            },
            tag::ITEM => {
                let code = d.string(16, "item code")?;
                let path = RelPath::from_wire(d.bytes(crate::tree::path::MAX_PATH, "item path")?)
                    .map_err(|e| malformed(format!("item path: {e}")))?;
                let target = d
                    .bytes(crate::tree::path::MAX_PATH, "item target")?
                    .to_vec();
                let has_err = d.bool("item error")?;
                let err = d.string(MAX_STR, "item error")?;
                Msg::Item(Item {
                    code,
                    path,
                    target,
                    error: has_err.then_some(err),
                })
            }
            tag::DONE => {
                let mut vals = [0u64; Stats::N_COUNTERS];
                for v in vals.iter_mut() {
                    *v = d.u64("stats")?;
                }
                Msg::Done(Stats::from_counters(vals))
            }
            tag::BYE => Msg::Bye,
            tag::SIGNING => Msg::Signing { idx: d.u32("idx")? },
            tag::LINK => {
                let compress = d.u8("compress")?;
                if compress as i32 > super::compress::MAX_LEVEL {
                    return Err(malformed(format!("Link: bad compression level {compress}")));
                }
                Msg::Link {
                    compress,
                    bwlimit: d.u64("bwlimit")?,
                }
            }
            tag::DB_STAGE => Msg::DbStage,
            tag::DB_STAGED => Msg::DbStaged {
                dir: d
                    .bytes(crate::tree::path::MAX_PATH, "staging dir")?
                    .to_vec(),
            },
            tag::DB_REPLAY => Msg::DbReplay(DbReplay::decode(&mut d)?),
            tag::DB_REPLAYED => {
                let duration_ms = d.u64("duration")?;
                let verify = if d.at_end() {
                    None
                } else {
                    Some(decode_digests(&mut d)?)
                };
                let rows_only = if d.at_end() {
                    None
                } else {
                    Some((d.u64("rows deleted")?, d.u64("rows inserted")?))
                };
                Msg::DbReplayed {
                    duration_ms,
                    verify,
                    rows_only,
                }
            }
            tag::DB_CHECK => Msg::DbCheck(DbReplay::decode(&mut d)?),
            tag::DB_CHECKED => Msg::DbChecked {
                replayed_hash: d.string(64, "replayed hash")?,
                changed: d.bool("changed")?,
                tables: decode_digests(&mut d)?,
            },
            tag::DB_PATCH_BEGIN => Msg::DbPatchBegin(DbPatchBegin::decode(&mut d)?),
            tag::DB_PATCH_OPS => {
                Msg::DbPatchOps(d.bytes(super::db::PATCH_CHUNK_MAX, "patch ops")?.to_vec())
            }
            tag::DB_PATCH_END => Msg::DbPatchEnd,
            tag::DB_PATCHED => Msg::DbPatched {
                ok: d.bool("patch outcome")?,
                message: d.string(MAX_STR, "patch message")?,
            },
            t => return Err(malformed(format!("unknown message tag {t}"))),
        };
        d.end(msg.name())?;
        Ok(msg)
    }
}

/// The body of an `OwnerNames` message: each name non-empty, without NUL, '/' or
/// ':', at most [`MAX_OWNER_NAME`] bytes.
fn decode_owner_names(d: &mut Dec) -> Result<Msg, ProtocolError> {
    let groups = d.bool("owner table")?;
    let n = d.count(MAX_NAMES_BATCH, 4 + 4 + 1, "owner names")?;
    let mut names = Vec::with_capacity(n);
    for _ in 0..n {
        let id = d.u32("owner id")?;
        let name = d.bytes(MAX_OWNER_NAME, "owner name")?;
        if name.is_empty() || name.iter().any(|b| matches!(b, 0 | b'/' | b':' | b'\n')) {
            return Err(malformed(format!(
                "owner name {} of id {id} is empty or has a NUL, '/', ':' or newline",
                crate::tree::path::escape_bytes(name)
            )));
        }
        names.push((id, name.to_vec()));
    }
    Ok(Msg::OwnerNames { groups, names })
}

/// The body of an `Open` message (after its tag).
fn decode_open(d: &mut Dec) -> Result<Msg, ProtocolError> {
    let role = match d.u8("role")? {
        0 => ServerRole::Send,
        1 => ServerRole::Receive,
        r => return Err(malformed(format!("bad role {r}"))),
    };
    let root = d.bytes(crate::tree::path::MAX_PATH, "root")?.to_vec();
    let delete = d.bool("delete")?;
    let checksum = d.bool("checksum")?;
    let dry_run = d.bool("dry_run")?;
    let owners = d.bool("owners")?;
    let allow_empty_source = d.bool("allow_empty_source")?;
    let has_max = d.bool("max_delete")?;
    let max = d.u64("max_delete")?;
    let n = d.count(MAX_EXCLUDES, 4, "excludes")?;
    let mut excludes = Vec::with_capacity(n);
    for _ in 0..n {
        excludes.push(d.string(4096, "exclude")?);
    }
    let one_file_system = !d.at_end() && d.bool("one_file_system")?;
    let copy_back = !d.at_end() && d.bool("copy_back")?;
    Ok(Msg::Open(Open {
        role,
        root,
        options: SessionOptions {
            delete,
            checksum,
            dry_run,
            owners,
            allow_empty_source,
            max_delete: has_max.then_some(max),
            excludes,
            one_file_system,
            numeric_ids: false,
            copy_back,
        },
    }))
}

fn encode_role(e: &mut Enc, r: &crate::node::role::NodeRole) {
    use crate::node::config::Role;
    use crate::node::role::RoleSource as S;
    e.u8(match r.role {
        None => 0,
        Some(Role::Master) => 1,
        Some(Role::Slave) => 2,
        Some(Role::Disabled) => 3,
    });
    e.u8(match r.source {
        None => 0,
        Some(S::RoleFile) => 1,
        Some(S::Config) => 2,
        Some(S::HaConf) => 3,
        Some(S::Sentinels) => 4,
        Some(S::Default) => 5,
    });
    e.bool(r.failed_over).u64(r.epoch).str(&r.node);
}

fn decode_role(d: &mut Dec) -> Result<crate::node::role::NodeRole, ProtocolError> {
    use crate::node::config::Role;
    use crate::node::role::RoleSource as S;
    let role = match d.u8("role")? {
        0 => None,
        1 => Some(Role::Master),
        2 => Some(Role::Slave),
        3 => Some(Role::Disabled),
        r => return Err(malformed(format!("bad node role {r}"))),
    };
    let source = match d.u8("role source")? {
        0 => None,
        1 => Some(S::RoleFile),
        2 => Some(S::Config),
        3 => Some(S::HaConf),
        4 => Some(S::Sentinels),
        5 => Some(S::Default),
        r => return Err(malformed(format!("bad role source {r}"))),
    };
    Ok(crate::node::role::NodeRole {
        role,
        source,
        failed_over: d.bool("failed_over")?,
        epoch: d.u64("epoch")?,
        node: d.string(256, "node name")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::manifest::Kind;

    fn roundtrip(m: Msg) {
        let bytes = m.encode();
        assert_eq!(Msg::decode(&bytes).unwrap(), m);
        // Every strict prefix is refused, never a panic.
        for cut in 0..bytes.len() {
            let _ = Msg::decode(&bytes[..cut]);
        }
    }

    #[test]
    fn messages_round_trip() {
        roundtrip(Msg::Hello {
            major: 1,
            minor: 0,
            software: "hasync 0.1".into(),
        });
        roundtrip(Msg::Open(Open {
            role: ServerRole::Receive,
            root: b"/srv/x".to_vec(),
            options: SessionOptions {
                delete: true,
                max_delete: Some(5),
                excludes: vec!["*.swp".into()],
                ..Default::default()
            },
        }));
        roundtrip(Msg::Open(Open {
            role: ServerRole::Send,
            root: b"/srv/x".to_vec(),
            options: SessionOptions {
                one_file_system: true,
                ..Default::default()
            },
        }));
        roundtrip(Msg::Open(Open {
            role: ServerRole::Receive,
            root: b"/srv/x".to_vec(),
            options: SessionOptions {
                copy_back: true,
                ..Default::default()
            },
        }));
        roundtrip(Msg::Role(crate::node::role::NodeRole {
            role: Some(crate::node::config::Role::Master),
            source: Some(crate::node::role::RoleSource::HaConf),
            failed_over: true,
            epoch: 7,
            node: "node-a".into(),
        }));
        roundtrip(Msg::Role(crate::node::role::unknown_node()));
        roundtrip(Msg::Manifest(vec![Entry {
            path: RelPath::from_wire(b"a/b").unwrap(),
            kind: Kind::Symlink,
            size: 0,
            mtime: crate::tree::manifest::Mtime::from_nanos(-5),
            mode: 0o777,
            uid: 1,
            gid: 2,
            target: b"../x".to_vec(),
            hash: Some([7; 32]),
        }]));
        roundtrip(Msg::OwnerNames {
            groups: true,
            names: vec![(0, b"root".to_vec()), (998, b"wazo-auth".to_vec())],
        });
        for bad in [&b""[..], b"a/b", b"a:b", b"a\0"] {
            let m = Msg::OwnerNames {
                groups: false,
                names: vec![(5, bad.to_vec())],
            };
            assert!(Msg::decode(&m.encode()).is_err(), "{bad:?} accepted");
        }
        roundtrip(Msg::Want(Want {
            idx: 3,
            signature: Some(vec![1, 2, 3]),
        }));
        roundtrip(Msg::Data(vec![9; 100]));
        roundtrip(Msg::FileEnd {
            size: 5,
            hash: [1; 32],
        });
        roundtrip(Msg::Done(Stats::default()));
    }

    #[test]
    fn db_messages_round_trip_and_bad_names_are_refused() {
        use crate::wire::db::{DbReplayExt, DbTarget};
        roundtrip(Msg::DbStage);
        roundtrip(Msg::DbStaged {
            dir: b"/var/lib/hasync/db-staging".to_vec(),
        });
        roundtrip(Msg::DbReplayed {
            duration_ms: 12,
            verify: None,
            rows_only: None,
        });
        let digests = vec![TableDigest {
            table: "public.users".into(),
            rows: 3,
            checksum: "ab".repeat(32),
        }];
        roundtrip(Msg::DbReplayed {
            duration_ms: 12,
            verify: Some(digests.clone()),
            rows_only: None,
        });
        roundtrip(Msg::DbReplayed {
            duration_ms: 12,
            verify: Some(digests.clone()),
            rows_only: Some((1, 2)),
        });
        let ext = DbReplayExt {
            source: crate::wire::db::DbSource {
                system_identifier: 7,
                data_directory: "/var/lib/postgresql/15/main".into(),
                database: "asterisk".into(),
            },
            master_chooses: true,
            tables: vec!["public.users".into()],
            overwrite_failover_writes: true,
        };
        roundtrip(Msg::DbCheck(DbReplay {
            file: "asterisk.sql".into(),
            hash: [4; 32],
            target: Default::default(),
            ext: Some(ext.clone()),
        }));
        roundtrip(Msg::DbChecked {
            replayed_hash: "cd".repeat(32),
            changed: true,
            tables: digests,
        });
        roundtrip(Msg::DbPatchBegin(DbPatchBegin {
            file: "asterisk.sql".into(),
            base: [1; 32],
            hash: [2; 32],
            len: 1 << 40,
        }));
        roundtrip(Msg::DbPatchOps(vec![0, 1, 2]));
        roundtrip(Msg::DbPatchEnd);
        roundtrip(Msg::DbPatched {
            ok: false,
            message: "base differs".into(),
        });
        let mut e = Enc::tag(tag::DB_PATCH_BEGIN);
        e.str("../x.sql");
        assert!(
            Msg::decode(&e.0).is_err(),
            "patch of a path outside staging"
        );
        let good = DbReplay {
            file: "asterisk.sql".into(),
            hash: [3; 32],
            target: DbTarget {
                database: "asterisk".into(),
                user: "postgres".into(),
                host: "/run/postgresql".into(),
                port: 5432,
                run_as: String::new(),
            },
            ext: None,
        };
        roundtrip(Msg::DbReplay(good.clone()));
        roundtrip(Msg::DbReplay(DbReplay {
            ext: Some(ext),
            ..good.clone()
        }));
        for bad in ["../x.sql", "a/b", ".hidden", ""] {
            let m = Msg::DbReplay(DbReplay {
                file: bad.into(),
                ..good.clone()
            });
            assert!(Msg::decode(&m.encode()).is_err(), "{bad:?} accepted");
        }
        // A huge declared name length is refused before allocation.
        let mut e = Enc::tag(tag::DB_REPLAY);
        e.u32(u32::MAX);
        assert!(Msg::decode(&e.0).is_err());
    }

    #[test]
    fn hostile_manifest_paths_are_refused() {
        for bad in [&b"../x"[..], b"/etc/x", b"a/../../x", b"a\0b"] {
            let mut e = Enc::tag(tag::MANIFEST);
            e.u32(1)
                .bytes(bad)
                .u8(0)
                .u64(0)
                .i64(0)
                .u32(0o644)
                .u32(0)
                .u32(0)
                .bytes(b"")
                .bool(false);
            assert!(Msg::decode(&e.0).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn huge_counts_are_refused_before_allocation() {
        let mut e = Enc::tag(tag::MANIFEST);
        e.u32(u32::MAX);
        assert!(Msg::decode(&e.0).is_err());
    }
}
