//! One integration test binary: the real `hasync` against temp trees, a real
//! sshd and real processes. Modules share helpers and one sshd per run.

mod cli;
mod db;
mod hostile;
mod interrupt;
mod pg;
mod ssh;
mod ssh_cli;
mod sshd;
mod sync;
mod util;
