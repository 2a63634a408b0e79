//! Owners by name, as `rsync -a` maps them (unless `--numeric-ids`).
//!
//! The sender looks up the name of each distinct uid and gid its manifest uses
//! (through NSS: `getpwuid_r`, `getgrgid_r`) and sends the two tables once per
//! session, after the manifest batches (`Msg::OwnerNames`, protocol 2.4; a table
//! costs one (id, name) pair per distinct owner, not a name per entry). Entries keep
//! their numbers and refer to the tables by them. The receiver, when it sets owners
//! (it runs as root), looks each name up in its own user and group databases and
//! rewrites the entries' ids before it plans, so the quick check compares its own
//! ids. An id that had no name on the sender, or whose name the receiver does not
//! know, keeps its number. Id 0 is never mapped, like rsync ("the special uid 0 and
//! the special group 0 are never mapped via user/group names"). With `--numeric-ids`
//! (`numeric_ids = true`) no table is sent, and a received one is ignored.

use crate::tree::entries::Entries;
use crate::tree::manifest::Entry;
use crate::wire::message::{MAX_NAMES_BATCH, MAX_OWNER_NAME};
use crate::wire::{FrameWriter, Msg, send};
use foldhash::{HashMap, HashMapExt, HashSet};
use nix::unistd::{Gid, Group, Uid, User};
use std::io::Write;

/// Most names a receiver accepts in one session (both tables): far more than any
/// real tree has owners, and a bound on what a hostile sender can make it keep.
pub const MAX_OWNER_NAMES: usize = 1 << 20;

/// The name of each distinct non-zero uid (`groups` false) or gid among `ids`,
/// sorted by id; ids without a name are left out.
pub fn table(ids: impl Iterator<Item = u32>, groups: bool) -> Vec<(u32, Vec<u8>)> {
    let mut ids: HashSet<u32> = ids.collect();
    ids.remove(&0);
    let mut out: Vec<(u32, Vec<u8>)> = ids
        .into_iter()
        .filter_map(|id| {
            let name = if groups {
                Group::from_gid(Gid::from_raw(id)).ok()??.name
            } else {
                User::from_uid(Uid::from_raw(id)).ok()??.name
            };
            let ok = !name.is_empty()
                && name.len() <= MAX_OWNER_NAME
                && !name.bytes().any(|b| matches!(b, 0 | b'/' | b':' | b'\n'));
            ok.then(|| (id, name.into_bytes()))
        })
        .collect();
    out.sort_unstable();
    out
}

/// Send both tables of `entries` (in batches of at most [`MAX_NAMES_BATCH`]),
/// before the manifest's batches: the receiver maps owners as entries arrive.
pub fn send_tables<W: Write>(
    wr: &mut FrameWriter<W>,
    entries: &Entries,
) -> Result<(), crate::wire::ProtocolError> {
    for groups in [false, true] {
        let ids = entries.iter().map(|e| if groups { e.gid } else { e.uid });
        let t = table(ids, groups);
        for chunk in t.chunks(MAX_NAMES_BATCH) {
            send(
                wr,
                &Msg::OwnerNames {
                    groups,
                    names: chunk.to_vec(),
                },
            )?;
        }
    }
    Ok(())
}

/// The tables a receiver got from its sender.
#[derive(Debug, Default)]
pub struct Received {
    users: HashMap<u32, Vec<u8>>,
    groups: HashMap<u32, Vec<u8>>,
}

impl Received {
    /// Add one `OwnerNames` message; more than [`MAX_OWNER_NAMES`] in all is refused.
    pub fn add(&mut self, groups: bool, names: Vec<(u32, Vec<u8>)>) -> Result<(), String> {
        if self.users.len() + self.groups.len() + names.len() > MAX_OWNER_NAMES {
            return Err(format!(
                "protocol error: the sender named more than {MAX_OWNER_NAMES} owners"
            ));
        }
        let t = if groups {
            &mut self.groups
        } else {
            &mut self.users
        };
        t.extend(names);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }

    /// This node's ids for the sender's, by name (see the module docs): what
    /// [`Mapping::apply`] rewrites each arriving entry with.
    pub fn mapping(&self) -> Mapping {
        Mapping {
            users: local_ids(&self.users, |n| {
                User::from_name(n).ok().flatten().map(|u| u.uid.as_raw())
            }),
            groups: local_ids(&self.groups, |n| {
                Group::from_name(n).ok().flatten().map(|g| g.gid.as_raw())
            }),
        }
    }
}

/// The sender's ids that are another number here.
#[derive(Debug, Default)]
pub struct Mapping {
    users: HashMap<u32, u32>,
    groups: HashMap<u32, u32>,
}

impl Mapping {
    /// `e` with its owner in this node's ids.
    pub fn apply(&self, mut e: Entry) -> Entry {
        if let Some(&u) = self.users.get(&e.uid) {
            e.uid = u;
        }
        if let Some(&g) = self.groups.get(&e.gid) {
            e.gid = g;
        }
        e
    }

    /// Whether no id changes.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }
}

/// The sender's ids whose name has another id here (0 and unknown names: none).
fn local_ids(
    table: &HashMap<u32, Vec<u8>>,
    lookup: impl Fn(&str) -> Option<u32>,
) -> HashMap<u32, u32> {
    let mut out = HashMap::new();
    for (&id, name) in table {
        if id == 0 {
            continue;
        }
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        if let Some(local) = lookup(name)
            && local != id
        {
            out.insert(id, local);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::manifest::{Kind, Mtime};
    use crate::tree::path::RelPath;

    fn owned(uid: u32, gid: u32) -> Entry {
        Entry {
            path: RelPath::root(),
            kind: Kind::File,
            size: 0,
            mtime: Mtime::default(),
            mode: 0o644,
            uid,
            gid,
            target: Vec::new(),
            hash: None,
        }
    }

    #[test]
    fn names_map_to_local_ids_and_unknown_ones_keep_their_number() {
        let mut r = Received::default();
        r.add(false, vec![(0, b"root".to_vec()), (7, b"x".to_vec())])
            .unwrap();
        r.add(true, vec![(9, b"y".to_vec()), (10, b"z".to_vec())])
            .unwrap();
        let lookup = |n: &str| match n {
            "x" => Some(70),
            "y" => Some(90),
            "root" => Some(5),
            _ => None,
        };
        let u = local_ids(&r.users, lookup);
        let g = local_ids(&r.groups, lookup);
        assert_eq!(u.get(&7), Some(&70));
        assert_eq!(u.get(&0), None, "id 0 is never mapped");
        assert_eq!(g.get(&9), Some(&90));
        assert_eq!(g.get(&10), None, "unknown name: the number");
        // root is root on every node; the real databases map nothing else here.
        let e = r.mapping().apply(owned(0, 0));
        assert_eq!((e.uid, e.gid), (0, 0));
    }

    #[test]
    fn too_many_names_are_refused() {
        let mut r = Received::default();
        let many: Vec<(u32, Vec<u8>)> = (0..MAX_OWNER_NAMES as u32)
            .map(|i| (i, b"n".to_vec()))
            .collect();
        r.add(false, many).unwrap();
        assert!(r.add(true, vec![(1, b"g".to_vec())]).is_err());
    }

    #[test]
    fn the_table_names_the_owners_that_have_names() {
        let t = table([0, u32::MAX - 7].into_iter(), false);
        assert!(t.is_empty(), "0 is left out, an unnamed id too: {t:?}");
    }
}
