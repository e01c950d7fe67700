//! berth: one HCL file and three verbs — `plan`, `apply`, `destroy` — for
//! hosts, registries, CI variables and containers.
//!
//! The library is the engine; `src/main.rs` is a thin clap front end over
//! [`cli`]. Flow: [`config`] parses and evaluates the file, [`graph`] orders
//! it, [`session`] locks the state and configures [`providers`], [`plan`]
//! refreshes and diffs, [`apply`] carries the plan out.

pub mod apply;
pub mod checks;
pub mod cli;
pub mod config;
pub mod diag;
pub mod error;
pub mod fmt;
pub mod graph;
pub mod interrupt;
pub mod plan;
pub mod providers;
pub mod session;
pub mod ui;
