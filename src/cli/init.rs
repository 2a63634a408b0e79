//! `hasync init`: what `xivo-sync -i` does, done right. Creates this node's
//! SSH key, logs in to the peer once (password or existing key/agent),
//! installs the key there restricted to `hasync serve --restrict --allow ...`,
//! and pins the peer's host key. Turns flags and the config into
//! [`hasync::transport::init::InitOptions`]; the work is in the library.

use super::{Cli, CliError};
use hasync::node::config::Peer;
use hasync::transport::init::{InitOptions, run_init};
use hasync::transport::ssh::SshTarget;
use std::io::IsTerminal;
use std::path::PathBuf;

pub const INIT_HELP: &str = "\
What it does (idempotent: a second run changes nothing):
  1. creates an ed25519 key (mode 0600) at --identity / [node] identity if there is none
     [default: ~/.ssh/hasync_ed25519];
  2. logs in to the peer once: with a password (prompted on a terminal, or --password-file,
     or $HASYNC_INIT_PASSWORD), else with ssh-agent or ~/.ssh/id_*;
  3. pins the peer's host key in --known-hosts / [node] known_hosts (first contact);
  4. appends to the peer's ~/.ssh/authorized_keys one line that only lets this key run
     `hasync serve --restrict`, limited to the directories of this config's [[sync]] jobs
     (no shell, no pty, no forwarding).
--force rotates the key and replaces the old line on the peer (other lines are kept).

Examples:
  hasync init                                   # peer, key and known_hosts from the config
  hasync init --peer root@10.0.0.2 --password-file /root/slave-pw
  hasync init --peer b                          # [[peer]] tables: one standby at a time
  HASYNC_INIT_PASSWORD=secret hasync init --force";

#[derive(clap::Args, Debug, Clone)]
pub struct InitArgs {
    /// The peer, `[user@]host[:port]`, or the name of one of the config's [[peer]] tables
    /// [default: the config's [node] peer]
    #[arg(long, value_name = "PEER")]
    pub peer: Option<String>,
    /// This node's hasync private key [default: [node] identity, or ~/.ssh/hasync_ed25519]
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Where the peer's host key is pinned [default: [node] known_hosts, or ~/.ssh/known_hosts]
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Where hasync lives on the peer (goes into the forced command) [default: [node] remote_path]
    #[arg(long, value_name = "PATH")]
    pub remote_path: Option<String>,
    /// Read the peer account's password from FILE (first line)
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Also allow this directory on the peer (repeatable; added to the [[sync]] paths)
    #[arg(long, value_name = "DIR")]
    pub allow: Vec<PathBuf>,
    /// Rotate the key and replace the peer's hasync line
    #[arg(long)]
    pub force: bool,
}

