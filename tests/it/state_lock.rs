//! The state lock: while one apply runs, a second fails at once naming the
//! holder; a lock left by a killed process is reported as stale and removed
//! only by `force-unlock`.

use std::time::Duration;

use crate::common::{DockerCleanup, TestEnv, write_demo_context};

#[test]
fn a_second_apply_fails_at_once_naming_the_holder() {
    let t = TestEnv::new("lock");
    let _cleanup = DockerCleanup { env: t.env.clone() };
    write_demo_context(&t);
    // The healthcheck never passes, so the first apply holds the lock while
    // it waits for the container to become healthy.
    t.write_config(
        r#"
resource "docker_image" "app" {
  name = "berth-it-${berth.env}:latest"
  build {
    context = "app"
  }
}

resource "docker_container" "slow" {
  name         = "berth-it-${berth.env}-slow"
  image        = docker_image.app.image_id
  wait         = true
  wait_timeout = 60
  healthcheck {
    test     = ["CMD", "/demo-app", "healthcheck", "http://127.0.0.1:1/never"]
    interval = "1s"
    retries  = 1000
  }
}
"#,
    );
    let mut first = t
        .command(&["apply", "--auto-approve"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Wait until the first apply holds the lock (the lock file exists).
    let lock_file = t.path().join(".berth/envs").join(&t.env).join("lock.json");
    let mut held = false;
    for _ in 0..600 {
        if lock_file.exists() {
            held = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(held, "the first apply never took the lock");
    let second = t.run(&["apply", "--auto-approve"]);
    assert_eq!(second.status, 1, "{}\n{}", second.stdout, second.stderr);
    assert!(
        second
            .stderr
            .contains("the state is locked by another operation"),
        "{}",
        second.stderr
    );
    assert!(
        second.stderr.contains("Operation: apply"),
        "{}",
        second.stderr
    );
    assert!(
        second
            .stderr
            .contains(&format!("PID:       {}", first.id())),
        "{}",
        second.stderr
    );

    // Kill the holder: its lock stays, reported as stale, until force-unlock.
    first.kill().expect("kill");
    let _ = first.wait();
    let third = t.run(&["plan"]);
    assert_eq!(third.status, 1);
    assert!(
        third.stderr.contains("no longer running"),
        "{}",
        third.stderr
    );
    let id = third
        .stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("ID:"))
        .map(|s| s.trim().to_owned())
        .expect("lock id in the message");
    t.run(&["force-unlock", "wrong-id"]).failed();
    t.run(&["force-unlock", &id]).ok();
    // The killed apply created the container before it died; the next run
    // adopts or replaces it, never duplicates it.
    t.write_config(
        r#"
resource "docker_image" "app" {
  name = "berth-it-${berth.env}:latest"
  build {
    context = "app"
  }
}
"#,
    );
    t.run(&["apply", "--auto-approve"]).ok();
    t.run(&["destroy", "--auto-approve"]).ok();
    assert!(crate::common::containers_with(&format!("berth.env={}", t.env)).is_empty());
}

#[test]
fn sigterm_lets_running_steps_finish_records_them_and_releases_the_lock() {
    use std::io::{BufRead, BufReader};
    let t = TestEnv::new("sigterm");
    let _cleanup = DockerCleanup { env: t.env.clone() };
    write_demo_context(&t);
    // `web` takes a few seconds (it waits for health); `after` depends on it.
    t.write_config(
        r#"
resource "docker_image" "app" {
  name = "berth-it-${berth.env}:latest"
  build {
    context = "app"
  }
}

resource "docker_container" "web" {
  name  = "berth-it-${berth.env}-web"
  image = docker_image.app.image_id
  wait  = true
  healthcheck {
    test         = ["CMD", "/demo-app", "healthcheck"]
    interval     = "1s"
    start_period = "2s"
    retries      = 30
  }
}

resource "docker_network" "after" {
  name       = "berth-it-${berth.env}-after"
  depends_on = [docker_container.web]
}
"#,
    );
    let mut child = t
        .command(&["apply", "--auto-approve"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut log = String::new();
    // Send SIGTERM once the container step has started.
    for line in lines.by_ref() {
        let line = line.expect("line");
        log.push_str(&line);
        log.push('\n');
        if line.contains("docker_container.web: Creating...") {
            let pid = child.id().to_string();
            let status = std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("kill");
            assert!(status.success());
            break;
        }
    }
    for line in lines {
        log.push_str(&line.expect("line"));
        log.push('\n');
    }
    let status = child.wait().expect("wait");
    assert!(
        !status.success(),
        "an interrupted apply exits non-zero\n{log}"
    );
    assert!(
        log.contains("docker_container.web: Creation complete"),
        "the running step finished:\n{log}"
    );
    assert!(
        !log.contains("docker_network.after: Creating"),
        "no new step started:\n{log}"
    );
    assert!(log.contains("interrupted"), "{log}");

    // The lock was released and the finished step recorded: only the
    // network is left to create.
    let plan = t.run(&["plan"]).ok();
    assert!(
        plan.stdout
            .contains("Plan: 1 to add, 0 to change, 0 to destroy."),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("docker_network.after will be created"),
        "{}",
        plan.stdout
    );
    t.run(&["destroy", "--auto-approve"]).ok();
}
