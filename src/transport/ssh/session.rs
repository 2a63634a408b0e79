//! Opening an SSH session: TCP, handshake, host-key check against a pinned
//! known_hosts file, and authentication (key file, agent, or password).

use super::tcp::QuickAckStream;
use super::{SshError, SshOptions, SshTarget};
use russh::client;
use russh::keys::{
    self, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What the host-key check decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostKeyVerdict {
    /// Already in known_hosts, matching.
    Known,
    /// Unknown, and recorded (accept-new).
    Learned,
    /// Unknown and not accepted.
    Unknown {
        key_type: String,
        fingerprint: String,
    },
    /// Different from the recorded key at `line`.
    Changed {
        key_type: String,
        fingerprint: String,
        line: usize,
    },
    /// known_hosts could not be read or written.
    Error(String),
}

/// Shared between the russh handler (inside the session task) and us.
#[derive(Default)]
pub(crate) struct SessionState {
    pub verdict: Option<HostKeyVerdict>,
    /// Why the session ended, when it ended on an error.
    pub disconnect: Option<String>,
}

pub(crate) struct ClientHandler {
    host: String,
    port: u16,
    known_hosts: PathBuf,
    accept_new: bool,
    state: Arc<Mutex<SessionState>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ClientHandler {
    fn check(&self, key: &PublicKey) -> HostKeyVerdict {
        let key_type = key.algorithm().as_str().to_string();
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        match keys::check_known_hosts_path(&self.host, self.port, key, &self.known_hosts) {
            Ok(true) => HostKeyVerdict::Known,
            Ok(false) if self.accept_new => {
                match learn(&self.host, self.port, key, &self.known_hosts) {
                    Ok(()) => HostKeyVerdict::Learned,
                    Err(e) => HostKeyVerdict::Error(format!(
                        "cannot record the host key in {}: {e}",
                        self.known_hosts.display()
                    )),
                }
            }
            Ok(false) => HostKeyVerdict::Unknown {
                key_type,
                fingerprint,
            },
            Err(keys::Error::KeyChanged { line }) => HostKeyVerdict::Changed {
                key_type,
                fingerprint,
                line: physical_line(&self.known_hosts, line),
            },
            Err(e) => {
                HostKeyVerdict::Error(format!("cannot read {}: {e}", self.known_hosts.display()))
            }
        }
    }
}

/// Records a host key. russh's `learn_known_hosts_path` starts a new file
/// with a blank line; write the first line ourselves.
fn learn(host: &str, port: u16, key: &PublicKey, path: &Path) -> Result<(), String> {
    let empty = std::fs::metadata(path)
        .map(|m| m.len() == 0)
        .unwrap_or(true);
    if !empty {
        return keys::known_hosts::learn_known_hosts_path(host, port, key, path)
            .map_err(|e| e.to_string());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let name = if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    };
    let key = key.to_openssh().map_err(|e| e.to_string())?;
    std::fs::write(path, format!("{name} {key}\n")).map_err(|e| e.to_string())
}

/// russh numbers known_hosts lines without counting `#` comments; users need
/// the line as their editor shows it.
fn physical_line(path: &Path, russh_line: usize) -> usize {
    let Ok(text) = std::fs::read_to_string(path) else {
        return russh_line;
    };
    let mut counted = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if l.starts_with('#') {
            continue;
        }
        counted += 1;
        if counted == russh_line {
            return i + 1;
        }
    }
    russh_line
}

impl client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let verdict = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => self.check(key),
            PublicKeyOrCertificate::Certificate(cert) => {
                // We never ask for certificates; judge the key it certifies.
                self.check(&PublicKey::new(cert.public_key().clone(), ""))
            }
        };
        let ok = matches!(verdict, HostKeyVerdict::Known | HostKeyVerdict::Learned);
        lock(&self.state).verdict = Some(verdict);
        Ok(ok)
    }

    async fn disconnected(
        &mut self,
        reason: client::DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        match reason {
            client::DisconnectReason::ReceivedDisconnect(info) => {
                lock(&self.state)
                    .disconnect
                    .get_or_insert_with(|| format!("the peer disconnected: {info:?}"));
                Ok(())
            }
            client::DisconnectReason::Error(e) => {
                let msg = match &e {
                    russh::Error::KeepaliveTimeout => {
                        "the peer stopped answering keepalives".to_string()
                    }
                    russh::Error::InactivityTimeout => {
                        "no traffic from the peer (inactivity timeout)".to_string()
                    }
                    other => other.to_string(),
                };
                lock(&self.state).disconnect.get_or_insert(msg);
                Err(e)
            }
        }
    }
}

