//! The SSH transport and `hasync init` against a real OpenSSH sshd.

use crate::sshd::{Sshd, SshdOptions, TEST_PASSWORD, TEST_USER, keygen};
use hasync::transport::init::{HostKeyAction, InitOptions, KeyAction, LineAction, run_init};
use hasync::transport::ssh::{Auth, SshError, SshOptions, SshSession, SshTarget, SshTransport};
use hasync::transport::{Connection, Transport, TransportError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn target(sshd: &Sshd, user: &str) -> SshTarget {
    SshTarget {
        user: Some(user.to_string()),
        host: "127.0.0.1".into(),
        port: sshd.port,
    }
}

/// A stand-in for `hasync serve`: reports its arguments on stderr, then echoes stdin.
fn fake_serve(dir: &Path) -> PathBuf {
    let p = dir.join("fake-serve");
    std::fs::write(&p, "#!/bin/sh\nprintf 'args:%s|' \"$@\" >&2\nexec cat\n").unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    p
}

/// Options trusting `sshd` (pinned known_hosts in `dir`) with its root client key.
fn options(sshd: &Sshd, dir: &Path) -> SshOptions {
    let kh = dir.join("known_hosts");
    sshd.write_known_hosts(&kh);
    SshOptions {
        identity: Some(sshd.client_key.clone()),
        known_hosts: kh,
        remote_path: fake_serve(dir).display().to_string(),
        connect_timeout: Duration::from_secs(10),
        ..SshOptions::default()
    }
}

fn ssh_err(r: Result<Connection, SshError>) -> SshError {
    match r {
        Ok(_) => panic!("expected the connection to be refused"),
        Err(e) => e,
    }
}

#[test]
fn key_auth_roundtrip_through_the_transport() {
    let sshd = Sshd::shared();
    let dir = tempfile::tempdir().unwrap();
    let t = SshTransport::new(target(sshd, "root"), options(sshd, dir.path()));
    assert_eq!(t.describe(), format!("root@127.0.0.1:{}", sshd.port));
    let args: Vec<String> = vec!["--root".into(), "/a b".into(), "it's".into(), "$(x)".into()];
    let Connection {
        mut reader,
        mut writer,
        closer,
    } = t.connect(&args).unwrap();
    // 8 MiB both ways at once: flow control must not deadlock.
    let data: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let expect = data.clone();
    let w = std::thread::spawn(move || {
        writer.write_all(&data).unwrap();
        writer.flush().unwrap();
        drop(writer);
    });
    let mut got = Vec::new();
    reader.read_to_end(&mut got).unwrap();
    w.join().unwrap();
    assert!(
        got == expect,
        "echoed data differs ({} bytes vs {})",
        got.len(),
        expect.len()
    );
    drop(reader);
    assert_eq!(
        closer.stderr(),
        "args:serve|args:--root|args:/a b|args:it's|args:$(x)|"
    );
    closer.finish().unwrap();
}

#[test]
fn peer_exit_status_and_stderr_are_reported() {
    let sshd = Sshd::shared();
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(sshd, dir.path());
    let p = dir.path().join("failing-serve");
    std::fs::write(
        &p,
        "#!/bin/sh\necho 'serve: refusing root /x' >&2\nexit 5\n",
    )
    .unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    o.remote_path = p.display().to_string();
    let Connection {
        mut reader,
        writer,
        closer,
    } = SshTransport::new(target(sshd, "root"), o)
        .connect(&[])
        .unwrap();
    drop(writer);
    let err = reader.read_to_end(&mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("exit status 5"), "{err}");
    match closer.finish() {
        Err(TransportError::PeerFailed { status, stderr }) => {
            assert_eq!(status, "exit status 5");
            assert!(stderr.contains("refusing root /x"), "{stderr}");
        }
        other => panic!("expected PeerFailed, got {other:?}"),
    }
}

#[test]
fn missing_remote_program_suggests_remote_path() {
    let sshd = Sshd::shared();
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(sshd, dir.path());
    o.remote_path = "/nonexistent/bin/hasync".into();
    let Connection {
        mut reader,
        mut writer,
        closer,
    } = SshTransport::new(target(sshd, "root"), o)
        .connect(&[])
        .unwrap();
    let _ = writer.write_all(b"hello");
    let err = reader.read(&mut [0u8; 16]).unwrap_err();
    assert!(err.to_string().contains("--remote-path"), "{err}");
    drop(writer);
    let err = closer.finish().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TransportError::PeerFailed { .. }), "{err:?}");
    assert!(
        msg.contains("exit status 127") && msg.contains("--remote-path"),
        "{msg}"
    );
    assert!(msg.contains("/nonexistent/bin/hasync"), "{msg}");
}

