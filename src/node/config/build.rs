//! From text to [`Config`]: TOML syntax (toml_edit, which keeps spans), the shape
//! (serde, `deny_unknown_fields` everywhere), then the meaning (this file), each
//! problem reported at its key's line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml_edit::Document;

use super::error::{self, ConfigError, Diagnostic, KeyOrIndex, describe, locate};
use super::values::parse_duration;
use super::{Config, Daemon, Hooks, Schedule};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node: RawNode,
    #[serde(default)]
    peer: Vec<peers::RawPeer>,
    #[serde(default)]
    sync: Vec<RawSync>,
    db: Option<RawDb>,
    services: Option<RawServices>,
    check_master: Option<RawCheckMaster>,
    #[serde(default)]
    hooks: RawHooks,
    #[serde(default)]
    daemon: RawDaemon,
    cluster: Option<cluster::RawCluster>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    role: Option<String>,
    role_from: Option<String>,
    peer: Option<String>,
    peer_from: Option<String>,
    identity: Option<String>,
    known_hosts: Option<String>,
    remote_path: Option<String>,
    state_dir: Option<String>,
    sentinel_dir: Option<String>,
    root: Option<String>,
    peer_root: Option<String>,
    peer_config: Option<String>,
    timeout: Option<String>,
    compress: Option<NumOrStr>,
    bwlimit: Option<NumOrStr>,
}

/// A value written as a number or a string (`compress = 3` or `"auto"`, `bwlimit =
/// 500` or `"2M"`).
#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr {
    Num(i64),
    Str(String),
}

