//! berth's integration tests: one binary that drives the `berth` executable
//! like a user, against the real Docker engine where one is needed.

mod common;

mod cli;
mod cloud_e2e;
mod diagnostics;
mod docker;
mod ecr;
mod environments;
mod gitlab;
mod p3_refresh;
mod pipeline;
mod plan_calls;
mod plan_output;
mod registry;
mod registry_push;
mod registry_server;
mod reliability_crash;
mod reliability_faults;
mod reliability_input;
mod reliability_races;
mod reliability_secrets;
mod reliability_ssh;
mod reliability_support;
mod remote_state;
mod rolling;
mod secrets;
mod ssh;
mod state_lock;
mod token_server;

/// Every `.rs` file beside this one must be a module above.
#[test]
fn no_forgotten_test_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it");
    let main = std::fs::read_to_string(dir.join("main.rs")).expect("main.rs");
    for entry in std::fs::read_dir(&dir).expect("tests/it") {
        let path = entry.expect("entry").path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if path.extension().is_some_and(|e| e == "rs") && stem != "main" {
            assert!(
                main.contains(&format!("mod {stem};")),
                "tests/it/{stem}.rs is not declared in main.rs"
            );
        }
    }
}
