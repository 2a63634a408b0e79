//! Parsers for the config's small string-typed values: durations, schedules, peers,
//! identifiers, probes. Each error is a sentence that says what to write instead; the
//! caller adds file, line and key.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::{Peer, Schedule};

/// Parses `"500ms"`, `"2s"`, `"1m"`, `"1h"`, `"1d"`, or sums of them (`"1m30s"`).
/// A deadline in seconds from a command-line flag, else an environment variable, else
/// `default`: the one parser of `--handshake-timeout`, `--idle-timeout` and their
/// `$HASYNC_*` variables. A value that is not a positive number is an error that names
/// where it came from, never silently replaced by the default.
pub fn deadline_secs(
    flag: Option<f64>,
    flag_name: &str,
    env: &str,
    default: f64,
) -> Result<Duration, String> {
    let (secs, what) = match flag {
        Some(s) => (s, format!("--{flag_name}")),
        None => match std::env::var(env) {
            Ok(v) => (
                v.trim().parse::<f64>().unwrap_or(-1.0),
                format!("{env}={v}"),
            ),
            Err(_) => (default, String::new()),
        },
    };
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{what}: give a positive number of seconds"))
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{s:?} is not a duration (write a whole number and a unit: \"500ms\", \"2s\", \"1m\", \"1h\")"
        )
    };
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Some(Duration::from_millis(n)),
            "s" => Some(Duration::from_secs(n)),
            "m" => n.checked_mul(60).map(Duration::from_secs),
            "h" => n.checked_mul(3600).map(Duration::from_secs),
            "d" => n.checked_mul(86400).map(Duration::from_secs),
            _ => return Err(bad()),
        };
        total = part.and_then(|p| total.checked_add(p)).ok_or_else(bad)?;
    }
    Ok(total)
}

impl FromStr for Schedule {
    type Err = String;

    /// The keywords, or a cron expression checked in full by [`crate::node::schedule::CronExpr`]
    /// (5 fields, 6 with seconds first, or `@hourly`, `@daily`...), which must fire.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hourly" => return Ok(Schedule::Hourly),
            "minutely" => return Ok(Schedule::Minutely),
            "watch" => return Ok(Schedule::Watch),
            "manual" => return Ok(Schedule::Manual),
            _ => {}
        }
        let help = "write \"hourly\", \"minutely\", \"watch\", \"manual\", or a cron expression of 5 or 6 fields such as \"0 * * * *\"";
        let expr: crate::node::schedule::CronExpr = s
            .parse()
            .map_err(|why| format!("{s:?} is not a schedule: {why} ({help})"))?;
        let start = chrono::NaiveDate::from_ymd_opt(2000, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .expect("a valid date");
        if expr.next_naive(start).is_none() {
            return Err(format!(
                "{s:?} never fires (no date matches its day and month fields; {help})"
            ));
        }
        Ok(Schedule::Cron(expr.to_string()))
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Hourly => f.write_str("hourly"),
            Schedule::Minutely => f.write_str("minutely"),
            Schedule::Watch => f.write_str("watch"),
            Schedule::Manual => f.write_str("manual"),
            Schedule::Cron(c) => f.write_str(c),
        }
    }
}

impl FromStr for Peer {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "{s:?} is not a peer: {why} (write \"local\" or [user@]host[:port], e.g. \"root@10.0.0.2\", \"root@[fe80::2]:2222\")"
            )
        };
        if s == "local" {
            return Ok(Peer::Local);
        }
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        if s.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(bad(
                "it has a space or a \"/\" (it names a host, not a path)",
            ));
        }
        let (user, rest) = match s.split_once('@') {
            Some(("", _)) => return Err(bad("the user before \"@\" is empty")),
            Some((u, r)) => (Some(u.to_string()), r),
            None => (None, s),
        };
        if rest.contains('@') {
            return Err(bad("it has more than one \"@\""));
        }
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let Some((addr, after)) = inner.split_once(']') else {
                return Err(bad("\"[\" is not closed by \"]\""));
            };
            if !addr.contains(':') {
                return Err(bad("brackets are for IPv6 addresses"));
            }
            match after {
                "" => (addr, None),
                _ => match after.strip_prefix(':') {
                    Some(p) => (addr, Some(p)),
                    None => return Err(bad("only \":port\" may follow \"]\"")),
                },
            }
        } else if rest.matches(':').count() >= 2 {
            (rest, None) // a bare IPv6 address, no port
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        if let Some(c) = host
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '%')))
        {
            return Err(bad(&format!("the host has the character {c:?}")));
        }
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(bad(&format!("{p:?} is not a port (1-65535)"))),
            },
        };
        Ok(Peer::Ssh {
            user,
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Local => f.write_str("local"),
            Peer::WazoHaConf => f.write_str("remote_address of /etc/xivo/ha.conf"),
            Peer::Ssh { user, host, port } => {
                if let Some(u) = user {
                    write!(f, "{u}@")?;
                }
                match (host.contains(':'), port) {
                    (true, Some(p)) => write!(f, "[{host}]:{p}"),
                    (false, Some(p)) => write!(f, "{host}:{p}"),
                    (_, None) => f.write_str(host),
                }
            }
        }
    }
}

/// `[A-Za-z_][A-Za-z0-9_$]*`: an unquoted SQL identifier.
pub(super) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

/// A table name for `exclude_tables`: `name` or `schema.name`.
pub(super) fn is_table_name(s: &str) -> bool {
    match s.split_once('.') {
        Some((schema, table)) => is_identifier(schema) && is_identifier(table),
        None => is_identifier(s),
    }
}

/// Why `name` is not a valid job name, if it is not.
pub(super) fn job_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("the job name is empty (give it a name such as \"asterisk\")".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Some(format!(
            "{name:?} has the character {c:?} (a job name is used on the command line and in file names: use letters, digits, \"_\", \".\" and \"-\")"
        ));
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Some(format!(
            "{name:?} starts with {:?} (start a job name with a letter or a digit)",
            &name[..1]
        ));
    }
    None
}

/// Why `probe` is not a probe, if it is not.
pub(super) fn probe_problem(probe: &str) -> Option<String> {
    let help =
        "write \"icmp\", \"tcp:PORT\", \"cmd:COMMAND\", or an \"http://\" or \"https://\" URL";
    if probe == "icmp" {
        return None;
    }
    if let Some(cmd) = probe.strip_prefix("cmd:") {
        if cmd.trim().is_empty() {
            return Some(format!("{probe:?} has no command after \"cmd:\" ({help})"));
        }
        return None;
    }
    if let Some(port) = probe.strip_prefix("tcp:") {
        return match port.parse::<u16>() {
            Ok(n) if n > 0 => None,
            _ => Some(format!(
                "{probe:?}: {port:?} is not a port 1-65535 ({help})"
            )),
        };
    }
    for scheme in ["http://", "https://"] {
        if let Some(rest) = probe.strip_prefix(scheme) {
            if rest.is_empty() || rest.starts_with('/') || rest.contains(char::is_whitespace) {
                return Some(format!("{probe:?} is not a URL with a host ({help})"));
            }
            return None;
        }
    }
    Some(format!("{probe:?} is not a probe ({help})"))
}
