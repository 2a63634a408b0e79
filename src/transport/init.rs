//! `hasync init`: give this node its SSH key, pin the peer's host key, and
//! install the key on the peer restricted to `hasync serve --restrict`.
//!
//! Idempotent: a second run changes nothing. `force` rotates the key and
//! replaces the peer's hasync line instead of adding another one.

use crate::transport::ssh::{
    Auth, SshError, SshOptions, SshSession, SshTarget, load_identity, shell_quote,
};
use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey};
use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `hasync init` needs; the CLI fills it from flags and the config.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The peer to install the key on.
    pub target: SshTarget,
    /// This node's hasync private key (created if missing; `.pub` beside it).
    pub identity: PathBuf,
    /// hasync's pinned host keys.
    pub known_hosts: PathBuf,
    /// The peer account's password (prompted on a TTY, or from a file/env: the CLI decides).
    /// `None`: authenticate with ssh-agent or ~/.ssh/id_* (never with the restricted hasync key).
    pub password: Option<String>,
    /// Rotate the key and replace the peer's hasync line.
    pub force: bool,
    /// Where hasync lives on the peer (goes into the forced command).
    pub remote_path: String,
    /// Extra arguments of the forced `hasync serve --restrict ...` (e.g. allowed roots).
    pub restrict_args: Vec<String>,
    /// Deadline for connecting (and for the remote edit).
    pub timeout: Duration,
}

impl InitOptions {
    /// Options with the defaults for the rest (no password, no force, `hasync`, 10 s).
    pub fn new(target: SshTarget, identity: PathBuf, known_hosts: PathBuf) -> Self {
        InitOptions {
            target,
            identity,
            known_hosts,
            password: None,
            force: false,
            remote_path: "hasync".into(),
            restrict_args: Vec::new(),
            timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAction {
    Created,
    Kept,
    Rotated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyAction {
    Pinned,
    AlreadyPinned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineAction {
    Added,
    Present,
    Replaced,
}

/// What `run_init` did.
#[derive(Debug, Clone)]
pub struct InitReport {
    pub key: KeyAction,
    pub key_path: PathBuf,
    /// `SHA256:...` of this node's public key.
    pub key_fingerprint: String,
    pub host_key: HostKeyAction,
    pub authorized_keys: LineAction,
    /// The exact line installed on the peer.
    pub line: String,
    pub peer: String,
}

impl fmt::Display for InitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = match self.key {
            KeyAction::Created => "created",
            KeyAction::Kept => "kept",
            KeyAction::Rotated => "rotated",
        };
        writeln!(
            f,
            "key {} ({key}): {}",
            self.key_path.display(),
            self.key_fingerprint
        )?;
        let hk = match self.host_key {
            HostKeyAction::Pinned => "pinned",
            HostKeyAction::AlreadyPinned => "already pinned",
        };
        writeln!(f, "host key of {}: {hk}", self.peer)?;
        let line = match self.authorized_keys {
            LineAction::Added => "restricted key added",
            LineAction::Present => "restricted key already present",
            LineAction::Replaced => "restricted key replaced",
        };
        write!(f, "authorized_keys on {}: {line}", self.peer)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error("the key {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("editing authorized_keys on {peer} failed ({status}): {stderr}")]
    Remote {
        peer: String,
        status: String,
        stderr: String,
    },
}

/// This machine's host name, for the key comment `hasync@<hostname>`.
pub fn hostname() -> String {
    for p in ["/proc/sys/kernel/hostname", "/etc/hostname"] {
        if let Ok(s) = fs::read_to_string(p) {
            let s = s.trim();
            if !s.is_empty() {
                return s.to_string();
            }
        }
    }
    "localhost".into()
}

/// `ssh-ed25519 AAAA...` (no comment).
fn key_blob(key: &PrivateKey) -> Result<String, String> {
    let s = key.public_key().to_openssh().map_err(|e| e.to_string())?;
    let mut it = s.split_whitespace();
    match (it.next(), it.next()) {
        (Some(a), Some(b)) => Ok(format!("{a} {b}")),
        _ => Err("cannot encode the public key".into()),
    }
}

/// The authorized_keys line for `key`.
pub fn authorized_line(
    remote_path: &str,
    restrict_args: &[String],
    key_blob: &str,
    comment: &str,
) -> String {
    let mut cmd = format!("{remote_path} serve --restrict");
    for a in restrict_args {
        cmd.push(' ');
        cmd.push_str(&shell_quote(a));
    }
    let cmd = cmd.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        "command=\"{cmd}\",no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding {key_blob} {comment}"
    )
}

fn write_key(path: &Path, key: &PrivateKey) -> Result<(), String> {
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    }
    // Write beside, then rename over: a crash never leaves half a key.
    let tmp = path.with_extension("hasync-new");
    let _ = fs::remove_file(&tmp);
    key.write_openssh_file(&tmp, LineEnding::LF)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).map_err(|e| e.to_string())?;
    fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let pubpath = pub_path(path);
    let pubtext = key.public_key().to_openssh().map_err(|e| e.to_string())?;
    fs::write(&pubpath, format!("{pubtext}\n"))
        .map_err(|e| format!("cannot write {}: {e}", pubpath.display()))?;
    Ok(())
}

fn pub_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// The remote edit: one POSIX sh script, arguments passed as `$1..$4`.
const EDIT_SCRIPT: &str = r#"set -e
umask 077
line=$1 comment=$2 old=$3 new=$4
dir="$HOME/.ssh"
f="$dir/authorized_keys"
mkdir -p "$dir"
chmod 700 "$dir"
[ -f "$f" ] || : > "$f"
chmod 600 "$f"
if grep -qxF -- "$line" "$f"; then echo present; exit 0; fi
tmp="$f.hasync.$$"
removed=0
while IFS= read -r l || [ -n "$l" ]; do
  case "$l" in
    *" $comment") removed=1; continue ;;
  esac
  if [ -n "$old" ]; then
    case "$l" in *" $old "*|*" $old") removed=1; continue ;; esac
  fi
  case "$l" in *" $new "*|*" $new") removed=1; continue ;; esac
  printf '%s\n' "$l"
