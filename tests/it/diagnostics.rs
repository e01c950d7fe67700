//! Bad input: every file in `tests/fixtures/diagnostics/` must fail
//! `berth validate` with exit code 1 and a diagnostic naming
//! `file:line:col`, never a panic. The messages are snapshot-tested.

use crate::common::TestEnv;

fn fixtures() -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diagnostics");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("fixtures dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "hcl"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_broken_file_gets_a_located_diagnostic() {
    let files = fixtures();
    assert!(
        files.len() >= 15,
        "the corpus shrank: {} files",
        files.len()
    );
    for file in files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_owned();
        let t = TestEnv::new("diag");
        std::fs::copy(&file, t.path().join(&name)).expect("copy fixture");
        let run = t.run(&["-f", &name, "validate"]);
        assert_eq!(run.status, 1, "{name}: expected exit 1\n{}", run.stderr);
        assert!(
            !run.stderr.contains("panicked"),
            "{name} panicked:\n{}",
            run.stderr
        );
        assert!(
            run.stderr.contains(&format!("{name}:")),
            "{name}: no file:line:col in\n{}",
            run.stderr
        );
        let stem = name.trim_end_matches(".hcl").to_owned();
        insta::assert_snapshot!(stem, run.stderr);
    }
}

#[test]
fn several_errors_are_reported_in_one_run() {
    let t = TestEnv::new("diag-many");
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/diagnostics/several_errors.hcl");
    std::fs::copy(file, t.path().join("berth.hcl")).expect("copy");
    let run = t.run(&["validate"]).failed();
    assert!(
        run.stderr.contains("unknown attribute `nme`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("unknown attribute `colour`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("undeclared variable `var.restart`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("did you mean `name`?"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_valid_file_validates() {
    let t = TestEnv::new("diag-ok");
    t.write_config(
        r#"
variable "port" {
  type    = number
  default = 8080
}
locals {
  name = "app-${berth.env}"
}
resource "docker_network" "app" {
  name = local.name
}
resource "docker_container" "web" {
  name  = "${local.name}-web"
  image = "demo:latest"
  ports {
    internal = 5000
    external = var.port
  }
  networks_advanced {
    name = docker_network.app.name
  }
}
output "url" {
  value = "http://127.0.0.1:${var.port}"
}
"#,
    );
    let run = t.run(&["validate"]).ok();
    assert!(run.stdout.contains("The configuration is valid."));
}
