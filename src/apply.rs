//! Carrying out a plan: the plan's changes become operations in a
//! dependency graph (realize a resource, destroy an old object), walked with
//! bounded parallelism. Each finished operation is written to state at once;
//! the dependents of a failed operation are skipped, not attempted.
//!
//! Ordering follows Terraform: a replacement destroys the old object before
//! creating the new one unless `create_before_destroy` is set, and
//! destroys run dependents first.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_provider::{Applied, ApplyRequest, Attrs, DeleteRequest, ResourceSchema, Value};
use berth_state::{OutputRecord, ResourceRecord};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::config::eval::{PValue, Scope};
use crate::config::validate::SchemaLookup;
use crate::error::Error;
use crate::plan::{Action, Plan, ResourceChange, redacted};
use crate::session::Session;
use crate::ui::Ui;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpKind {
    /// Evaluate a local, or bring a resource to its planned state.
    Realize,
    /// Destroy the old object of a resource.
    Destroy,
}

#[derive(Debug)]
struct Op {
    node: String,
    kind: OpKind,
    change: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Pending,
    Done,
    Failed,
    Skipped,
}

/// The outcome of an apply.
pub struct Outcome {
    /// Outputs after apply (sensitive ones redacted).
    pub outputs: BTreeMap<String, OutputRecord>,
    /// Counts: added, changed, destroyed.
    pub counts: (usize, usize, usize),
    /// Everything known after apply, for checks.
    pub scope: Scope,
}

/// Applies `plan`; `scope` is the scope the plan was made with.
pub async fn apply(
    session: &Session,
    plan: &Plan,
    scope: Scope,
    parallelism: usize,
    ui: &Ui,
) -> Result<Outcome, Error> {
    let (ops, deps) = build_ops(session, plan);
    let scope = Mutex::new(scope);
    let mut status = vec![Status::Pending; ops.len()];
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); ops.len()];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..ops.len()).filter(|&i| waiting[i] == 0).collect();
    ready.reverse();
    let mut running = FuturesUnordered::new();
    let mut counts = (0, 0, 0);
    let mut failed = 0usize;
    let parallelism = parallelism.max(1);

    loop {
        while running.len() < parallelism && !crate::interrupt::requested() {
            let Some(i) = ready.pop() else { break };
            let op = &ops[i];
            let change = op.change.map(|c| &plan.changes[c]);
            let scope = &scope;
            running.push(async move { (i, run_op(session, op, change, scope, ui).await) });
        }
        let Some((i, result)) = running.next().await else {
            break;
        };
        match result {
            Ok(counted) => {
                status[i] = Status::Done;
                counts.0 += counted.0;
                counts.1 += counted.1;
                counts.2 += counted.2;
                let mut next: Vec<usize> = Vec::new();
                for &d in &dependents[i] {
                    waiting[d] -= 1;
                    if waiting[d] == 0 && status[d] == Status::Pending {
                        next.push(d);
                    }
                }
                next.sort_unstable_by(|a, b| b.cmp(a));
                ready.extend(next);
            }
            Err(e) => {
                status[i] = Status::Failed;
                failed += 1;
                ui.error(&format!(
                    "{}: {}",
                    ops[i].node,
                    strip_address(&e, &ops[i].node)
                ));
                let mut stack = dependents[i].clone();
                while let Some(d) = stack.pop() {
                    if status[d] == Status::Pending {
                        status[d] = Status::Skipped;
                        ui.status(&format!(
                            "{}: skipped because {} failed",
                            ops[d].node, ops[i].node
                        ));
                        stack.extend(dependents[d].iter().copied());
                    }
                }
            }
        }
    }
    drop(running);
    let skipped = status.iter().filter(|s| **s == Status::Skipped).count();
    let not_started = status.iter().filter(|s| **s == Status::Pending).count();
    if not_started > 0 && crate::interrupt::requested() {
        return Err(Error::Interrupted {
            done: status.iter().filter(|s| **s == Status::Done).count(),
            not_started,
        });
    }

    let scope = scope
        .into_inner()
        .map_err(|_| Error::Refused("internal error: scope lock poisoned".to_owned()))?;
    let mut outputs = BTreeMap::new();
    if failed == 0 && !plan.destroy {
        let config = &session.loaded.config;
        for output in &config.outputs {
            match scope.eval(config, &output.value) {
                Ok(PValue::Known(v)) => {
                    let sensitive = output.sensitive || scope.is_sensitive(&output.value);
                    outputs.insert(
                        output.name.clone(),
                        OutputRecord {
                            value: (!sensitive).then_some(v),
                            sensitive,
                        },
                    );
                }
                Ok(PValue::Unknown) => {}
                Err(d) => return Err(Error::Config(d.into())),
            }
        }
    }
    if failed == 0 && outputs != session.snapshot.outputs {
        session.backend.put_outputs(&outputs).await?;
    }
    if failed > 0 {
        return Err(Error::Apply { failed, skipped });
    }
    Ok(Outcome {
        outputs,
        counts,
        scope,
    })
}

