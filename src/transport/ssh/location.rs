//! Where the peer is: `[user@]host:/dir`, `ssh://[user@]host[:port]/dir`, and
//! the config's `peer = "[user@]host[:port]"`. Also POSIX shell quoting for the
//! command line sent to the peer.

use std::fmt;

/// An SSH peer: who to log in as, where, on which port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// Login name; `None` means the local user name (`$USER`, else `root`).
    pub user: Option<String>,
    /// Host name or address (an IPv6 address without brackets).
    pub host: String,
    /// TCP port (22 unless given).
    pub port: u16,
}

impl SshTarget {
    /// A target on port 22 with the default user.
    pub fn new(host: impl Into<String>) -> Self {
        SshTarget {
            user: None,
            host: host.into(),
            port: 22,
        }
    }

    /// Parses the config's `peer = "[user@]host[:port]"` (or `[v6addr]:port`).
    pub fn parse_peer(s: &str) -> Option<SshTarget> {
        let s = s.trim();
        let (user, hostport) = split_user(s)?;
        let (host, port) = split_host_port(hostport)?;
        Some(SshTarget {
            user,
            host,
            port: port.unwrap_or(22),
        })
    }

    /// The login name: the given one, else `$USER`, else `root`.
    pub fn user_or_default(&self) -> String {
        if let Some(u) = &self.user {
            return u.clone();
        }
        std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "root".to_string())
    }

    /// How this host is named in known_hosts: `host`, or `[host]:port` off port 22.
    pub fn known_hosts_name(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for SshTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        let v6 = self.host.contains(':');
        match (v6, self.port) {
            (false, 22) => write!(f, "{}", self.host),
            (true, 22) => write!(f, "[{}]", self.host),
            (false, p) => write!(f, "{}:{p}", self.host),
            (true, p) => write!(f, "[{}]:{p}", self.host),
        }
    }
}

/// Splits `user@rest`; `None` when the user part is present but empty.
fn split_user(s: &str) -> Option<(Option<String>, &str)> {
    match s.rfind('@') {
        Some(0) => None,
        Some(i) => Some((Some(s[..i].to_string()), &s[i + 1..])),
        None => Some((None, s)),
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        if host.is_empty() {
            return None;
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        return Some((host.to_string(), port));
    }
    let (host, port) = match s.split_once(':') {
        Some((h, p)) => (h, Some(p.parse::<u16>().ok()?)),
        None => (s, None),
    };
    if host.is_empty() || host.contains(['/', ' ', '[', ']']) {
        return None;
    }
    Some((host.to_string(), port))
}

/// Parses a remote location: `[user@]host:/dir`, `[user@][v6addr]:/dir`, or
/// `ssh://[user@]host[:port]/dir` (`ssh://[v6addr]:port/dir`).
///
/// Returns `None` for a local path: one starting with `/` or `.`, or without a
/// `:` before its first `/`. A scp-style remote dir may be relative (to the
/// login's home); an empty one is `.`.
pub fn parse_location(s: &str) -> Option<(SshTarget, String)> {
    if let Some(rest) = s.strip_prefix("ssh://") {
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "."),
        };
        let (user, hostport) = split_user(authority)?;
        let (host, port) = split_host_port(hostport)?;
        return Some((
            SshTarget {
                user,
                host,
                port: port.unwrap_or(22),
            },
            path.to_string(),
        ));
    }
    if s.starts_with('/') || s.starts_with('.') || s.is_empty() {
        return None;
    }
    let colon = s.find(':')?;
    if let Some(slash) = s.find('/')
        && slash < colon
    {
        return None;
    }
    // `[user@][v6]:dir`: the host is bracketed and may itself hold colons.
    let (user, rest) = match s.find('@') {
        Some(at) if at < colon => (Some(&s[..at]), &s[at + 1..]),
        _ => (None, s),
    };
    if user == Some("") {
        return None;
    }
    let (host, dir) = if let Some(inner) = rest.strip_prefix('[') {
        let end = inner.find(']')?;
        let dir = inner[end + 1..].strip_prefix(':')?;
        (&inner[..end], dir)
    } else {
        let (h, d) = rest.split_once(':')?;
        (h, d)
    };
    if host.is_empty() || host.contains(['/', ' ', '[', ']', '@']) {
        return None;
    }
    let dir = if dir.is_empty() { "." } else { dir };
    Some((
        SshTarget {
            user: user.map(str::to_string),
            host: host.to_string(),
            port: 22,
        },
        dir.to_string(),
    ))
}

