//! R6 SSH host keys (RELIABILITY.md): for every way berth trusts a host key
//! — a pinned `SHA256:` fingerprint, a pinned known_hosts line, a
//! `known_hosts_file`, and the first-use record in state — a host that was
//! applied to and then "rebuilt" (same address and port, new host key) is
//! refused by `plan`, `apply` and `destroy`, naming both keys, and never
//! logged in to. (`tests/it/ssh.rs` covers a wrong pin before the first
//! apply and the first-use record through plan and apply.)
//!
//! And a source check that no code path disables host key checking: the
//! only russh client handler in the workspace is berth-ssh's, its
//! `check_server_key` always consults the policy, every connection is made
//! with it, and nothing runs OpenSSH with checking turned off.

use std::path::Path;

use crate::common::{DockerCleanup, Sshd, TestEnv};

/// How the host block trusts the host key.
#[derive(Clone, Copy, Debug)]
enum Trust {
    Fingerprint,
    KnownHostsLine,
    KnownHostsFile,
    FirstUse,
}

fn pub_line(sshd: &Sshd) -> String {
    std::fs::read_to_string(sshd.path("host_ed25519.pub"))
        .expect("host key")
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn config(sshd: &Sshd, trust: Trust, t: &TestEnv) -> String {
    let extra = match trust {
        Trust::Fingerprint => format!("host_key = \"{}\"", sshd.host_fingerprint()),
        Trust::KnownHostsLine => format!(
            "host_key = \"[127.0.0.1]:{} {}\"",
            sshd.port,
            pub_line(sshd)
        ),
        Trust::KnownHostsFile => {
            t.write(
                "known_hosts",
                &format!("[127.0.0.1]:{} {}\n", sshd.port, pub_line(sshd)),
            );
            "known_hosts_file = \"known_hosts\"".to_owned()
        }
        Trust::FirstUse => String::new(),
    };
    format!(
        "resource \"docker_network\" \"n\" {{\n  name = \"berth-it-${{berth.env}}\"\n  host {{\n    \
         address     = \"127.0.0.1\"\n    port        = {}\n    private_key = file(\"client_key\")\n    \
         {extra}\n  }}\n}}\n",
        sshd.port
    )
}

fn refused_after_rebuild(trust: Trust) {
    let mut sshd = Sshd::started();
    let t = TestEnv::new(&format!("r6-{trust:?}").to_lowercase());
    let _cleanup = DockerCleanup { env: t.env.clone() };
    t.write("client_key", &sshd.client_key());
    // The config is written once, with the key trusted before the rebuild.
    t.write_config(&config(&sshd, trust, &t));
    t.run(&["apply", "--auto-approve"]).ok();
    let first = sshd.host_fingerprint();

    sshd.stop();
    sshd.regenerate_host_key();
    sshd.start();
    let second = sshd.host_fingerprint();
    assert_ne!(first, second);
    let logins = sshd.accepted_logins();
    for args in [
        &["plan"][..],
        &["apply", "--auto-approve"],
        &["destroy", "--auto-approve"],
        &["plan", "--destroy"],
    ] {
        let run = t.run(args).failed();
        assert!(
            run.stderr.contains("host key mismatch"),
            "{trust:?} {args:?}: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains(&first) && run.stderr.contains(&second),
            "{trust:?} {args:?} names both keys: {}",
            run.stderr
        );
    }
    assert_eq!(
        sshd.accepted_logins(),
        logins,
        "{trust:?}: berth logged in to a host whose key changed"
    );
    // The network is still there (destroy was refused) and still recorded.
    let shown = t.run(&["state", "list"]).ok();
    assert!(
        shown.stdout.contains("docker_network.n"),
        "{}",
        shown.stdout
    );
    println!("R6 {trust:?}: changed host key refused by plan, apply and destroy; 0 logins");
}

#[test]
fn a_changed_pinned_fingerprint_is_refused_everywhere() {
    refused_after_rebuild(Trust::Fingerprint);
}

#[test]
fn a_changed_key_against_a_known_hosts_line_is_refused_everywhere() {
    refused_after_rebuild(Trust::KnownHostsLine);
}

#[test]
fn a_changed_key_against_a_known_hosts_file_is_refused_everywhere() {
    refused_after_rebuild(Trust::KnownHostsFile);
}

#[test]
fn a_changed_key_against_the_first_use_record_is_refused_everywhere() {
    refused_after_rebuild(Trust::FirstUse);
}

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            // Tests may build whatever handlers they like.
            if path
                .file_name()
                .is_some_and(|n| n == "tests" || n == "target")
            {
                continue;
            }
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && let Ok(text) = std::fs::read_to_string(&path)
        {
            out.push((path.display().to_string(), text));
        }
    }
}