fn strip_address(e: &Error, address: &str) -> String {
    let text = e.to_string();
    text.strip_prefix(&format!("{address}: "))
        .map(str::to_owned)
        .unwrap_or(text)
}

fn build_ops(session: &Session, plan: &Plan) -> (Vec<Op>, Vec<Vec<usize>>) {
    let mut ops: Vec<Op> = Vec::new();
    let mut realize: BTreeMap<String, usize> = BTreeMap::new();
    let mut destroy: BTreeMap<String, usize> = BTreeMap::new();
    let change_of: BTreeMap<&str, usize> = plan
        .changes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.address.as_str(), i))
        .collect();

    if !plan.destroy {
        for node in &session.loaded.graph.order {
            let change = change_of.get(node.as_str()).copied();
            if !node.starts_with("local.") && change.is_none() {
                continue;
            }
            realize.insert(node.clone(), ops.len());
            ops.push(Op {
                node: node.clone(),
                kind: OpKind::Realize,
                change,
            });
        }
    }
    for (i, c) in plan.changes.iter().enumerate() {
        if c.action == Action::Delete || (c.action == Action::Replace && !c.rolling) {
            destroy.insert(c.address.clone(), ops.len());
            ops.push(Op {
                node: c.address.clone(),
                kind: OpKind::Destroy,
                change: Some(i),
            });
        }
    }
    let mut deps: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); ops.len()];
    // Config dependencies: realize after what you depend on.
    for (node, &i) in &realize {
        for d in session.loaded.graph.deps.get(node).into_iter().flatten() {
            if let Some(&j) = realize.get(d) {
                deps[i].insert(j);
            }
        }
    }
    // Who depends on whom, for destroy ordering: config edges plus the
    // edges recorded in state for resources no longer in the config.
    let mut depends_on: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (node, ds) in &session.loaded.graph.deps {
        depends_on
            .entry(node.clone())
            .or_default()
            .extend(ds.iter().cloned());
    }
    for (address, record) in &session.snapshot.resources {
        depends_on
            .entry(address.clone())
            .or_default()
            .extend(record.depends_on.iter().cloned());
    }
    for (address, &i) in &destroy {
        let c = &plan.changes[ops[i].change.unwrap_or_default()];
        // Dependents are destroyed first.
        for (other, ds) in &depends_on {
            if ds.contains(address)
                && let Some(&j) = destroy.get(other)
                && j != i
            {
                let other_cbd =
                    plan.changes[ops[j].change.unwrap_or_default()].create_before_destroy;
                if !other_cbd {
                    deps[i].insert(j);
                }
            }
        }
        if c.action == Action::Replace
            && let Some(&r) = realize.get(address)
        {
            if c.create_before_destroy {
                // New object first, then everything that uses it, then the
                // old object goes.
                deps[i].insert(r);
                for (other, ds) in &depends_on {
                    if ds.contains(address)
                        && let Some(&j) = realize.get(other)
                    {
                        deps[i].insert(j);
                    }
                }
            } else {
                deps[r].insert(i);
            }
        }
    }
    (
        ops,
        deps.into_iter().map(|d| d.into_iter().collect()).collect(),
    )
}

type Counted = (usize, usize, usize);

/// Which provider call realizes a change.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    Create,
    Update,
    Replace,
}