/// How to authenticate.
#[derive(Debug, Clone)]
pub enum Auth {
    /// The options' identity file if set, else the agent, else ~/.ssh/id_*.
    Default,
    /// A password (password method, then keyboard-interactive).
    Password(String),
}

/// An authenticated session.
pub(crate) struct Session {
    pub handle: Arc<client::Handle<ClientHandler>>,
    pub state: Arc<Mutex<SessionState>>,
    pub verdict: HostKeyVerdict,
}

fn config(opts: &SshOptions) -> client::Config {
    let mut preferred = russh::Preferred::default();
    let mut ciphers = vec![russh::cipher::AES_256_GCM, russh::cipher::CHACHA20_POLY1305];
    let rest: Vec<_> = preferred
        .cipher
        .iter()
        .filter(|c| !ciphers.contains(c))
        .cloned()
        .collect();
    ciphers.extend(rest);
    preferred.cipher = ciphers.into();
    client::Config {
        window_size: 32 * 1024 * 1024,
        preferred,
        inactivity_timeout: Some(opts.idle_timeout),
        keepalive_interval: Some(opts.keepalive),
        keepalive_max: 3,
        ..Default::default()
    }
}

/// Connects, checks the host key and authenticates, all within `connect_timeout`.
pub(crate) async fn open(
    target: &SshTarget,
    opts: &SshOptions,
    auth: &Auth,
) -> Result<Session, SshError> {
    let deadline = opts.connect_timeout;
    match tokio::time::timeout(deadline, open_inner(target, opts, auth)).await {
        Ok(r) => r,
        Err(_) => Err(SshError::Timeout {
            target: target.to_string(),
            secs: deadline.as_secs_f64(),
        }),
    }
}

async fn open_inner(
    target: &SshTarget,
    opts: &SshOptions,
    auth: &Auth,
) -> Result<Session, SshError> {
    let state = Arc::new(Mutex::new(SessionState::default()));
    let handler = ClientHandler {
        host: target.host.clone(),
        port: target.port,
        known_hosts: opts.known_hosts.clone(),
        accept_new: opts.accept_new,
        state: state.clone(),
    };
    let cfg = Arc::new(config(opts));
    let result = match QuickAckStream::connect(&target.host, target.port).await {
        Ok(stream) => client::connect_stream(cfg, stream, handler).await,
        Err(e) => Err(russh::Error::IO(e)),
    };
    let verdict = lock(&state).verdict.clone();
    let mut handle = match (result, verdict.clone()) {
        (Ok(h), Some(HostKeyVerdict::Known | HostKeyVerdict::Learned)) => h,
        (
            _,
            Some(HostKeyVerdict::Unknown {
                key_type,
                fingerprint,
            }),
        ) => {
            return Err(SshError::HostKeyUnknown {
                host: target.known_hosts_name(),
                key_type,
                fingerprint,
                known_hosts: opts.known_hosts.clone(),
            });
        }
        (
            _,
            Some(HostKeyVerdict::Changed {
                key_type,
                fingerprint,
                line,
            }),
        ) => {
            return Err(SshError::HostKeyChanged {
                host: target.known_hosts_name(),
                key_type,
                fingerprint,
                known_hosts: opts.known_hosts.clone(),
                line,
            });
        }
        (_, Some(HostKeyVerdict::Error(e))) => return Err(SshError::KnownHosts(e)),
        (Err(e), _) => {
            let reason = match e {
                russh::Error::IO(io) => io.to_string(),
                other => other.to_string(),
            };
            return Err(SshError::Connect {
                target: target.to_string(),
                reason,
            });
        }
        (Ok(_), None) => {
            return Err(SshError::Protocol(
                "the server's host key was never checked".into(),
            ));
        }
    };
    let user = target.user_or_default();
    authenticate(&mut handle, &user, target, opts, auth).await?;
    Ok(Session {
        handle: Arc::new(handle),
        state,
        verdict: verdict.unwrap_or(HostKeyVerdict::Known),
    })
}

fn auth_failed(user: &str, target: &SshTarget, detail: String) -> SshError {
    SshError::AuthFailed {
        user: user.to_string(),
        host: target.to_string(),
        detail,
    }
}

fn methods(r: &russh::client::AuthResult) -> String {
    match r {
        russh::client::AuthResult::Success => String::new(),
        russh::client::AuthResult::Failure {
            remaining_methods, ..
        } => {
            let names: Vec<&str> = remaining_methods.iter().map(<&str>::from).collect();
            names.join(",")
        }
    }
}

