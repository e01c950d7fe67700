//! Pulls from a private registry with credentials, on the real Docker
//! engine through the berth binary: Debian's `docker-registry` with
//! htpasswd (bcrypt) basic auth, started by the test on a free port of
//! 127.0.0.1 (which dockerd treats as an insecure registry, so no TLS) and
//! killed by PID at the end. The demo image is pushed there with the docker
//! CLI (its own temporary DOCKER_CONFIG) and removed locally; then berth
//! pulls it for a `docker_container` with `registry_auth` in the provider
//! block, refuses a wrong password with a message naming the registry (and
//! never the password), and pulls for a `docker_image` with GitLab CI's
//! CI_REGISTRY* variables. The pushed image carries the test's
//! `berth.env` label, so the cleanup removes the pulled copy too.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{DockerCleanup, TestEnv, docker, write_demo_context};
use crate::registry_server::Registry;

const USER: &str = "berth-ci";
const PASSWORD: &str = "Right-pa55word-4c1d";
const WRONG: &str = "Wrong-pa55word-9e7b";

/// Runs the docker CLI with its own config dir; panics on failure.
fn docker_cli(config_dir: &Path, args: &[&str], stdin: Option<&str>) {
    use std::io::Write;
    let mut child = Command::new("docker")
        .arg("--config")
        .arg(config_dir)
        .args(args)
        .env("DOCKER_BUILDKIT", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?} failed\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn image_exists(reference: &str) -> bool {
    !docker(&["image", "inspect", "-f", "{{.Id}}", reference])
        .trim()
        .is_empty()
}

fn container_config(reference: &str, with_auth: Option<&str>) -> String {
    let provider = match with_auth {
        Some(address) => format!(
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
"#
        ),
        None => String::new(),
    };
    format!(
        r#"{provider}
resource "docker_container" "app" {{
  name  = "berth-it-${{berth.env}}-pulled"
  image = "{reference}"
}}
"#
    )
}

#[test]
fn images_are_pulled_from_a_private_registry_with_credentials() {
    let mut t = TestEnv::new("registry");
    let _cleanup = DockerCleanup { env: t.env.clone() };
    let registry = Registry::start_htpasswd(USER, PASSWORD);
    write_demo_context(&t);
    let reference = format!("{}/berth-it/{}:v1", registry.address(), t.env);

    // Push the demo image into the registry, then forget the local copy.
    let client_config = tempfile::tempdir().expect("docker config dir");
    let cfg = client_config.path();
    let app = t.path().join("app");
    let app = app.to_str().expect("utf-8 path");
    let env_label = format!("berth.env={}", t.env);
    docker_cli(
        cfg,
        &["build", "-q", "--label", &env_label, "-t", &reference, app],
        None,
    );
    docker_cli(
        cfg,
        &[
            "login",
            &registry.address(),
            "--username",
            USER,
            "--password-stdin",
        ],
        Some(PASSWORD),
    );
    docker_cli(cfg, &["push", &reference], None);
    docker_cli(cfg, &["rmi", &reference], None);
    assert!(!image_exists(&reference));

    // A wrong password: the registry refuses, berth says so, and the
    // password appears nowhere.
    t.write_config(&container_config(&reference, Some(&registry.address())));
    t.set_env("BERTH_VAR_registry_password", WRONG);
    let run = t.run(&["apply", "--auto-approve"]).failed();
    let all = format!("{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("refused the credentials")
            && run.stderr.contains(&registry.address())
            && run.stderr.contains(USER),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("docker_container.app"),
        "{}",
        run.stderr
    );
    assert!(!all.contains(WRONG), "the password leaked:\n{all}");
    assert!(!image_exists(&reference));

    // The right one: the container's image is pulled and it runs.
    t.set_env("BERTH_VAR_registry_password", PASSWORD);
    let run = t.run(&["apply", "--auto-approve"]).ok();
    let all = format!("{}\n{}", run.stdout, run.stderr);
    assert!(!all.contains(PASSWORD), "the password leaked:\n{all}");
    assert!(image_exists(&reference));
    let running = docker(&[
        "inspect",
        "-f",
        "{{.State.Running}}",
        &format!("berth-it-{}-pulled", t.env),
    ]);
    assert_eq!(running.trim(), "true");
    let pulled_labels = docker(&[
        "image",
        "inspect",
        "-f",
        "{{json .Config.Labels}}",
        &reference,
    ]);
    assert!(
        pulled_labels.contains(&format!("\"berth.env\":\"{}\"", t.env)),
        "the cleanup finds the pulled image by its label: {pulled_labels}"
    );
    assert!(!String::from_utf8_lossy(&t.state_bytes()).contains(PASSWORD));
    t.run(&["destroy", "--auto-approve"]).ok();
    docker(&["rmi", &reference]);
    assert!(!image_exists(&reference));

    // No provider block: GitLab CI's variables are the default credentials,
    // here for a docker_image without build (a pull).
    t.set_env("CI_REGISTRY", &registry.address());
    t.set_env("CI_REGISTRY_USER", USER);
    t.set_env("CI_REGISTRY_PASSWORD", PASSWORD);
    t.write_config(&format!(
        r#"
resource "docker_image" "pulled" {{
  name = "{reference}"
}}

resource "docker_container" "app" {{
  name  = "berth-it-${{berth.env}}-pulled"
  image = docker_image.pulled.image_id
}}
"#
    ));
    let run = t.run(&["apply", "--auto-approve"]).ok();
    let all = format!("{}\n{}", run.stdout, run.stderr);
    assert!(!all.contains(PASSWORD), "the password leaked:\n{all}");
    assert!(image_exists(&reference));
    t.run(&["destroy", "--auto-approve"]).ok();
    assert!(
        !image_exists(&reference),
        "destroy removes the pulled image"
    );
}
