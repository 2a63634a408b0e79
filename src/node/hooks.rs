//! The `[hooks]` commands: run through `sh -c` with `HASYNC_EVENT`, `HASYNC_JOB` and
//! `HASYNC_ERROR` in the environment (what replaces Wazo's mail to root). A hook never
//! blocks hasync for long (it is killed after [`TIMEOUT`]) and its failure is logged,
//! never fatal.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a hook may run.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `cmd` for `event` (`failure`, `failover`, `failback`) of `job`. Waits for it
/// (bounded by [`TIMEOUT`]); returns whether it succeeded.
pub fn run(cmd: &str, event: &str, job: &str, error: &str) -> bool {
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .env("HASYNC_EVENT", event)
        .env("HASYNC_JOB", job)
        .env("HASYNC_ERROR", error)
        .stdin(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("hook {event} for job {job}: cannot run {cmd:?}: {e}");
            return false;
        }
    };
    let t0 = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return true,
            Ok(Some(st)) => {
                tracing::warn!("hook {event} for job {job}: {cmd:?} failed ({st})");
                return false;
            }
            Ok(None) if t0.elapsed() > TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                tracing::warn!("hook {event} for job {job}: {cmd:?} killed after {TIMEOUT:?}");
                return false;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                tracing::warn!("hook {event} for job {job}: {e}");
                return false;
            }
        }
    }
}
