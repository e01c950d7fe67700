//! R4 hostile input (RELIABILITY.md): the fuzz targets' bodies replayed over
//! the committed seeds and every crash the fuzzers found
//! (`tests/fuzz/seeds`, `tests/fuzz/regressions`), and the berth binary fed
//! huge files, deeply nested expressions, 10,000 resources, invalid UTF-8,
//! `file("/dev/zero")`, a garbage state store, a garbage state document
//! and garbage plan files. Every case must end with a clear error (exit 1,
//! a message naming the problem), never a panic, a signal or a runaway.
//!
//! `BERTH_RELIABILITY=long` nests deeper and makes the files bigger.

#[allow(unused_imports)]
#[path = "../fuzz/bodies.rs"]
mod bodies;

use std::path::Path;
use std::time::Instant;

use crate::common::{Run, TestEnv};

fn long() -> bool {
    std::env::var("BERTH_RELIABILITY").is_ok_and(|v| v == "long")
}

/// Exit 1 with `needle` on stderr; no panic, no signal.
#[track_caller]
fn refused(run: &Run, needle: &str) {
    assert_eq!(
        run.status, 1,
        "expected a clear failure (exit 1), got {}\n--- stderr ---\n{}",
        run.status, run.stderr
    );
    assert!(
        !run.stderr.contains("panicked"),
        "berth panicked:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(needle),
        "stderr should say `{needle}`:\n{}",
        run.stderr
    );
}

/// Every file of `tests/fuzz/<dir>/<target>/`, sorted.
fn inputs(dir: &str, target: &str) -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz")
        .join(dir)
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// The examples' `berth.hcl` files: seeds of the `config` target, read
/// where they are rather than copied.
fn example_configs() -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join("berth.hcl"))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn replay(target: &str, body: fn(&[u8])) {
    let mut seeds = inputs("seeds", target);
    if target == "config" {
        let examples = example_configs();
        assert!(examples.len() >= 5, "examples/*/berth.hcl: {examples:?}");
        seeds.extend(examples);
    }
    assert!(!seeds.is_empty(), "no seeds for `{target}`");
    for path in seeds.iter().chain(&inputs("regressions", target)) {
        let data = std::fs::read(path).expect("read input");
        body(&data);
    }
}

#[test]
fn fuzz_seeds_and_regressions_replay_config() {
    replay("config", bodies::config);
}

#[test]
fn fuzz_seeds_and_regressions_replay_state() {
    replay("state", bodies::state);
}

#[test]
fn fuzz_seeds_and_regressions_replay_planfile() {
    replay("planfile", bodies::planfile);
}

#[test]
fn a_file_over_the_size_limit_is_refused() {
    let t = TestEnv::new("huge");
    // 8 MiB is the limit; one byte more is refused before parsing.
    let mut text = String::from("# ");
    text.push_str(&"x".repeat(8 * 1024 * 1024));
    t.write_config(&text);
    refused(&t.run(&["validate"]), "larger than 8 MiB");
}

#[test]
fn a_big_valid_file_loads_in_bounded_time() {
    let t = TestEnv::new("big");
    // A string of several MiB and many comment lines, under the limit.
    let mib = if long() { 7 } else { 3 };
    let text = format!(
        "{}locals {{\n  big = \"{}\"\n}}\n\noutput \"n\" {{\n  value = length(local.big)\n}}\n",
        "# comment\n".repeat(50_000),
        "y".repeat(mib * 1024 * 1024 - 600_000)
    );
    t.write_config(&text);
    let begin = Instant::now();
    t.run(&["validate"]).ok();
    println!(
        "R4 big file: validate of a {} MiB file took {:.2} s",
        text.len() / 1024 / 1024,
        begin.elapsed().as_secs_f64()
    );
}

/// Nesting deep enough to overflow any recursive walk without a bound.
fn depth() -> usize {
    if long() { 200_000 } else { 20_000 }
}

