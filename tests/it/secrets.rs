//! Secrets never leave in plain text: a sensitive variable's value, used in
//! a container's environment, must not appear in plan text, JSON plans,
//! saved plan files, logs at `-v`, `state show`, `show -json`, outputs, or
//! any byte of the state store.

use crate::common::{DockerCleanup, TestEnv, docker, write_demo_context};

const SECRET: &str = "s3cr3t-Value-7f9a2c";

#[test]
fn a_sensitive_value_appears_nowhere() {
    let mut t = TestEnv::new("secrets");
    let _cleanup = DockerCleanup { env: t.env.clone() };
    write_demo_context(&t);
    t.set_env("BERTH_VAR_db_password", SECRET);
    t.write_config(
        r#"
variable "db_password" {
  type      = string
  sensitive = true
}

resource "docker_image" "app" {
  name = "berth-it-${berth.env}:latest"
  build {
    context = "app"
  }
}

resource "docker_container" "web" {
  name  = "berth-it-${berth.env}-web"
  image = docker_image.app.image_id
  env   = ["DB_PASSWORD=${var.db_password}", "MODE=demo"]
}

output "password" {
  value     = var.db_password
  sensitive = true
}

output "password_length" {
  value = length(var.db_password)
}
"#,
    );
    let mut seen = String::new();
    let plan = t.run(&["-v", "plan", "--out", "plan.bin"]).ok();
    assert!(plan.stdout.contains("(sensitive value)"), "{}", plan.stdout);
    seen += &plan.stdout;
    seen += &plan.stderr;
    let json = t.run(&["plan", "--json"]).ok();
    assert!(
        json.stdout.contains("\"planned_change\""),
        "{}",
        json.stdout
    );
    seen += &json.stdout;
    seen += &json.stderr;
    let shown = t.run(&["show", "--json", "plan.bin"]).ok();
    assert!(
        shown.stdout.contains("\"after_sensitive\""),
        "{}",
        shown.stdout
    );
    seen += &shown.stdout;
    seen += &String::from_utf8_lossy(&std::fs::read(t.path().join("plan.bin")).expect("plan file"));
    let apply = t.run(&["-vv", "apply", "plan.bin"]).ok();
    seen += &apply.stdout;
    seen += &apply.stderr;
    for args in [
        vec!["state", "show", "docker_container.web"],
        vec!["show"],
        vec!["show", "--json"],
        vec!["output"],
        vec!["output", "--json"],
    ] {
        let run = t.run(&args).ok();
        seen += &run.stdout;
        seen += &run.stderr;
    }
    // The container itself does get the secret: berth passed it on.
    let env = docker(&[
        "inspect",
        "-f",
        "{{range .Config.Env}}{{println .}}{{end}}",
        &format!("berth-it-{}-web", t.env),
    ]);
    assert!(
        env.contains(&format!("DB_PASSWORD={SECRET}")),
        "the container must receive the secret"
    );
    // ...but not in its labels.
    let labels = docker(&[
        "inspect",
        "-f",
        "{{json .Config.Labels}}",
        &format!("berth-it-{}-web", t.env),
    ]);
    assert!(!labels.contains(SECRET), "{labels}");

    assert!(
        !seen.contains(SECRET),
        "the secret leaked into berth's output:\n{seen}"
    );
    let state = t.state_bytes();
    assert!(!state.is_empty(), "the state store was not found");
    assert!(
        !state.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
        "the secret is in the state store in plain text"
    );

    // A changed secret is still seen as a change, through its keyed hash.
    t.set_env("BERTH_VAR_db_password", "another-secret-value");
    let plan = t.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 2, "{}\n{}", plan.stdout, plan.stderr);
    assert!(plan.stdout.contains("must be replaced"), "{}", plan.stdout);
    assert!(!plan.stdout.contains("another-secret-value"));
    t.run(&["destroy", "--auto-approve"]).ok();
}
