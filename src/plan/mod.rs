//! Planning: refresh what exists, evaluate the configuration in dependency
//! order, and decide per resource whether to create, update in place,
//! replace, delete, adopt or leave it alone — naming the attributes that
//! force a replacement. The [`Plan`] is what `apply` carries out and what
//! the renderers ([`render`], [`json`]) show.

pub mod json;
pub mod render;

use std::collections::{BTreeMap, BTreeSet};

use berth_provider::{Attrs, Observed, ResourceSchema, Value, hash_attrs};
use berth_state::{ResourceRecord, StateKey};
use futures_util::future::join_all;

use crate::config::eval::{Evaluated, PValue, Scope};
use crate::config::validate::SchemaLookup;
use crate::diag::Diagnostics;
use crate::error::Error;
use crate::session::Session;

/// What happens to one resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Nothing to do.
    NoOp,
    /// Record an object found with berth's labels but missing from state.
    Adopt,
    /// Create it.
    Create,
    /// Update it in place.
    Update,
    /// Destroy it and create a replacement (or the other way round with
    /// `create_before_destroy`).
    Replace,
    /// Destroy it.
    Delete,
}

impl Action {
    /// Terraform's symbol for the action.
    pub fn symbol(self) -> &'static str {
        match self {
            Self::NoOp => " ",
            Self::Adopt => "<=",
            Self::Create => "+",
            Self::Update => "~",
            Self::Replace => "-/+",
            Self::Delete => "-",
        }
    }
}

/// The planned change of one resource.
#[derive(Clone, Debug)]
pub struct ResourceChange {
    /// `TYPE.NAME`.
    pub address: String,
    /// Resource type.
    pub type_name: String,
    /// What happens.
    pub action: Action,
    /// The attributes as they are now (state overlaid with what refresh
    /// saw), sensitive ones as keyed hashes; `None` for a create.
    pub before: Option<Attrs>,
    /// The attributes the configuration asks for; `None` for a delete.
    /// Holds sensitive values in plain text: renderers must redact every
    /// name in `sensitive`.
    pub after: Option<BTreeMap<String, PValue>>,
    /// Names of sensitive attributes.
    pub sensitive: BTreeSet<String>,
    /// Attributes whose change differs between before and after.
    pub changed: BTreeSet<String>,
    /// Changed attributes that force replacement.
    pub forces_replacement: BTreeSet<String>,
    /// Why the action is what it is, when that is not obvious.
    pub reason: Option<String>,
    /// The id of the existing object, if any.
    pub prior_id: Option<String>,
    /// Create the replacement before destroying the old object.
    pub create_before_destroy: bool,
    /// Addresses this resource depends on (for a delete: the ones recorded
    /// in state).
    pub depends_on: Vec<String>,
    /// The config hash of `after` when it is fully known.
    pub config_hash: Option<String>,
    /// The provider replaces the object itself, keeping the old one serving
    /// until the new one is ready (a rolling update of replicas).
    pub rolling: bool,
    /// Sensitive attributes the provider reported as `null`: it cannot read
    /// them back (GitLab's hidden variables), so berth can only compare the
    /// configuration with the keyed hash it stored, and a change made
    /// outside berth stays unseen. The plan says so.
    pub unreadable: BTreeSet<String>,
}

/// A whole plan for one environment.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Environment.
    pub env: String,
    /// Lineage of the state planned against.
    pub lineage: String,
    /// Serial of the state planned against.
    pub serial: u64,
    /// Every resource in config or state, in dependency order.
    pub changes: Vec<ResourceChange>,
    /// Whether this plan destroys everything.
    pub destroy: bool,
}

impl Plan {
    /// Counts: (add, change, destroy), as Terraform counts them.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for ch in &self.changes {
            match ch.action {
                Action::Create => c.0 += 1,
                Action::Update => c.1 += 1,
                Action::Replace => {
                    c.0 += 1;
                    c.2 += 1;
                }
                Action::Delete => c.2 += 1,
                Action::NoOp | Action::Adopt => {}
            }
        }
        c
    }

    /// Whether anything would change (adoptions count: they write state).
    pub fn has_changes(&self) -> bool {
        self.changes.iter().any(|c| c.action != Action::NoOp)
    }
}

/// Observed objects by address, for each resource type refreshed.
pub type Refreshed = BTreeMap<String, Observed>;

