//! Handshake deadlines on both sides. A peer that connects and then says
//! nothing, or half a `Hello`, is dropped by `hasync serve` after its handshake
//! timeout (`serve --handshake-timeout SECS`, else `$HASYNC_HANDSHAKE_TIMEOUT`,
//! else 30 s) with exit 3; a client whose serve never answers `Hello` ends with
//! exit 3 after the same deadline (`$HASYNC_HANDSHAKE_TIMEOUT`).

use crate::util::*;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Start `hasync serve`, feed it `input` and keep its stdin open; return
/// (exit code, stderr, time to exit). The process is killed after 30 s.
fn stalled_serve(
    args: &[&str],
    env: Option<&str>,
    input: &[u8],
) -> (Option<i32>, String, Duration) {
    let mut c = Command::new(bin());
    c.arg("serve")
        .args(args)
        .env_remove("HASYNC_HANDSHAKE_TIMEOUT");
    if let Some(v) = env {
        c.env("HASYNC_HANDSHAKE_TIMEOUT", v);
    }
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    stdin.flush().unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("serve still waiting 30 s into a stalled handshake");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = t0.elapsed();
    drop(stdin);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code(), err, took)
}

fn half_hello() -> Vec<u8> {
    let full = hasync::wire::Msg::Hello {
        major: hasync::wire::message::PROTO_MAJOR,
        minor: 0,
        software: "stalls".into(),
    }
    .encode();
    let mut v = (full.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(&full[..full.len() / 2]);
    v
}

#[test]
fn serve_drops_a_peer_that_sends_nothing() {
    let (code, err, took) = stalled_serve(&[], Some("1"), b"");
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("handshake"), "{err}");
    assert!(
        took >= Duration::from_millis(900),
        "gave up too early: {took:?}"
    );
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

#[test]
fn serve_drops_a_peer_that_sends_half_a_hello() {
    let (code, err, took) = stalled_serve(&["--handshake-timeout", "1.5"], None, &half_hello());
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("handshake"), "{err}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    // Half a length prefix, too.
    let (code, err, _) = stalled_serve(&[], Some("1"), &[0, 0]);
    assert_eq!(code, Some(3), "{err}");
}

#[test]
fn a_bad_handshake_timeout_is_a_usage_error() {
    let (code, err, _) = stalled_serve(&["--handshake-timeout", "0"], None, b"");
    assert_eq!(code, Some(2), "{err}");
    let (code, err, _) = stalled_serve(&[], Some("soon"), b"");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("HASYNC_HANDSHAKE_TIMEOUT"), "{err}");
}

#[test]
fn a_completed_handshake_is_not_cut_by_the_deadline() {
    // Hello answered, then 1.5 s of silence with a 0.5 s deadline: serve is still there
    // and serves a pull.
    use hasync::wire::{FrameReader, FrameWriter, Msg, Open, ServerRole, SessionOptions};
    let d = tempfile::tempdir().unwrap();
    Tree::new(&d.path().join("src")).file("a", b"a");
    let mut child = Command::new(bin())
        .arg("serve")
        .env("HASYNC_HANDSHAKE_TIMEOUT", "0.5")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut wr = FrameWriter::new(child.stdin.take().unwrap());
    let mut rd = FrameReader::new(child.stdout.take().unwrap());
    let mut send = |m: Msg| {
        wr.write_frame(&m.encode()).unwrap();
        wr.flush().unwrap();
    };
    send(Msg::Hello {
        major: hasync::wire::message::PROTO_MAJOR,
        minor: 0,
        software: "slow".into(),
    });
    assert!(matches!(
        Msg::decode(rd.read_frame().unwrap()).unwrap(),
        Msg::HelloOk { .. }
    ));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "serve gave up after a good Hello"
    );
    send(Msg::Open(Open {
        role: ServerRole::Send,
        root: d.path().join("src").as_os_str().as_encoded_bytes().to_vec(),
        options: SessionOptions::default(),
    }));
    assert_eq!(Msg::decode(rd.read_frame().unwrap()).unwrap(), Msg::OpenOk);
    send(Msg::Bye);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn client_gives_up_on_a_peer_that_never_answers_hello() {
    // Over SSH, the "hasync" on the peer is a script that reads nothing and says nothing.
    let sshd = crate::sshd::Sshd::shared();
    let d = tempfile::tempdir().unwrap();
    let fake = d.path().join("fake-hasync");
    std::fs::write(&fake, "#!/bin/sh\nexec sleep 60\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let kh = d.path().join("kh");
    sshd.write_known_hosts(&kh);
    let t0 = Instant::now();
    let out = hasync()
        .env("HASYNC_HANDSHAKE_TIMEOUT", "2")
        .arg("pull")
        .arg(format!(
            "ssh://root@127.0.0.1:{}{}",
            sshd.port,
            d.path().join("src").display()
        ))
        .arg(d.path().join("dst"))
        .arg("--identity")
        .arg(&sshd.client_key)
        .arg("--known-hosts")
        .arg(&kh)
        .arg("--remote-path")
        .arg(&fake)
        .output()
        .unwrap();
    let took = t0.elapsed();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("handshake"), "{}", text(&out));
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

/// After the handshake, a peer that stays connected but says nothing and reads
/// nothing is dropped after the idle deadline (`serve --idle-timeout`, else
/// `$HASYNC_IDLE_TIMEOUT`, else 600 s).
#[test]
fn serve_drops_a_peer_that_goes_silent_after_the_handshake() {
    let hello = hasync::wire::Msg::Hello {
        major: hasync::wire::message::PROTO_MAJOR,
        minor: 0,
        software: "then silent".into(),
    }
    .encode();
    let mut input = (hello.len() as u32).to_be_bytes().to_vec();
    input.extend_from_slice(&hello);
    let mut c = Command::new(bin());
    c.args(["serve", "--idle-timeout", "1"])
        .env_remove("HASYNC_IDLE_TIMEOUT");
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&input).unwrap();
    stdin.flush().unwrap();
    // The HelloOk arrives: the handshake is done, then we go silent.
    let mut len = [0u8; 4];
    child.stdout.as_mut().unwrap().read_exact(&mut len).unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "serve still waiting on a silent peer"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    drop(stdin);
    assert_eq!(status.code(), Some(3), "{err}");
    assert!(err.contains("went silent"), "{err}");
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
}

/// The idle deadline never cuts a session that is working: a push of a 48 MiB
/// file and many small ones with a 1 s deadline (the local transport's serve
/// child inherits `$HASYNC_IDLE_TIMEOUT`).
#[test]
fn the_idle_deadline_never_cuts_a_working_session() {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    let t = Tree::new(&src);
    t.file("big", &pseudo(48 << 20, 3));
    for i in 0..500 {
        t.file(format!("small/{i:03}"), format!("{i}").as_bytes());
    }
    ok(hasync()
        .env("HASYNC_IDLE_TIMEOUT", "1")
        .arg("push")
        .arg(&src)
        .arg(&dst)
        .output()
        .unwrap());
    std::fs::write(src.join("big"), pseudo(48 << 20, 4)).unwrap();
    ok(hasync()
        .env("HASYNC_IDLE_TIMEOUT", "1")
        .arg("push")
        .arg(&src)
        .arg(&dst)
        .output()
        .unwrap());
    assert_mirror(&src, &dst);
}
