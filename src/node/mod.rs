//! This node: its configuration ([`config`], with the schedules its values are made of,
//! [`schedule`]), which role it has right now ([`role`], with Wazo's ha.conf in
//! [`wazo`]), what it keeps on disk and the clock it stamps it with ([`store`]), and how
//! it runs outside commands: with a deadline ([`exec`]) and as the `[hooks]`
//! ([`hooks`]). Every other domain depends on this one; it depends on none of them.

pub mod config;
pub mod envpath;
pub mod exec;
pub mod exit;
pub mod hooks;
pub mod role;
pub mod schedule;
pub mod store;
pub mod wazo;
