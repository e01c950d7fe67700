//! GitLab CI/CD variables through the berth binary, against the GitLab API
//! double (`providers/gitlab/tests/double`, built from GitLab's docs and
//! request specs): create, no-op, update in place, masking rules found by
//! `validate` at the value's file:line:col, secrets kept out of output and
//! state, destroy.

#[allow(clippy::duplicate_mod, unused_imports)]
#[path = "../../providers/gitlab/tests/double/mod.rs"]
mod double;

use crate::common::TestEnv;

struct Running {
    double: double::Double,
    _runtime: tokio::runtime::Runtime,
}

fn start() -> Running {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let double = runtime.block_on(double::Double::start());
    Running {
        double,
        _runtime: runtime,
    }
}

const SECRET: &str = "Pa55word-For-Registry";

fn config(base_url: &str, user: &str) -> String {
    format!(
        r#"
variable "registry_pass" {{
  type      = string
  sensitive = true
}}

provider "gitlab" {{
  base_url = "{base_url}"
  token    = env("TEST_GITLAB_TOKEN")
}}

resource "gitlab_project_variable" "user" {{
  project = "group/sub/project"
  key     = "REGISTRY_USER"
  value   = "{user}"
}}

resource "gitlab_project_variable" "pass" {{
  project   = "group/sub/project"
  key       = "REGISTRY_PASS"
  value     = var.registry_pass
  masked    = true
  protected = true
}}

resource "gitlab_project_variable" "ssh_key" {{
  project           = 1
  key               = "SSH_KEY"
  value             = file("deploy_key")
  variable_type     = "file"
  environment_scope = "review/*"
}}
"#
    )
}

#[test]
fn project_variables_are_created_updated_and_destroyed() {
    let running = start();
    let d = &running.double;
    let mut t = TestEnv::new("gitlab");
    t.set_env("TEST_GITLAB_TOKEN", double::TOKEN);
    t.set_env("BERTH_VAR_registry_pass", SECRET);
    t.write(
        "deploy_key",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-real-key\n-----END OPENSSH PRIVATE KEY-----\n",
    );
    t.write_config(&config(&d.base_url, "deploy-bot"));

    let plan = t.run(&["plan"]).ok();
    assert!(
        plan.stdout
            .contains("Plan: 3 to add, 0 to change, 0 to destroy."),
        "{}",
        plan.stdout
    );
    assert!(!plan.stdout.contains(SECRET));
    t.run(&["apply", "--auto-approve"]).ok();
    let vars = d.vars(2);
    assert_eq!(vars.len(), 2);
    let pass = d.var(2, "REGISTRY_PASS", "*").expect("REGISTRY_PASS");
    assert_eq!(pass.value, SECRET);
    let key = d.var(1, "SSH_KEY", "review/*").expect("SSH_KEY");
    assert!(key.value.contains("not-a-real-key"));

    let plan = t.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 0, "{}\n{}", plan.stdout, plan.stderr);

    // A new value updates in place.
    t.write_config(&config(&d.base_url, "deploy-bot-2"));
    let plan = t.run(&["plan"]).ok();
    assert!(
        plan.stdout
            .contains("gitlab_project_variable.user will be updated in-place"),
        "{}",
        plan.stdout
    );
    t.run(&["apply", "--auto-approve"]).ok();
    assert_eq!(
        d.var(2, "REGISTRY_USER", "*").expect("user").value,
        "deploy-bot-2"
    );

    // A variable deleted in GitLab is planned for re-creation.
    d.remove(2, "REGISTRY_USER", "*");
    let plan = t.run(&["plan"]).ok();
    assert!(
        plan.stdout
            .contains("gitlab_project_variable.user will be created"),
        "{}",
        plan.stdout
    );

    let state = t.state_bytes();
    assert!(
        !state.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
        "secret in state"
    );

    t.run(&["destroy", "--auto-approve"]).ok();
    assert!(d.vars(2).is_empty());
    assert!(d.vars(1).is_empty());
}

#[test]
fn a_masked_value_gitlab_would_refuse_is_a_diagnostic_before_any_call() {
    let running = start();
    let d = &running.double;
    let mut t = TestEnv::new("gitlab-mask");
    t.set_env("TEST_GITLAB_TOKEN", double::TOKEN);
    t.set_env("BERTH_VAR_registry_pass", "short");
    t.write("deploy_key", "key\n");
    t.write_config(&config(&d.base_url, "deploy-bot"));
    let run = t.run(&["validate"]).failed();
    assert!(run.stderr.contains("berth.hcl:21:15"), "{}", run.stderr);
    assert!(
        run.stderr.contains("8"),
        "the rule is named: {}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("short\""),
        "the value is not shown: {}",
        run.stderr
    );
    let run = t.run(&["plan"]).failed();
    assert!(run.stderr.contains("invalid `value`"), "{}", run.stderr);
    assert_eq!(
        d.counts().values().sum::<u64>(),
        0,
        "no API call was made: {:?}",
        d.counts()
    );
}
