//! Secrets never leave in plain text: a sensitive variable's value, used in
//! a container's environment, must not appear in plan text, JSON plans,
//! saved plan files, logs at `-v`, `state show`, `show -json`, outputs, or
//! any byte of the state store. The same for the pipeline's secrets (seed
//! 000's set): GitLab CI/CD variable values and the registry password the
//! image is pushed with, also at the most verbose log level
//! (`-vv`, `BERTH_LOG=trace`).

use crate::common::{DockerCleanup, TestEnv, docker, write_demo_context};
use crate::gitlab::{double, start};
use crate::registry_server::{Registry, basic};

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

const REGISTRY_USER: &str = "berth-seed-pusher";
const REGISTRY_PASSWORD: &str = "Seeded-Registry-Pa55-e41c";
const CI_SECRET: &str = "Seeded-Conduit-Secret-93b0";

/// Whether `haystack` holds `needle` anywhere.
fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn pipeline_secrets_appear_nowhere() {
    let running = start();
    let d = &running.double;
    let mut t = TestEnv::new("pipeline-secrets");
    let _cleanup = DockerCleanup { env: t.env.clone() };
    let registry = Registry::start_htpasswd(REGISTRY_USER, REGISTRY_PASSWORD);
    write_demo_context(&t);
    let key = crate::common::ssh_keygen(&t.path().join("deploy_key"), "ed25519");
    let key_line = key.lines().nth(1).expect("a key body line").to_owned();
    t.set_env("TEST_GITLAB_TOKEN", double::TOKEN);
    t.set_env("BERTH_VAR_registry_password", REGISTRY_PASSWORD);
    t.set_env("BERTH_VAR_ci_secret", CI_SECRET);
    // The most verbose logging of every crate, berth's and the libraries'.
    t.set_env("BERTH_LOG", "trace");
    let repository = format!("berth-it/{}", t.env);
    t.write_config(&format!(
        r#"
variable "registry_password" {{
  type      = string
  sensitive = true
}}

variable "ci_secret" {{
  type      = string
  sensitive = true
}}

provider "gitlab" {{
  base_url = "{base_url}"
  token    = env("TEST_GITLAB_TOKEN")
}}

provider "docker" {{
  registry_auth {{
    address  = "{registry}"
    username = "{REGISTRY_USER}"
    password = var.registry_password
  }}
}}

resource "gitlab_project_variable" "registry_user" {{
  project = "group/project"
  key     = "REGISTRY_USER"
  value   = "{REGISTRY_USER}"
}}

resource "gitlab_project_variable" "registry_pass" {{
  project   = "group/project"
  key       = "REGISTRY_PASS"
  value     = var.registry_password
  masked    = true
  protected = true
}}

resource "gitlab_project_variable" "ci_secret" {{
  project = "group/project"
  key     = "CONDUIT_SECRET"
  value   = var.ci_secret
  hidden  = true
}}

resource "gitlab_project_variable" "ssh_key" {{
  project       = "group/project"
  key           = "SSH_KEY"
  value         = file("deploy_key")
  variable_type = "file"
  protected     = true
}}

resource "docker_image" "app" {{
  name = "{registry}/{repository}:v1"
  build {{
    context = "app"
  }}
}}

resource "docker_registry_image" "app" {{
  name = docker_image.app.name
}}
"#,
        base_url = d.base_url,
        registry = registry.address(),
    ));

    let mut seen = String::new();
    let mut look = |args: &[&str]| {
        let run = t.run(args).ok();
        seen += &run.stdout;
        seen += &run.stderr;
        run
    };
    let plan = look(&["-vv", "plan", "--out", "plan.bin"]);
    assert!(plan.stdout.contains("Plan: 6 to add"), "{}", plan.stdout);
    look(&["-vv", "plan", "--json"]);
    look(&["show", "--json", "plan.bin"]);
    let apply = look(&["-vv", "apply", "plan.bin"]);
    assert!(
        apply.stderr.contains("DEBUG") || apply.stderr.contains("TRACE"),
        "{}",
        apply.stderr
    );
    look(&["-vv", "plan", "--detailed-exitcode"]);
    for args in [
        vec!["state", "show", "gitlab_project_variable.registry_pass"],
        vec!["state", "show", "docker_registry_image.app"],
        vec!["show"],
        vec!["show", "--json"],
    ] {
        look(&args);
    }
    let saved_plan = std::fs::read(t.path().join("plan.bin")).expect("plan file");

    // The secrets did arrive where they were meant to.
    assert_eq!(
        d.var(1, "REGISTRY_PASS", "*").expect("REGISTRY_PASS").value,
        REGISTRY_PASSWORD
    );
    assert_eq!(
        d.var(1, "CONDUIT_SECRET", "*")
            .expect("CONDUIT_SECRET")
            .value,
        CI_SECRET
    );
    assert_eq!(d.var(1, "SSH_KEY", "*").expect("SSH_KEY").value, key);
    assert!(
        registry
            .digest(&repository, "v1", &basic(REGISTRY_USER, REGISTRY_PASSWORD))
            .is_some(),
        "the image was pushed with the seeded password"
    );

    let destroy = look(&["-vv", "destroy", "--auto-approve"]);
    assert!(
        destroy.stdout.contains("Destroy complete"),
        "{}",
        destroy.stdout
    );

    let state = t.state_bytes();
    assert!(!state.is_empty(), "the state store was not found");
    for (what, secret) in [
        ("the registry password", REGISTRY_PASSWORD),
        ("the hidden CI variable", CI_SECRET),
        ("the SSH key", key_line.as_str()),
        ("the GitLab token", double::TOKEN),
    ] {
        if let Some(at) = seen.find(secret) {
            let from = seen[..at].rfind('\n').map_or(0, |i| i + 1);
            panic!(
                "{what} was printed, in the line starting {:?}",
                &seen[from..at]
            );
        }
        assert!(!holds(&saved_plan, secret), "{what} is in the saved plan");
        assert!(!holds(&state, secret), "{what} is in the state store");
    }
}
