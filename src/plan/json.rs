//! Machine-readable plan in the spirit of `terraform show -json`:
//! `resource_changes` with `actions`, `before`, `after`, `after_unknown`
//! and `*_sensitive`, sensitive values left out entirely.

use serde_json::{Map, Value, json};

use super::{Action, Plan, ResourceChange};
use crate::config::eval::PValue;

/// The plan as one JSON document.
pub fn to_json(plan: &Plan) -> Value {
    let (add, change, destroy) = plan.counts();
    json!({
        "format_version": "1.0",
        "environment": plan.env,
        "lineage": plan.lineage,
        "serial": plan.serial,
        "resource_changes": plan.changes.iter().map(resource_change).collect::<Vec<_>>(),
        "summary": { "add": add, "change": change, "destroy": destroy },
    })
}

fn actions(action: Action) -> Vec<&'static str> {
    match action {
        Action::NoOp => vec!["no-op"],
        Action::Adopt => vec!["adopt"],
        Action::Create => vec!["create"],
        Action::Update => vec!["update"],
        Action::Replace => vec!["delete", "create"],
        Action::Delete => vec!["delete"],
    }
}

fn resource_change(c: &ResourceChange) -> Value {
    let (type_name, name) = c.address.split_once('.').unwrap_or((&c.address, ""));
    let mut before = Map::new();
    let mut before_sensitive = Map::new();
    if let Some(b) = &c.before {
        for (k, v) in b {
            if c.sensitive.contains(k) {
                before_sensitive.insert(k.clone(), Value::Bool(true));
            } else {
                before.insert(k.clone(), v.clone());
            }
        }
    }
    let mut after = Map::new();
    let mut after_unknown = Map::new();
    let mut after_sensitive = Map::new();
    if let Some(a) = &c.after {
        for (k, v) in a {
            if c.sensitive.contains(k) {
                after_sensitive.insert(k.clone(), Value::Bool(true));
                continue;
            }
            match v {
                PValue::Known(v) => {
                    after.insert(k.clone(), v.clone());
                }
                PValue::Unknown => {
                    after_unknown.insert(k.clone(), Value::Bool(true));
                }
            }
        }
    }
    let mut actions_value = actions(c.action);
    if c.action == Action::Replace && c.create_before_destroy {
        actions_value.reverse();
    }
    json!({
        "address": c.address,
        "type": type_name,
        "name": name,
        "change": {
            "actions": actions_value,
            "before": c.before.as_ref().map(|_| Value::Object(before)),
            "after": c.after.as_ref().map(|_| Value::Object(after)),
            "after_unknown": after_unknown,
            "before_sensitive": before_sensitive,
            "after_sensitive": after_sensitive,
            "replace_paths": c.forces_replacement.iter().map(|p| vec![p]).collect::<Vec<_>>(),
        },
        "action_reason": c.reason,
    })
}

/// The plan as JSON lines, like `terraform plan -json`: one
/// `planned_change` per resource that changes, then a `change_summary`.
pub fn stream(plan: &Plan, operation: &str) -> String {
    let mut out = String::new();
    let line = |value: Value, out: &mut String| {
        out.push_str(&value.to_string());
        out.push('\n');
    };
    line(
        json!({"@level": "info", "@message": format!("berth {}", env!("CARGO_PKG_VERSION")), "type": "version", "berth": env!("CARGO_PKG_VERSION"), "ui": "1.0"}),
        &mut out,
    );
    for c in plan.changes.iter().filter(|c| c.action != Action::NoOp) {
        let (type_name, name) = c.address.split_once('.').unwrap_or((&c.address, ""));
        let action = match c.action {
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Delete => "delete",
            Action::Adopt => "adopt",
            Action::NoOp => "noop",
        };
        line(
            json!({
                "@level": "info",
                "@message": format!("{}: Plan to {action}", c.address),
                "type": "planned_change",
                "change": {
                    "resource": { "addr": c.address, "resource_type": type_name, "resource_name": name },
                    "action": action,
                    "reason": c.reason,
                    "replace_paths": c.forces_replacement.iter().map(|p| vec![p]).collect::<Vec<_>>(),
                },
            }),
            &mut out,
        );
    }
    let (add, change, remove) = plan.counts();
    line(
        json!({
            "@level": "info",
            "@message": format!("Plan: {add} to add, {change} to change, {remove} to destroy."),
            "type": "change_summary",
            "changes": { "add": add, "change": change, "remove": remove, "operation": operation },
        }),
        &mut out,
    );
    out
}
