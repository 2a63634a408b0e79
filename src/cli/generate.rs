//! `hasync generate man|completions`: the man pages and the shell completions, made
//! from the clap definition so they never drift from `--help` (hidden: for packaging).
//! The pages are committed under `contrib/man/` (a test checks they equal what this
//! command writes) and installed by the Debian package, as are the completions.

use std::path::PathBuf;

use clap::CommandFactory;
use clap_complete::Shell;

use super::{Cli, CliError};

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    #[command(subcommand)]
    pub what: What,
}

#[derive(clap::Subcommand, Debug)]
pub enum What {
    /// hasync.1 on stdout; with --out DIR, hasync.1 and hasync-<command>.1 in DIR
    Man {
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// The completion script for SHELL on stdout, or into DIR with --out
    Completions {
        #[arg(value_enum)]
        shell: Shell,
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

pub fn run(args: &GenerateArgs) -> Result<i32, CliError> {
    let mut cmd = Cli::command();
    let io = |what: String| move |e: std::io::Error| CliError::usage(format!("{what}: {e}"));
    match &args.what {
        What::Man { out: None } => {
            let page = main_page(cmd).map_err(io("render the man page".into()))?;
            use std::io::Write as _;
            std::io::stdout()
                .write_all(&page)
                .map_err(io("write".into()))?;
        }
        What::Man { out: Some(dir) } => {
            std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
            // No `help` pages: `hasync help X` is `hasync X --help`.
            clap_mangen::generate_to(cmd.clone().disable_help_subcommand(true), dir)
                .map_err(io(format!("write the man pages to {}", dir.display())))?;
            let page = main_page(cmd).map_err(io("render the man page".into()))?;
            let path = dir.join("hasync.1");
            std::fs::write(&path, page).map_err(io(format!("write {}", path.display())))?;
        }
        What::Completions { shell, out: None } => {
            clap_complete::generate(*shell, &mut cmd, "hasync", &mut std::io::stdout());
        }
        What::Completions {
            shell,
            out: Some(dir),
        } => {
            std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
            let path = clap_complete::generate_to(*shell, &mut cmd, "hasync", dir)
                .map_err(io(format!("write the completions to {}", dir.display())))?;
            outln!("{}", path.display());
        }
    }
    Ok(0)
}

/// Sections of hasync.1 that clap does not know about: files, the Wazo script names.
const MAN_EXTRA: &str = r#".SH FILES
.TP
/etc/hasync/hasync.toml
The node's configuration (\fB\-\-config\fR, \fBHASYNC_CONFIG\fR).
.TP
/usr/share/hasync/profiles/
Ready configurations: wazo.toml, alation.toml, generic.toml (every option).
.TP
/var/lib/hasync/
Run state: each job's runs, locks, master.json, role.json.
.SH WAZO SCRIPT NAMES
Invoked through a symlink under one of these names, hasync does what Wazo's script of
that name did, with the same arguments (the IP overrides the peer or master address),
reading \fBHASYNC_CONFIG\fR, else /etc/hasync/hasync.toml, else
/usr/share/hasync/profiles/wazo.toml:
.TP
\fBxivo\-sync\fR, \fBwazo\-sync\fR [\fB\-i\fR|\fB\-\-init\fR]
hasync sync (exit 1 off the master, 0 'not synchronizing' without the key); with \-i or \-\-init, hasync init.
.TP
\fBxivo\-master\-slave\-db\-replication\fR \fIslave_ip\fR
hasync db\-replicate.
.TP
\fBxivo\-check\-master\-status\fR \fImaster_ip\fR
one master check (on the slave only), as the cron line every minute.
.TP
\fBxivo\-manage\-slave\-services\fR \fBstart\fR|\fBstop\fR
hasync services start|stop.
.PP
/usr/share/hasync/compat/wazo\-compat install makes the links (with dpkg\-divert);
see /usr/share/doc/hasync/migrating\-from\-wazo.md.
"#;

/// hasync.1: clap's page, then [`MAN_EXTRA`] before its VERSION section.
fn main_page(cmd: clap::Command) -> std::io::Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.disable_help_subcommand(true)).render(&mut page)?;
    let text = String::from_utf8_lossy(&page).into_owned();
    Ok(match text.find(".SH VERSION") {
        Some(i) => format!("{}{MAN_EXTRA}{}", &text[..i], &text[i..]),
        None => format!("{text}{MAN_EXTRA}"),
    }
    .into_bytes())
}
