//! Fuzz target `state`: the body is [`bodies::state`], shared with the stable
//! replay test.

#![no_main]

#[path = "../bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::state(data));
