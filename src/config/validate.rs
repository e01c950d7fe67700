//! Static validation of a parsed configuration: every resource type is
//! served by a provider, every attribute and block is in its schema (with a
//! "did you mean" when it is not), required attributes are set, and every
//! reference names something declared. Types of values are checked later,
//! at evaluation, where values are known.

use std::collections::HashSet;

use berth_provider::{AttrSchema, BlockSchema, Nesting, ResourceSchema};

use super::{Body, Config, RefTarget};
use crate::diag::{Diagnostic, Diagnostics, closest};

/// Looks up the schema of a resource type.
pub trait SchemaLookup {
    /// The schema for `type_name`, if a provider serves it.
    fn schema(&self, type_name: &str) -> Option<&ResourceSchema>;
    /// Every resource type served, for hints.
    fn type_names(&self) -> Vec<&'static str>;
}

/// Validates `config` against the schemas.
pub fn validate(config: &Config, schemas: &dyn SchemaLookup) -> Diagnostics {
    let mut diags = Diagnostics::default();
    let resources: HashSet<String> = config.resources.iter().map(|r| r.address()).collect();
    let vars: HashSet<&str> = config.variables.iter().map(|v| v.name.as_str()).collect();
    let locals: HashSet<&str> = config.locals.iter().map(|l| l.name.as_str()).collect();
    let types = schemas.type_names();

    for resource in &config.resources {
        match schemas.schema(&resource.type_name) {
            None => {
                let mut d = config.error(
                    resource.span.clone(),
                    format!("unknown resource type `{}`", resource.type_name),
                );
                d = match closest(&resource.type_name, types.iter().copied()) {
                    Some(best) => d.with_help(format!("did you mean `{best}`?")),
                    None => d.with_help(format!("supported types: {}", types.join(", "))),
                };
                diags.push(d);
            }
            Some(schema) => check_body(
                config,
                &resource.body,
                &schema.attributes,
                &schema.blocks,
                &format!("resource `{}`", resource.address()),
                resource.span.clone(),
                &mut diags,
            ),
        }
        for (dep, span) in &resource.depends_on {
            if !resources.contains(dep) {
                diags.push(config.error(
                    span.clone(),
                    format!("`depends_on` names undeclared resource `{dep}`"),
                ));
            }
        }
    }

    let mut exprs: Vec<&super::Expr> = Vec::new();
    for r in &config.resources {
        collect_exprs(&r.body, &mut exprs);
    }
    for p in &config.providers {
        collect_exprs(&p.body, &mut exprs);
    }
    for c in &config.checks {
        collect_exprs(&c.body, &mut exprs);
    }
    exprs.extend(config.locals.iter().map(|l| &l.value));
    exprs.extend(config.outputs.iter().map(|o| &o.value));
    for v in &config.variables {
        for val in &v.validations {
            exprs.push(&val.condition);
            exprs.push(&val.error_message);
        }
    }
    for expr in exprs {
        for r in &expr.refs {
            let problem = match &r.target {
                RefTarget::Var(name) if !vars.contains(name.as_str()) => Some((
                    format!("reference to undeclared variable `var.{name}`"),
                    closest(name, vars.iter().copied()).map(|b| format!("var.{b}")),
                )),
                RefTarget::Local(name) if !locals.contains(name.as_str()) => Some((
                    format!("reference to undeclared local value `local.{name}`"),
                    closest(name, locals.iter().copied()).map(|b| format!("local.{b}")),
                )),
                RefTarget::Berth(attr) if attr != "env" => Some((
                    format!("`berth.{attr}` does not exist"),
                    Some("berth.env".to_owned()),
                )),
                RefTarget::Resource {
                    type_name, name, ..
                } => {
                    let addr = format!("{type_name}.{name}");
                    (!resources.contains(&addr)).then(|| {
                        (
                            format!("reference to undeclared resource `{addr}`"),
                            closest(&addr, resources.iter().map(String::as_str)).map(str::to_owned),
                        )
                    })
                }
                RefTarget::Other(root) => Some((
                    format!("unknown name `{root}`"),
                    Some("var.NAME, local.NAME, TYPE.NAME.ATTR or berth.env".to_owned()),
                )),
                _ => None,
            };
            if let Some((summary, hint)) = problem {
                let mut d = config.error(r.span.clone(), summary);
                if let Some(hint) = hint {
                    d = d.with_help(format!("did you mean `{hint}`?"));
                }
                diags.push(d);
            }
        }
    }
    diags
}