#[test]
fn deeply_nested_expressions_are_refused_without_a_crash() {
    let t = TestEnv::new("nested");
    let n = depth();
    let cases = [
        ("list", format!("{}1{}", "[".repeat(n), "]".repeat(n))),
        ("parens", format!("{}1{}", "(".repeat(n), ")".repeat(n))),
        ("object", format!("{}1{}", "{a=".repeat(n), "}".repeat(n))),
        (
            "calls",
            format!("{}\"x\"{}", "upper(".repeat(n), ")".repeat(n)),
        ),
        ("unary", format!("{}true", "!".repeat(n))),
        ("binary", format!("1{}", " + 1".repeat(n))),
        ("conditional", format!("{}1", "true ? 1 : ".repeat(n))),
        (
            "template",
            format!("\"{}x{}\"", "${\"".repeat(n), "\"}".repeat(n)),
        ),
    ];
    let mut wrong = Vec::new();
    for (name, expr) in cases {
        t.write_config(&format!("locals {{\n  deep = {expr}\n}}\n"));
        let run = t.run(&["validate"]);
        if run.status != 1
            || run.stderr.contains("panicked")
            || !run.stderr.contains("expected at most")
        {
            wrong.push(format!(
                "`{name}`: exit {}: {}",
                run.status,
                run.stderr.chars().take(600).collect::<String>()
            ));
        } else {
            println!("R4 nesting `{name}` x{n}: refused with a clear error");
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Nested blocks.
    t.write_config(&format!(
        "resource \"docker_network\" \"n\" {{\n  name = \"n\"\n{}{}}}\n",
        "  labels {\n".repeat(n),
        "  }\n".repeat(n)
    ));
    refused(&t.run(&["validate"]), "expected at most");
    // And in a variables file.
    t.write_config("variable \"v\" {\n  type = any\n}\n");
    t.write(
        "deep.tfvars",
        &format!("v = {}1{}\n", "[".repeat(n), "]".repeat(n)),
    );
    refused(
        &t.run(&["validate", "--var-file", "deep.tfvars"]),
        "expected at most",
    );
}

#[test]
fn ten_thousand_resources_validate_and_graph_in_bounded_time() {
    let t = TestEnv::new("ten-k");
    let n = 10_000;
    let mut text = String::new();
    for i in 0..n {
        // Each depends on the one before, so the graph is a long chain.
        let after = if i == 0 {
            String::new()
        } else {
            format!("  depends_on = [docker_network.n{}]\n", i - 1)
        };
        text.push_str(&format!(
            "resource \"docker_network\" \"n{i}\" {{\n  name = \"berth-it-${{berth.env}}-{i}\"\n{after}}}\n"
        ));
    }
    t.write_config(&text);
    let begin = Instant::now();
    t.run(&["validate"]).ok();
    let validate = begin.elapsed();
    let begin = Instant::now();
    let graph = t.run(&["graph"]).ok();
    let graphed = begin.elapsed();
    assert_eq!(graph.stdout.matches("->").count(), n - 1, "one edge each");
    println!(
        "R4 10,000 resources: validate {:.2} s, graph {:.2} s",
        validate.as_secs_f64(),
        graphed.as_secs_f64()
    );
}

#[test]
fn invalid_utf8_is_refused_with_its_position() {
    let t = TestEnv::new("utf8");
    std::fs::write(
        t.path().join("berth.hcl"),
        b"locals {\n  a = \"ok\"\n  b = \"\xff\xfe\"\n}\n",
    )
    .expect("write");
    refused(
        &t.run(&["validate"]),
        "berth.hcl:3:8: the file is not valid UTF-8",
    );
    // A variables file too.
    t.write_config("variable \"v\" {\n  type = string\n}\n");
    std::fs::write(t.path().join("bad.tfvars"), b"v = \"\xc3\x28\"\n").expect("write");
    let run = t.run(&["validate", "--var-file", "bad.tfvars"]);
    refused(&run, "UTF-8");
}

#[test]
fn file_of_dev_zero_is_a_clear_error() {
    let t = TestEnv::new("dev-zero");
    for path in ["/dev/zero", "/dev/urandom", "/proc/self/fd/0"] {
        t.write_config(&format!(
            "locals {{\n  z = file(\"{path}\")\n}}\n\noutput \"z\" {{\n  value = length(local.z)\n}}\n"
        ));
        refused(&t.run(&["validate"]), "is not a regular file");
    }
    // `-var-file` and `-f` of a device are bounded too.
    t.write_config("variable \"v\" {\n  type = string\n  default = \"x\"\n}\n");
    refused(
        &t.run(&["validate", "--var-file", "/dev/zero"]),
        "cannot read var file `/dev/zero`: the file is larger than 8 MiB",
    );
    refused(
        &t.run(&["validate", "-f", "/dev/zero"]),
        "the file is larger than 8 MiB",
    );
}

#[test]
fn a_garbage_state_store_is_a_clear_error() {
    let t = TestEnv::new("garbage-state");
    t.write_config("locals {\n  a = 1\n}\n\noutput \"a\" {\n  value = local.a\n}\n");
    t.run(&["apply", "--auto-approve"]).ok();
    let env_dir = t.path().join(".berth/envs").join(&t.env);
    // Garbage over every file of the sled database.
    let mut files = Vec::new();
    collect_files(&env_dir.join("db"), &mut files);
    assert!(!files.is_empty(), "the sled database has files");
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for f in &files {
        let len = std::fs::metadata(f).map_or(0, |m| m.len()).max(64);
        let garbage: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        std::fs::write(f, garbage).expect("write garbage");
    }
    let run = t.run(&["plan"]);
    refused(&run, "state");
    println!(
        "R4 garbage sled store: {}",
        run.stderr.lines().next().unwrap_or("")
    );

    // A lock file that is not JSON.
    let t = TestEnv::new("garbage-lock");
    t.write_config("locals {\n  a = 1\n}\n");
    t.run(&["apply", "--auto-approve"]).ok();
    let lock = t.path().join(".berth/envs").join(&t.env).join("lock.json");
    std::fs::write(&lock, b"\x00\xffnot json").expect("write");
    refused(&t.run(&["plan"]), "lock.json");
}

fn collect_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn garbage_state_documents_and_plan_files_are_clear_errors() {
    let t = TestEnv::new("garbage-docs");
    t.write_config("locals {\n  a = 1\n}\n");
    for (name, bytes) in [
        ("empty", &b""[..]),
        ("binary", &b"\x00\x01\x02\xff"[..]),
        ("array", &b"[1,2,3]"[..]),
        (
            "terraform",
            &br#"{"version":4,"terraform_version":"1.9.0","serial":1,"lineage":"x"}"#[..],
        ),
        ("deep", "[".repeat(100_000).as_bytes()),
    ] {
        std::fs::write(t.path().join(name), bytes).expect("write");
        refused(
            &t.run(&["state", "push", name]),
            "not a berth state document",
        );
        let run = t.run(&["apply", name]);
        refused(&run, "not a berth plan file");
        let run = t.run(&["show", name]);
        refused(&run, "not a berth plan file");
    }
    // A device as the plan file: bounded, then refused.
    refused(&t.run(&["show", "/dev/zero"]), "not a berth plan file");
}
