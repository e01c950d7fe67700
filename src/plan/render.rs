//! Human-readable plan output in Terraform's shape: one block per changed
//! resource with `+`, `~`, `-/+` and `-` markers, the attributes that force
//! replacement, `(known after apply)` and `(sensitive value)`, multi-line
//! strings diffed line by line with `similar`, and the closing
//! `Plan: N to add, N to change, N to destroy.` line.

use std::collections::BTreeSet;
use std::fmt::Write;

use berth_provider::{ResourceSchema, Value};

use super::{Action, Plan, ResourceChange};
use crate::config::eval::PValue;
use crate::config::validate::SchemaLookup;

const KNOWN_AFTER_APPLY: &str = "(known after apply)";
const SENSITIVE: &str = "(sensitive value)";

/// Renders the whole plan.
pub fn render(plan: &Plan, schemas: &dyn SchemaLookup) -> String {
    let mut out = String::new();
    let mut shown: Vec<&ResourceChange> = plan
        .changes
        .iter()
        .filter(|c| c.action != Action::NoOp)
        .collect();
    shown.sort_by(|a, b| a.address.cmp(&b.address));
    if shown.is_empty() {
        let _ = writeln!(
            out,
            "No changes. The environment `{}` matches the configuration.",
            plan.env
        );
        unreadable_note(&mut out, plan);
        return out;
    }
    let used: BTreeSet<Action> = shown.iter().map(|c| c.action).collect();
    let _ = writeln!(
        out,
        "Resource actions are indicated with the following symbols:"
    );
    for action in &used {
        let text = match action {
            Action::Create => "create",
            Action::Update => "update in-place",
            Action::Replace => "destroy and then create replacement",
            Action::Delete => "destroy",
            Action::Adopt => "adopt into state",
            Action::NoOp => continue,
        };
        let _ = writeln!(out, "{:>5} {text}", action.symbol());
    }
    let _ = writeln!(out, "\nberth will perform the following actions:\n");
    for change in shown {
        render_change(&mut out, change, schemas.schema(&change.type_name));
        out.push('\n');
    }
    let (add, change, destroy) = plan.counts();
    let adopt = plan
        .changes
        .iter()
        .filter(|c| c.action == Action::Adopt)
        .count();
    let _ = write!(
        out,
        "Plan: {add} to add, {change} to change, {destroy} to destroy"
    );
    if adopt > 0 {
        let _ = write!(out, ", {adopt} to adopt");
    }
    out.push_str(".\n");
    unreadable_note(&mut out, plan);
    out
}

/// Names the sensitive values the provider cannot read back, whose changes
/// made outside berth the plan therefore cannot see.
fn unreadable_note(out: &mut String, plan: &Plan) {
    let unreadable: Vec<String> = plan
        .changes
        .iter()
        .filter(|c| matches!(c.action, Action::NoOp | Action::Update))
        .flat_map(|c| {
            c.unreadable
                .iter()
                .map(move |a| format!("{}.{a}", c.address))
        })
        .collect();
    if unreadable.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nNote: these sensitive values cannot be read back from the provider, so a \
         change made outside berth is not seen; berth compares the configuration \
         with the keyed hash it stored:"
    );
    for address in unreadable {
        let _ = writeln!(out, "  - {address}");
    }
}

fn headline(change: &ResourceChange) -> String {
    let what = match change.action {
        Action::Create => "will be created".to_owned(),
        Action::Update => "will be updated in-place".to_owned(),
        Action::Replace if change.rolling => {
            "must be replaced (rolling: new replicas start before old ones stop)".to_owned()
        }
        Action::Replace if change.create_before_destroy => {
            "must be replaced (the replacement is created first)".to_owned()
        }
        Action::Replace => "must be replaced".to_owned(),
        Action::Delete => "will be destroyed".to_owned(),
        Action::Adopt => "will be adopted into state".to_owned(),
        Action::NoOp => "is unchanged".to_owned(),
    };
    match &change.reason {
        Some(reason) => format!("  # {} {what}\n  # ({reason})\n", change.address),
        None => format!("  # {} {what}\n", change.address),
    }
}

