//! Owners by name (issue 17 point 3), against rsync side by side.
//!
//! The two nodes get different user and group databases without touching the
//! machine's: the client runs under `unshare --mount` with a temp passwd and group
//! file bind-mounted over /etc/passwd and /etc/group, and the serve side, reached
//! through the real test sshd, runs through a `--remote-path` wrapper that does the
//! same with other files (so does rsync's `--rsync-path`). The same names have other
//! ids on each side, some names exist on one side only, and one id has no name.

use crate::sshd::Sshd;
use crate::util::*;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The source node: hsalice 2901, hsbob 2902, hsghost 2903 (only here); groups
/// hsalice 2901, hsstaff 2905, hsghost 2903. Id 4242 has no name here.
const SRC_PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    hsalice:x:2901:2901::/nonexistent:/bin/false\n\
    hsbob:x:2902:2902::/nonexistent:/bin/false\n\
    hsghost:x:2903:2903::/nonexistent:/bin/false\n";
const SRC_GROUP: &str = "root:x:0:\nhsalice:x:2901:\nhsstaff:x:2905:\nhsghost:x:2903:\n";
/// The destination: hsalice 3901, hsbob 2901 (hsalice's id on the source!), hsother
/// 4242; groups hsalice 3901, hsstaff 3905. No hsghost.
const DST_PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    hsalice:x:3901:3901::/nonexistent:/bin/false\n\
    hsbob:x:2901:2901::/nonexistent:/bin/false\n\
    hsother:x:4242:4242::/nonexistent:/bin/false\n";
const DST_GROUP: &str = "root:x:0:\nhsalice:x:3901:\nhsstaff:x:3905:\nhsother:x:4242:\n";

/// (uid, gid).
type Ids = (u32, u32);

/// (path, uid, gid) of the source tree, and what the destination must hold by name.
const OWNERS: [(&str, Ids, Ids); 7] = [
    ("alice", (2901, 2905), (3901, 3905)),
    ("bob", (2902, 2901), (2901, 3901)),
    ("ghost", (2903, 2903), (2903, 2903)),
    ("noname", (4242, 4242), (4242, 4242)),
    ("rootfile", (0, 0), (0, 0)),
    ("d", (2902, 2905), (2901, 3905)),
    ("l", (2901, 2901), (3901, 3901)),
];

struct Nodes {
    dir: tempfile::TempDir,
    sshd: &'static Sshd,
    kh: PathBuf,
}

