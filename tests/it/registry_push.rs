//! `docker_registry_image` against the real Debian `docker-registry`
//! (distribution 2.8) on a free port of 127.0.0.1, through the berth binary
//! and the real Docker engine: a `docker_image` builds the demo app, a
//! `docker_registry_image` pushes it (the engine logs in with the
//! provider's `registry_auth`), and a `docker_container` runs it by the
//! digest that was pushed.
//!
//! - Basic auth (htpasswd, bcrypt): a wrong password fails the push with a
//!   message naming the registry and never the password, and records
//!   nothing for it; with the right one the registry has the tag at the
//!   digest state records; a second plan is empty; a tag moved behind
//!   berth's back plans an update that pushes again, and a manifest
//!   deleted behind its back a new push; destroy deletes the manifest.
//!   With `keep_remotely` the manifest stays, and another environment
//!   pulls the image by digest with the same credentials.
//! - Token auth (distribution's `auth.token`, tokens from the test's
//!   [`TokenServer`]): the same flow through `Bearer` challenges, a rebuilt
//!   image replaces the pushed one (the old manifest is deleted by digest),
//!   and a wrong password is refused by the token service with a clear
//!   error.
//!
//! Everything berth builds carries the test's `berth.env` label (the
//! cleanup removes it, pulled copies included); the servers are killed or
//! stopped when the test ends, and their files live in temporary
//! directories.

use crate::common::{DockerCleanup, TestEnv, docker, write_demo_context};
use crate::registry_server::{Registry, basic};
use crate::token_server::TokenServer;

const USER: &str = "berth-pusher";
const PASSWORD: &str = "Push-pa55word-71c3";
const WRONG: &str = "Wrong-pa55word-0a9d";

/// A project that builds the demo app, pushes it to `reference` and runs
/// it by digest.
fn push_config(registry: &str, reference: &str, keep_remotely: bool) -> String {
    format!(
        r#"
variable "registry_password" {{
  type      = string
  sensitive = true
}}

provider "docker" {{
  registry_auth {{
    address  = "{registry}"
    username = "{USER}"
    password = var.registry_password
  }}
}}

resource "docker_image" "app" {{
  name = "{reference}"
  build {{
    context = "app"
  }}
}}

resource "docker_registry_image" "app" {{
  name          = docker_image.app.name
  keep_remotely = {keep_remotely}
}}

resource "docker_container" "app" {{
  name  = "berth-it-${{berth.env}}-pushed"
  image = "${{docker_registry_image.app.name}}@${{docker_registry_image.app.sha256_digest}}"
}}

output "digest" {{
  value = docker_registry_image.app.sha256_digest
}}
"#
    )
}

/// The digest state records, through `berth output`.
fn recorded_digest(t: &TestEnv) -> String {
    let out = t.run(&["output", "digest", "--raw"]).ok();
    let digest = out.stdout.trim().to_owned();
    assert!(digest.starts_with("sha256:"), "{digest}");
    digest
}

fn state_list(t: &TestEnv) -> String {
    t.run(&["state", "list"]).ok().stdout
}

/// Asserts that the container `berth-it-<env>-<suffix>` runs the image
/// the engine knows as `reference` (berth starts containers from the
/// image id the reference resolves to).
#[track_caller]
fn assert_runs(t: &TestEnv, suffix: &str, reference: &str) {
    let image = docker(&["image", "inspect", "-f", "{{.Id}}", reference]);
    assert!(
        image.trim().starts_with("sha256:"),
        "{reference} is not there"
    );
    let container = docker(&[
        "inspect",
        "-f",
        "{{.State.Running}} {{.Image}}",
        &format!("berth-it-{}-{suffix}", t.env),
    ]);
    assert_eq!(container.trim(), format!("true {}", image.trim()));
}

fn image_exists(reference: &str) -> bool {
    !docker(&["image", "inspect", "-f", "{{.Id}}", reference])
        .trim()
        .is_empty()
}

fn assert_no_leak(run: &crate::common::Run, secrets: &[&str]) {
    let all = format!("{}\n{}", run.stdout, run.stderr);
    for secret in secrets {
        assert!(!all.contains(secret), "a password leaked:\n{all}");
    }
}

