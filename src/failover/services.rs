//! The slave services (`[services]`): start, stop and status, as systemd units
//! (`systemctl is-active/start/stop`, found on `PATH`) or as configured shell commands.
//! Every action is idempotent, like Wazo's `xivo-manage-slave-services`: status decides
//! (a running unit is not started again; with commands, a `status` exit 0 means "running"
//! and start does nothing, non-zero means "stopped" and stop does nothing). Units start
//! in the listed order and stop in reverse order; `start` commands run in order and the
//! first failure ends the start (later services depend on earlier ones); `stop` commands
//! run in the order written (write them in the order they must run), all of them even if
//! one fails. Each step has `timeout`; on timeout its process group is killed. Every step
//! is logged (tracing) and the whole action is recorded in `state_dir/services.json`.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::node::config::Services;
use crate::node::exec;

/// `hasync services start|stop|status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Start,
    Stop,
    Status,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Status => "status",
        }
    }
}

/// One command run (or skipped) during an action.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    /// `"status"`, `"start"`, `"stop"`.
    pub kind: String,
    /// The unit, or the shell command.
    pub target: String,
    pub ok: bool,
    /// Why it did not run (already running, already stopped, an earlier start failed).
    pub skipped: Option<String>,
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub output: String,
    pub duration_ms: u64,
}

/// The result of one action; also the content of `services.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServicesReport {
    pub action: Action,
    /// Every step that had to run succeeded.
    pub ok: bool,
    /// After the action: are the services running? `None`: no way to tell (commands
    /// without a `status` command).
    pub running: Option<bool>,
    pub steps: Vec<Step>,
    pub at_unix_ms: u64,
    /// The first failure, as a sentence.
    pub error: Option<String>,
}

/// Runs one command as a step (`sh -c` for commands, `systemctl` for units).
fn step(kind: &str, target: &str, unit: bool, timeout: Duration) -> Step {
    let res = if unit {
        let verb = if kind == "status" { "is-active" } else { kind };
        let mut args = vec![verb];
        if verb == "is-active" {
            args.push("--quiet");
        }
        args.push(target);
        exec::run("systemctl", &args, &[], timeout)
    } else {
        exec::shell(target, &[], timeout)
    };
    let s = match res {
        Ok(o) => Step {
            kind: kind.to_string(),
            target: target.to_string(),
            ok: o.success(),
            skipped: None,
            exit_code: o.code,
            timed_out: o.timed_out,
            output: if o.timed_out {
                format!("{} ({})", o.output, o.describe(timeout))
            } else {
                o.output
            },
            duration_ms: o.duration.as_millis() as u64,
        },
        Err(e) => Step {
            kind: kind.to_string(),
            target: target.to_string(),
            ok: false,
            skipped: None,
            exit_code: None,
            timed_out: false,
            output: format!(
                "cannot run {}: {e}",
                if unit { "systemctl" } else { "/bin/sh" }
            ),
            duration_ms: 0,
        },
    };
    if s.ok || kind == "status" {
        tracing::info!(kind, target, exit = ?s.exit_code, output = %s.output, "services: {kind} {target}");
    } else {
        tracing::error!(kind, target, exit = ?s.exit_code, timed_out = s.timed_out, output = %s.output, "services: {kind} {target} failed");
    }
    s
}

fn skipped(kind: &str, target: &str, why: &str) -> Step {
    tracing::info!(kind, target, "services: {kind} {target} skipped ({why})");
    Step {
        kind: kind.into(),
        target: target.into(),
        ok: true,
        skipped: Some(why.into()),
        exit_code: None,
        timed_out: false,
        output: String::new(),
        duration_ms: 0,
    }
}

fn failure_sentence(action: Action, s: &Step) -> String {
    let how = if s.timed_out {
        "timed out and was killed".to_string()
    } else {
        match s.exit_code {
            Some(c) => format!("exited with {c}"),
            None => "could not run or was killed".into(),
        }
    };
    format!(
        "services {}: {} {:?} {how}{} (check the command or unit; see `hasync -v services {}`)",
        action.as_str(),
        s.kind,
        s.target,
        if s.output.is_empty() {
            String::new()
        } else {
            format!(": {}", s.output.lines().last().unwrap_or(""))
        },
        action.as_str()
    )
}

/// Runs `action` on the configured services.
pub fn run(svc: &Services, action: Action) -> ServicesReport {
    let t = svc.timeout;
    let mut steps = Vec::new();
    let running;
    if !svc.units.is_empty() {
        match action {
            Action::Status => {
                for u in &svc.units {
                    steps.push(step("status", u, true, t));
                }
                running = Some(steps.iter().all(|s| s.ok));
                // `is-active` exiting non-zero is an answer, not a failure.
                for s in &mut steps {
                    s.ok = true;
                }
            }
            Action::Start => {
                for u in &svc.units {
                    if step("status", u, true, t).ok {
                        steps.push(skipped("start", u, "already active"));
                        continue;
                    }
                    let s = step("start", u, true, t);
                    let failed = !s.ok;
                    steps.push(s);
                    if failed {
                        break;
                    }
                }
                running = Some(steps.iter().all(|s| s.ok) && steps.len() == svc.units.len());
            }
            Action::Stop => {
                for u in svc.units.iter().rev() {
                    if !step("status", u, true, t).ok {
                        steps.push(skipped("stop", u, "not active"));
                        continue;
                    }
                    steps.push(step("stop", u, true, t));
                }
                running = Some(!steps.iter().all(|s| s.ok));
            }
        }
    } else {
        let status = svc.status.as_ref().map(|c| {
            let mut s = step("status", c, false, t);
            let up = s.ok;
            s.ok = !s.timed_out;
            (s, up)
        });
        let was_running = status.as_ref().map(|(_, up)| *up);
        if let Some((s, _)) = status {
            steps.push(s);
        }
        match action {
            Action::Status => running = was_running,
            Action::Start if was_running == Some(true) => {
                for c in &svc.start {
                    steps.push(skipped("start", c, "status says running"));
                }
                running = Some(true);
            }
            Action::Start => {
                let mut ok = true;
                for c in &svc.start {
                    if !ok && !svc.keep_going {
                        steps.push(skipped("start", c, "an earlier start failed"));
                        continue;
                    }
                    let s = step("start", c, false, t);
                    ok &= s.ok;
                    steps.push(s);
                }
                running = svc.status.as_ref().map(|c| step("status", c, false, t).ok);
            }
            Action::Stop if was_running == Some(false) && !svc.stop_unguarded => {
                for c in &svc.stop {
                    steps.push(skipped("stop", c, "status says stopped"));
                }
                running = Some(false);
            }
            Action::Stop => {
                for c in &svc.stop {
                    steps.push(step("stop", c, false, t));
                }
                running = svc.status.as_ref().map(|c| step("status", c, false, t).ok);
            }
        }
    }
    let error = steps
        .iter()
        .find(|s| !s.ok)
        .map(|s| failure_sentence(action, s));
    ServicesReport {
        action,
        ok: error.is_none(),
        running,
        steps,
        at_unix_ms: super::now_ms(),
        error,
    }
}

/// Records `report` in `state_dir/services.json` (atomically).
pub fn record(state_dir: &Path, report: &ServicesReport) -> Result<(), super::MasterError> {
    Ok(super::write_json(&state_dir.join("services.json"), report)?)
}