fn render_change(out: &mut String, change: &ResourceChange, schema: Option<&ResourceSchema>) {
    out.push_str(&headline(change));
    let (type_name, name) = change
        .address
        .split_once('.')
        .unwrap_or((&change.address, ""));
    let _ = writeln!(
        out,
        "{:>3} resource \"{type_name}\" \"{name}\" {{",
        change.action.symbol()
    );
    let before = change.before.clone().unwrap_or_default();
    let after = change.after.clone().unwrap_or_default();
    let mut names: BTreeSet<String> = BTreeSet::new();
    match change.action {
        Action::Create => names.extend(after.keys().cloned()),
        Action::Delete | Action::Adopt => names.extend(before.keys().cloned()),
        _ => {
            names.extend(change.changed.iter().cloned());
            for always in ["id", "name"] {
                if before.contains_key(always) || after.contains_key(always) {
                    names.insert(always.to_owned());
                }
            }
        }
    }
    // Computed attributes are unknown until the object exists.
    if matches!(change.action, Action::Create | Action::Replace)
        && let Some(schema) = schema
    {
        for a in schema
            .attributes
            .iter()
            .filter(|a| a.computed && !a.optional)
        {
            names.insert(a.name.to_owned());
        }
    }
    let is_block_name = |n: &str| schema.is_some_and(|s| s.block(n).is_some());
    let width = names
        .iter()
        .filter(|n| !is_block_name(n))
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0);
    // Attributes first, then nested blocks, as Terraform prints them.
    let names: Vec<String> = names
        .iter()
        .filter(|n| !is_block_name(n))
        .chain(names.iter().filter(|n| is_block_name(n)))
        .cloned()
        .collect();
    let mut hidden = 0usize;
    if matches!(change.action, Action::Update | Action::Replace) {
        let all: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
        hidden = all.iter().filter(|n| !names.contains(*n)).count();
    }
    for attr in &names {
        let sensitive = change.sensitive.contains(attr);
        let old = before.get(attr);
        let new = after.get(attr);
        let computed = schema
            .and_then(|s| s.attribute(attr))
            .is_some_and(|a| a.computed && !a.optional);
        let force = if change.forces_replacement.contains(attr) {
            " # forces replacement"
        } else {
            ""
        };
        let pad = width.saturating_sub(attr.chars().count());
        let show = |v: &Value| {
            if sensitive {
                SENSITIVE.to_owned()
            } else {
                value(v, 6)
            }
        };
        let is_block = schema.is_some_and(|s| s.block(attr).is_some());
        if is_block && !sensitive {
            let old_v = old.filter(|v| !v.is_null());
            let new_v = match new {
                Some(PValue::Known(v)) if !v.is_null() => Some(v),
                _ => None,
            };
            let unknown = matches!(new, Some(PValue::Unknown));
            let changed = change.changed.contains(attr);
            match change.action {
                Action::Create => {
                    if let Some(v) = new_v {
                        blocks(out, "+", attr, v, "");
                    } else if unknown {
                        let _ = writeln!(out, "      + {attr} {{ {KNOWN_AFTER_APPLY} }}");
                    }
                }
                Action::Delete => {
                    if let Some(v) = old_v {
                        blocks(out, "-", attr, v, "");
                    }
                }
                Action::Adopt => {
                    if let Some(v) = old_v {
                        blocks(out, " ", attr, v, "");
                    }
                }
                _ if changed => {
                    if let Some(v) = old_v {
                        blocks(out, "-", attr, v, "");
                    }
                    if let Some(v) = new_v {
                        blocks(out, "+", attr, v, force);
                    } else if unknown {
                        let _ = writeln!(out, "      + {attr} {{ {KNOWN_AFTER_APPLY} }}{force}");
                    }
                }
                _ => {}
            }
            continue;
        }
        let line = match change.action {
            Action::Create => match new {
                Some(PValue::Known(v)) if v.is_null() => continue,
                Some(PValue::Known(v)) => format!("      + {attr}{:pad$} = {}", "", show(v)),
                _ => format!("      + {attr}{:pad$} = {KNOWN_AFTER_APPLY}", ""),
            },
            Action::Delete | Action::Adopt => match old {
                Some(v) if v.is_null() => continue,
                Some(v) => {
                    let marker = if change.action == Action::Delete {
                        "-"
                    } else {
                        " "
                    };
                    let arrow = if change.action == Action::Delete {
                        " -> null"
                    } else {
                        ""
                    };
                    format!("      {marker} {attr}{:pad$} = {}{arrow}", "", show(v))
                }
                None => continue,
            },
            _ => {
                let changed = change.changed.contains(attr);
                match (old, new) {
                    _ if computed && change.action == Action::Replace => match old {
                        Some(o) => format!(
                            "      ~ {attr}{:pad$} = {} -> {KNOWN_AFTER_APPLY}",
                            "",
                            show(o)
                        ),
                        None => format!("      + {attr}{:pad$} = {KNOWN_AFTER_APPLY}", ""),
                    },
                    (Some(o), Some(PValue::Known(n))) if changed => {
                        if !sensitive
                            && let (Value::String(a), Value::String(b)) = (o, n)
                            && (a.contains('\n') || b.contains('\n'))
                        {
                            format!("      ~ {attr}{:pad$} = {}{force}", "", text_diff(a, b))
                        } else {
                            format!(
                                "      ~ {attr}{:pad$} = {} -> {}{force}",
                                "",
                                show(o),
                                show(n)
                            )
                        }
                    }
                    (Some(o), Some(PValue::Unknown)) => {
                        format!(
                            "      ~ {attr}{:pad$} = {} -> {KNOWN_AFTER_APPLY}{force}",
                            "",
                            show(o)
                        )
                    }
                    (None, Some(PValue::Known(n))) if changed => {
                        format!("      + {attr}{:pad$} = {}{force}", "", show(n))
                    }
                    (None, Some(PValue::Unknown)) => {
                        format!("      + {attr}{:pad$} = {KNOWN_AFTER_APPLY}{force}", "")
                    }
                    (Some(o), None) if changed => {
                        format!("      - {attr}{:pad$} = {} -> null{force}", "", show(o))
                    }
                    (Some(o), _) => format!("        {attr}{:pad$} = {}", "", show(o)),
                    (None, Some(PValue::Known(n))) => {
                        format!("        {attr}{:pad$} = {}", "", show(n))
                    }
                    (None, None) => continue,
                }
            }
        };
        out.push_str(&line);
        out.push('\n');
    }
    if hidden > 0 {
        let _ = writeln!(
            out,
            "        # ({hidden} unchanged attribute{} hidden)",
            if hidden == 1 { "" } else { "s" }
        );
    }
    out.push_str("    }\n");
}

