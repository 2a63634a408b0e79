//! cargo-fuzz target `delta_ops`: see `fuzz/logic.rs`.
#![no_main]

#[path = "../logic.rs"]
mod logic;

libfuzzer_sys::fuzz_target!(|data: &[u8]| logic::delta_ops(data));
