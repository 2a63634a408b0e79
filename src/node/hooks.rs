//! The `[hooks]` commands: run through `sh -c` with `HASYNC_EVENT`, `HASYNC_JOB` and
//! `HASYNC_ERROR` in the environment (what replaces Wazo's mail to root). A hook runs
//! like every outside command ([`super::exec`]): in its own process group, killed with
//! everything it started after [`TIMEOUT`], its output captured and logged (never
//! mixed into hasync's own stdout, which may be `--json`). Its failure is logged,
//! never fatal.

use std::time::Duration;

use super::exec;

/// How long a hook may run.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `cmd` for `event` (`failure`, `failover`, `failback`) of `job`, with `extra`
/// variables added to the environment. Waits for it (bounded by [`TIMEOUT`]); returns
/// whether it succeeded.
pub fn run(cmd: &str, event: &str, job: &str, error: &str, extra: &[(&str, &str)]) -> bool {
    let mut env = vec![
        ("HASYNC_EVENT", event),
        ("HASYNC_JOB", job),
        ("HASYNC_ERROR", error),
    ];
    env.extend_from_slice(extra);
    match exec::shell(cmd, &env, TIMEOUT) {
        Ok(o) if o.success() => {
            tracing::info!(event, job, output = %o.output, "hook on_{event} ran");
            true
        }
        Ok(o) => {
            tracing::warn!(
                event,
                job,
                output = %o.output,
                "hook on_{event} for job {job} failed ({}): fix the [hooks] command {cmd:?}",
                o.describe(TIMEOUT)
            );
            false
        }
        Err(e) => {
            tracing::warn!(
                event,
                job,
                "hook on_{event} for job {job}: cannot run {cmd:?}: {e}"
            );
            false
        }
    }
}
