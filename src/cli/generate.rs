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
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd.disable_help_subcommand(true))
                .render(&mut page)
                .map_err(io("render the man page".into()))?;
            use std::io::Write as _;
            std::io::stdout()
                .write_all(&page)
                .map_err(io("write".into()))?;
        }
        What::Man { out: Some(dir) } => {
            std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
            // No `help` pages: `hasync help X` is `hasync X --help`.
            clap_mangen::generate_to(cmd.disable_help_subcommand(true), dir)
                .map_err(io(format!("write the man pages to {}", dir.display())))?;
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
