//! The `hasync` binary over SSH in the situations an admin meets: `hasync init`
//! from a config, a restricted key that cannot reach anything else, and a link
//! that dies in the middle of a transfer (a TCP proxy between client and sshd
//! stops forwarding: a black hole, the hardest case to notice).

use crate::sshd::{Sshd, SshdOptions, TEST_PASSWORD, TEST_USER, ensure_test_user, lock_test_user};
use crate::util::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn test_user_ids() -> (u32, u32) {
    let out = std::process::Command::new("id")
        .arg(TEST_USER)
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    let num = |key: &str| -> u32 {
        let rest = &s[s.find(key).unwrap() + key.len()..];
        rest[..rest.find('(').unwrap()].parse().unwrap()
    };
    (num("uid="), num("gid="))
}

#[test]
fn init_command_restricts_the_key_to_the_sync_directories() {
    let _home = lock_test_user();
    let sshd = Sshd::start_with(SshdOptions {
        password_auth: true,
        ..Default::default()
    });
    let home = ensure_test_user();
    let _ = std::fs::remove_dir_all(home.join(".ssh"));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    chmod(d, 0o755);
    Tree::new(&d.join("master/data"))
        .file("a.txt", b"hello\n")
        .file("sub/b.bin", &pseudo(50_000, 3));
    // The peer's side belongs to the test user: only the restriction can refuse it.
    let (uid, gid) = test_user_ids();
    for sub in ["slave", "outside"] {
        std::fs::create_dir(d.join(sub)).unwrap();
        std::os::unix::fs::chown(d.join(sub), Some(uid), Some(gid)).unwrap();
    }
    std::fs::write(d.join("pw"), format!("{TEST_PASSWORD}\n")).unwrap();
    let cfg = d.join("hasync.toml");
    std::fs::write(
        &cfg,
        format!(
            "[node]\nrole = \"master\"\npeer = \"{TEST_USER}@127.0.0.1:{port}\"\nidentity = \"key\"\nknown_hosts = \"kh\"\n\
             remote_path = \"{bin}\"\nroot = \"master\"\npeer_root = \"{slave}\"\nstate_dir = \"state\"\ntimeout = \"10s\"\n\n\
             [[sync]]\nname = \"data\"\npaths = [\"/data\"]\ndelete = true\n",
            port = sshd.port,
            bin = bin().display(),
            slave = d.join("slave").display()
        ),
    )
    .unwrap();

    let out = ok(hasync()
        .arg("--config")
        .arg(&cfg)
        .args(["init", "--password-file"])
        .arg(d.join("pw"))
        .output()
        .unwrap());
    assert!(
        out.contains("restricted key added") && out.contains("pinned"),
        "{out}"
    );
    let ak = home.join(".ssh/authorized_keys");
    let text = std::fs::read_to_string(&ak).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let allowed = d.join("slave/data");
    assert!(
        text.starts_with(&format!(
            "command=\"{} serve --restrict --allow {}\",no-pty,",
            bin().display(),
            allowed.display()
        )),
        "{text}"
    );
    // Idempotent.
    let out = ok(hasync()
        .arg("--config")
        .arg(&cfg)
        .args(["init", "--password-file"])
        .arg(d.join("pw"))
        .output()
        .unwrap());
    assert!(
        out.contains("already present") && out.contains("already pinned"),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&ak).unwrap(), text);

    // The job runs with the installed key.
    ok(hasync()
        .arg("--config")
        .arg(&cfg)
        .arg("sync")
        .output()
        .unwrap());
    assert_mirror(&d.join("master/data"), &allowed);

    // Anything else is refused by the peer, even where the account could write.
    let ssh_args = |c: &mut std::process::Command| {
        c.arg("--identity")
            .arg(d.join("key"))
            .arg("--known-hosts")
            .arg(d.join("kh"));
    };
    let outside = format!(
        "ssh://{TEST_USER}@127.0.0.1:{}{}",
        sshd.port,
        d.join("outside/x").display()
    );
    let mut c = hasync();
    c.arg("push").arg(d.join("master/data")).arg(&outside);
    ssh_args(&mut c);
    let o = c.output().unwrap();
    assert!(!o.status.success(), "{}", text_of(&o));
    assert!(
        text_of(&o).contains("outside the directories this peer serves"),
        "{}",
        text_of(&o)
    );
    assert!(!d.join("outside/x").exists());
    // Reading /etc through the key is refused too.
    let mut c = hasync();
    c.arg("pull")
        .arg(format!("ssh://{TEST_USER}@127.0.0.1:{}/etc", sshd.port))
        .arg(d.join("stolen"));
    ssh_args(&mut c);
    let o = c.output().unwrap();
    assert!(!o.status.success());
    assert!(
        text_of(&o).contains("outside the directories this peer serves"),
        "{}",
        text_of(&o)
    );
    assert!(!d.join("stolen/passwd").exists());
    let _ = std::fs::remove_dir_all(home.join(".ssh"));
}