#[test]
fn unknown_host_key_is_refused_naming_host_and_fingerprint() {
    let sshd = Sshd::shared();
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(sshd, dir.path());
    o.known_hosts = dir.path().join("empty_known_hosts");
    let err = ssh_err(SshTransport::new(target(sshd, "root"), o.clone()).connect_ssh(&[]));
    let msg = err.to_string();
    assert!(matches!(err, SshError::HostKeyUnknown { .. }), "{err:?}");
    assert!(msg.contains(&format!("[127.0.0.1]:{}", sshd.port)), "{msg}");
    assert!(
        msg.contains("SHA256:") && msg.contains("ssh-ed25519"),
        "{msg}"
    );
    assert!(
        msg.contains("--accept-new") && msg.contains("hasync init"),
        "{msg}"
    );
    assert!(!o.known_hosts.exists() || std::fs::read_to_string(&o.known_hosts).unwrap().is_empty());
    // Through the trait: an error the CLI maps to exit 3.
    let err = SshTransport::new(target(sshd, "root"), o)
        .connect(&[])
        .err()
        .unwrap();
    assert!(err.to_string().contains("--accept-new"), "{err}");
}

#[test]
fn accept_new_records_the_host_key_then_it_is_known() {
    let sshd = Sshd::shared();
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(sshd, dir.path());
    o.known_hosts = dir.path().join("sub/known_hosts");
    o.accept_new = true;
    let c = SshTransport::new(target(sshd, "root"), o.clone())
        .connect(&[])
        .unwrap();
    drop(c);
    let text = std::fs::read_to_string(&o.known_hosts).unwrap();
    assert_eq!(text, format!("{}\n", sshd.known_hosts_line()));
    o.accept_new = false;
    let Connection {
        reader,
        writer,
        closer,
    } = SshTransport::new(target(sshd, "root"), o.clone())
        .connect(&[])
        .unwrap();
    drop(writer);
    drop(reader);
    closer.finish().unwrap();
    // Still exactly one line: a known key is not recorded twice.
    o.accept_new = true;
    drop(
        SshTransport::new(target(sshd, "root"), o.clone())
            .connect(&[])
            .unwrap(),
    );
    let text = std::fs::read_to_string(&o.known_hosts).unwrap();
    assert_eq!(
        text.lines().filter(|l| !l.trim().is_empty()).count(),
        1,
        "{text}"
    );
}

#[test]
fn changed_host_key_is_refused_even_with_accept_new() {
    let sshd = Sshd::shared();
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(sshd, dir.path());
    let other = keygen(&dir.path().join("other_host_key"));
    let mut it = other.split_whitespace();
    let (alg, b64) = (it.next().unwrap(), it.next().unwrap());
    std::fs::write(
        &o.known_hosts,
        format!(
            "# pinned by hasync\n[10.9.9.9]:22 {alg} {b64}\n[127.0.0.1]:{} {alg} {b64}\n",
            sshd.port
        ),
    )
    .unwrap();
    let before = std::fs::read_to_string(&o.known_hosts).unwrap();
    for accept_new in [false, true] {
        o.accept_new = accept_new;
        let err = ssh_err(SshTransport::new(target(sshd, "root"), o.clone()).connect_ssh(&[]));
        let msg = err.to_string();
        match &err {
            SshError::HostKeyChanged { line, .. } => assert_eq!(*line, 3, "{msg}"),
            other => panic!("expected HostKeyChanged, got {other:?}"),
        }
        assert!(msg.contains("HAS CHANGED"), "{msg}");
        assert!(
            msg.contains(&o.known_hosts.display().to_string()) && msg.contains("line 3"),
            "{msg}"
        );
    }
    assert_eq!(std::fs::read_to_string(&o.known_hosts).unwrap(), before);
}

