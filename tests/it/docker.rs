//! The container lifecycle on the real Docker engine, driven through the
//! berth binary: apply from nothing, no-op re-plan, replace on `env`
//! change, in-place update of `restart`, deletion of a removed resource,
//! drift (a container removed behind berth's back), adoption of a labelled
//! container missing from state, and destroy leaving nothing labelled.

use crate::common::{DockerCleanup, TestEnv, containers_with, docker, write_demo_context};

fn app_config(env_value: &str, restart: &str, with_extra: bool) -> String {
    let extra = if with_extra {
        r#"
resource "docker_container" "extra" {
  name  = "berth-it-${berth.env}-extra"
  image = docker_image.app.image_id
}
"#
    } else {
        ""
    };
    format!(
        r#"
resource "docker_network" "app" {{
  name = "berth-it-${{berth.env}}"
}}

resource "docker_image" "app" {{
  name = "berth-it-${{berth.env}}:latest"
  build {{
    context = "app"
  }}
}}

resource "docker_container" "web" {{
  name     = "berth-it-${{berth.env}}-web"
  image    = docker_image.app.image_id
  replicas = 2
  restart  = "{restart}"
  env      = ["MODE={env_value}"]
  ports {{
    internal = 5000
  }}
  networks_advanced {{
    name = docker_network.app.name
  }}
}}
{extra}
output "network" {{
  value = docker_network.app.name
}}
"#
    )
}

fn label(t: &TestEnv) -> String {
    format!("berth.env={}", t.env)
}

#[test]
fn lifecycle_create_noop_update_replace_delete_destroy() {
    let t = TestEnv::new("lifecycle");
    let _cleanup = DockerCleanup { env: t.env.clone() };
    write_demo_context(&t);

    // Apply on an empty engine creates everything.
    t.write_config(&app_config("one", "no", true));
    let run = t.run(&["apply", "--auto-approve"]).ok();
    assert!(
        run.stdout
            .contains("Apply complete! Resources: 4 added, 0 changed, 0 destroyed."),
        "{}",
        run.stdout
    );
    let names = containers_with(&label(&t));
    assert_eq!(
        names,
        vec![
            format!("berth-it-{}-extra", t.env),
            format!("berth-it-{}-web-1", t.env),
            format!("berth-it-{}-web-2", t.env),
        ]
    );
    assert!(
        run.stdout
            .contains(&format!("network = \"berth-it-{}\"", t.env)),
        "{}",
        run.stdout
    );
    let out = t.run(&["output", "network", "--raw"]).ok();
    assert_eq!(out.stdout.trim(), format!("berth-it-{}", t.env));

    // A second plan says "No changes" and exits 0 with --detailed-exitcode.
    let plan = t.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 0, "{}\n{}", plan.stdout, plan.stderr);
    assert!(plan.stdout.contains("No changes."), "{}", plan.stdout);

    // Changing `restart` updates in place: same container ids.
    let ids_before = docker(&[
        "ps",
        "-aq",
        "--filter",
        "label=berth.address=docker_container.web",
        "--filter",
        &format!("label={}", label(&t)),
    ]);
    t.write_config(&app_config("one", "always", true));
    let plan = t.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 2, "{}\n{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout.contains("will be updated in-place"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains(r#"~ restart"#) && plan.stdout.contains(r#""no" -> "always""#),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains("Plan: 0 to add, 1 to change, 0 to destroy."),
        "{}",
        plan.stdout
    );
    t.run(&["apply", "--auto-approve"]).ok();
    let ids_after = docker(&[
        "ps",
        "-aq",
        "--filter",
        "label=berth.address=docker_container.web",
        "--filter",
        &format!("label={}", label(&t)),
    ]);
    assert_eq!(ids_before.lines().count(), 2);
    let mut a: Vec<_> = ids_before.lines().collect();
    let mut b: Vec<_> = ids_after.lines().collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "restart must not recreate the containers");
    let policy = docker(&[
        "inspect",
        "-f",
        "{{.HostConfig.RestartPolicy.Name}}",
        &format!("berth-it-{}-web-1", t.env),
    ]);
    assert_eq!(policy.trim(), "always");

    // Changing `env` replaces the container.
    t.write_config(&app_config("two", "always", true));
    let plan = t.run(&["plan"]).ok();
    assert!(
        plan.stdout
            .contains("docker_container.web must be replaced"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("# forces replacement"),
        "{}",
        plan.stdout
    );
    t.run(&["apply", "--auto-approve"]).ok();
    let ids_replaced = docker(&[
        "ps",
        "-aq",
        "--filter",
        "label=berth.address=docker_container.web",
        "--filter",
        &format!("label={}", label(&t)),
    ]);
    assert_eq!(ids_replaced.lines().count(), 2);
    assert!(
        ids_replaced.lines().all(|id| !a.contains(&id)),
        "env change must create new containers"
    );
    let env = docker(&[
        "inspect",
        "-f",
        "{{range .Config.Env}}{{println .}}{{end}}",
        &format!("berth-it-{}-web-2", t.env),
    ]);
    assert!(env.lines().any(|l| l == "MODE=two"), "{env}");

    // Removing a resource from the file deletes it.
    t.write_config(&app_config("two", "always", false));
    let plan = t.run(&["plan"]).ok();
    assert!(
        plan.stdout
            .contains("docker_container.extra will be destroyed"),
        "{}",
        plan.stdout
    );
    t.run(&["apply", "--auto-approve"]).ok();
    assert_eq!(containers_with(&label(&t)).len(), 2);
    let listed = t.run(&["state", "list"]).ok();
    assert!(
        !listed.stdout.contains("docker_container.extra"),
        "{}",
        listed.stdout
    );

    // Destroy leaves no object with berth's labels.
    let run = t.run(&["destroy", "--auto-approve"]).ok();
    assert!(
        run.stdout
            .contains("Destroy complete! Resources: 3 destroyed."),
        "{}",
        run.stdout
    );
    assert!(containers_with(&label(&t)).is_empty());
    assert_eq!(
        docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("label={}", label(&t))
        ])
        .trim(),
        ""
    );
    assert_eq!(
        docker(&["images", "-q", "--filter", &format!("label={}", label(&t))]).trim(),
        ""
    );
    let listed = t.run(&["state", "list"]).ok();
    assert_eq!(listed.stdout.trim(), "");
}