impl NumOrStr {
    fn text(&self) -> String {
        match self {
            NumOrStr::Num(n) => n.to_string(),
            NumOrStr::Str(s) => s.clone(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSync {
    name: String,
    paths: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    direction: Option<String>,
    delete: Option<bool>,
    checksum: Option<bool>,
    max_delete: Option<u64>,
    schedule: Option<String>,
    allow_empty_source: Option<bool>,
    one_file_system: Option<bool>,
    numeric_ids: Option<bool>,
    jitter: Option<String>,
    safety_pass: Option<String>,
    compress: Option<NumOrStr>,
    bwlimit: Option<NumOrStr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDb {
    kind: String,
    database: String,
    schema: Option<String>,
    #[serde(default)]
    exclude_tables: Vec<String>,
    user: Option<String>,
    schedule: Option<String>,
    min_interval: Option<String>,
    safety_pass: Option<String>,
    with_schema: Option<bool>,
    host: Option<String>,
    port: Option<u16>,
    run_as: Option<String>,
    bin_dir: Option<PathBuf>,
    master_chooses_slave_db: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServices {
    #[serde(default)]
    units: Vec<String>,
    #[serde(default)]
    start: Vec<String>,
    #[serde(default)]
    stop: Vec<String>,
    status: Option<String>,
    timeout: Option<String>,
    keep_going: Option<bool>,
    guard: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheckMaster {
    address: Option<String>,
    probes: Option<Vec<String>>,
    interval: Option<String>,
    timeout: Option<String>,
    fail_after: Option<u32>,
    recover_after: Option<u32>,
    hold_down: Option<String>,
    #[serde(default)]
    witness: Vec<String>,
    mode: Option<String>,
    #[serde(default)]
    copy_back: Vec<String>,
    stop_while_up: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHooks {
    on_failure: Option<String>,
    on_failover: Option<String>,
    on_failback: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    metrics_listen: Option<String>,
    health_listen: Option<String>,
    peer_health: Option<String>,
    timezone: Option<String>,
    retry_min: Option<String>,
    retry_max: Option<String>,
}

/// Builds a path into the document: `at!["sync", i, "paths", j]`.
macro_rules! at {
    ($($seg:expr),* $(,)?) => { &[$(KeyOrIndex::from($seg)),*][..] };
}

impl From<&str> for KeyOrIndex {
    fn from(k: &str) -> Self {
        KeyOrIndex::Key(k.to_string())
    }
}

impl From<usize> for KeyOrIndex {
    fn from(i: usize) -> Self {
        KeyOrIndex::Index(i)
    }
}

pub(super) mod cluster;
mod peers;
mod sections;
use sections::{build_check_master, build_db, build_node, build_services, build_sync};

const DURATION_KEYS: [&str; 9] = [
    "ttl",
    "loop_wait",
    "retry_timeout",
    "interval",
    "timeout",
    "hold_down",
    "jitter",
    "retry_min",
    "retry_max",
];

struct Ctx<'a> {
    doc: Document<&'a str>,
    file: &'a Path,
    /// The config file's directory, for relative paths.
    base: PathBuf,
}

type Res<T> = Result<T, ConfigError>;

impl Ctx<'_> {
    fn err(&self, path: &[KeyOrIndex], message: impl Into<String>) -> ConfigError {
        let (table, key) = describe(&self.doc, path);
        self.at(locate(&self.doc, path), table, key, message.into())
    }

    /// The error for `key` of `table` at (line, column) of this file.
    fn at(
        &self,
        place: Option<(usize, usize)>,
        table: String,
        key: Option<String>,
        message: String,
    ) -> ConfigError {
        let (line, column) = place.unzip();
        ConfigError::Invalid(Box::new(Diagnostic {
            file: self.file.to_path_buf(),
            line,
            column,
            table,
            key,
            message,
        }))
    }

    /// A required key that is absent: reported at its table's header.
    fn missing(&self, table: &[KeyOrIndex], key: &str, message: impl Into<String>) -> ConfigError {
        let mut e = self.err(table, message);
        if let ConfigError::Invalid(d) = &mut e {
            d.key = Some(key.to_string());
        }
        e
    }

    fn line_of(&self, path: &[KeyOrIndex]) -> String {
        match locate(&self.doc, path) {
            Some((line, _)) => format!(", line {line}"),
            None => String::new(),
        }
    }

    fn serde_error(&self, e: toml::de::Error) -> ConfigError {
        let offset = e.span().map(|s| s.start);
        let mut path = offset.map_or_else(Vec::new, |o| error::path_at(&self.doc, o));
        let msg = e.message().trim_end();
        let backticked = |prefix: &str| {
            msg.strip_prefix(prefix)
                .and_then(|m| m.split('`').next())
                .map(str::to_string)
        };
        let (table, key, message) = if let Some(field) = backticked("unknown field `") {
            if path.last() == Some(&KeyOrIndex::Key(field.clone())) {
                path.pop();
            }
            let (table, _) = describe(&self.doc, &path);
            (
                table,
                Some(field),
                format!("{msg} (remove it or correct its spelling)"),
            )
        } else if let Some(field) = backticked("missing field `") {
            let (table, _) = describe(&self.doc, &path);
            let place = if table.is_empty() {
                "the file".to_string()
            } else {
                table.clone()
            };
            let what = match field.as_str() {
                "node" => "a [node] table".to_string(),
                _ => format!("{field} = ..."),
            };
            (table, Some(field), format!("{msg} (add {what} to {place})"))
        } else {
            let (table, key) = describe(&self.doc, &path);
            let hint = if msg.starts_with("invalid type") || msg.starts_with("invalid value") {
                match key.as_deref() {
                    Some(k) if DURATION_KEYS.contains(&k) => {
                        " (a duration is a string with a unit, e.g. \"2s\", \"500ms\")"
                    }
                    _ => " (write the value as in the config sample of INTERFACE.md)",
                }
            } else {
                ""
            };
            (table, key, format!("{msg}{hint}"))
        };
        // A table named in a header is reported at its header, not inside the brackets.
        let header = match &key {
            Some(k) if msg.starts_with("unknown field") => {
                let mut full = path.clone();
                full.push(KeyOrIndex::Key(k.clone()));
                locate(&self.doc, &full)
            }
            _ => None,
        };
        let place = header.or_else(|| offset.map(|o| error::line_col(self.doc.raw(), o)));
        self.at(place, table, key, message)
    }

    fn duration(&self, path: &[KeyOrIndex], raw: Option<&str>, default: Duration) -> Res<Duration> {
        match raw {
            None => Ok(default),
            Some(s) => parse_duration(s).map_err(|m| self.err(path, m)),
        }
    }

    /// `compress` at `path`: `"auto"`, `"off"` or a level.
    fn compress(
        &self,
        path: &[KeyOrIndex],
        raw: Option<&NumOrStr>,
    ) -> Res<Option<super::Compress>> {
        raw.map(|v| super::Compress::parse(&v.text()).map_err(|m| self.err(path, m)))
            .transpose()
    }

    /// `bwlimit` at `path`: rsync's units (a bare number is KiB/s), in bytes/s.
    fn bwlimit(&self, path: &[KeyOrIndex], raw: Option<&NumOrStr>) -> Res<Option<u64>> {
        raw.map(|v| super::parse_rate(&v.text()).map_err(|m| self.err(path, m)))
            .transpose()
    }

    fn nonzero(&self, path: &[KeyOrIndex], d: Duration) -> Res<Duration> {
        if d.is_zero() {
            return Err(self.err(path, "is zero (give it a positive duration such as \"1s\")"));
        }
        Ok(d)
    }

    fn schedule(&self, path: &[KeyOrIndex], raw: Option<&str>, default: Schedule) -> Res<Schedule> {
        match raw {
            None => Ok(default),
            Some(s) => s.parse().map_err(|m: String| self.err(path, m)),
        }
    }

    /// A `[node]` path: relative ones are resolved against the config's directory.
    fn node_path(&self, key: &str, raw: Option<&str>, default: &str) -> Res<PathBuf> {
        let s = raw.unwrap_or(default);
        if s.is_empty() {
            return Err(self.err(
                at!["node", key],
                "is empty (write a path; a relative one is taken from the config file's directory)",
            ));
        }
        let p = Path::new(s);
        Ok(if p.is_absolute() {
            p.to_path_buf()
        } else {
            normalize(&self.base.join(p))
        })
    }

    fn non_empty(&self, path: &[KeyOrIndex], s: &str, what: &str) -> Res<()> {
        if s.trim().is_empty() {
            return Err(self.err(path, format!("is empty (write {what}, or remove the key)")));
        }
        Ok(())
    }
}

pub(super) fn build(text: &str, file: &Path) -> Res<Config> {
    let doc = match Document::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let (line, column) = e.span().map(|s| error::line_col(text, s.start)).unzip();
            return Err(ConfigError::Invalid(Box::new(Diagnostic {
                file: file.to_path_buf(),
                line,
                column,
                table: String::new(),
                key: None,
                message: format!(
                    "TOML syntax error: {} (see https://toml.io; strings need double quotes)",
                    e.message().trim_end()
                ),
            })));
        }
    };
    let ctx = Ctx {
        doc,
        file,
        base: file.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    let raw: RawConfig = toml::from_str(text).map_err(|e| ctx.serde_error(e))?;
    let mut node = build_node(&ctx, raw.node, !raw.peer.is_empty())?;
    let peers = peers::build_peers(&ctx, raw.peer, &mut node)?;
    let sync = build_sync(&ctx, raw.sync)?;
    let db = raw.db.map(|d| build_db(&ctx, d)).transpose()?;
    let services = raw.services.map(|s| build_services(&ctx, s)).transpose()?;
    let check_master = raw
        .check_master
        .map(|c| {
            let wazo =
                node.peer == super::Peer::WazoHaConf || node.role_from.as_deref() == Some("wazo");
            build_check_master(&ctx, c, wazo)
        })
        .transpose()?;
    for (key, value) in [
        ("on_failure", &raw.hooks.on_failure),
        ("on_failover", &raw.hooks.on_failover),
        ("on_failback", &raw.hooks.on_failback),
    ] {
        if let Some(cmd) = value {
            ctx.non_empty(at!["hooks", key], cmd, "a shell command")?;
        }
    }
    Ok(Config {
        path: file.to_path_buf(),
        node,
        peers,
        sync,
        db,
        services,
        check_master,
        hooks: Hooks {
            on_failure: raw.hooks.on_failure,
            on_failover: raw.hooks.on_failover,
            on_failback: raw.hooks.on_failback,
        },
        daemon: build_daemon(&ctx, raw.daemon)?,
        cluster: raw
            .cluster
            .map(|c| cluster::build_cluster(&ctx, c))
            .transpose()?,
    })
}

fn build_daemon(ctx: &Ctx, raw: RawDaemon) -> Res<Daemon> {
    let addrs = [
        ("metrics_listen", &raw.metrics_listen),
        ("health_listen", &raw.health_listen),
        ("peer_health", &raw.peer_health),
    ];
    for (key, value) in addrs {
        if let Some(listen) = value
            && listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(ctx.err(
                at!["daemon", key],
                format!("{listen:?} is not an address and port (write e.g. \"127.0.0.1:9469\" or \"[::1]:9469\")"),
            ));
        }
    }
    use crate::node::schedule::TimeZoneChoice;
    let timezone = match raw.timezone.as_deref() {
        None | Some("utc") | Some("UTC") => TimeZoneChoice::Utc,
        Some("local") => TimeZoneChoice::Local,
        Some(other) => {
            return Err(ctx.err(
                at!["daemon", "timezone"],
                format!("{other:?} is not a time zone choice (write \"utc\", the default, or \"local\" for the system's zone)"),
            ));
        }
    };
    let d = Daemon::default();
    let retry_min = ctx.duration(
        at!["daemon", "retry_min"],
        raw.retry_min.as_deref(),
        d.retry_min,
    )?;
    let retry_min = ctx.nonzero(at!["daemon", "retry_min"], retry_min)?;
    let retry_max = ctx.duration(
        at!["daemon", "retry_max"],
        raw.retry_max.as_deref(),
        d.retry_max,
    )?;
    if retry_max < retry_min {
        return Err(ctx.err(
            at!["daemon", "retry_max"],
            "is shorter than retry_min (the cap must be at least the first delay)",
        ));
    }
    Ok(Daemon {
        metrics_listen: raw.metrics_listen,
        health_listen: raw.health_listen,
        peer_health: raw.peer_health,
        timezone,
        retry_min,
        retry_max,
    })
}

/// Resolve `.` and `..` lexically (`/etc/hasync/../x` -> `/etc/x`), so that a
/// relative path taken from the config file's directory is a plain absolute path.
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c.as_os_str()),
        }
    }
    out
}