/// Quotes one word for a POSIX shell (left bare when it is plainly safe).
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./=:,+@%".contains(&b));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The remote command line: `program` verbatim (so `sudo -n hasync` works),
/// then each argument quoted.
pub fn command_line(program: &str, args: &[String]) -> String {
    let mut cmd = program.to_string();
    for a in args {
        cmd.push(' ');
        cmd.push_str(&shell_quote(a));
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(user: Option<&str>, host: &str, port: u16) -> SshTarget {
        SshTarget {
            user: user.map(str::to_string),
            host: host.to_string(),
            port,
        }
    }

    #[test]
    fn scp_style() {
        assert_eq!(
            parse_location("host:/dir"),
            Some((t(None, "host", 22), "/dir".into()))
        );
        assert_eq!(
            parse_location("root@10.0.0.2:/var/lib/x"),
            Some((t(Some("root"), "10.0.0.2", 22), "/var/lib/x".into()))
        );
        assert_eq!(
            parse_location("h:rel/dir"),
            Some((t(None, "h", 22), "rel/dir".into()))
        );
        assert_eq!(parse_location("h:"), Some((t(None, "h", 22), ".".into())));
        assert_eq!(
            parse_location("u@[::1]:/d"),
            Some((t(Some("u"), "::1", 22), "/d".into()))
        );
        assert_eq!(
            parse_location("[fe80::1]:/d"),
            Some((t(None, "fe80::1", 22), "/d".into()))
        );
    }

    #[test]
    fn url_style() {
        assert_eq!(
            parse_location("ssh://h/dir"),
            Some((t(None, "h", 22), "/dir".into()))
        );
        assert_eq!(
            parse_location("ssh://bob@h:2222/a/b"),
            Some((t(Some("bob"), "h", 2222), "/a/b".into()))
        );
        assert_eq!(
            parse_location("ssh://[::1]:2200/d"),
            Some((t(None, "::1", 2200), "/d".into()))
        );
        assert_eq!(
            parse_location("ssh://u@[::1]/d"),
            Some((t(Some("u"), "::1", 22), "/d".into()))
        );
        assert_eq!(
            parse_location("ssh://h"),
            Some((t(None, "h", 22), ".".into()))
        );
        assert_eq!(parse_location("ssh://h:notaport/d"), None);
        assert_eq!(parse_location("ssh:///d"), None);
        assert_eq!(parse_location("ssh://@h/d"), None);
    }

    #[test]
    fn local_paths() {
        for p in [
            "/abs/dir", "./rel", "../up", "rel/dir", "rel/a:b", "dir", "", ".", "/a:b", "./h:x",
        ] {
            assert_eq!(parse_location(p), None, "{p}");
        }
        assert_eq!(parse_location(":/x"), None);
        assert_eq!(parse_location("@h:/x"), None);
    }

    #[test]
    fn peer() {
        assert_eq!(
            SshTarget::parse_peer("root@10.0.0.2"),
            Some(t(Some("root"), "10.0.0.2", 22))
        );
        assert_eq!(SshTarget::parse_peer("h:2222"), Some(t(None, "h", 2222)));
        assert_eq!(
            SshTarget::parse_peer("[::1]:2222"),
            Some(t(None, "::1", 2222))
        );
        assert_eq!(SshTarget::parse_peer("h:x"), None);
        assert_eq!(SshTarget::parse_peer(""), None);
        assert_eq!(t(None, "h", 2222).known_hosts_name(), "[h]:2222");
        assert_eq!(t(None, "h", 22).known_hosts_name(), "h");
        assert_eq!(t(Some("u"), "::1", 2222).to_string(), "u@[::1]:2222");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("abc/d.e"), "abc/d.e");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(
            command_line("hasync", &["serve".into(), "--root".into(), "/a b".into()]),
            "hasync serve --root '/a b'"
        );
    }
}