#[test]
fn a_container_removed_outside_berth_is_recreated() {
    let t = TestEnv::new("drift");
    let _cleanup = DockerCleanup { env: t.env.clone() };
    write_demo_context(&t);
    t.write_config(&app_config("one", "no", true));
    t.run(&["apply", "--auto-approve"]).ok();

    docker(&["rm", "-f", &format!("berth-it-{}-extra", t.env)]);
    let plan = t.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 2, "{}\n{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout
            .contains("docker_container.extra will be created"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("removed outside berth"),
        "{}",
        plan.stdout
    );

    // One replica of two removed: the plan scales it back in place.
    docker(&["rm", "-f", &format!("berth-it-{}-web-2", t.env)]);
    let plan = t.run(&["plan"]).ok();
    assert!(
        plan.stdout
            .contains("docker_container.web will be updated in-place"),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains("~ replicas"), "{}", plan.stdout);

    t.run(&["apply", "--auto-approve"]).ok();
    assert_eq!(containers_with(&label(&t)).len(), 3);
    let plan = t.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 0, "{}\n{}", plan.stdout, plan.stderr);
}

#[test]
fn a_labelled_container_missing_from_state_is_adopted_not_duplicated() {
    let t = TestEnv::new("adopt");
    let _cleanup = DockerCleanup { env: t.env.clone() };
    write_demo_context(&t);
    t.write_config(&app_config("one", "no", true));
    t.run(&["apply", "--auto-approve"]).ok();
    let before = containers_with(&label(&t));

    // Simulate a crash between the create call and the state write.
    t.run(&["state", "rm", "docker_container.extra"]).ok();
    let plan = t.run(&["plan"]).ok();
    assert!(
        plan.stdout
            .contains("docker_container.extra will be adopted into state"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains("Plan: 0 to add, 0 to change, 0 to destroy, 1 to adopt."),
        "{}",
        plan.stdout
    );
    t.run(&["apply", "--auto-approve"]).ok();
    assert_eq!(
        containers_with(&label(&t)),
        before,
        "adoption must not create a second container"
    );
    let listed = t.run(&["state", "list"]).ok();
    assert!(
        listed.stdout.contains("docker_container.extra"),
        "{}",
        listed.stdout
    );
    let plan = t.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 0, "{}\n{}", plan.stdout, plan.stderr);
}

#[test]
fn the_demo_app_answers_through_a_published_port() {
    let t = TestEnv::new("serve");
    let _cleanup = DockerCleanup { env: t.env.clone() };
    write_demo_context(&t);
    let port = crate::common::free_port();
    t.write_config(&format!(
        r#"
resource "docker_image" "app" {{
  name = "berth-it-${{berth.env}}:latest"
  build {{
    context = "app"
  }}
}}

resource "docker_container" "web" {{
  name  = "berth-it-${{berth.env}}-web"
  image = docker_image.app.image_id
  ports {{
    internal = 5000
    external = {port}
    ip       = "127.0.0.1"
  }}
  healthcheck {{
    test     = ["CMD", "/demo-app", "healthcheck"]
    interval = "1s"
    retries  = 10
  }}
  wait = true
}}

check "ping" {{
  url      = "http://127.0.0.1:{port}/api/ping"
  contains = "ok"
  timeout  = "30s"
}}
"#
    ));
    let run = t.run(&["apply", "--auto-approve"]).ok();
    assert!(run.stderr.contains("check.ping: passed"), "{}", run.stderr);
    let run = t.run(&["check"]).ok();
    assert!(run.stderr.contains("check.ping: passed"), "{}", run.stderr);
    let (status, body) = crate::common::http_get(port, "/api/ping").expect("the app answers");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\""), "{body}");
    let (status, body) =
        crate::common::http_get(port, "/api/fibonacci/10").expect("the app answers");
    assert_eq!(status, 200);
    assert!(body.contains("55"), "{body}");
    t.run(&["destroy", "--auto-approve"]).ok();
    assert!(
        crate::common::http_get(port, "/api/ping").is_none(),
        "the port must be closed after destroy"
    );
}