/// Loads a private key file (unencrypted; a passphrase-protected key must go through the agent).
pub fn load_identity(path: &Path) -> Result<PrivateKey, SshError> {
    keys::load_secret_key(path, None).map_err(|e| SshError::Identity {
        path: path.to_path_buf(),
        reason: match e {
            keys::Error::KeyIsEncrypted => {
                "the key is passphrase-protected; load it into ssh-agent and leave --identity unset"
                    .into()
            }
            other => other.to_string(),
        },
    })
}

/// The RSA signature hash the server prefers, for an RSA key (`None` for other keys).
async fn rsa_hash(
    handle: &client::Handle<ClientHandler>,
    rsa: bool,
) -> Option<russh::keys::HashAlg> {
    if !rsa {
        return None;
    }
    handle
        .best_supported_rsa_hash()
        .await
        .ok()
        .flatten()
        .flatten()
}

async fn try_key(
    handle: &mut client::Handle<ClientHandler>,
    user: &str,
    key: PrivateKey,
) -> Result<russh::client::AuthResult, SshError> {
    let hash = rsa_hash(handle, key.algorithm().is_rsa()).await;
    handle
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
        .await
        .map_err(|e| SshError::Protocol(format!("during authentication: {e}")))
}

async fn authenticate(
    handle: &mut client::Handle<ClientHandler>,
    user: &str,
    target: &SshTarget,
    opts: &SshOptions,
    auth: &Auth,
) -> Result<(), SshError> {
    if let Auth::Password(pw) = auth {
        let r = handle
            .authenticate_password(user, pw.clone())
            .await
            .map_err(|e| SshError::Protocol(format!("during authentication: {e}")))?;
        if r.success() {
            return Ok(());
        }
        let offered = methods(&r);
        if offered.contains("keyboard-interactive") {
            let mut resp = handle
                .authenticate_keyboard_interactive_start(user, None)
                .await
                .map_err(|e| SshError::Protocol(format!("during authentication: {e}")))?;
            for _ in 0..5 {
                match resp {
                    client::KeyboardInteractiveAuthResponse::Success => return Ok(()),
                    client::KeyboardInteractiveAuthResponse::Failure { .. } => break,
                    client::KeyboardInteractiveAuthResponse::InfoRequest { prompts, .. } => {
                        let answers = prompts.iter().map(|_| pw.clone()).collect();
                        resp = handle
                            .authenticate_keyboard_interactive_respond(answers)
                            .await
                            .map_err(|e| {
                                SshError::Protocol(format!("during authentication: {e}"))
                            })?;
                    }
                }
            }
        }
        return Err(auth_failed(
            user,
            target,
            format!("password refused (server accepts: {offered})"),
        ));
    }

    if let Some(path) = &opts.identity {
        let key = load_identity(path)?;
        let r = try_key(handle, user, key).await?;
        if r.success() {
            return Ok(());
        }
        return Err(auth_failed(
            user,
            target,
            format!(
                "key {} refused (server accepts: {})",
                path.display(),
                methods(&r)
            ),
        ));
    }

    let mut tried = Vec::new();
    let mut offered = String::new();
    if std::env::var_os("SSH_AUTH_SOCK").is_some() {
        match keys::agent::client::AgentClient::connect_env().await {
            Ok(mut agent) => {
                let ids = agent.request_identities().await.unwrap_or_default();
                for id in ids {
                    let keys::agent::AgentIdentity::PublicKey { key, .. } = id else {
                        continue;
                    };
                    let hash = rsa_hash(handle, key.algorithm().is_rsa()).await;
                    match handle
                        .authenticate_publickey_with(user, key, hash, &mut agent)
                        .await
                    {
                        Ok(r) if r.success() => return Ok(()),
                        Ok(r) => offered = methods(&r),
                        Err(_) => {}
                    }
                }
                tried.push("ssh-agent".to_string());
            }
            Err(e) => tried.push(format!("ssh-agent (unusable: {e})")),
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
            let p = Path::new(&home).join(".ssh").join(name);
            if !p.exists() {
                continue;
            }
            let Ok(key) = keys::load_secret_key(&p, None) else {
                continue;
            };
            let r = try_key(handle, user, key).await?;
            if r.success() {
                return Ok(());
            }
            offered = methods(&r);
            tried.push(p.display().to_string());
        }
    }
    if tried.is_empty() {
        return Err(auth_failed(
            user,
            target,
            "no key to offer: give --identity (or `identity` in the config), or run ssh-agent"
                .into(),
        ));
    }
    Err(auth_failed(
        user,
        target,
        format!("tried {} (server accepts: {offered})", tried.join(", ")),
    ))
}
