//! cargo-fuzz target `signature_diff`: see `fuzz/logic.rs`.
#![no_main]

#[path = "../logic.rs"]
mod logic;

libfuzzer_sys::fuzz_target!(|data: &[u8]| logic::signature_diff(data));
