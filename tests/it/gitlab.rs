//! GitLab CI/CD variables through the berth binary, against the GitLab API
//! double (`providers/gitlab/tests/double`, built from GitLab's docs and
//! request specs): create, no-op, update in place, a variable deleted in
//! GitLab re-created, a file variable holding a real SSH private key, a
//! scope change (a replacement), a hidden variable (drift in what GitLab
//! shows; a new configured value through the keyed hash), server errors
//! retried during refresh, masking rules found by `validate` at the value's
//! file:line:col before any API call, secrets kept out of output and state,
//! destroy.

#[allow(clippy::duplicate_mod, unused_imports)]
#[path = "../../providers/gitlab/tests/double/mod.rs"]
pub(crate) mod double;

use crate::common::TestEnv;

/// The double, served by a runtime of its own while the test drives the
/// berth binary.
pub(crate) struct Running {
    pub(crate) double: double::Double,
    _runtime: tokio::runtime::Runtime,
}

pub(crate) fn start() -> Running {
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

fn lifecycle_config(base_url: &str, scope: &str, hidden_value: &str) -> String {
    format!(
        r#"
provider "gitlab" {{
  base_url = "{base_url}"
  token    = env("TEST_GITLAB_TOKEN")
}}

resource "gitlab_project_variable" "ssh_key" {{
  project           = "group/project"
  key               = "SSH_KEY"
  value             = file("id_ed25519")
  variable_type     = "file"
  protected         = true
  environment_scope = "{scope}"
}}

resource "gitlab_project_variable" "token" {{
  project   = 2
  key       = "DEPLOY_TOKEN"
  value     = "{hidden_value}"
  hidden    = true
  protected = true
}}
"#
    )
}

/// A real SSH private key in a file variable, a scope change (a
/// replacement: the scope is part of the identity), a hidden variable whose
/// value GitLab never shows again (drift in what it does show is found;
/// a value change in the configuration is found through the keyed hash
/// berth keeps), and injected server errors retried during refresh.
#[test]
fn file_keys_scope_changes_hidden_variables_and_server_errors() {
    let running = start();
    let d = &running.double;
    let mut t = TestEnv::new("gitlab-life");
    t.set_env("TEST_GITLAB_TOKEN", double::TOKEN);
    let key = crate::common::ssh_keygen(&t.path().join("id_ed25519"), "ed25519");
    assert!(key.contains("BEGIN OPENSSH PRIVATE KEY"));
    let hidden = "Hidden-Deploy-Token-4d1f9a";
    t.write_config(&lifecycle_config(&d.base_url, "review/*", hidden));

    let apply = t.run(&["apply", "--auto-approve"]).ok();
    let mut seen = format!("{}{}", apply.stdout, apply.stderr);
    let stored = d.var(1, "SSH_KEY", "review/*").expect("SSH_KEY");
    assert_eq!(stored.variable_type, "file");
    assert!(stored.protected);
    assert_eq!(stored.value, key, "the key file arrives byte for byte");
    let token = d.var(2, "DEPLOY_TOKEN", "*").expect("DEPLOY_TOKEN");
    assert!(token.hidden && token.masked);

    // Server errors during refresh are retried: the plan still succeeds.
    let lists = d.count("GET /projects/:id/variables");
    d.fail_next(&[502, 503]);
    let plan = t.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 0, "{}\n{}", plan.stdout, plan.stderr);
    assert!(
        d.count("GET /projects/:id/variables") >= lists + 4,
        "two projects listed, two answers retried: {:?}",
        d.counts()
    );
    // Even a plan without changes says which value GitLab cannot show.
    assert!(
        plan.stdout.contains("cannot be read back")
            && plan
                .stdout
                .contains("  - gitlab_project_variable.token.value\n")
            && !plan
                .stdout
                .contains("gitlab_project_variable.ssh_key.value"),
        "{}",
        plan.stdout
    );

    // The hidden value changed in GitLab cannot be seen (GitLab answers
    // null), so it is no drift; its `protected` flag can, and is.
    d.edit(2, "DEPLOY_TOKEN", "*", |v| {
        v.value = "Changed-Behind-Berth-1".into();
        v.protected = false;
    });
    let plan = t.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 2, "{}\n{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout
            .contains("gitlab_project_variable.token will be updated in-place")
            && plan.stdout.contains("protected")
            && plan
                .stdout
                .contains("Plan: 0 to add, 1 to change, 0 to destroy."),
        "{}",
        plan.stdout
    );
    seen += &plan.stdout;
    t.run(&["apply", "--auto-approve"]).ok();
    assert!(d.var(2, "DEPLOY_TOKEN", "*").expect("token").protected);

    // A new value in the configuration is seen through the keyed hash and
    // written in place.
    let rotated = "Rotated-Deploy-Token-8e2b7c";
    t.write_config(&lifecycle_config(&d.base_url, "review/*", rotated));
    let plan = t.run(&["plan"]).ok();
    assert!(
        plan.stdout
            .contains("gitlab_project_variable.token will be updated in-place")
            && plan.stdout.contains("(sensitive value)"),
        "{}",
        plan.stdout
    );
    seen += &plan.stdout;
    t.run(&["apply", "--auto-approve"]).ok();
    assert_eq!(d.var(2, "DEPLOY_TOKEN", "*").expect("token").value, rotated);

    // Another scope is another variable: replaced, the old one deleted.
    t.write_config(&lifecycle_config(&d.base_url, "staging", rotated));
    let plan = t.run(&["plan"]).ok();
    assert!(
        plan.stdout
            .contains("gitlab_project_variable.ssh_key must be replaced")
            && plan
                .stdout
                .contains("Plan: 1 to add, 0 to change, 1 to destroy."),
        "{}",
        plan.stdout
    );
    seen += &plan.stdout;
    let apply = t.run(&["apply", "--auto-approve"]).ok();
    seen += &apply.stdout;
    seen += &apply.stderr;
    assert!(d.var(1, "SSH_KEY", "review/*").is_none());
    assert_eq!(d.var(1, "SSH_KEY", "staging").expect("moved").value, key);

    // Destroy removes both.
    let destroy = t.run(&["destroy", "--auto-approve"]).ok();
    seen += &destroy.stdout;
    assert!(d.vars(1).is_empty() && d.vars(2).is_empty());

    // Neither the key nor the tokens were shown or stored.
    let key_body = key
        .lines()
        .nth(1)
        .expect("the key has a body line")
        .to_owned();
    let state = String::from_utf8_lossy(&t.state_bytes()).into_owned();
    for secret in [key_body.as_str(), hidden, rotated] {
        assert!(!seen.contains(secret), "a secret was shown:\n{seen}");
        assert!(!state.contains(secret), "a secret is in the state store");
    }
}