fn collect_exprs<'a>(body: &'a Body, out: &mut Vec<&'a super::Expr>) {
    out.extend(body.attrs.iter().map(|a| &a.value));
    for b in &body.blocks {
        collect_exprs(&b.body, out);
    }
}

fn check_body(
    config: &Config,
    body: &Body,
    attrs: &[AttrSchema],
    blocks: &[BlockSchema],
    what: &str,
    span: std::ops::Range<usize>,
    diags: &mut Diagnostics,
) {
    let settable: Vec<&str> = attrs
        .iter()
        .filter(|a| a.optional || a.required)
        .map(|a| a.name)
        .collect();
    let block_names: Vec<&str> = blocks.iter().map(|b| b.name).collect();
    for attr in &body.attrs {
        let name = attr.name.as_str();
        if settable.contains(&name) {
            continue;
        }
        let d = if attrs.iter().any(|a| a.name == name) {
            config.error(
                attr.name_span.clone(),
                format!("`{name}` is computed by the provider and cannot be set in {what}"),
            )
        } else if block_names.contains(&name) {
            config
                .error(
                    attr.name_span.clone(),
                    format!("`{name}` is a block in {what}, not an attribute"),
                )
                .with_help(format!("write it as `{name} {{ ... }}`"))
        } else {
            let d = config.error(
                attr.name_span.clone(),
                format!("unknown attribute `{name}` in {what}"),
            );
            hint(d, name, settable.iter().chain(block_names.iter()).copied())
        };
        diags.push(d);
    }
    for block in &body.blocks {
        let name = block.name.as_str();
        match blocks.iter().find(|b| b.name == name) {
            Some(schema) => {
                check_body(
                    config,
                    &block.body,
                    &schema.attributes,
                    &schema.blocks,
                    &format!("block `{name}`"),
                    block.span.clone(),
                    diags,
                );
                if schema.nesting == Nesting::Single
                    && body.blocks.iter().filter(|b| b.name == name).count() > 1
                    && body.blocks.iter().find(|b| b.name == name).map(|b| &b.span)
                        == Some(&block.span)
                {
                    diags.push(config.error(
                        block.span.clone(),
                        format!("block `{name}` may appear only once in {what}"),
                    ));
                }
            }
            None if settable.contains(&name) => diags.push(
                config
                    .error(
                        block.span.clone(),
                        format!("`{name}` is an attribute in {what}, not a block"),
                    )
                    .with_help(format!("write it as `{name} = ...`")),
            ),
            None => {
                let d = config.error(
                    block.span.clone(),
                    format!("unknown block `{name}` in {what}"),
                );
                diags.push(hint(
                    d,
                    name,
                    block_names.iter().chain(settable.iter()).copied(),
                ));
            }
        }
    }
    for attr in attrs.iter().filter(|a| a.required) {
        if body.attr(attr.name).is_none() {
            diags.push(config.error(
                span.clone(),
                format!("{what} is missing the required attribute `{}`", attr.name),
            ));
        }
    }
}

fn hint<'a>(
    d: Diagnostic,
    given: &str,
    candidates: impl Iterator<Item = &'a str> + Clone,
) -> Diagnostic {
    match closest(given, candidates.clone()) {
        Some(best) => d.with_help(format!("did you mean `{best}`?")),
        None => {
            let mut all: Vec<&str> = candidates.collect();
            all.sort_unstable();
            d.with_help(format!("valid names: {}", all.join(", ")))
        }
    }
}
