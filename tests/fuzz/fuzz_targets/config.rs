//! Fuzz target `config`: the body is [`bodies::config`], shared with the stable
//! replay test.

#![no_main]

#[path = "../bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::config(data));