#[test]
fn wrong_key_is_refused() {
    let sshd = Sshd::shared();
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(sshd, dir.path());
    let k = dir.path().join("stranger");
    keygen(&k);
    o.identity = Some(k.clone());
    let err = ssh_err(SshTransport::new(target(sshd, "root"), o.clone()).connect_ssh(&[]));
    assert!(matches!(err, SshError::AuthFailed { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("authentication failed") && msg.contains(&k.display().to_string()),
        "{msg}"
    );
    // A missing identity file is its own error.
    o.identity = Some(dir.path().join("nope"));
    let err = ssh_err(SshTransport::new(target(sshd, "root"), o).connect_ssh(&[]));
    assert!(matches!(err, SshError::Identity { .. }), "{err:?}");
}

#[test]
fn connect_timeout_on_a_silent_server() {
    // Accepts TCP, never speaks SSH.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let o = SshOptions {
        known_hosts: dir.path().join("kh"),
        connect_timeout: Duration::from_secs(1),
        ..SshOptions::default()
    };
    let t0 = Instant::now();
    let t = SshTransport::new(
        SshTarget {
            user: Some("root".into()),
            host: "127.0.0.1".into(),
            port,
        },
        o,
    );
    let err = ssh_err(t.connect_ssh(&[]));
    assert!(matches!(err, SshError::Timeout { .. }), "{err:?}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    drop(l);
    // Nothing listening: a prompt, clear refusal.
    let t = SshTransport::new(
        SshTarget {
            user: None,
            host: "127.0.0.1".into(),
            port,
        },
        SshOptions {
            known_hosts: dir.path().join("kh"),
            ..SshOptions::default()
        },
    );
    let err = ssh_err(t.connect_ssh(&[]));
    assert!(matches!(err, SshError::Connect { .. }), "{err:?}");
}

/// Reads until an error; panics if that takes longer than `limit`.
fn read_until_error(reader: &mut Box<dyn Read + Send>, limit: Duration) -> std::io::Error {
    let t0 = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        assert!(t0.elapsed() < limit, "no error within {limit:?}");
        match reader.read(&mut buf) {
            Ok(0) => panic!("clean end of stream after the link died"),
            Ok(_) => {}
            Err(e) => return e,
        }
    }
}

#[test]
fn sshd_killed_mid_connection_ends_with_an_error() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let o = options(&sshd, dir.path());
    let Connection {
        mut reader,
        mut writer,
        closer,
    } = SshTransport::new(target(&sshd, "root"), o)
        .connect(&[])
        .unwrap();
    writer.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    reader.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    assert!(sshd.kill_sessions() > 0);
    let t0 = Instant::now();
    let e = read_until_error(&mut reader, Duration::from_secs(20));
    assert!(t0.elapsed() < Duration::from_secs(20));
    assert!(e.to_string().contains("lost"), "{e}");
    // Writes fail too (possibly after the socket buffer fills), never hang.
    let mut failed = false;
    for _ in 0..1024 {
        if writer.write_all(&[0u8; 64 * 1024]).is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "writes kept succeeding on a dead connection");
    drop(writer);
    let err = closer.finish().unwrap_err();
    assert!(err.to_string().contains("lost"), "{err}");
}

