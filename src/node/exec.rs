//! Running an outside command with a deadline: service actions, `cmd:` probes, hooks,
//! `ping`, `curl`, `systemctl`. The command runs in its own process group, so a timeout
//! kills it and everything it started in the foreground. Its stdout and stderr go to an
//! anonymous temp file, not a pipe: a start command that leaves a daemon behind (`sleep
//! 1000 &`) keeps a pipe open forever, a file does not make us wait for it.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How a command ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// `None` when killed by a signal or by our timeout.
    pub code: Option<i32>,
    pub timed_out: bool,
    /// stdout and stderr interleaved, lossily decoded, at most 4 KiB (the tail).
    pub output: String,
    pub duration: Duration,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }

    /// A short description: "exit 0", "exit 3", "killed after 5s (timeout)", "killed by a signal".
    pub fn describe(&self, timeout: Duration) -> String {
        match (self.timed_out, self.code) {
            (true, _) => format!("killed after {timeout:?} (timeout)"),
            (false, Some(c)) => format!("exit {c}"),
            (false, None) => "killed by a signal".to_string(),
        }
    }
}

const OUTPUT_LIMIT: u64 = 4096;

/// Runs `program args` with `env` added, waiting at most `timeout`; the process group is
/// killed (SIGKILL) on timeout. `Err` only when the command could not be started.
pub fn run(
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> std::io::Result<Outcome> {
    let mut out = tempfile::tempfile()?;
    let started = Instant::now();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out.try_clone()?)
        .process_group(0);
    let mut child = cmd.spawn()?;
    let deadline = started + timeout;
    let mut timed_out = false;
    let status: Option<ExitStatus> = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if Instant::now() >= deadline {
            timed_out = true;
            if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let duration = started.elapsed();
    let len = out.seek(SeekFrom::End(0))?;
    out.seek(SeekFrom::Start(len.saturating_sub(OUTPUT_LIMIT)))?;
    let mut buf = Vec::new();
    out.take(OUTPUT_LIMIT).read_to_end(&mut buf)?;
    Ok(Outcome {
        code: status.and_then(|s| s.code()),
        timed_out,
        output: String::from_utf8_lossy(&buf).trim_end().to_string(),
        duration,
    })
}

/// Runs `sh -c command` (see [`run`]).
pub fn shell(command: &str, env: &[(&str, &str)], timeout: Duration) -> std::io::Result<Outcome> {
    run("/bin/sh", &["-c", command], env, timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_exit_code_are_kept() {
        let o = shell(
            "echo out; echo err >&2; exit 3",
            &[],
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(o.code, Some(3));
        assert!(
            o.output.contains("out") && o.output.contains("err"),
            "{o:?}"
        );
    }

    #[test]
    fn timeout_kills_the_group_and_a_daemon_does_not_block() {
        let t0 = Instant::now();
        let o = shell("sleep 30", &[], Duration::from_millis(200)).unwrap();
        assert!(o.timed_out && !o.success());
        assert!(t0.elapsed() < Duration::from_secs(5));
        // A background child that keeps stdout open: we return when sh exits.
        let t0 = Instant::now();
        let o = shell(
            "sleep 3 & echo $! ; exit 0",
            &[("X", "1")],
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(o.success(), "{o:?}");
        assert!(t0.elapsed() < Duration::from_secs(2));
        let pid: i32 = o.output.trim().parse().unwrap();
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).unwrap(),
            rustix::process::Signal::KILL,
        );
    }
}