/// Renders `value` (one object, or a list of them) as nested blocks.
fn blocks(out: &mut String, marker: &str, name: &str, block: &Value, note: &str) {
    let items: Vec<&Value> = match block {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    for item in items {
        let _ = writeln!(out, "      {marker} {name} {{{note}");
        if let Value::Object(map) = item {
            let width = map.keys().map(|k| k.chars().count()).max().unwrap_or(0);
            for (k, v) in map {
                if v.is_null() {
                    continue;
                }
                let gap = width - k.chars().count();
                let _ = writeln!(out, "          {marker} {k}{:gap$} = {}", "", value(v, 10));
            }
        }
        let _ = writeln!(out, "        }}");
    }
}

/// A value in HCL-like syntax, indented for nested lines by `indent`.
pub fn value(v: &Value, indent: usize) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.contains('\n') => {
            let pad = " ".repeat(indent + 4);
            let mut out = String::from("<<-EOT\n");
            for line in s.lines() {
                let _ = writeln!(out, "{pad}{line}");
            }
            let _ = write!(out, "{}EOT", " ".repeat(indent + 2));
            out
        }
        Value::String(s) => Value::String(s.clone()).to_string(),
        Value::Array(items) if items.is_empty() => "[]".to_owned(),
        Value::Array(items) => {
            let inline: Vec<String> = items.iter().map(|i| value(i, indent + 2)).collect();
            let one_line = format!("[{}]", inline.join(", "));
            if one_line.len() <= 60 && !one_line.contains('\n') {
                one_line
            } else {
                let pad = " ".repeat(indent + 4);
                let mut out = String::from("[\n");
                for i in inline {
                    let _ = writeln!(out, "{pad}{i},");
                }
                let _ = write!(out, "{}]", " ".repeat(indent + 2));
                out
            }
        }
        Value::Object(map) if map.is_empty() => "{}".to_owned(),
        Value::Object(map) => {
            let pad = " ".repeat(indent + 4);
            let width = map.keys().map(|k| k.chars().count()).max().unwrap_or(0);
            let mut out = String::from("{\n");
            for (k, v) in map {
                if v.is_null() {
                    continue;
                }
                let gap = width - k.chars().count();
                let _ = writeln!(out, "{pad}{k}{:gap$} = {}", "", value(v, indent + 2));
            }
            let _ = write!(out, "{}}}", " ".repeat(indent + 2));
            out
        }
    }
}

fn text_diff(old: &str, new: &str) -> String {
    let diff = similar::TextDiff::from_lines(old, new);
    let mut out = String::from("<<-EOT\n");
    for change in diff.iter_all_changes() {
        let sign = match change.tag() {
            similar::ChangeTag::Delete => "- ",
            similar::ChangeTag::Insert => "+ ",
            similar::ChangeTag::Equal => "  ",
        };
        let _ = writeln!(
            out,
            "          {sign}{}",
            change.value().trim_end_matches('\n')
        );
    }
    out.push_str("        EOT");
    out
}
