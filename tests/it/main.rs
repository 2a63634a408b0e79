//! One integration test binary: the real `hasync` against temp trees, a real
//! sshd and real processes. Modules share helpers and one sshd per run.

mod cli;
mod daemon;
mod db;
mod faults;
mod fuzz_regressions;
mod hostile;
mod interrupt;
mod master;
mod master_cli;
mod netns;
mod pg;
mod profiles;
mod races;
mod ssh;
mod ssh_cli;
mod sshd;
mod sync;
mod util;