/// Gives every provider what is known of its resources before refresh:
/// each body evaluated with the values state holds (what depends on
/// something not in state is left out), and the recorded attributes.
fn hint_providers(session: &Session) {
    let loaded = &session.loaded;
    let config = &loaded.config;
    let mut scope = loaded.scope.clone();
    for node in &loaded.graph.order {
        if let Some(name) = node.strip_prefix("local.") {
            if let Some(local) = config.locals.iter().find(|l| l.name == name) {
                let value = scope.eval(config, &local.value).unwrap_or(PValue::Unknown);
                scope.set_local(name, value, false);
            }
            continue;
        }
        let record = session.snapshot.resources.get(node);
        scope.set_resource(node, record.map(|r| &r.attrs), &[], &BTreeSet::new());
        let (Some(resource), Some(provider)) = (
            config.resource(node),
            config
                .resource(node)
                .and_then(|r| loaded.registry.provider_for(&r.type_name)),
        ) else {
            continue;
        };
        let Some(schema) = loaded.registry.schema(&resource.type_name) else {
            continue;
        };
        let known: Option<Attrs> = scope
            .eval_body(config, &resource.body, schema)
            .ok()
            .map(|e| {
                e.attrs
                    .into_iter()
                    .filter_map(|(k, v)| v.known().cloned().map(|v| (k, v)))
                    .collect()
            });
        provider.hint(
            &resource.type_name,
            node,
            known.as_ref(),
            record.map(|r| &r.attrs),
        );
    }
    for (address, record) in &session.snapshot.resources {
        if config.resource(address).is_none()
            && let Some(provider) = loaded.registry.provider_for(&record.type_name)
        {
            provider.hint(&record.type_name, address, None, Some(&record.attrs));
        }
    }
}

/// Lists every object of every type in use, one call per type, concurrently.
pub async fn refresh(session: &Session) -> Result<Refreshed, Error> {
    hint_providers(session);
    let registry = &session.loaded.registry;
    let types: BTreeSet<&str> = session
        .loaded
        .config
        .resources
        .iter()
        .map(|r| r.type_name.as_str())
        .chain(
            session
                .snapshot
                .resources
                .values()
                .map(|r| r.type_name.as_str()),
        )
        .collect();
    let calls = types.into_iter().filter_map(|t| {
        let provider = registry.provider_for(t)?;
        let recorded: Vec<(String, String)> = session
            .snapshot
            .resources
            .iter()
            .filter(|(_, r)| r.type_name == t)
            .map(|(a, r)| (a.clone(), r.id.clone()))
            .collect();
        Some(async move { (t, provider.refresh(t, &session.owner, &recorded).await) })
    });
    let mut out = Refreshed::new();
    for (type_name, result) in join_all(calls).await {
        let observed = result.map_err(|e| Error::Provider {
            address: format!("refresh of {type_name}"),
            source: e,
        })?;
        for o in observed {
            out.insert(o.address.clone(), o);
        }
    }
    Ok(out)
}

