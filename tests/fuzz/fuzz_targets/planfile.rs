//! Fuzz target `planfile`: the body is [`bodies::planfile`], shared with the stable
//! replay test.

#![no_main]

#[path = "../bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::planfile(data));
