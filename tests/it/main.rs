//! One integration test binary: the real `hasync` against temp trees, a real
//! sshd and real processes. Modules share helpers and one sshd per run.

mod cli;
mod cluster;
mod cron_reference;
mod daemon;
mod db;
mod db_guard;
mod db_watch;
mod db_wazo;
mod excludes_git;
mod fanout;
mod faults;
mod fencing;
mod fuzz_regressions;
mod hostile;
mod hostile_receiver;
mod interrupt;
mod kill_points;
mod master;
mod master_cli;
mod mounts;
mod netns;
mod output_hygiene;
mod owners;
mod pg;
mod profiles;
mod races;
mod source_races;
mod ssh;
mod ssh_cli;
mod sshd;
mod sync;
mod timeouts;
mod util;
mod wan;
mod wazo_dropin;