#[test]
fn frozen_peer_is_detected_by_keepalive() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(&sshd, dir.path());
    o.keepalive = Duration::from_millis(500);
    let Connection {
        mut reader,
        mut writer,
        closer,
    } = SshTransport::new(target(&sshd, "root"), o)
        .connect(&[])
        .unwrap();
    writer.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    reader.read_exact(&mut buf).unwrap();
    assert!(sshd.freeze_sessions() > 0);
    let t0 = Instant::now();
    let e = read_until_error(&mut reader, Duration::from_secs(15));
    assert!(
        e.to_string().contains("keepalive"),
        "{e} after {:?}",
        t0.elapsed()
    );
    drop(writer);
    assert!(closer.finish().is_err());
    sshd.kill_sessions();
}

#[test]
fn init_installs_one_restricted_line_idempotently() {
    let _home = crate::sshd::lock_test_user();
    let sshd = Sshd::start_with(SshdOptions {
        password_auth: true,
        ..Default::default()
    });
    let home = crate::sshd::ensure_test_user();
    let ak = home.join(".ssh/authorized_keys");
    let _ = std::fs::remove_dir_all(home.join(".ssh"));
    let dir = tempfile::tempdir().unwrap();
    // The forced command: shows it ran instead of what the client asked for.
    let forced = dir.path().join("forced-serve");
    std::fs::write(
        &forced,
        "#!/bin/sh\necho \"FORCED args=$* original=$SSH_ORIGINAL_COMMAND\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&forced, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut opts = InitOptions::new(
        target(&sshd, TEST_USER),
        dir.path().join("keys/hasync_ed25519"),
        dir.path().join("known_hosts"),
    );
    opts.remote_path = forced.display().to_string();
    opts.restrict_args = vec!["--root".into(), "/srv/a b".into()];

    // Wrong password: auth error, nothing created locally.
    opts.password = Some("wrong".into());
    let mut bad = opts.clone();
    bad.known_hosts = dir.path().join("kh-of-the-failed-attempt");
    let err = run_init(&bad).unwrap_err();
    assert!(err.to_string().contains("authentication failed"), "{err}");
    assert!(!opts.identity.exists());

    opts.password = Some(TEST_PASSWORD.into());
    let r1 = run_init(&opts).unwrap();
    assert_eq!(
        (r1.key, r1.host_key, r1.authorized_keys),
        (KeyAction::Created, HostKeyAction::Pinned, LineAction::Added)
    );
    let text = std::fs::read_to_string(&ak).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let line = text.lines().next().unwrap();
    assert_eq!(line, r1.line);
    assert!(line.starts_with(&format!(
        "command=\"{} serve --restrict --root '/srv/a b'\",no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding ssh-ed25519 AAAA",
        forced.display()
    )), "{line}");
    assert!(
        line.ends_with(&format!(" hasync@{}", hasync::transport::init::hostname())),
        "{line}"
    );
    let mode = |p: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
            & 0o777
    };
    assert_eq!(mode(&ak), 0o600);
    assert_eq!(mode(&home.join(".ssh")), 0o700);
    assert_eq!(mode(&opts.identity), 0o600);
    assert!(dir.path().join("keys/hasync_ed25519.pub").exists());
    assert!(
        std::fs::read_to_string(&opts.known_hosts)
            .unwrap()
            .contains(&sshd.known_hosts_line())
    );

    // Second run: nothing changes.
    let r2 = run_init(&opts).unwrap();
    assert_eq!(
        (r2.key, r2.host_key, r2.authorized_keys),
        (
            KeyAction::Kept,
            HostKeyAction::AlreadyPinned,
            LineAction::Present
        )
    );
    assert_eq!(std::fs::read_to_string(&ak).unwrap(), text);

    // A foreign line survives a --force rotation; the hasync line is replaced, not duplicated.
    let other = keygen(&dir.path().join("someone_else"));
    std::fs::write(&ak, format!("{other}\n{text}")).unwrap();
    opts.force = true;
    let r3 = run_init(&opts).unwrap();
    assert_eq!(
        (r3.key, r3.authorized_keys),
        (KeyAction::Rotated, LineAction::Replaced)
    );
    assert_ne!(r3.key_fingerprint, r1.key_fingerprint);
    let text3 = std::fs::read_to_string(&ak).unwrap();
    assert_eq!(text3.lines().count(), 2, "{text3}");
    assert_eq!(text3.lines().next().unwrap(), other);
    assert_eq!(text3.lines().nth(1).unwrap(), r3.line);

    // With the installed key, asking for `cat /etc/shadow` runs the forced command instead.
    let so = SshOptions {
        identity: Some(opts.identity.clone()),
        known_hosts: opts.known_hosts.clone(),
        ..SshOptions::default()
    };
    let s = SshSession::open(&target(&sshd, TEST_USER), &so, &Auth::Default).unwrap();
    let out = s.exec("cat /etc/shadow", b"").unwrap();
    s.close();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("FORCED args=serve --restrict --root /srv/a b original=cat /etc/shadow"),
        "{stdout}"
    );
    assert!(!stdout.contains("root:"), "{stdout}");
}

