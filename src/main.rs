//! The `hasync` binary: parse arguments, run the command, exit with its code.
//! Everything else lives in the library and in `cli/`.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