#[test]
fn images_are_pushed_with_basic_auth_and_deployed_by_digest() {
    let mut t = TestEnv::new("regpush");
    let _cleanup = DockerCleanup { env: t.env.clone() };
    let registry = Registry::start_htpasswd(USER, PASSWORD);
    write_demo_context(&t);
    let repository = format!("berth-it/{}", t.env);
    let reference = format!("{}/{repository}:v1", registry.address());
    let auth = basic(USER, PASSWORD);
    t.write_config(&push_config(&registry.address(), &reference, false));

    // A wrong password: the engine's push is refused; berth names the
    // registry and the user, never the password, and records no push.
    t.set_env("BERTH_VAR_registry_password", WRONG);
    let run = t.run(&["apply", "--auto-approve"]).failed();
    assert_no_leak(&run, &[WRONG, PASSWORD]);
    assert!(
        run.stderr.contains("docker_registry_image.app")
            && run.stderr.contains("refused the credentials")
            && run.stderr.contains(&registry.address())
            && run.stderr.contains(USER),
        "{}",
        run.stderr
    );
    let listed = state_list(&t);
    assert!(
        listed.contains("docker_image.app") && !listed.contains("docker_registry_image.app"),
        "{listed}"
    );
    assert_eq!(registry.digest(&repository, "v1", &auth), None);

    // The right one: pushed, recorded, and the container runs that digest.
    t.set_env("BERTH_VAR_registry_password", PASSWORD);
    let run = t.run(&["apply", "--auto-approve"]).ok();
    assert_no_leak(&run, &[WRONG, PASSWORD]);
    let digest = recorded_digest(&t);
    assert_eq!(
        registry.digest(&repository, "v1", &auth).as_deref(),
        Some(digest.as_str())
    );
    assert_runs(&t, "pushed", &format!("{reference}@{digest}"));
    assert!(!String::from_utf8_lossy(&t.state_bytes()).contains(PASSWORD));

    // Nothing to do: refresh asked the registry and it agrees.
    let plan = t.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 0, "{}\n{}", plan.stdout, plan.stderr);
    assert!(plan.stdout.contains("No changes."), "{}", plan.stdout);

    // The tag is moved behind berth's back (to another manifest of the
    // same image): the plan shows the digest changing, and the update
    // pushes again.
    let moved = registry.move_tag(&repository, "v1", &auth);
    assert_ne!(moved, digest);
    let plan = t.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 2, "{}\n{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout
            .contains("docker_registry_image.app will be updated in-place")
            && plan.stdout.contains(&moved)
            && plan
                .stdout
                .contains("Plan: 0 to add, 1 to change, 0 to destroy."),
        "{}",
        plan.stdout
    );
    t.run(&["apply", "--auto-approve"]).ok();
    assert_eq!(
        registry.digest(&repository, "v1", &auth).as_deref(),
        Some(digest.as_str())
    );
    assert_eq!(recorded_digest(&t), digest);

    // The manifest is deleted behind berth's back: the plan pushes again.
    assert_eq!(registry.delete(&repository, &digest, &auth), 202);
    assert_eq!(registry.digest(&repository, "v1", &auth), None);
    let plan = t.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 2, "{}\n{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout
            .contains("docker_registry_image.app will be created")
            && plan.stdout.contains("removed outside berth"),
        "{}",
        plan.stdout
    );
    let run = t.run(&["apply", "--auto-approve"]).ok();
    assert_no_leak(&run, &[PASSWORD]);
    assert_eq!(
        registry.digest(&repository, "v1", &auth).as_deref(),
        Some(recorded_digest(&t).as_str())
    );
    let plan = t.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 0, "{}\n{}", plan.stdout, plan.stderr);

    // Destroy deletes the manifest from the registry.
    let run = t.run(&["destroy", "--auto-approve"]).ok();
    assert_no_leak(&run, &[PASSWORD]);
    assert_eq!(registry.digest(&repository, "v1", &auth), None);
    assert!(!image_exists(&reference), "destroy removes the local image");

    // keep_remotely: destroy leaves the image in the registry...
    t.write_config(&push_config(&registry.address(), &reference, true));
    t.run(&["apply", "--auto-approve"]).ok();
    let digest = recorded_digest(&t);
    t.run(&["destroy", "--auto-approve"]).ok();
    assert_eq!(
        registry.digest(&repository, "v1", &auth).as_deref(),
        Some(digest.as_str())
    );
    let by_digest = format!("{reference}@{digest}");
    assert!(!image_exists(&by_digest));

    // ... and another environment runs it by digest: the engine pulls
    // `repository@digest` with the provider's credentials.
    let mut other = TestEnv::new("regpull");
    let _other_cleanup = DockerCleanup {
        env: other.env.clone(),
    };
    other.set_env("BERTH_VAR_registry_password", PASSWORD);
    other.write_config(&format!(
        r#"
variable "registry_password" {{
  type      = string
  sensitive = true
}}

provider "docker" {{
  registry_auth {{
    address  = "{address}"
    username = "{USER}"
    password = var.registry_password
  }}
}}

resource "docker_container" "app" {{
  name  = "berth-it-${{berth.env}}-pulled"
  image = "{by_digest}"
}}
"#,
        address = registry.address()
    ));
    let run = other.run(&["apply", "--auto-approve"]).ok();
    assert_no_leak(&run, &[PASSWORD]);
    assert_runs(&other, "pulled", &by_digest);
    other.run(&["destroy", "--auto-approve"]).ok();
    // The pulled copy carries the building environment's label; remove it
    // now rather than wait for the cleanup.
    docker(&["rmi", &by_digest]);
}

