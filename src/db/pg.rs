//! Running PostgreSQL's own clients on this node: `pg_dump` to take a dump, `psql` to
//! query the catalog and to replay a script. Connections go through libpq's `host`
//! (normally the local unix-socket directory) and `port`; hasync never asks for a
//! password (`-w`) and never reads `~/.psqlrc` (`-X`). When hasync runs as root and
//! `run_as` is set, the clients run as that system user through `runuser`, which is
//! what peer authentication on the local socket expects; their input and output go
//! through pipes opened by hasync, so the staging files stay private to root.

use crate::node::config::DbJob;
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Why a PostgreSQL client (psql, pg_dump) could not do its work on this node. The text
/// names the program; [`PgError::Failed`] carries the program's own message, kept as lines.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The program could not be started (not installed, not executable).
    #[error("cannot run {program}: {source} (install the PostgreSQL client, or set [db] bin_dir)")]
    Start {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// Its output could not be stored (the program was then killed).
    #[error("cannot store the output of {program}: {source}")]
    Output {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// Waiting for it failed.
    #[error("{program} did not finish: {source}")]
    Wait {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// It ran and failed: `how` is "exit N" or "killed by a signal", `message` its stderr.
    #[error("{program} failed ({how}){}", if message.is_empty() { String::new() } else { format!(":\n{message}") })]
    Failed {
        program: String,
        how: String,
        message: String,
    },
    /// It answered something hasync cannot read.
    #[error("unexpected answer {answer:?} {what}")]
    Unexpected { what: &'static str, answer: String },
}

/// How to reach one node's local database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PgConn {
    pub database: String,
    pub user: String,
    /// Socket directory (or host); `None`: libpq's default.
    pub host: Option<String>,
    pub port: Option<u16>,
    /// System user to run the clients as (only when hasync runs as root).
    pub run_as: Option<String>,
    /// Where `pg_dump` and `psql` live; `None`: `PATH`.
    pub bin_dir: Option<PathBuf>,
}

impl PgConn {
    pub fn from_job(job: &DbJob) -> PgConn {
        PgConn {
            database: job.database.clone(),
            user: job.user.clone(),
            host: job.host.clone(),
            port: job.port,
            run_as: job.run_as.clone(),
            bin_dir: job.bin_dir.clone(),
        }
    }

    /// Where the database is, for messages: `database "x" as user "postgres" on /run/postgresql:5432`.
    pub fn describe(&self) -> String {
        format!(
            "database {:?} as user {:?} on {}:{}",
            self.database,
            self.user,
            self.host.as_deref().unwrap_or("the default local socket"),
            self.port
                .map_or("default port".to_string(), |p| p.to_string())
        )
    }

    /// `program` (pg_dump, psql) with the connection arguments, ready for more.
    fn command(&self, program: &str) -> Command {
        let prog = match &self.bin_dir {
            Some(d) => d.join(program),
            None => PathBuf::from(program),
        };
        let mut c = match &self.run_as {
            Some(u) if rustix::process::geteuid().is_root() => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(&prog);
                c
            }
            _ => Command::new(&prog),
        };
        c.arg("-w").arg("-d").arg(&self.database);
        c.arg("-U").arg(&self.user);
        if let Some(h) = &self.host {
            c.arg("-h").arg(h);
        }
        if let Some(p) = self.port {
            c.arg("-p").arg(p.to_string());
        }
        if std::env::var_os("PGCONNECT_TIMEOUT").is_none() {
            c.env("PGCONNECT_TIMEOUT", "10");
        }
        c.env("PGAPPNAME", "hasync");
        c
    }

    /// Runs one SQL statement with psql, returns its unaligned output (fields separated
    /// by 0x1f, records by 0x1e). `Err` is psql's own message.
    pub fn query(&self, sql: &str) -> Result<String, PgError> {
        let mut c = self.command("psql");
        c.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-F", "\x1f", "-R", "\x1e", "-c", sql]);
        let out = run(c, Stdio::null(), true)?;
        Ok(String::from_utf8_lossy(&out.0).into_owned())
    }

    /// Dumps the database with pg_dump and the given extra arguments, handing its output
    /// to `consume` as it comes (so the caller's work overlaps the dump's); returns
    /// pg_dump's warnings (stderr) on success, its message (or the consumer's error, pg_dump
    /// then being killed) on failure.
    pub fn dump(&self, args: &[String], consume: Consumer) -> Result<String, PgError> {
        let mut c = self.command("pg_dump");
        // Both nodes write timestamptz the same way, so their tables compare ([`super::digest`]).
        c.env("PGTZ", "UTC").args(args);
        run_reading(c, Stdio::null(), consume)
    }

    /// Replays `script` with psql in one transaction, stopping at the first error
    /// (`--single-transaction -v ON_ERROR_STOP=1`): either everything commits or nothing
    /// does. `Err` is psql's own message.
    pub fn replay(&self, script: File) -> Result<(), PgError> {
        let mut c = self.command("psql");
        c.args([
            "-X",
            "-q",
            "--single-transaction",
            "-v",
            "ON_ERROR_STOP=1",
            "-f",
            "-",
        ]);
        run(c, Stdio::from(script), false).map(|_| ())
    }
}

/// Reads a child's stdout as it comes.
type Consumer<'a> = &'a mut dyn FnMut(&mut dyn Read) -> std::io::Result<()>;

/// The client `c` runs, for messages: psql or pg_dump, also when run through `runuser`.
fn display_program(c: &Command) -> String {
    let prog = c.get_program().to_string_lossy().into_owned();
    if prog != "runuser" {
        return prog;
    }
    let mut args = c.get_args().skip_while(|a| *a != "--").skip(1);
    args.next()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or(prog)
}

/// Runs `c`, returns (stdout if `capture`, stderr) on exit 0, else a message with stderr.
fn run(c: Command, stdin: Stdio, capture: bool) -> Result<(Vec<u8>, String), PgError> {
    let mut bytes = Vec::new();
    let stderr = if capture {
        run_reading(c, stdin, &mut |o| o.read_to_end(&mut bytes).map(|_| ()))?
    } else {
        run_child(c, stdin, Stdio::null(), None)?
    };
    Ok((bytes, stderr))
}

/// Runs `c` with its stdout piped to `consume`; returns stderr on exit 0.
fn run_reading(c: Command, stdin: Stdio, consume: Consumer) -> Result<String, PgError> {
    run_child(c, stdin, Stdio::piped(), Some(consume))
}

fn run_child(
    mut c: Command,
    stdin: Stdio,
    stdout: Stdio,
    consume: Option<Consumer>,
) -> Result<String, PgError> {
    let program = display_program(&c);
    let mut child = c
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| PgError::Start {
            program: program.clone(),
            source,
        })?;
    // Read stderr on a thread while stdout is read here: neither pipe may fill up.
    let mut err_pipe = child.stderr.take().expect("piped stderr");
    let err_thread = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err_pipe.read_to_end(&mut s);
        s
    });
    if let (Some(mut o), Some(consume)) = (child.stdout.take(), consume)
        && let Err(e) = consume(&mut o)
    {
        let _ = child.kill();
        let _ = child.wait();
        let _ = err_thread.join();
        return Err(PgError::Output { program, source: e });
    }
    let status = child.wait().map_err(|source| PgError::Wait {
        program: program.clone(),
        source,
    })?;
    let stderr = String::from_utf8_lossy(&err_thread.join().unwrap_or_default())
        .trim()
        .to_string();
    if status.success() {
        Ok(stderr)
    } else {
        let how = match status.code() {
            Some(c) => format!("exit {c}"),
            None => "killed by a signal".to_string(),
        };
        // psql's and pg_dump's messages are several lines (ERROR, DETAIL, CONTEXT):
        // kept as lines, each shown on its own.
        Err(PgError::Failed {
            program,
            how,
            message: stderr,
        })
    }
}