fn text_of(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A TCP forwarder that can be frozen: it then stops moving bytes but keeps
/// both connections open, like a link that silently died.
struct Proxy {
    port: u16,
    frozen: Arc<AtomicBool>,
    /// Bytes forwarded from the client to the server.
    up: Arc<AtomicU64>,
}

impl Proxy {
    fn start(to: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let up = Arc::new(AtomicU64::new(0));
        let (f, u) = (frozen.clone(), up.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let server = TcpStream::connect(("127.0.0.1", to)).unwrap();
                pump(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    f.clone(),
                    Some(u.clone()),
                );
                pump(server, client, f.clone(), None);
            }
        });
        Proxy { port, frozen, up }
    }
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    frozen: Arc<AtomicBool>,
    count: Option<Arc<AtomicU64>>,
) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            while frozen.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // Hold what arrived while frozen: it never gets through.
            while frozen.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
            if let Some(c) = &count {
                c.fetch_add(n as u64, Ordering::SeqCst);
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

#[test]
fn link_dying_mid_transfer_exits_3_in_time_and_the_next_run_converges() {
    let sshd = Sshd::shared();
    let proxy = Proxy::start(sshd.port);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (old, new) = (pseudo(48 << 20, 7), pseudo(48 << 20, 8));
    Tree::new(&d.join("src"))
        .file("big.bin", &new)
        .file("small.txt", b"small\n");
    Tree::new(&d.join("dest")).file("big.bin", &old);
    let host_key = sshd
        .host_key_pub
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    std::fs::write(
        d.join("kh"),
        format!("[127.0.0.1]:{} {host_key}\n", proxy.port),
    )
    .unwrap();
    let push = || {
        let mut c = hasync();
        c.arg("push")
            .arg(d.join("src"))
            .arg(format!(
                "ssh://root@127.0.0.1:{}{}",
                proxy.port,
                d.join("dest").display()
            ))
            .args(["--delete", "--timeout", "3", "--identity"])
            .arg(&sshd.client_key)
            .arg("--known-hosts")
            .arg(d.join("kh"))
            .arg("--remote-path")
            .arg(bin());
        c
    };
    let mut child = push()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while proxy.up.load(Ordering::SeqCst) < (8 << 20) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the transfer did not start"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the push ended before the link died"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    proxy.frozen.store(true, Ordering::SeqCst);
    let cut = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            cut.elapsed() < Duration::from_secs(20),
            "still running 20 s after the link died (timeout 3 s)"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let waited = cut.elapsed();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(3), "{err}");
    assert!(
        waited < Duration::from_secs(10),
        "took {waited:?} to notice (timeout 3 s): {err}"
    );
    // The slave's copy is the old file or the new one, never a mix.
    let got = std::fs::read(d.join("dest/big.bin")).unwrap();
    assert!(got == old || got == new, "big.bin is half-written");

    // The link comes back: the next run converges and leaves no temp file.
    proxy.frozen.store(false, Ordering::SeqCst);
    ok(push().output().unwrap());
    assert_mirror(&d.join("src"), &d.join("dest"));
}