done < "$f" > "$tmp"
printf '%s\n' "$line" >> "$tmp"
chmod 600 "$tmp"
mv -f "$tmp" "$f"
if [ "$removed" = 1 ]; then echo replaced; else echo added; fi
"#;

/// Creates (or keeps, or rotates) the key, pins the host key, installs the
/// restricted line on the peer.
pub fn run_init(opts: &InitOptions) -> Result<InitReport, InitError> {
    let key_err = |reason: String| InitError::Key {
        path: opts.identity.clone(),
        reason,
    };
    let existing = if opts.identity.exists() {
        Some(load_identity(&opts.identity).map_err(|e| key_err(e.to_string()))?)
    } else {
        None
    };
    let comment = format!("hasync@{}", hostname());

    // Connect first: a failure here leaves the local key untouched.
    let ssh_opts = SshOptions {
        identity: None,
        known_hosts: opts.known_hosts.clone(),
        accept_new: true,
        remote_path: opts.remote_path.clone(),
        connect_timeout: opts.timeout,
        idle_timeout: opts.timeout.max(Duration::from_secs(30)),
        ..SshOptions::default()
    };
    let auth = match &opts.password {
        Some(p) => Auth::Password(p.clone()),
        None => Auth::Default,
    };
    let session = SshSession::open(&opts.target, &ssh_opts, &auth)?;
    let host_key = if session.host_key_learned() {
        HostKeyAction::Pinned
    } else {
        HostKeyAction::AlreadyPinned
    };

    let (key, action, old_blob) = match existing {
        Some(old) if opts.force => {
            let old_blob = key_blob(&old).unwrap_or_default();
            (
                new_key(&comment).map_err(key_err)?,
                KeyAction::Rotated,
                old_blob,
            )
        }
        Some(k) => {
            let _ = fs::set_permissions(&opts.identity, fs::Permissions::from_mode(0o600));
            (k, KeyAction::Kept, String::new())
        }
        None => (
            new_key(&comment).map_err(key_err)?,
            KeyAction::Created,
            String::new(),
        ),
    };
    let blob = key_blob(&key).map_err(key_err)?;
    let line = authorized_line(&opts.remote_path, &opts.restrict_args, &blob, &comment);
    let new_b64 = blob
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let old_b64 = old_blob
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();

    let cmd = format!(
        "sh -c {} hasync-init {} {} {} {}",
        shell_quote(EDIT_SCRIPT),
        shell_quote(&line),
        shell_quote(&comment),
        shell_quote(&old_b64),
        shell_quote(&new_b64)
    );
    let out = session.exec(&cmd, b"")?;
    session.close();
    let peer = opts.target.to_string();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let authorized_keys = match (out.status, stdout.lines().last().map(str::trim)) {
        (Some(0), Some("added")) => LineAction::Added,
        (Some(0), Some("present")) => LineAction::Present,
        (Some(0), Some("replaced")) => LineAction::Replaced,
        (status, _) => {
            let status = match status {
                Some(n) => format!("exit status {n}"),
                None => "no exit status".into(),
            };
            let mut stderr = format!("{}{stdout}", out.stderr.trim_end());
            if opts.password.is_none() {
                stderr.push_str(
                    "\n(logged in with ssh-agent or ~/.ssh/id_*: if that key is restricted to a \
                     forced command, e.g. hasync's own, give the password instead)",
                );
            }
            return Err(InitError::Remote {
                peer,
                status,
                stderr,
            });
        }
    };
    // Only now, with the peer updated, replace the local key.
    if action != KeyAction::Kept {
        write_key(&opts.identity, &key).map_err(key_err)?;
    } else if !pub_path(&opts.identity).exists() {
        let pubtext = key
            .public_key()
            .to_openssh()
            .map_err(|e| key_err(e.to_string()))?;
        let _ = fs::write(pub_path(&opts.identity), format!("{pubtext}\n"));
    }
    Ok(InitReport {
        key: action,
        key_path: opts.identity.clone(),
        key_fingerprint: key
            .public_key()
            .fingerprint(russh::keys::HashAlg::Sha256)
            .to_string(),
        host_key,
        authorized_keys,
        line,
        peer,
    })
}

