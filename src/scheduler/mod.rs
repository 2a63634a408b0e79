//! When and how jobs run on this node: the jobs themselves ([`jobs`]: the `[[sync]]`
//! jobs and the `[db]` job, run by `hasync sync`, cron or the daemon), the daemon's loop
//! ([`daemon`]: schedules, watch mode, the master check's thread, the HTTP endpoint,
//! reload), what is remembered between runs ([`state`]), what `hasync status` shows
//! ([`status`]), and watching source directories ([`watch`]).

pub mod daemon;
pub mod health;
pub mod jobs;
pub mod state;
pub mod status;
pub mod watch;