impl Nodes {
    fn new() -> Nodes {
        let dir = tempfile::tempdir().unwrap();
        let sshd = Sshd::shared();
        let p = dir.path();
        for (name, text) in [
            ("src.passwd", SRC_PASSWD),
            ("src.group", SRC_GROUP),
            ("dst.passwd", DST_PASSWD),
            ("dst.group", DST_GROUP),
        ] {
            std::fs::write(p.join(name), text).unwrap();
        }
        // The peer's side: its own /etc/passwd and /etc/group, then the real program.
        for (wrapper, prog) in [("serve-hasync", bin()), ("serve-rsync", "rsync".into())] {
            let script = format!(
                "#!/bin/sh\nexec unshare --mount sh -c 'mount --bind \"$1\" /etc/passwd && mount --bind \"$2\" /etc/group && shift 2 && exec \"$@\"' wrap {} {} {} \"$@\"\n",
                p.join("dst.passwd").display(),
                p.join("dst.group").display(),
                prog.display()
            );
            let w = p.join(wrapper);
            std::fs::write(&w, script).unwrap();
            std::fs::set_permissions(&w, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        let kh = p.join("known_hosts");
        sshd.write_known_hosts(&kh);
        Nodes { dir, sshd, kh }
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `argv` on the client node (its own passwd and group).
    fn on_client(&self, argv: &[&str]) -> Output {
        let mut c = Command::new("unshare");
        c.args(["--mount", "sh", "-c"])
            .arg("mount --bind \"$1\" /etc/passwd && mount --bind \"$2\" /etc/group && shift 2 && exec \"$@\"")
            .arg("client")
            .arg(self.p("src.passwd"))
            .arg(self.p("src.group"))
            .args(argv);
        c.env_remove("HASYNC_CONFIG").env("HASYNC_LOG", "warn");
        c.output().expect("run unshare")
    }

    fn remote(&self, dir: &Path) -> String {
        format!("ssh://root@127.0.0.1:{}{}", self.sshd.port, dir.display())
    }

    fn hasync(&self, verb: &str, from: &str, to: &str, extra: &[&str]) -> Output {
        let (key, kh, rp) = (
            self.sshd.client_key.display().to_string(),
            self.kh.display().to_string(),
            self.p("serve-hasync").display().to_string(),
        );
        let bin = bin().display().to_string();
        let mut argv = vec![&*bin, verb, from, to, "--delete", "--json"];
        argv.extend_from_slice(extra);
        argv.extend([
            "--identity",
            &key,
            "--known-hosts",
            &kh,
            "--remote-path",
            &rp,
        ]);
        self.on_client(&argv)
    }

    fn rsync(&self, src: &Path, dst: &Path, extra: &[&str]) -> Output {
        let e = format!(
            "ssh -p {} -i {} -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o BatchMode=yes",
            self.sshd.port,
            self.sshd.client_key.display(),
            self.kh.display()
        );
        let rp = format!("--rsync-path={}", self.p("serve-rsync").display());
        let (from, to) = (
            format!("{}/", src.display()),
            format!("root@127.0.0.1:{}/", dst.display()),
        );
        let mut argv = vec!["rsync", "-a", "--delete", "-e", &e, &rp];
        argv.extend_from_slice(extra);
        argv.extend([&*from, &*to]);
        self.on_client(&argv)
    }
}

fn owners_of(root: &Path) -> BTreeMap<String, Ids> {
    OWNERS
        .iter()
        .map(|(p, _, _)| {
            let md = root.join(p).symlink_metadata().unwrap();
            (p.to_string(), (md.uid(), md.gid()))
        })
        .collect()
}

fn expected(
    pick: impl Fn(&(&str, (u32, u32), (u32, u32))) -> (u32, u32),
) -> BTreeMap<String, (u32, u32)> {
    OWNERS.iter().map(|o| (o.0.to_string(), pick(o))).collect()
}

fn success(o: &Output) {
    assert!(o.status.success(), "{}", text(o));
}

#[test]
fn owners_travel_by_name_like_rsync_and_numeric_ids_keeps_numbers() {
    let n = Nodes::new();
    let src = n.p("src");
    let t = Tree::new(&src);
    for (p, _, _) in OWNERS {
        match p {
            "d" => t.dir("d/inner"),
            "l" => t.link("l", "alice"),
            _ => t.file(p, p.as_bytes()),
        };
    }
    for (p, (uid, gid), _) in OWNERS {
        std::os::unix::fs::lchown(src.join(p), Some(uid), Some(gid)).unwrap();
    }
    let by_name = expected(|o| o.2);
    let by_number = expected(|o| o.1);

    // hasync: by name, then a second run changes nothing.
    let dst = n.p("dst");
    let o = n.hasync("push", &src.display().to_string(), &n.remote(&dst), &[]);
    success(&o);
    assert_eq!(owners_of(&dst), by_name, "push by name");
    let j = json(&n.hasync("push", &src.display().to_string(), &n.remote(&dst), &[]));
    assert_eq!(j["meta_updated"], 0, "{j}");
    assert_eq!(j["files_transferred"], 0, "{j}");

    // rsync -a in the same two namespaces maps exactly the same way.
    let rs = n.p("dst-rsync");
    success(&n.rsync(&src, &rs, &[]));
    assert_eq!(
        owners_of(&rs),
        by_name,
        "rsync -a maps by name the same way"
    );

    // --numeric-ids: numbers as they are, for both tools.
    let num = n.p("dst-numeric");
    let o = n.hasync(
        "push",
        &src.display().to_string(),
        &n.remote(&num),
        &["--numeric-ids"],
    );
    success(&o);
    assert_eq!(owners_of(&num), by_number, "hasync --numeric-ids");
    let rsn = n.p("dst-rsync-numeric");
    success(&n.rsync(&src, &rsn, &["--numeric-ids"]));
    assert_eq!(owners_of(&rsn), by_number, "rsync --numeric-ids");

    // Pull: the serve side names its owners, the client maps them back.
    let back = n.p("back");
    let o = n.hasync("pull", &n.remote(&dst), &back.display().to_string(), &[]);
    success(&o);
    assert_eq!(owners_of(&back), by_number, "pulled back by name");
    let back_num = n.p("back-numeric");
    let o = n.hasync(
        "pull",
        &n.remote(&dst),
        &back_num.display().to_string(),
        &["--numeric-ids"],
    );
    success(&o);
    assert_eq!(owners_of(&back_num), by_name, "pulled by number");
}