#[test]
fn images_are_pushed_refreshed_and_deleted_with_token_auth() {
    let mut t = TestEnv::new("regtoken");
    let _cleanup = DockerCleanup { env: t.env.clone() };
    let tokens = TokenServer::start("berth-test-registry", "berth-test-issuer", USER, PASSWORD);
    let registry = Registry::start_token(&tokens);
    write_demo_context(&t);
    let repository = format!("berth-it/{}", t.env);
    let reference = format!("{}/{repository}:v1", registry.address());
    let bearer = format!("Bearer {}", tokens.mint(&repository));
    t.write_config(&push_config(&registry.address(), &reference, false));

    // A wrong password: dockerd's token request is refused, and so is the
    // push.
    t.set_env("BERTH_VAR_registry_password", WRONG);
    let run = t.run(&["apply", "--auto-approve"]).failed();
    assert_no_leak(&run, &[WRONG, PASSWORD]);
    assert!(
        run.stderr.contains("docker_registry_image.app")
            && run.stderr.contains(&registry.address())
            && run.stderr.contains(USER),
        "{}",
        run.stderr
    );
    assert!(tokens.refused() > 0, "the token service refused nothing");
    assert!(!state_list(&t).contains("docker_registry_image.app"));

    // Pushed through the Bearer flow; berth's refresh uses it too.
    t.set_env("BERTH_VAR_registry_password", PASSWORD);
    let run = t.run(&["apply", "--auto-approve"]).ok();
    assert_no_leak(&run, &[PASSWORD]);
    let first = recorded_digest(&t);
    assert_eq!(
        registry.digest(&repository, "v1", &bearer).as_deref(),
        Some(first.as_str())
    );
    assert_runs(&t, "pushed", &format!("{reference}@{first}"));
    let plan = t.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 0, "{}\n{}", plan.stdout, plan.stderr);

    // Deleted behind berth's back: planned and pushed again.
    assert_eq!(registry.delete(&repository, &first, &bearer), 202);
    let plan = t.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 2, "{}\n{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout
            .contains("docker_registry_image.app will be created"),
        "{}",
        plan.stdout
    );
    t.run(&["apply", "--auto-approve"]).ok();
    let second = recorded_digest(&t);
    assert_eq!(
        registry.digest(&repository, "v1", &bearer).as_deref(),
        Some(second.as_str())
    );

    // A rebuilt image is pushed again; the old manifest is deleted by
    // digest.
    t.write("app/VERSION", "2\n");
    let plan = t.run(&["plan"]).ok();
    assert!(
        plan.stdout
            .contains("docker_registry_image.app must be replaced"),
        "{}",
        plan.stdout
    );
    t.run(&["apply", "--auto-approve"]).ok();
    let third = recorded_digest(&t);
    assert_ne!(third, second, "a rebuilt image has a new digest");
    assert_eq!(
        registry.digest(&repository, "v1", &bearer).as_deref(),
        Some(third.as_str())
    );
    assert_eq!(registry.digest(&repository, &second, &bearer), None);

    // A wrong password now: berth's own token request is refused while it
    // refreshes, with a message naming the registry and the user.
    t.set_env("BERTH_VAR_registry_password", WRONG);
    let refused_before = tokens.refused();
    let run = t.run(&["plan"]).failed();
    assert_no_leak(&run, &[WRONG, PASSWORD]);
    assert!(
        run.stderr.contains("refused the credentials")
            && run.stderr.contains(&registry.address())
            && run.stderr.contains(USER),
        "{}",
        run.stderr
    );
    assert!(tokens.refused() > refused_before);

    // Destroy deletes the manifest through the Bearer flow.
    t.set_env("BERTH_VAR_registry_password", PASSWORD);
    t.run(&["destroy", "--auto-approve"]).ok();
    assert_eq!(registry.digest(&repository, "v1", &bearer), None);
    assert_eq!(registry.digest(&repository, &third, &bearer), None);
}

/// `examples/gitlab-pipeline` passes `berth validate` with the README's
/// variables (the deploy key is any readable file: `file()` reads text).
#[test]
fn the_gitlab_pipeline_example_validates() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gitlab-pipeline");
    let key = tempfile::NamedTempFile::new().expect("key file");
    std::fs::write(key.path(), "not a real key\n").expect("write key");
    let key_var = format!("ssh_key_file={}", key.path().display());
    let run = |password: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .current_dir(&example)
            .args(["validate", "-var", "gitlab_project=group/project"])
            .args(["-var", "image_repository=group/project/app"])
            .args(["-var", "registry_user=deployer"])
            .args(["-var", &format!("registry_password={password}")])
            .args(["-var", &key_var])
            .env_remove("BERTH_FILE")
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("berth validate")
    };
    let out = run("Example-Passw0rd-123");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("The configuration is valid."), "{text}");
    // GitLab could not mask this one: reported, without the value.
    let out = run("short");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("REGISTRY_PASS") || text.contains("registry_pass"),
        "{text}"
    );
    assert!(!text.contains("short\""), "{text}");
}
