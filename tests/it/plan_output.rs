//! Snapshots of plan output: creation from nothing, then in-place update,
//! replacement and deletion against objects on the real Docker engine.
//! Environment names and hashes are filtered out.

use crate::common::{DockerCleanup, TestEnv, write_demo_context};

fn config(restart: &str, env: &str, keep_extra: bool) -> String {
    let extra = if keep_extra {
        "\nresource \"docker_network\" \"extra\" {\n  name = \"berth-it-${berth.env}-extra\"\n}\n"
    } else {
        ""
    };
    format!(
        r#"
variable "token" {{
  type      = string
  default   = "not-a-real-token"
  sensitive = true
}}

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
  name    = "berth-it-${{berth.env}}-web"
  image   = docker_image.app.image_id
  restart = "{restart}"
  env     = ["MODE={env}", "TOKEN=${{var.token}}"]
  ports {{
    internal = 5000
  }}
  networks_advanced {{
    name = docker_network.app.name
  }}
}}
{extra}"#
    )
}

fn snapshot(t: &TestEnv, name: &str, text: &str) {
    insta::with_settings!({filters => vec![
        (t.env.as_str(), "[env]"),
        (r"\b[0-9a-f]{12,64}\b", "[hash]"),
    ]}, {
        insta::assert_snapshot!(name, text);
    });
}

#[test]
fn plan_output_for_create_update_replace_and_delete() {
    let t = TestEnv::new("planout");
    let _cleanup = DockerCleanup { env: t.env.clone() };
    write_demo_context(&t);

    t.write_config(&config("no", "one", true));
    let plan = t.run(&["plan"]).ok();
    snapshot(&t, "plan_create", &plan.stdout);
    t.run(&["apply", "--auto-approve"]).ok();

    t.write_config(&config("always", "one", true));
    let plan = t.run(&["plan"]).ok();
    snapshot(&t, "plan_update", &plan.stdout);

    t.write_config(&config("always", "two", false));
    let plan = t.run(&["plan"]).ok();
    snapshot(&t, "plan_replace_and_delete", &plan.stdout);

    let lines = t.run(&["plan", "--json"]).ok();
    snapshot(&t, "plan_json_lines", &lines.stdout);
    let events: Vec<serde_json::Value> = lines
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    let planned: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e["type"] == "planned_change")
        .map(|e| {
            (
                e["change"]["resource"]["addr"].as_str().unwrap_or_default(),
                e["change"]["action"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        planned,
        vec![
            ("docker_container.web", "replace"),
            ("docker_network.extra", "delete")
        ]
    );
    let summary = events.last().expect("summary");
    assert_eq!(summary["type"], "change_summary");
    assert_eq!(
        summary["changes"],
        serde_json::json!({"add": 1, "change": 0, "remove": 2, "operation": "plan"})
    );

    // The saved plan as one document, like `terraform show -json`.
    t.run(&[
        "plan",
        "--out",
        "plan.bin",
        "--gitlab-report",
        "report.json",
    ])
    .ok();
    let shown = t.run(&["show", "--json", "plan.bin"]).ok();
    let value: serde_json::Value = serde_json::from_str(&shown.stdout).expect("valid JSON");
    let changes = value["resource_changes"]
        .as_array()
        .expect("resource_changes");
    let web = changes
        .iter()
        .find(|c| c["address"] == "docker_container.web")
        .expect("web");
    assert_eq!(
        web["change"]["actions"],
        serde_json::json!(["delete", "create"])
    );
    assert_eq!(
        web["change"]["after_sensitive"]["env"],
        serde_json::json!(true)
    );
    assert!(
        web["change"]["after"].get("env").is_none(),
        "sensitive values are left out"
    );
    let extra = changes
        .iter()
        .find(|c| c["address"] == "docker_network.extra")
        .expect("extra");
    assert_eq!(extra["change"]["actions"], serde_json::json!(["delete"]));
    assert_eq!(
        value["summary"],
        serde_json::json!({"add": 1, "change": 0, "destroy": 2})
    );
    // GitLab's MR widget report counts a replace as one create and one delete.
    let report = std::fs::read_to_string(t.path().join("report.json")).expect("report");
    assert_eq!(report.trim(), r#"{"create":1,"delete":2,"update":0}"#);
    snapshot(&t, "gitlab_report", &report);

    t.run(&["destroy", "--auto-approve"]).ok();
}