/// Plans the environment: `destroy` plans the deletion of everything.
pub async fn plan(session: &Session, scope: &mut Scope, destroy: bool) -> Result<Plan, Error> {
    let observed = refresh(session).await?;
    let loaded = &session.loaded;
    let config = &loaded.config;
    let key = session.backend.key();
    let mut changes: Vec<ResourceChange> = Vec::new();
    let mut diags = Diagnostics::default();

    if !destroy {
        for node in &loaded.graph.order {
            if let Some(name) = node.strip_prefix("local.") {
                let Some(local) = config.locals.iter().find(|l| l.name == name) else {
                    continue;
                };
                match scope.eval(config, &local.value) {
                    Ok(v) => {
                        let sensitive = scope.is_sensitive(&local.value);
                        scope.set_local(name, v, sensitive);
                    }
                    Err(d) => diags.push(d),
                }
                continue;
            }
            let Some(resource) = config.resource(node) else {
                continue;
            };
            let Some(schema) = loaded.registry.schema(&resource.type_name) else {
                continue;
            };
            let mut desired = match scope.eval_body(config, &resource.body, schema) {
                Ok(e) => e,
                Err(d) => {
                    diags.extend(d);
                    // Keep planning the rest; dependents see it as unknown.
                    scope.set_resource(node, None, &[], &BTreeSet::new());
                    continue;
                }
            };
            diags.extend(provider_checks(
                config,
                resource,
                &loaded.registry,
                &desired,
            ));
            if let (Some(mut known), Some(provider)) = (
                desired.all_known(),
                loaded.registry.provider_for(&resource.type_name),
            ) {
                provider
                    .prepare(&resource.type_name, &mut known)
                    .await
                    .map_err(|e| Error::Provider {
                        address: node.clone(),
                        source: e,
                    })?;
                for (k, v) in known {
                    desired.attrs.insert(k, PValue::Known(v));
                }
            }
            let record = session.snapshot.resources.get(node);
            let seen = observed.get(node);
            let mut change = diff(
                node,
                &resource.type_name,
                schema,
                &desired,
                record,
                seen,
                key,
                &resource.lifecycle,
            );
            if change.action == Action::Replace
                && change.prior_id.is_some()
                && let Some(provider) = loaded.registry.provider_for(&resource.type_name)
            {
                // What is known now: an image built in this same apply is
                // unknown, but whether replicas roll does not depend on it.
                let known: berth_provider::Attrs = desired
                    .attrs
                    .iter()
                    .filter_map(|(k, v)| v.known().map(|v| (k.clone(), v.clone())))
                    .collect();
                change.rolling = provider.replaces_itself(
                    &resource.type_name,
                    &known,
                    resource.lifecycle.create_before_destroy,
                );
            }
            change.depends_on = loaded
                .graph
                .deps
                .get(node)
                .map(|d| {
                    d.iter()
                        .filter(|n| !n.starts_with("local."))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            if resource.lifecycle.prevent_destroy && matches!(change.action, Action::Replace) {
                diags.push(config.error(
                    resource.span.clone(),
                    format!("`{node}` has `lifecycle {{ prevent_destroy = true }}` but the plan must replace it"),
                ).with_help(format!("the change of {} forces replacement", list(&change.forces_replacement))));
            }
            // What dependents may see of this resource at plan time.
            match change.action {
                Action::Create | Action::Replace => {
                    let known: BTreeMap<String, Value> = if change.action == Action::Create {
                        desired
                            .attrs
                            .iter()
                            .filter_map(|(k, v)| v.known().map(|v| (k.clone(), v.clone())))
                            .collect()
                    } else {
                        BTreeMap::new()
                    };
                    if change.action == Action::Replace {
                        scope.set_resource(node, None, &[], &desired.sensitive);
                    } else {
                        let mut unknown: Vec<String> = schema
                            .attributes
                            .iter()
                            .filter(|a| a.computed)
                            .map(|a| a.name.to_owned())
                            .collect();
                        unknown.extend(
                            desired
                                .attrs
                                .iter()
                                .filter(|(_, v)| **v == PValue::Unknown)
                                .map(|(k, _)| k.clone()),
                        );
                        scope.set_resource(node, Some(&known), &unknown, &desired.sensitive);
                    }
                }
                _ => {
                    let mut attrs: BTreeMap<String, Value> = record
                        .map(|r| r.attrs.clone())
                        .or_else(|| seen.map(|o| o.attrs.clone()))
                        .unwrap_or_default();
                    for (k, v) in &desired.attrs {
                        if let PValue::Known(v) = v {
                            attrs.insert(k.clone(), v.clone());
                        }
                    }
                    let unknown: Vec<String> = desired
                        .attrs
                        .iter()
                        .filter(|(_, v)| **v == PValue::Unknown)
                        .map(|(k, _)| k.clone())
                        .collect();
                    scope.set_resource(node, Some(&attrs), &unknown, &desired.sensitive);
                }
            }
            changes.push(change);
        }
    }
    if diags.has_errors() {
        return Err(Error::Config(diags));
    }

    // Whatever state or the real world has that the configuration does not.
    let in_config: BTreeSet<String> = if destroy {
        BTreeSet::new()
    } else {
        config.resources.iter().map(|r| r.address()).collect()
    };
    let mut orphans: BTreeMap<String, ResourceChange> = BTreeMap::new();
    for (address, record) in &session.snapshot.resources {
        if in_config.contains(address) {
            continue;
        }
        let seen = observed.get(address);
        orphans.insert(
            address.clone(),
            delete_change(address, &record.type_name, Some(record), seen),
        );
    }
    for (address, seen) in &observed {
        if in_config.contains(address) || orphans.contains_key(address) {
            continue;
        }
        let type_name = address.split('.').next().unwrap_or_default().to_owned();
        let mut change = delete_change(address, &type_name, None, Some(seen));
        change.reason = Some(
            "found with berth's labels but neither in the configuration nor in state".to_owned(),
        );
        orphans.insert(address.clone(), change);
    }
    if destroy {
        for change in orphans.values() {
            if let Some(r) = config.resource(&change.address)
                && r.lifecycle.prevent_destroy
            {
                diags.push(config.error(
                    r.span.clone(),
                    format!(
                        "`{}` has `lifecycle {{ prevent_destroy = true }}` and cannot be destroyed",
                        change.address
                    ),
                ));
            }
        }
        if diags.has_errors() {
            return Err(Error::Config(diags));
        }
    }
    // Deletes go in reverse dependency order: dependents first.
    let mut deletes: Vec<ResourceChange> = orphans.into_values().collect();
    deletes.sort_by_key(|c| std::cmp::Reverse(depth(&c.address, session)));
    changes.extend(deletes);

    Ok(Plan {
        env: session.env.clone(),
        lineage: session.snapshot.lineage.clone(),
        serial: session.snapshot.serial,
        changes,
        destroy,
    })
}

/// Runs the provider's own checks of known values and points each problem
/// at the attribute's value in the file.
pub fn provider_checks(
    config: &crate::config::Config,
    resource: &crate::config::Resource,
    registry: &crate::providers::Registry,
    desired: &Evaluated,
) -> Diagnostics {
    let mut diags = Diagnostics::default();
    let Some(provider) = registry.provider_for(&resource.type_name) else {
        return diags;
    };
    let known: Attrs = desired
        .attrs
        .iter()
        .filter_map(|(k, v)| v.known().map(|v| (k.clone(), v.clone())))
        .collect();
    for problem in provider.validate(&resource.type_name, &known) {
        let span = resource
            .body
            .attr(&problem.attribute)
            .map(|a| a.value.span.clone())
            .or_else(|| {
                resource
                    .body
                    .blocks
                    .iter()
                    .find(|b| b.name == problem.attribute)
                    .map(|b| b.span.clone())
            })
            .unwrap_or_else(|| resource.span.clone());
        diags.push(
            config
                .error(
                    span,
                    format!(
                        "invalid `{}` in `{}`",
                        problem.attribute,
                        resource.address()
                    ),
                )
                .with_label(problem.message),
        );
    }
    diags
}

fn depth(address: &str, session: &Session) -> usize {
    fn go(a: &str, session: &Session, seen: &mut BTreeSet<String>) -> usize {
        if !seen.insert(a.to_owned()) {
            return 0;
        }
        session
            .snapshot
            .resources
            .get(a)
            .map(|r| {
                r.depends_on
                    .iter()
                    .map(|d| 1 + go(d, session, seen))
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    }
    go(address, session, &mut BTreeSet::new())
}

fn list(names: &BTreeSet<String>) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn delete_change(
    address: &str,
    type_name: &str,
    record: Option<&ResourceRecord>,
    seen: Option<&Observed>,
) -> ResourceChange {
    let mut before = record.map(|r| r.attrs.clone()).unwrap_or_default();
    if let Some(seen) = seen {
        for (k, v) in &seen.attrs {
            if !record.is_some_and(|r| r.sensitive.contains(k)) {
                before.insert(k.clone(), v.clone());
            }
        }
    }
    ResourceChange {
        address: address.to_owned(),
        type_name: type_name.to_owned(),
        action: Action::Delete,
        before: Some(before),
        after: None,
        sensitive: record
            .map(|r| r.sensitive.iter().cloned().collect())
            .unwrap_or_default(),
        changed: BTreeSet::new(),
        forces_replacement: BTreeSet::new(),
        reason: if record.is_some() && seen.is_none() {
            Some("already gone outside berth; only the state record is removed".to_owned())
        } else {
            None
        },
        prior_id: seen
            .map(|o| o.id.clone())
            .or_else(|| record.map(|r| r.id.clone())),
        create_before_destroy: false,
        depends_on: record.map(|r| r.depends_on.clone()).unwrap_or_default(),
        config_hash: None,
        rolling: false,
        unreadable: BTreeSet::new(),
    }
}

/// The attributes of `desired` as stored: known values, sensitive ones
/// hashed. `None` if any value is unknown.
pub fn redacted(desired: &Evaluated, key: &StateKey) -> Option<Attrs> {
    let known = desired.all_known()?;
    let sensitive: Vec<String> = desired.sensitive.iter().cloned().collect();
    Some(key.redact(&known, &sensitive))
}

#[expect(clippy::too_many_arguments)]
fn diff(
    address: &str,
    type_name: &str,
    schema: &ResourceSchema,
    desired: &Evaluated,
    record: Option<&ResourceRecord>,
    seen: Option<&Observed>,
    key: &StateKey,
    lifecycle: &crate::config::Lifecycle,
) -> ResourceChange {
    let redacted_desired = redacted(desired, key);
    let config_hash = redacted_desired.as_ref().map(hash_attrs);
    let mut sensitive: BTreeSet<String> = desired.sensitive.clone();
    if let Some(r) = record {
        sensitive.extend(r.sensitive.iter().cloned());
    }
    let mut change = ResourceChange {
        address: address.to_owned(),
        type_name: type_name.to_owned(),
        action: Action::NoOp,
        before: None,
        after: Some(desired.attrs.clone()),
        sensitive,
        changed: BTreeSet::new(),
        forces_replacement: BTreeSet::new(),
        reason: None,
        prior_id: None,
        create_before_destroy: lifecycle.create_before_destroy,
        depends_on: Vec::new(),
        config_hash: config_hash.clone(),
        rolling: false,
        unreadable: BTreeSet::new(),
    };

    // The object as it is: state overlaid with what refresh saw.
    let mut adopting = false;
    let before: Attrs = match (record, seen) {
        (None, None) => {
            change.action = Action::Create;
            return change;
        }
        (Some(_), None) => {
            change.action = Action::Create;
            change.reason = Some("it was removed outside berth".to_owned());
            return change;
        }
        (None, Some(o)) => {
            change.prior_id = Some(o.id.clone());
            change.before = Some(o.attrs.clone());
            if config_hash.is_none() || o.config_hash != config_hash {
                change.action = Action::Replace;
                change.reason = Some("found with berth's labels but missing from state, built from another configuration".to_owned());
                return change;
            }
            // Made from this configuration, but an apply killed in the
            // middle of a create that takes several calls (a security
            // group's rules after the group) may have left it half made:
            // compare what refresh read back before adopting it.
            adopting = true;
            o.attrs.clone()
        }
        (Some(r), Some(o)) => {
            let mut attrs = r.attrs.clone();
            for (k, v) in &o.attrs {
                if !r.sensitive.contains(k) {
                    attrs.insert(k.clone(), v.clone());
                } else if v.is_null() && r.attrs.contains_key(k) {
                    change.unreadable.insert(k.clone());
                }
            }
            change.prior_id = Some(o.id.clone());
            attrs
        }
    };

    // What the configuration sets, plus computed attributes the provider's
    // `prepare` derived from it (a build context's hash, the id a tag
    // points at now): a change in those is a change of the configuration.
    let settable = |name: &str| {
        schema
            .attribute(name)
            .map(|a| a.optional || a.required)
            .unwrap_or(false)
            || schema.block(name).is_some()
            || (schema.attribute(name).is_some() && desired.attrs.contains_key(name))
    };
    let names: BTreeSet<&String> = desired.attrs.keys().chain(before.keys()).collect();
    for name in names {
        if !settable(name) || lifecycle.ignore_changes.iter().any(|i| i == name) {
            continue;
        }
        // An object being adopted is judged only on what refresh read back
        // in plain text (never on a secret, which state would hold hashed).
        if adopting && (!before.contains_key(name) || change.sensitive.contains(name.as_str())) {
            continue;
        }
        let computed = schema.attribute(name).map(|a| a.computed).unwrap_or(false);
        let old = before.get(name.as_str()).unwrap_or(&Value::Null);
        let differs = match desired.attrs.get(name.as_str()) {
            None if computed => false,
            None => !old.is_null(),
            Some(PValue::Unknown) => true,
            Some(PValue::Known(new)) if change.sensitive.contains(name.as_str()) => {
                !key.matches(new, old)
            }
            Some(PValue::Known(new)) => !values_equal(new, old),
        };
        if differs {
            change.changed.insert(name.clone());
            if schema.forces_replacement(name) {
                change.forces_replacement.insert(name.clone());
            }
        }
    }
    change.before = Some(before);
    if adopting {
        let differs: Vec<&str> = change.changed.iter().map(String::as_str).collect();
        let found = "found with berth's labels but missing from state (an apply was interrupted)";
        (change.action, change.reason) = if differs.is_empty() {
            (
                Action::Adopt,
                Some(format!("{found}; it matches the configuration")),
            )
        } else {
            let action = if change.forces_replacement.is_empty() {
                Action::Update
            } else {
                Action::Replace
            };
            (
                action,
                Some(format!(
                    "{found}, made from this configuration but left unfinished: {} differ",
                    differs.join(", ")
                )),
            )
        };
        return change;
    }
    change.action = if !change.forces_replacement.is_empty() {
        Action::Replace
    } else if !change.changed.is_empty() {
        Action::Update
    } else {
        Action::NoOp
    };
    change
}

/// Equality that treats `5` and `5.0` alike and ignores null object fields.
fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| values_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().all(|k| {
                values_equal(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                )
            })
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_provider::{AttrSchema, AttrType};
    use serde_json::json;

    fn schema() -> ResourceSchema {
        ResourceSchema {
            type_name: "test_group",
            attributes: vec![
                AttrSchema::required("name", AttrType::String).force_new(),
                AttrSchema::optional("rules", AttrType::ListOfString),
            ],
            blocks: vec![],
        }
    }

    fn desired() -> Evaluated {
        Evaluated {
            attrs: BTreeMap::from([
                ("name".to_owned(), PValue::Known(json!("web"))),
                ("rules".to_owned(), PValue::Known(json!(["22"]))),
            ]),
            sensitive: BTreeSet::new(),
        }
    }

    /// An object found with berth's labels and this configuration's hash
    /// but no state record (berth was killed after creating it).
    fn found(attrs: Value, key: &StateKey) -> Observed {
        let hash = redacted(&desired(), key).map(|a| hash_attrs(&a));
        Observed {
            address: "test_group.g".to_owned(),
            id: "g-1".to_owned(),
            attrs: attrs
                .as_object()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            config_hash: hash,
        }
    }

    fn plan_for(observed: &Observed, key: &StateKey) -> ResourceChange {
        diff(
            "test_group.g",
            "test_group",
            &schema(),
            &desired(),
            None,
            Some(observed),
            key,
            &crate::config::Lifecycle::default(),
        )
    }

    #[test]
    fn a_finished_object_missing_from_state_is_adopted() {
        let key = StateKey::from_bytes([7; 32]);
        let change = plan_for(&found(json!({"name": "web", "rules": ["22"]}), &key), &key);
        assert_eq!(change.action, Action::Adopt);
    }

    #[test]
    fn a_half_made_object_missing_from_state_is_finished_not_adopted_as_is() {
        // Killed after the create call and before the rules were set: the
        // hash label matches, the rules do not.
        let key = StateKey::from_bytes([7; 32]);
        let change = plan_for(&found(json!({"name": "web", "rules": []}), &key), &key);
        assert_eq!(change.action, Action::Update);
        assert_eq!(change.prior_id.as_deref(), Some("g-1"));
        assert!(change.changed.contains("rules"));
        assert!(
            change
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("rules differ")),
            "{:?}",
            change.reason
        );
    }

    #[test]
    fn a_half_made_object_differing_in_a_replacing_attribute_is_replaced() {
        let key = StateKey::from_bytes([7; 32]);
        let change = plan_for(
            &found(json!({"name": "other", "rules": ["22"]}), &key),
            &key,
        );
        assert_eq!(change.action, Action::Replace);
        assert_eq!(change.prior_id.as_deref(), Some("g-1"));
    }

    #[test]
    fn attributes_refresh_does_not_read_back_are_not_drift_when_adopting() {
        let key = StateKey::from_bytes([7; 32]);
        let change = plan_for(&found(json!({"name": "web"}), &key), &key);
        assert_eq!(change.action, Action::Adopt);
    }
}
