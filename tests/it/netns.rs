//! Harness for the master-check tests: real hosts as network namespaces (root only).
//! A [`Lab`] builds three namespaces, slave, master and witness, each joined to the slave
//! by its own veth pair (10.1.0.0/24 slave-master, 10.2.0.0/24 slave-witness), and
//! deletes them on drop, even when the test panics. Processes started through the lab
//! are killed on drop too. A missing prerequisite (not root, no `ip`, no `ping`, no
//! `python3`) fails the test with a message; it never skips.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub const SLAVE_TO_MASTER: &str = "10.1.0.2";
pub const MASTER: &str = "10.1.0.1";
pub const WITNESS: &str = "10.2.0.1";

/// Panics with a clear message unless the lab can run here.
pub fn require() {
    require_tools(
        "master-check",
        &[
            ("ip", "iproute2"),
            ("ping", "iputils-ping"),
            ("python3", "python3"),
        ],
    );
}

/// Panics unless this runs as root (network namespaces) with every `(command, package)`.
pub fn require_tools(what: &str, tools: &[(&str, &str)]) {
    assert!(
        rustix::process::geteuid().is_root(),
        "the {what} tests need root (network namespaces); run scripts/test as root"
    );
    for (cmd, pkg) in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {cmd}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "the {what} tests need `{cmd}`: install {pkg} (scripts/test does)"
        );
    }
}

pub fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        o.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
}

pub struct Lab {
    pub slave: String,
    pub master: String,
    pub witness: String,
    children: Vec<Child>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Lab {
    pub fn new() -> Lab {
        require();
        let id = format!(
            "hasync-t{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let lab = Lab {
            slave: format!("{id}-s"),
            master: format!("{id}-m"),
            witness: format!("{id}-w"),
            children: Vec::new(),
        };
        for ns in [&lab.slave, &lab.master, &lab.witness] {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        // Interface names live inside each namespace: fixed names do not collide.
        for (other, s_if, o_if, s_addr, o_addr) in [
            (&lab.master, "tomaster", "toslave", SLAVE_TO_MASTER, MASTER),
            (&lab.witness, "towitness", "toslave", "10.2.0.2", WITNESS),
        ] {
            ip(&[
                "link", "add", s_if, "netns", &lab.slave, "type", "veth", "peer", "name", o_if,
                "netns", other,
            ]);
            ip(&[
                "-n",
                &lab.slave,
                "addr",
                "add",
                &format!("{s_addr}/24"),
                "dev",
                s_if,
            ]);
            ip(&[
                "-n",
                other,
                "addr",
                "add",
                &format!("{o_addr}/24"),
                "dev",
                o_if,
            ]);
            ip(&["-n", &lab.slave, "link", "set", s_if, "up"]);
            ip(&["-n", other, "link", "set", o_if, "up"]);
        }
        lab
    }

    /// A command run inside namespace `ns`.
    pub fn cmd(&self, ns: &str, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c
    }

    /// Starts `c`; the lab kills it on drop. Returns its index for [`Lab::kill`].
    pub fn spawn(&mut self, mut c: Command) -> usize {
        self.children.push(c.spawn().expect("spawn in namespace"));
        self.children.len() - 1
    }

    pub fn kill(&mut self, i: usize) {
        let _ = self.children[i].kill();
        let _ = self.children[i].wait();
    }

    /// A real HTTP server (python3 -m http.server) on MASTER:`port` in the master
    /// namespace; returns once it listens.
    pub fn http_server(&mut self, port: u16, dir: &Path) -> usize {
        let mut c = self.cmd(&self.master, Path::new("python3"));
        c.args([
            "-u",
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            MASTER,
        ])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        let mut child = c.spawn().expect("start python3 http.server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("Serving HTTP"), "http.server said {line:?}");
        self.children.push(child);
        self.children.len() - 1
    }

    /// `ip link set <if> up|down` on the far side of a link (`ns` is master or witness).
    pub fn link(&self, ns: &str, up: bool) {
        ip(&[
            "-n",
            ns,
            "link",
            "set",
            "toslave",
            if up { "up" } else { "down" },
        ]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.slave, &self.master, &self.witness] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
