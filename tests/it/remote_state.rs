//! Shared state through the binary: GitLab-managed Terraform state over the
//! HTTP backend protocol (the GitLab state double from the state crate's
//! tests), with GitLab CI's variables supplying the defaults; migration of
//! an existing local state into it with `init -migrate-state`; `state
//! pull`/`push`; and secrets kept out of the remote document.

#[allow(dead_code, clippy::duplicate_mod)]
#[path = "../../state/tests/remote/gitlab_fake.rs"]
mod gitlab_fake;

use crate::common::{DockerCleanup, TestEnv, docker};

const JOB_TOKEN: &str = "job-token-0123456789";
const SECRET: &str = "remote-Secret-Value-42";

fn config(with_backend: bool) -> String {
    let backend = if with_backend {
        "backend \"http\" {}\n"
    } else {
        ""
    };
    format!(
        r#"{backend}
variable "password" {{
  type      = string
  sensitive = true
}}

resource "docker_network" "app" {{
  name = "berth-it-${{berth.env}}"
  labels {{
    label = "password-hash"
    value = sha256(var.password)
  }}
}}

output "name" {{
  value = docker_network.app.name
}}
"#
    )
}

#[test]
fn gitlab_managed_state_with_migration_from_local() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let fake = runtime.block_on(gitlab_fake::FakeGitlab::start("gitlab-ci-token", JOB_TOKEN));
    let mut t = TestEnv::new("remote");
    let _cleanup = DockerCleanup { env: t.env.clone() };
    t.set_env("BERTH_VAR_password", SECRET);
    t.set_env("BERTH_STATE_KEY", "a-shared-key-kept-in-ci-variables");
    t.set_env("CI_API_V4_URL", &fake.api_url());
    t.set_env("CI_PROJECT_ID", "1");
    t.set_env("CI_JOB_TOKEN", JOB_TOKEN);

    // First, a local state.
    t.write_config(&config(false));
    t.run(&["apply", "--auto-approve"]).ok();
    let pulled = t.run(&["state", "pull"]).ok();
    let local: serde_json::Value =
        serde_json::from_str(&pulled.stdout).expect("state pull is JSON");
    assert!(
        local["resources"]["docker_network.app"].is_object(),
        "{}",
        pulled.stdout
    );

    // Move it to GitLab: the remote copy is the same state, lineage included.
    t.write_config(&config(true));
    let run = t.run(&["init", "--migrate-state"]).ok();
    assert!(
        run.stdout
            .contains(&format!("Migrated `{}`: 1 resources", t.env)),
        "{}",
        run.stdout
    );
    let remote = fake.latest(&t.env).expect("the state is in GitLab");
    assert_eq!(remote["lineage"], local["lineage"]);
    assert!(remote["resources"]["docker_network.app"].is_object());
    assert!(
        !remote.to_string().contains(SECRET),
        "a secret reached the remote state"
    );

    // Plans read the remote state: nothing to do, one network on the engine.
    let plan = t.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 0, "{}\n{}", plan.stdout, plan.stderr);
    let seen = fake.seen();
    assert!(
        seen.iter()
            .any(|s| s.method == "POST" && s.target.contains("/lock")),
        "berth locks through GitLab"
    );
    assert!(
        seen.iter()
            .any(|s| s.method == "DELETE" && s.target.contains("/lock")),
        "and unlocks"
    );

    // A change applied through the remote backend lands there.
    t.set_env("BERTH_VAR_password", "another-password-value");
    t.run(&["apply", "--auto-approve"]).ok();
    let after = fake.latest(&t.env).expect("state");
    assert!(after["serial"].as_u64() > remote["serial"].as_u64());
    assert!(!after.to_string().contains("another-password-value"));

    // state push refuses an older document.
    t.write("old.json", &pulled.stdout);
    let run = t.run(&["state", "push", "old.json"]).failed();
    assert!(run.stderr.contains("older"), "{}", run.stderr);

    t.run(&["destroy", "--auto-approve"]).ok();
    assert_eq!(
        docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("label=berth.env={}", t.env)
        ])
        .trim(),
        ""
    );
}