fn new_key(comment: &str) -> Result<PrivateKey, String> {
    let mut key = PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519)
        .map_err(|e| format!("cannot generate a key: {e}"))?;
    key.set_comment(comment);
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shape() {
        let l = authorized_line(
            "/usr/bin/hasync",
            &["--root".into(), "/a b".into()],
            "ssh-ed25519 AAAAC3",
            "hasync@n1",
        );
        assert_eq!(
            l,
            "command=\"/usr/bin/hasync serve --restrict --root '/a b'\",no-pty,no-port-forwarding,\
             no-agent-forwarding,no-X11-forwarding ssh-ed25519 AAAAC3 hasync@n1"
        );
        let q = authorized_line("h", &["a\"b".into()], "k", "c");
        assert!(
            q.starts_with("command=\"h serve --restrict 'a\\\"b'\""),
            "{q}"
        );
    }

    #[test]
    fn key_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/hasync_ed25519");
        let k = new_key("hasync@x").unwrap();
        write_key(&p, &k).unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = load_identity(&p).unwrap();
        assert_eq!(key_blob(&back).unwrap(), key_blob(&k).unwrap());
        let pubtext = fs::read_to_string(pub_path(&p)).unwrap();
        assert!(
            pubtext.starts_with("ssh-ed25519 AAAA") && pubtext.trim_end().ends_with("hasync@x")
        );
    }
}