pub fn run(cli: &Cli, args: &InitArgs) -> Result<i32, CliError> {
    let path = super::config_path(cli);
    // The config is optional when everything is given on the command line.
    let mut cfg = if path.exists() || args.peer.is_none() {
        Some(hasync::node::config::load(&path)?)
    } else {
        None
    };
    // [[peer]] tables: --peer names the one to set up.
    let mut peer_arg = args.peer.clone();
    if let Some(c) = cfg.as_ref().filter(|c| !c.peers.is_empty()) {
        let names: Vec<&str> = c.peers.iter().map(|p| p.name.as_str()).collect();
        match peer_arg.as_deref().and_then(|n| c.peer_named(n)) {
            Some(p) => {
                cfg = Some(c.for_peer(p));
                peer_arg = None;
            }
            None if peer_arg.is_none() => {
                return Err(CliError::usage(format!(
                    "{} has [[peer]] tables: name the one to set up with --peer NAME ({}), once per peer",
                    path.display(),
                    names.join(", ")
                )));
            }
            None => {}
        }
    }
    let args = &InitArgs {
        peer: peer_arg,
        ..args.clone()
    };
    // peer_from = "wazo": the peer is remote_address of ha.conf, read now.
    let peer = match (&args.peer, cfg.as_ref()) {
        (None, Some(c)) => Some(hasync::node::wazo::effective_peer(c)?),
        _ => None,
    };
    let target = match (&args.peer, peer.as_ref()) {
        (Some(p), _) => SshTarget::parse_peer(p)
            .ok_or_else(|| CliError::usage(format!("--peer {p:?}: expected [user@]host[:port]")))?,
        (None, Some(Peer::Ssh { user, host, port })) => {
            let mut t = SshTarget::new(host.clone());
            t.user = user.clone();
            t.port = port.unwrap_or(22);
            t
        }
        (None, _) => {
            return Err(CliError::usage(format!(
                "{}: [node] peer is \"local\": there is no remote peer to set up (give --peer [user@]host)",
                path.display()
            )));
        }
    };
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    let node = cfg.as_ref().map(|c| &c.node);
    let identity = args
        .identity
        .clone()
        .or_else(|| node.and_then(|n| n.identity.clone()))
        .unwrap_or_else(|| home.join(".ssh/hasync_ed25519"));
    let known_hosts = args
        .known_hosts
        .clone()
        .or_else(|| node.and_then(|n| n.known_hosts.clone()))
        .unwrap_or_else(super::push::default_known_hosts);
    let mut opts = InitOptions::new(target.clone(), identity, known_hosts);
    opts.force = args.force;
    opts.remote_path = args
        .remote_path
        .clone()
        .or_else(|| node.map(|n| n.remote_path.clone()))
        .unwrap_or_else(|| "hasync".into());
    opts.restrict_args = allowed_dirs(cfg.as_ref(), &args.allow)
        .into_iter()
        .flat_map(|d| ["--allow".to_string(), d.display().to_string()])
        .collect();
    opts.password = password(args, &target)?;
    let report = run_init(&opts).map_err(|e| CliError {
        code: 3,
        message: format!("init of {target} failed: {e}"),
    })?;
    if !cli.quiet {
        outln!("{report}");
        outln!("installed on the peer: {}", report.line);
    }
    Ok(0)
}

/// The peer directories the forced command allows: every [[sync]] path and every
/// `[check_master] copy_back` path (under `peer_root`) plus `--allow`, without duplicates.
fn allowed_dirs(cfg: Option<&hasync::node::config::Config>, extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(cfg) = cfg {
        for job in &cfg.sync {
            for p in &job.paths {
                dirs.push(cfg.peer_path(p));
            }
        }
        for p in cfg.check_master.iter().flat_map(|c| &c.copy_back) {
            dirs.push(cfg.peer_path(p));
        }
    }
    dirs.extend(extra.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

/// --password-file, $HASYNC_INIT_PASSWORD, a prompt on a terminal, or none
/// (then ssh-agent / ~/.ssh keys).
fn password(args: &InitArgs, target: &SshTarget) -> Result<Option<String>, CliError> {
    if let Some(f) = &args.password_file {
        let text = std::fs::read_to_string(f)
            .map_err(|e| CliError::usage(format!("--password-file {}: {e}", f.display())))?;
        return Ok(Some(text.lines().next().unwrap_or("").to_string()));
    }
    if let Ok(p) = std::env::var("HASYNC_INIT_PASSWORD") {
        return Ok(Some(p));
    }
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let p = prompt(&format!(
        "Password for {}@{} (empty: use ssh-agent or ~/.ssh keys): ",
        target.user_or_default(),
        target.host
    ))
    .map_err(|e| CliError::usage(format!("cannot read the password: {e}")))?;
    Ok((!p.is_empty()).then_some(p))
}

/// Reads a line from the terminal with echo off.
fn prompt(msg: &str) -> std::io::Result<String> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    use std::io::Write;
    let stdin = std::io::stdin();
    eprint!("{msg}");
    let _ = std::io::stderr().flush();
    let saved = tcgetattr(&stdin)?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    tcsetattr(&stdin, OptionalActions::Now, &quiet)?;
    let mut line = String::new();
    let res = stdin.read_line(&mut line);
    let _ = tcsetattr(&stdin, OptionalActions::Now, &saved);
    eprintln!();
    res?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}
