//! The daemon over SSH: every job and every run shares one SSH session.

use super::*;
use crate::sshd::Sshd;
use crate::util::*;

#[test]
fn jobs_share_one_ssh_session() {
    let sshd = Sshd::start();
    let d = tempfile::tempdir().unwrap();
    let kh = d.path().join("known_hosts");
    sshd.write_known_hosts(&kh);
    let peer_root = d.path().join("s");
    let cfg = d.path().join("hasync.toml");
    std::fs::write(
        &cfg,
        format!(
            "[node]\nrole = \"master\"\npeer = \"root@127.0.0.1:{}\"\nidentity = \"{}\"\nknown_hosts = \"{}\"\n\
             remote_path = \"{}\"\nroot = \"m\"\npeer_root = \"{}\"\nstate_dir = \"state\"\n\n\
             [[sync]]\nname = \"one\"\npaths = [\"/one\"]\nschedule = \"watch\"\nsafety_pass = \"manual\"\n\n\
             [[sync]]\nname = \"two\"\npaths = [\"/two\"]\nschedule = \"watch\"\nsafety_pass = \"manual\"\n",
            sshd.port,
            sshd.client_key.display(),
            kh.display(),
            bin().display(),
            peer_root.display()
        ),
    )
    .unwrap();
    let (one, two) = (
        Tree::new(&d.path().join("m/one")),
        Tree::new(&d.path().join("m/two")),
    );
    one.file("a", b"1");
    two.file("b", b"2");
    let daemon = Daemon::start(&cfg);
    let log = || daemon.log();
    let both =
        || mirrored(&one.0, &peer_root.join("one")) && mirrored(&two.0, &peer_root.join("two"));
    wait_for(15, both, log);
    for i in 0..3 {
        one.file(format!("a{i}"), b"x");
        two.file(format!("b{i}"), b"y");
        wait_for(10, both, log);
    }
    let runs = daemon.log().matches(": done:").count();
    assert!(runs >= 4, "{}", daemon.log());
    let sessions = sshd.log_text().matches("Accepted publickey").count();
    assert_eq!(
        sessions,
        1,
        "{runs} runs over {sessions} SSH sessions: {}",
        sshd.log_text()
    );
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
}
