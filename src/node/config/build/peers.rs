//! `[[peer]]`: the standbys of a node that replicates to more than one (fan-out). Each
//! table names one peer and how to reach it; `[node] peer_root` and `remote_path` are
//! the defaults of its keys. A file says either `[node] peer` (or `peer_from`) or
//! `[[peer]]` tables, never both.

use std::path::{Component, Path};

use serde::Deserialize;

use super::super::values::job_name_problem;
use super::super::{Node, Peer, PeerNode};
use super::{Ctx, KeyOrIndex, Res};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeer {
    name: String,
    address: String,
    peer_root: Option<String>,
    peer_config: Option<String>,
    remote_path: Option<String>,
}

/// Builds the `[[peer]]` tables; `node` gets the first one as its `peer` (what code that
/// talks to one peer at a time is then handed through [`super::super::Config::for_peer`]).
pub(super) fn build_peers(ctx: &Ctx, raw: Vec<RawPeer>, node: &mut Node) -> Res<Vec<PeerNode>> {
    let mut peers: Vec<PeerNode> = Vec::with_capacity(raw.len());
    for (i, p) in raw.into_iter().enumerate() {
        if let Some(problem) = job_name_problem(&p.name) {
            let problem = problem.replace("job name", "peer name");
            return Err(ctx.err(at!["peer", i, "name"], problem));
        }
        if let Some(first) = peers.iter().position(|q| q.name == p.name) {
            return Err(ctx.err(
                at!["peer", i, "name"],
                format!(
                    "{:?} is already the name of [[peer]] number {} (each peer needs its own name: it labels its jobs, state and metrics)",
                    p.name,
                    first + 1
                ),
            ));
        }
        let peer: Peer = p
            .address
            .parse()
            .map_err(|m: String| ctx.err(at!["peer", i, "address"], m))?;
        let peer_root = match p.peer_root.as_deref() {
            None => node.peer_root.clone(),
            Some(pr) if matches!(peer, Peer::Local) => ctx
                .node_path("peer_root", Some(pr), "/")
                .map_err(|_| ctx.err(at!["peer", i, "peer_root"], "is empty (write a path)"))?,
            Some(pr) => {
                let pp = Path::new(pr);
                if !pp.is_absolute() || pp.components().any(|c| c == Component::ParentDir) {
                    return Err(ctx.err(
                        at!["peer", i, "peer_root"],
                        format!("{pr:?} is not a plain absolute path, but it names a directory on the peer {peer} (write one such as \"/\")"),
                    ));
                }
                pp.to_path_buf()
            }
        };
        if p.peer_config.is_some() && !matches!(peer, Peer::Local) {
            return Err(ctx.err(
                at!["peer", i, "peer_config"],
                format!("is the config of a local peer, but this peer is {peer}: remove it (a remote peer reads its own /etc/hasync/hasync.toml)"),
            ));
        }
        let peer_config =
            match p.peer_config.as_deref() {
                Some(s) => Some(ctx.node_path("peer_config", Some(s), "").map_err(|_| {
                    ctx.err(at!["peer", i, "peer_config"], "is empty (write a path)")
                })?),
                None => None,
            };
        let remote_path = p.remote_path.unwrap_or_else(|| node.remote_path.clone());
        ctx.non_empty(
            at!["peer", i, "remote_path"],
            &remote_path,
            "the hasync command on the peer",
        )?;
        peers.push(PeerNode {
            name: p.name,
            peer,
            peer_root,
            peer_config,
            remote_path,
        });
    }
    if let Some(first) = peers.first() {
        if node.peer_config.is_some() {
            return Err(ctx.err(
                at!["node", "peer_config"],
                "is set together with [[peer]] tables (give each local peer its own peer_config in its [[peer]] table)",
            ));
        }
        node.peer = first.peer.clone();
        node.peer_root = first.peer_root.clone();
        node.peer_config = first.peer_config.clone();
        node.remote_path = first.remote_path.clone();
    }
    Ok(peers)
}
