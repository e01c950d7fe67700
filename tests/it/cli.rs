//! Command-line behaviour that needs no Docker engine: Terraform-style
//! flags, confirmation without a terminal, `fmt`, `graph`, outputs and
//! variables.

use crate::common::TestEnv;

#[test]
fn apply_without_a_terminal_needs_auto_approve() {
    let t = TestEnv::new("noninteractive");
    t.write_config("locals {\n  a = 1\n}\n");
    // No resources, nothing to change: fine without approval.
    t.run(&["apply"]).ok();
    t.write_config("resource \"docker_network\" \"n\" {\n  name = \"berth-it-${berth.env}\"\n}\n");
    let run = t.run(&["apply"]).failed();
    assert!(run.stderr.contains("--auto-approve"), "{}", run.stderr);
}

#[test]
fn terraform_style_single_dash_flags_are_accepted() {
    let t = TestEnv::new("flags");
    t.write_config(
        "variable \"name\" {\n  type = string\n}\noutput \"greeting\" {\n  value = \"hello ${var.name}\"\n}\n",
    );
    let run = t
        .run(&["apply", "-auto-approve", "-var", "name=world"])
        .ok();
    assert!(
        run.stdout.contains("greeting = \"hello world\""),
        "{}",
        run.stdout
    );
    let out = t.run(&["output", "-raw", "greeting"]).ok();
    assert_eq!(out.stdout.trim(), "hello world");
}

#[test]
fn variables_come_from_files_environment_and_flags_in_order() {
    let mut t = TestEnv::new("vars");
    t.write_config(
        r#"
variable "a" {
  default = "default"
}
variable "b" {
  default = "default"
}
variable "c" {
  type = number
}
output "all" {
  value = "${var.a}/${var.b}/${var.c + 1}"
}
"#,
    );
    t.write("vals.hcl", "a = \"file\"\nb = \"file\"\nc = 1\n");
    t.set_env("BERTH_VAR_b", "environment");
    let run = t
        .run(&[
            "apply",
            "--auto-approve",
            "--var-file",
            "vals.hcl",
            "--var",
            "a=flag",
        ])
        .ok();
    assert!(
        run.stdout.contains("all = \"flag/file/2\""),
        "{}",
        run.stdout
    );
}

#[test]
fn fmt_aligns_and_keeps_comments() {
    let t = TestEnv::new("fmt");
    let messy = "# the network\nresource \"docker_network\" \"app\" {\n    name = \"x\" # inline\n  driver=\"bridge\"\n}\n";
    t.write_config(messy);
    let check = t.run(&["fmt", "--check"]);
    assert_eq!(check.status, 3, "{}", check.stderr);
    t.run(&["fmt"]).ok();
    let formatted = std::fs::read_to_string(t.path().join("berth.hcl")).expect("read");
    assert!(formatted.contains("# the network"), "{formatted}");
    assert!(formatted.contains("# inline"), "{formatted}");
    assert!(formatted.contains("  name   = \"x\""), "{formatted}");
    assert!(formatted.contains("  driver = \"bridge\""), "{formatted}");
    t.run(&["fmt", "--check"]).ok();
}

#[test]
fn graph_prints_dependencies_as_dot() {
    let t = TestEnv::new("graph");
    t.write_config(
        r#"
resource "docker_network" "app" {
  name = "n"
}
resource "docker_container" "web" {
  name  = "w"
  image = "i"
  networks_advanced {
    name = docker_network.app.name
  }
}
"#,
    );
    let run = t.run(&["graph"]).ok();
    assert!(run.stdout.starts_with("digraph"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("\"docker_container.web\" -> \"docker_network.app\""),
        "{}",
        run.stdout
    );
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let t = TestEnv::new("nofile");
    let run = t.run(&["plan"]).failed();
    assert!(
        run.stderr.contains("cannot read `berth.hcl`"),
        "{}",
        run.stderr
    );
}