#[test]
fn prevent_destroy_refuses_and_keeps_the_object() {
    let t = TestEnv::new("prevent");
    let _cleanup = DockerCleanup { env: t.env.clone() };
    let guarded = "resource \"docker_network\" \"keep\" {\n  name = \"berth-it-${berth.env}\"\n  lifecycle {\n    prevent_destroy = true\n  }\n}\n";
    t.write_config(guarded);
    t.run(&["apply", "--auto-approve"]).ok();
    let run = t.run(&["destroy", "--auto-approve"]).failed();
    assert!(run.stderr.contains("prevent_destroy"), "{}", run.stderr);
    assert!(run.stderr.contains("berth.hcl:1:1"), "{}", run.stderr);
    assert_eq!(
        docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("label={}", label(&t))
        ])
        .lines()
        .count(),
        1
    );
    t.write_config(&guarded.replace("true", "false"));
    t.run(&["destroy", "--auto-approve"]).ok();
    assert_eq!(
        docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("label={}", label(&t))
        ])
        .trim(),
        ""
    );
}

#[test]
fn a_changed_build_context_rebuilds_the_image_and_replaces_its_containers() {
    let t = TestEnv::new("rebuild");
    let _cleanup = DockerCleanup { env: t.env.clone() };
    write_demo_context(&t);
    t.write_config(&app_config("one", "no", false));
    t.run(&["apply", "--auto-approve"]).ok();
    let plan = t.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 0, "{}", plan.stdout);

    t.write("app/VERSION", "2\n");
    let plan = t.run(&["plan"]).ok();
    assert!(
        plan.stdout.contains("docker_image.app must be replaced"),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains("~ build_hash"), "{}", plan.stdout);
    assert!(
        plan.stdout
            .contains("docker_container.web must be replaced"),
        "{}",
        plan.stdout
    );
    let before = docker(&[
        "inspect",
        "-f",
        "{{.Image}}",
        &format!("berth-it-{}-web-1", t.env),
    ]);
    t.run(&["apply", "--auto-approve"]).ok();
    let after = docker(&[
        "inspect",
        "-f",
        "{{.Image}}",
        &format!("berth-it-{}-web-1", t.env),
    ]);
    assert_ne!(
        before.trim(),
        after.trim(),
        "the container must run the rebuilt image"
    );
    let plan = t.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 0, "{}", plan.stdout);
}

#[test]
fn a_moved_tag_is_seen_as_a_change() {
    let t = TestEnv::new("movedtag");
    let _cleanup = DockerCleanup { env: t.env.clone() };
    write_demo_context(&t);
    let tag = format!("berth-it-{}-tagged:v1", t.env);
    // The Dockerfile copies MARKER, so each build is a different image.
    let dockerfile = std::fs::read_to_string(t.path().join("app/Dockerfile")).expect("Dockerfile");
    t.write(
        "app/Dockerfile",
        &format!("{dockerfile}COPY MARKER /MARKER\n"),
    );
    let build = |marker: &str| {
        t.write("app/MARKER", marker);
        let status = std::process::Command::new("docker")
            .args([
                "build",
                "-q",
                "--label",
                &format!("berth.env={}", t.env),
                "-t",
                &tag,
            ])
            .arg(t.path().join("app"))
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .expect("docker build");
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
    };
    build("first");
    t.write_config(&format!(
        "resource \"docker_container\" \"web\" {{\n  name  = \"berth-it-${{berth.env}}-web\"\n  image = \"{tag}\"\n}}\n"
    ));
    t.run(&["apply", "--auto-approve"]).ok();
    let plan = t.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 0, "{}", plan.stdout);

    // The tag now points at another image: the container must be replaced.
    build("second");
    let plan = t.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 2, "{}\n{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout
            .contains("docker_container.web must be replaced"),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains("~ image_id"), "{}", plan.stdout);
    t.run(&["apply", "--auto-approve"]).ok();
    let running = docker(&[
        "inspect",
        "-f",
        "{{.Image}}",
        &format!("berth-it-{}-web", t.env),
    ]);
    let tagged = docker(&["image", "inspect", "-f", "{{.Id}}", &tag]);
    assert_eq!(running.trim(), tagged.trim());
    t.run(&["destroy", "--auto-approve"]).ok();
}
