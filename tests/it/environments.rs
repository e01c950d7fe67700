//! Environments and saved plans: `--env` namespaces state, `berth.env` varies
//! names per environment, `destroy` of one environment leaves the others,
//! `env list` counts resources; a saved plan applies exactly and a stale one
//! is refused with the reason.

use crate::common::{DockerCleanup, TestEnv, docker};

const CONFIG: &str = r#"
variable "size" {
  type    = number
  default = 1
}

resource "docker_network" "app" {
  name = "berth-it-${berth.env}"
  labels {
    label = "size"
    value = berth.env == "production" ? "3" : tostring(var.size)
  }
}
"#;

fn networks(label: &str) -> Vec<String> {
    let mut names: Vec<String> = docker(&[
        "network",
        "ls",
        "--filter",
        &format!("label={label}"),
        "--format",
        "{{.Name}}",
    ])
    .lines()
    .map(str::to_owned)
    .collect();
    names.sort();
    names
}

#[test]
fn environments_are_separate_namespaces() {
    let t = TestEnv::new("envs");
    let review = format!("{}-review/feat-x", t.env);
    let other_review = format!("{}-review/feat-y", t.env);
    let staging = format!("{}-production", t.env);
    let _c1 = DockerCleanup {
        env: review.clone(),
    };
    let _c2 = DockerCleanup {
        env: staging.clone(),
    };
    let _c3 = DockerCleanup {
        env: other_review.clone(),
    };
    t.write_config(CONFIG);
    t.run(&["--env", &review, "apply", "--auto-approve"]).ok();
    t.run(&["--env", &staging, "apply", "--auto-approve"]).ok();
    t.run(&["--env", &other_review, "apply", "--auto-approve"])
        .ok();
    assert_eq!(
        networks(&format!("berth.env={review}")),
        vec![format!("berth-it-{review}")]
    );
    assert_eq!(
        networks(&format!("berth.env={staging}")),
        vec![format!("berth-it-{staging}")]
    );

    let list = t.run(&["env", "list"]).ok();
    assert!(
        list.stdout.contains(&format!("{review}\t1 resources")),
        "{}",
        list.stdout
    );
    assert!(
        list.stdout.contains(&format!("{staging}\t1 resources")),
        "{}",
        list.stdout
    );

    // Destroying one review environment leaves production and the other
    // review environment alone.
    t.run(&["--env", &review, "destroy", "--auto-approve"]).ok();
    assert!(networks(&format!("berth.env={review}")).is_empty());
    assert_eq!(networks(&format!("berth.env={staging}")).len(), 1);
    assert_eq!(networks(&format!("berth.env={other_review}")).len(), 1);
    t.run(&["--env", &other_review, "destroy", "--auto-approve"])
        .ok();
    let plan = t.run(&["--env", &staging, "plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 0, "{}", plan.stdout);

    // GitLab's CI_ENVIRONMENT_NAME selects the environment when nothing else does.
    let run = t
        .command(&["state", "list"])
        .env_remove("BERTH_ENV")
        .env("CI_ENVIRONMENT_NAME", &staging)
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&run.stdout).contains("docker_network.app"));
    t.run(&["--env", &staging, "destroy", "--auto-approve"])
        .ok();
}

#[test]
fn a_saved_plan_applies_exactly_and_a_stale_one_is_refused() {
    let t = TestEnv::new("saved");
    let _cleanup = DockerCleanup { env: t.env.clone() };
    t.write_config(CONFIG);
    t.run(&["plan", "--out", "first.plan"]).ok();
    t.run(&["plan", "--out", "second.plan"]).ok();
    let shown = t.run(&["show", "first.plan"]).ok();
    assert!(
        shown.stdout.contains("docker_network.app will be created"),
        "{}",
        shown.stdout
    );

    let run = t.run(&["apply", "first.plan"]).ok();
    assert!(run.stdout.contains("1 added"), "{}", run.stdout);
    // The second plan was made against the state before the first apply.
    let run = t.run(&["apply", "second.plan"]).failed();
    assert!(run.stderr.contains("stale"), "{}", run.stderr);
    assert!(run.stderr.contains("serial"), "{}", run.stderr);

    // A plan made, then the file edited: refused.
    t.run(&["plan", "--var", "size=2", "--out", "third.plan"])
        .ok();
    t.write_config(&CONFIG.replace("default = 1", "default = 5"));
    let run = t.run(&["apply", "third.plan"]).failed();
    assert!(
        run.stderr.contains("changed since it was made"),
        "{}",
        run.stderr
    );
    t.write_config(CONFIG);
    // The saved -var is used again at apply.
    t.run(&["plan", "--var", "size=2", "--out", "fourth.plan"])
        .ok();
    t.run(&["apply", "fourth.plan"]).ok();
    let label = docker(&[
        "network",
        "inspect",
        "-f",
        "{{index .Labels \"size\"}}",
        &format!("berth-it-{}", t.env),
    ]);
    assert_eq!(label.trim(), "2");

    let garbage = t.path().join("garbage.plan");
    std::fs::write(&garbage, b"\x00\x01 not a plan").expect("write");
    let run = t.run(&["apply", "garbage.plan"]).failed();
    assert!(
        run.stderr.contains("not a berth plan file"),
        "{}",
        run.stderr
    );
    t.run(&["destroy", "--auto-approve"]).ok();
}