async fn run_op(
    session: &Session,
    op: &Op,
    change: Option<&ResourceChange>,
    scope: &Mutex<Scope>,
    ui: &Ui,
) -> Result<Counted, Error> {
    let config = &session.loaded.config;
    let poisoned = || Error::Refused("internal error: scope lock poisoned".to_owned());
    if let Some(name) = op.node.strip_prefix("local.") {
        let mut scope = scope.lock().map_err(|_| poisoned())?;
        if let Some(local) = config.locals.iter().find(|l| l.name == name) {
            let v = scope
                .eval(config, &local.value)
                .map_err(|d| Error::Config(d.into()))?;
            let sensitive = scope.is_sensitive(&local.value);
            scope.set_local(name, v, sensitive);
        }
        return Ok((0, 0, 0));
    }
    let Some(change) = change else {
        return Ok((0, 0, 0));
    };
    let address = change.address.as_str();
    let provider_error = |e| Error::Provider {
        address: address.to_owned(),
        source: e,
    };
    let Some(provider) = session.loaded.registry.provider_for(&change.type_name) else {
        return Err(Error::Refused(format!(
            "{address}: no provider serves `{}`",
            change.type_name
        )));
    };
    let schema = session.loaded.registry.schema(&change.type_name);
    let key = session.backend.key();

    if op.kind == OpKind::Destroy {
        let Some(id) = change.prior_id.as_deref() else {
            session.backend.remove_resource(address).await?;
            return Ok((0, 0, 0));
        };
        let gone_already = change
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("already gone"));
        if !gone_already {
            let before = change.before.clone().unwrap_or_default();
            let started = Instant::now();
            ui.status(&format!("{address}: Destroying... [id={}]", short_id(id)));
            let progress = |line: &str| ui.detail(address, line);
            with_ticker(
                provider.delete(
                    DeleteRequest {
                        type_name: &change.type_name,
                        address,
                        id,
                        attrs: &before,
                        owner: &session.owner,
                    },
                    &progress,
                ),
                ui,
                address,
                "destroying",
            )
            .await
            .map_err(provider_error)?;
            ui.status(&format!(
                "{address}: Destruction complete after {}",
                elapsed(started)
            ));
        }
        if session.snapshot.resources.contains_key(address) || change.action == Action::Replace {
            session.backend.remove_resource(address).await?;
        }
        return Ok((0, 0, 1));
    }

    let Some(resource) = config.resource(address) else {
        return Ok((0, 0, 0));
    };
    let Some(schema) = schema else {
        return Ok((0, 0, 0));
    };
    // Evaluate again, now that everything this resource depends on exists.
    let mut desired = {
        let scope = scope.lock().map_err(|_| poisoned())?;
        scope
            .eval_body(config, &resource.body, schema)
            .map_err(Error::Config)?
    };
    let Some(mut known) = desired.all_known() else {
        let unknown: Vec<&String> = desired
            .attrs
            .iter()
            .filter(|(_, v)| **v == PValue::Unknown)
            .map(|(k, _)| k)
            .collect();
        return Err(Error::Refused(format!(
            "{address}: attributes still unknown at apply time: {}",
            unknown
                .iter()
                .map(|u| format!("`{u}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    provider
        .prepare(&change.type_name, &mut known)
        .await
        .map_err(provider_error)?;
    for (k, v) in &known {
        desired.attrs.insert(k.clone(), PValue::Known(v.clone()));
    }
    let stored = redacted(&desired, key).unwrap_or_default();
    let config_hash = berth_provider::hash_attrs(&stored);
    let sensitive: Vec<String> = desired.sensitive.iter().cloned().collect();
    let depends_on: Vec<String> = change.depends_on.clone();
    let prior_record = session.snapshot.resources.get(address);

    let (applied, counted): (Applied, Counted) = match change.action {
        Action::NoOp | Action::Adopt => {
            let mut attrs: Attrs = prior_record.map(|r| r.attrs.clone()).unwrap_or_default();
            if change.action == Action::Adopt {
                attrs = change.before.clone().unwrap_or_default();
            }
            let applied = Applied {
                id: change
                    .prior_id
                    .clone()
                    .or_else(|| prior_record.map(|r| r.id.clone()))
                    .unwrap_or_default(),
                attrs,
            };
            if change.action == Action::NoOp {
                set_scope(
                    scope,
                    address,
                    &known,
                    &applied.attrs,
                    schema,
                    &desired.sensitive,
                )?;
                return Ok((0, 0, 0));
            }
            ui.status(&format!(
                "{address}: Adopted into state [id={}]",
                short_id(&applied.id)
            ));
            (applied, (0, 0, 0))
        }
        Action::Create | Action::Update | Action::Replace => {
            // (verb, live verb, done message, counts) per kind of call.
            let (call, verb, done, counted) = match change.action {
                Action::Update => (
                    Call::Update,
                    "Modifying",
                    "Modifications complete",
                    (0, 1, 0),
                ),
                Action::Replace if change.rolling => (
                    Call::Replace,
                    "Replacing (rolling)",
                    "Replacement complete",
                    (1, 0, 1),
                ),
                _ => (Call::Create, "Creating", "Creation complete", (1, 0, 0)),
            };
            let started = Instant::now();
            let prior = change.before.clone().unwrap_or_default();
            let with_prior = call != Call::Create;
            match change.prior_id.as_deref().filter(|_| with_prior) {
                Some(id) => ui.status(&format!("{address}: {verb}... [id={}]", short_id(id))),
                None => ui.status(&format!("{address}: {verb}...")),
            }
            // Rolling replacements report each replica's step; the others'
            // provider lines are shown all with -v, else at most one per
            // ten seconds (see `Ui::detail`).
            let progress = |line: &str| {
                if call == Call::Replace {
                    ui.status(&format!("{address}: {line}"));
                } else {
                    ui.detail(address, line);
                }
            };
            let request = ApplyRequest {
                type_name: &change.type_name,
                address,
                config: &known,
                prior: with_prior.then_some(&prior),
                prior_id: change.prior_id.as_deref().filter(|_| with_prior),
                config_hash: &config_hash,
                owner: &session.owner,
            };
            let work = async {
                match call {
                    Call::Create => provider.create(request, &progress).await,
                    Call::Update => provider.update(request, &progress).await,
                    Call::Replace => provider.replace(request, &progress).await,
                }
            };
            let applied = with_ticker(work, ui, address, &verb.to_lowercase())
                .await
                .map_err(provider_error)?;
            ui.status(&format!(
                "{address}: {done} after {} [id={}]",
                elapsed(started),
                short_id(&applied.id)
            ));
            (applied, counted)
        }
        Action::Delete => return Ok((0, 0, 0)),
    };

    // Store the configuration (secrets hashed), what only the provider
    // knows, and the values the provider chose for optional attributes the
    // configuration left out (a generated name, a default subnet).
    let mut attrs = stored.clone();
    for (k, v) in &applied.attrs {
        let chosen = !stored.contains_key(k) && schema.attribute(k).is_some_and(|a| a.computed);
        if is_computed_only(schema, k) || chosen {
            attrs.insert(k.clone(), v.clone());
        }
    }
    if change.action == Action::Adopt {
        for (k, v) in &applied.attrs {
            attrs.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let record = ResourceRecord {
        type_name: change.type_name.clone(),
        id: applied.id.clone(),
        attrs: attrs.clone(),
        sensitive,
        config_hash,
        depends_on,
    };
    session.backend.put_resource(address, &record).await?;
    set_scope(
        scope,
        address,
        &known,
        &applied.attrs,
        schema,
        &desired.sensitive,
    )?;
    Ok(counted)
}

fn is_computed_only(schema: &ResourceSchema, name: &str) -> bool {
    match schema.attribute(name) {
        Some(a) => a.computed && !a.optional && !a.required,
        None => schema.block(name).is_none(),
    }
}

fn set_scope(
    scope: &Mutex<Scope>,
    address: &str,
    known: &BTreeMap<String, Value>,
    applied: &Attrs,
    schema: &ResourceSchema,
    sensitive: &BTreeSet<String>,
) -> Result<(), Error> {
    let mut attrs = known.clone();
    for (k, v) in applied {
        let chosen = !known.contains_key(k) && schema.attribute(k).is_some_and(|a| a.computed);
        if is_computed_only(schema, k) || chosen {
            attrs.insert(k.clone(), v.clone());
        }
    }
    let mut scope = scope
        .lock()
        .map_err(|_| Error::Refused("internal error: scope lock poisoned".to_owned()))?;
    scope.set_resource(address, Some(&attrs), &[], sensitive);
    Ok(())
}

fn short_id(id: &str) -> &str {
    // A pushed image's id is `registry/repo:tag@sha256:...`: show the digest.
    let id = id.rsplit_once('@').map_or(id, |(_, digest)| digest);
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    id.get(..12).unwrap_or(id)
}

fn elapsed(started: Instant) -> String {
    let secs = started.elapsed().as_secs_f64();
    if secs < 10.0 {
        format!("{secs:.1}s")
    } else {
        format!("{}s", secs.round())
    }
}

/// Runs `fut` as a step of `address`: with a live line on a terminal, or
/// else printing "Still creating... [10s elapsed]" every ten seconds (with
/// the newest provider line held back since the last one shown).
async fn with_ticker<T>(
    fut: impl std::future::Future<Output = T>,
    ui: &Ui,
    address: &str,
    verb: &str,
) -> T {
    let mut title = verb.to_owned();
    if let Some(first) = title.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    let _step = ui.step(address, &format!("{title}..."));
    if ui.live() {
        return fut.await;
    }
    let started = Instant::now();
    let mut fut = std::pin::pin!(fut);
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(10),
        Duration::from_secs(10),
    );
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = ticker.tick() => {
                ui.still(address, verb, started.elapsed());
            }
        }
    }
}