// ---- The hasync binary over SSH (push / pull end to end) ----

fn hasync() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_hasync"))
}

fn tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::write(root.join("a.txt"), "hello\n").unwrap();
    std::fs::write(root.join("sub/deeper/b.bin"), vec![7u8; 300_000]).unwrap();
}

fn same_tree(a: &Path, b: &Path) {
    let out = std::process::Command::new("diff")
        .arg("-r")
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "trees differ: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn run_ok(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn push_and_pull_over_ssh_with_the_binary() {
    let sshd = Sshd::shared();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    tree(&src);
    let kh = dir.path().join("known_hosts");
    let bin = env!("CARGO_BIN_EXE_hasync");
    let common = |c: &mut std::process::Command| {
        c.arg("--identity")
            .arg(&sshd.client_key)
            .arg("--known-hosts")
            .arg(&kh);
        c.args(["--remote-path", bin]);
    };
    // First contact: --accept-new pins the key (scp-style location, port via ssh:// form).
    let dest = dir.path().join("dest");
    let url = format!("ssh://root@127.0.0.1:{}{}", sshd.port, dest.display());
    let mut c = hasync();
    c.arg("push").arg(&src).arg(&url).arg("--accept-new");
    common(&mut c);
    run_ok(&mut c);
    same_tree(&src, &dest);
    assert_eq!(
        std::fs::read_to_string(&kh).unwrap(),
        format!("{}\n", sshd.known_hosts_line())
    );

    // Pull back a changed tree, now with the pinned key.
    std::fs::write(src.join("a.txt"), "changed\n").unwrap();
    let back = dir.path().join("back");
    let mut c = hasync();
    c.arg("pull")
        .arg(format!(
            "ssh://root@127.0.0.1:{}{}",
            sshd.port,
            src.display()
        ))
        .arg(&back);
    common(&mut c);
    run_ok(&mut c);
    same_tree(&src, &back);
}

#[test]
fn binary_exits_3_with_clear_ssh_errors() {
    let sshd = Sshd::shared();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    tree(&src);
    let bin = env!("CARGO_BIN_EXE_hasync");
    let url = format!(
        "ssh://root@127.0.0.1:{}{}",
        sshd.port,
        dir.path().join("d").display()
    );
    // Unknown host key.
    let out = hasync()
        .arg("push")
        .arg(&src)
        .arg(&url)
        .arg("--identity")
        .arg(&sshd.client_key)
        .arg("--known-hosts")
        .arg(dir.path().join("kh"))
        .args(["--remote-path", bin])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("--accept-new") && err.contains("SHA256:"),
        "{err}"
    );
    // Missing remote program.
    let kh = dir.path().join("pinned");
    sshd.write_known_hosts(&kh);
    let out = hasync()
        .arg("push")
        .arg(&src)
        .arg(&url)
        .arg("--identity")
        .arg(&sshd.client_key)
        .arg("--known-hosts")
        .arg(&kh)
        .args(["--remote-path", "/nonexistent/hasync"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("--remote-path"), "{err}");
}