/// The text of the function `name` in `text`: from its `fn` to the first
/// line that closes it at the same indentation.
fn function_body<'a>(text: &'a str, name: &str) -> &'a str {
    let start = text
        .find(&format!("fn {name}("))
        .unwrap_or_else(|| panic!("no fn {name}"));
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let indent = &text[line_start..start];
    let indent = &indent[..indent.len() - indent.trim_start().len()];
    let close = format!("\n{indent}}}\n");
    let end = text[start..]
        .find(&close)
        .map_or(text.len(), |i| start + i + close.len());
    &text[start..end]
}

#[test]
fn no_code_path_disables_host_key_checking() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    sources(&root.join("providers"), &mut files);
    assert!(files.len() > 20, "the sources were found");

    // One russh client handler, berth-ssh's.
    let handlers: Vec<&str> = files
        .iter()
        .filter(|(_, text)| text.contains("Handler for"))
        .filter(|(_, text)| text.contains("check_server_key"))
        .map(|(path, _)| path.as_str())
        .collect();
    assert_eq!(handlers.len(), 1, "russh handlers: {handlers:?}");
    assert!(
        handlers[0].ends_with("providers/ssh/src/connect.rs"),
        "{handlers:?}"
    );
    let connect = &files
        .iter()
        .find(|(p, _)| p.ends_with("providers/ssh/src/connect.rs"))
        .expect("connect.rs")
        .1;

    // Its check consults the policy, and accepts only what the policy
    // accepted (or, on a re-key, the very key already accepted).
    let check = function_body(connect, "check_server_key");
    assert!(
        check.contains(".policy") && check.contains(".check("),
        "{check}"
    );
    assert_eq!(
        check.matches("Ok(true)").count(),
        2,
        "accepted only after the policy's verdict or for the same key on a re-key:\n{check}"
    );
    assert!(check.contains("*first == fingerprint(&key)"), "{check}");

    // The policy's check never accepts without comparing when a pin,
    // known_hosts file or record exists: every `Ok(Verdict::` is guarded.
    let verify = &files
        .iter()
        .find(|(p, _)| p.ends_with("providers/ssh/src/verify.rs"))
        .expect("verify.rs")
        .1;
    let policy = function_body(verify, "check");
    assert_eq!(
        policy.matches("Ok(Verdict::FirstUse)").count(),
        1,
        "{policy}"
    );
    assert!(
        policy.contains("None => Ok(Verdict::FirstUse)"),
        "first use only when nothing is pinned, known or recorded:\n{policy}"
    );

    // Every SSH connection goes through russh with that handler.
    for (path, text) in &files {
        for call in ["client::connect_stream(", "client::connect("] {
            if text.contains(call) && path.contains("providers/ssh") {
                assert!(
                    text.contains("ClientHandler {"),
                    "{path} connects without berth's handler"
                );
            }
        }
        for forbidden in [
            "StrictHostKeyChecking",
            "UserKnownHostsFile=/dev/null",
            "accept_any_host_key",
            "skip_host_key",
            "insecure_host_key",
            "danger_accept",
        ] {
            assert!(!text.contains(forbidden), "{path} contains `{forbidden}`");
        }
        // No shelling out to OpenSSH's client, whose checks berth could not
        // see.
        assert!(
            !text.contains("Command::new(\"ssh\")"),
            "{path} runs the ssh binary"
        );
    }
}
