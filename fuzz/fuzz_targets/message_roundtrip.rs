//! cargo-fuzz target `message_roundtrip`: see `fuzz/logic.rs`.
#![no_main]

#[path = "../logic.rs"]
mod logic;

libfuzzer_sys::fuzz_target!(|data: &[u8]| logic::message_roundtrip(data));