#[test]
fn push_authenticates_through_ssh_agent() {
    let sshd = Sshd::shared();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let mut agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent (openssh-client)");
    let t0 = Instant::now();
    while !sock.exists() && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let added = std::process::Command::new("ssh-add")
        .arg(&sshd.client_key)
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    let src = dir.path().join("src");
    tree(&src);
    let kh = dir.path().join("kh");
    sshd.write_known_hosts(&kh);
    let dest = dir.path().join("dest");
    let out = hasync()
        .arg("push")
        .arg(&src)
        .arg(format!(
            "ssh://root@127.0.0.1:{}{}",
            sshd.port,
            dest.display()
        ))
        .arg("--known-hosts")
        .arg(&kh)
        .args(["--remote-path", env!("CARGO_BIN_EXE_hasync")])
        .env("SSH_AUTH_SOCK", &sock)
        .env("HOME", dir.path()) // no ~/.ssh/id_* to fall back on
        .output()
        .unwrap();
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(
        added.status.success(),
        "ssh-add: {}",
        String::from_utf8_lossy(&added.stderr)
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    same_tree(&src, &dest);
}

#[test]
fn dead_link_while_the_engine_does_not_read_ends_writes() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(&sshd, dir.path());
    o.keepalive = Duration::from_millis(500);
    o.idle_timeout = Duration::from_secs(3);
    let Connection {
        reader,
        mut writer,
        closer,
    } = SshTransport::new(target(&sshd, "root"), o)
        .connect(&[])
        .unwrap();
    // Write without ever reading: the echo backs up through every buffer.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let chunk = vec![1u8; 256 * 1024];
        let mut sent = 0usize;
        let r = loop {
            match writer.write_all(&chunk) {
                Ok(()) => sent += chunk.len(),
                Err(e) => break e,
            }
            if sent > 4 << 30 {
                panic!("4 GiB accepted without anyone reading");
            }
        };
        let _ = tx.send(r);
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        rx.try_recv().is_err(),
        "the writer failed before the link died"
    );
    assert!(sshd.freeze_sessions() > 0);
    let e = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the blocked write did not end within 20s of the link dying");
    assert!(e.to_string().contains("lost"), "{e}");
    drop(reader);
    assert!(closer.finish().is_err());
    sshd.kill_sessions();
}

#[test]
fn a_transport_reuses_its_session_and_replaces_a_dead_one() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let t = SshTransport::new(target(&sshd, "root"), options(&sshd, dir.path()));
    let roundtrip = |t: &SshTransport| {
        let Connection {
            mut reader,
            mut writer,
            closer,
        } = t.connect(&[]).unwrap();
        writer.write_all(b"ping").unwrap();
        drop(writer);
        let mut got = Vec::new();
        reader.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"ping");
        closer.finish().unwrap();
    };
    let logins = || sshd.log_text().matches("Accepted publickey").count();
    roundtrip(&t);
    roundtrip(&t);
    assert_eq!(logins(), 1, "{}", sshd.log_text());
    // Two connections at once on one session.
    let a = t.connect(&[]).unwrap();
    let b = t.connect(&[]).unwrap();
    for c in [a, b] {
        let Connection {
            mut reader,
            mut writer,
            closer,
        } = c;
        writer.write_all(b"x").unwrap();
        drop(writer);
        let mut got = Vec::new();
        reader.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"x");
        closer.finish().unwrap();
    }
    assert_eq!(logins(), 1);
    // The session dies: the next connect opens a fresh one.
    assert!(sshd.kill_sessions() > 0);
    std::thread::sleep(Duration::from_millis(300));
    roundtrip(&t);
    assert_eq!(logins(), 2);
}
