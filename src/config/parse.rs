//! Parsing: source text to the [`Config`] model with hcl-edit, keeping the
//! span of every block, attribute and expression. Structural mistakes
//! (unknown top-level blocks, missing labels, duplicates, unknown
//! functions, bad meta-arguments) are reported here, all at once.

use std::collections::HashSet;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use hcl_edit::Span;
use hcl_edit::structure::{self, Structure};

use super::{
    Attr, BackendBlock, Block, Body, Check, Config, Expr, Lifecycle, Local, Output, ProviderBlock,
    Resource, Validation, Variable, functions, refs,
};
use crate::diag::{Diagnostic, Diagnostics, SourceFile, closest};

const TOP_LEVEL: &[&str] = &[
    "variable",
    "locals",
    "provider",
    "resource",
    "output",
    "check",
    "terraform",
    "backend",
];

/// Parses `source` into a [`Config`].
pub fn parse(source: Arc<SourceFile>, base_dir: PathBuf) -> Result<Config, Diagnostics> {
    let body = match hcl_edit::parser::parse_body(&source.text) {
        Ok(body) => body,
        Err(err) => {
            let offset = err.location().offset().min(source.text.len());
            let end = next_char_boundary(&source.text, offset);
            return Err(Diagnostic::error(&source, offset..end, "syntax error")
                .with_label(err.message().to_owned())
                .into());
        }
    };
    let mut p = Parser {
        source: source.clone(),
        diags: Diagnostics::default(),
    };
    let mut config = Config {
        source: source.clone(),
        base_dir,
        variables: Vec::new(),
        locals: Vec::new(),
        providers: Vec::new(),
        resources: Vec::new(),
        outputs: Vec::new(),
        checks: Vec::new(),
        backend: None,
        resource_index: Default::default(),
    };
    let mut seen: HashSet<String> = HashSet::new();
    for structure in body.iter() {
        match structure {
            Structure::Attribute(attr) => {
                let span = attr.span().unwrap_or(0..0);
                p.diags.push(
                    p.error(span, format!("unexpected attribute `{}` at the top level", attr.key.as_str()))
                        .with_help("top-level entries are blocks: variable, locals, provider, resource, output, check"),
                );
            }
            Structure::Block(block) => p.top_block(block, &mut config, &mut seen),
        }
    }
    if p.diags.has_errors() {
        Err(p.diags)
    } else {
        Ok(config)
    }
}

fn next_char_boundary(text: &str, offset: usize) -> usize {
    let mut end = offset + 1;
    while end < text.len() && !text.is_char_boundary(end) {
        end += 1;
    }
    end.min(text.len().max(offset))
}

struct Parser {
    source: Arc<SourceFile>,
    diags: Diagnostics,
}

impl Parser {
    fn error(&self, span: Range<usize>, summary: impl Into<String>) -> Diagnostic {
        Diagnostic::error(&self.source, span, summary)
    }

    fn header_span(block: &structure::Block) -> Range<usize> {
        let start = block.ident.span().map(|s| s.start).unwrap_or(0);
        let end = block
            .labels
            .last()
            .and_then(|l| l.span())
            .map(|s| s.end)
            .or_else(|| block.ident.span().map(|s| s.end))
            .unwrap_or(start);
        start..end
    }

    fn labels(&mut self, block: &structure::Block, want: &[&str]) -> Option<Vec<String>> {
        let labels: Vec<String> = block.labels.iter().map(|l| l.as_str().to_owned()).collect();
        if labels.len() != want.len() {
            let kind = block.ident.as_str();
            let expected = want
                .iter()
                .map(|w| format!("\"{w}\""))
                .collect::<Vec<_>>()
                .join(" ");
            self.diags.push(
                self.error(
                    Self::header_span(block),
                    format!(
                        "a `{kind}` block takes {} label{}, found {}",
                        want.len(),
                        if want.len() == 1 { "" } else { "s" },
                        labels.len()
                    ),
                )
                .with_help(format!("write it as `{kind} {expected} {{ ... }}`")),
            );
            return None;
        }
        Some(labels)
    }

    fn top_block(
        &mut self,
        block: &structure::Block,
        config: &mut Config,
        seen: &mut HashSet<String>,
    ) {
        let kind = block.ident.as_str();
        let span = Self::header_span(block);
        match kind {
            "variable" => {
                let Some(labels) = self.labels(block, &["NAME"]) else {
                    return;
                };
                let name = labels[0].clone();
                if !seen.insert(format!("var.{name}")) {
                    self.diags
                        .push(self.error(span, format!("variable `{name}` is declared twice")));
                    return;
                }
                config
                    .variables
                    .push(self.variable(name, span, &block.body));
            }
            "locals" => {
                let _ = self.labels(block, &[]);
                let body = self.body(&block.body);
                for b in &body.blocks {
                    self.diags.push(self.error(
                        b.span.clone(),
                        format!("unexpected block `{}` in `locals`", b.name),
                    ));
                }
                for attr in body.attrs {
                    if !seen.insert(format!("local.{}", attr.name)) {
                        self.diags.push(self.error(
                            attr.name_span,
                            format!("local `{}` is declared twice", attr.name),
                        ));
                        continue;
                    }
                    config.locals.push(Local {
                        name: attr.name,
                        value: attr.value,
                    });
                }
            }
            "provider" => {
                let Some(labels) = self.labels(block, &["NAME"]) else {
                    return;
                };
                config.providers.push(ProviderBlock {
                    name: labels[0].clone(),
                    span,
                    body: self.body(&block.body),
                });
            }
            "resource" => {
                let Some(labels) = self.labels(block, &["TYPE", "NAME"]) else {
                    return;
                };
                let address = format!("{}.{}", labels[0], labels[1]);
                if !seen.insert(address.clone()) {
                    self.diags
                        .push(self.error(span, format!("resource `{address}` is declared twice")));
                    return;
                }
                if let Some(resource) = self.resource(labels, span, &block.body) {
                    config.resources.push(resource);
                }
            }
            "output" => {
                let Some(labels) = self.labels(block, &["NAME"]) else {
                    return;
                };
                let body = self.body(&block.body);
                let Some(value) = body.attr("value").map(|a| a.value.clone()) else {
                    self.diags
                        .push(self.error(span, format!("output `{}` has no `value`", labels[0])));
                    return;
                };
                self.only(&body, &["value", "description", "sensitive"], &[], "output");
                config.outputs.push(Output {
                    name: labels[0].clone(),
                    span,
                    value,
                    description: self.literal_string(&body, "description"),
                    sensitive: self.literal_bool(&body, "sensitive"),
                });
            }
            "check" => {
                let Some(labels) = self.labels(block, &["NAME"]) else {
                    return;
                };
                let body = self.body(&block.body);
                self.only(
                    &body,
                    &["url", "expect_status", "contains", "timeout", "retries"],
                    &[],
                    "check",
                );
                if body.attr("url").is_none() {
                    self.diags.push(
                        self.error(span.clone(), format!("check `{}` has no `url`", labels[0])),
                    );
                }
                config.checks.push(Check {
                    name: labels[0].clone(),
                    span,
                    body,
                });
            }
            "backend" => self.backend(block, config),
            "terraform" => {
                let _ = self.labels(block, &[]);
                for inner in block.body.iter() {
                    match inner {
                        Structure::Block(b) if b.ident.as_str() == "backend" => {
                            self.backend(b, config)
                        }
                        Structure::Block(b) if b.ident.as_str() == "required_providers" => {}
                        Structure::Attribute(a) if a.key.as_str() == "required_version" => {}
                        other => {
                            let span = match other {
                                Structure::Block(b) => b.ident.span(),
                                Structure::Attribute(a) => a.key.span(),
                            }
                            .unwrap_or(span.clone());
                            self.diags.push(
                                self.error(span, "unsupported entry in `terraform`")
                                    .with_help("berth reads only `backend \"KIND\" { ... }` here"),
                            );
                        }
                    }
                }
            }
            other => {
                let mut d = self.error(
                    block.ident.span().unwrap_or(span),
                    format!("unknown block type `{other}`"),
                );
                d = match closest(other, TOP_LEVEL.iter().copied()) {
                    Some(best) => d.with_help(format!("did you mean `{best}`?")),
                    None => {
                        d.with_help(format!("valid top-level blocks: {}", TOP_LEVEL.join(", ")))
                    }
                };
                self.diags.push(d);
            }
        }
    }

    fn backend(&mut self, block: &structure::Block, config: &mut Config) {
        let span = Self::header_span(block);
        let Some(labels) = self.labels(block, &["KIND"]) else {
            return;
        };
        if config.backend.is_some() {
            self.diags
                .push(self.error(span, "only one `backend` block is allowed"));
            return;
        }
        let kind = labels[0].clone();
        if !berth_state::BACKEND_KINDS.contains(&kind.as_str()) {
            let mut d = self.error(span, format!("unknown backend `{kind}`"));
            d = match closest(&kind, berth_state::BACKEND_KINDS.iter().copied()) {
                Some(best) => d.with_help(format!("did you mean `{best}`?")),
                None => d.with_help(format!(
                    "backends: {}",
                    berth_state::BACKEND_KINDS.join(", ")
                )),
            };
            self.diags.push(d);
            return;
        }
        let body = self.body(&block.body);
        config.backend = Some(BackendBlock { kind, span, body });
    }

    fn variable(&mut self, name: String, span: Range<usize>, body: &structure::Body) -> Variable {
        let body = self.body(body);
        self.only(
            &body,
            &["type", "default", "description", "sensitive", "nullable"],
            &["validation"],
            "variable",
        );
        let type_name = body.attr("type").map(|a| {
            self.source
                .text
                .get(a.value.span.clone())
                .unwrap_or("")
                .trim()
                .to_owned()
        });
        if let Some(t) = &type_name
            && !is_known_type(t)
            && let Some(a) = body.attr("type")
        {
            self.diags.push(
                self.error(a.value.span.clone(), format!("unknown type `{t}`"))
                    .with_help(
                        "use string, number, bool, list(...), map(...), object({...}) or any",
                    ),
            );
        }
        let mut validations = Vec::new();
        for b in &body.blocks {
            if b.name != "validation" {
                continue;
            }
            match (b.body.attr("condition"), b.body.attr("error_message")) {
                (Some(c), Some(m)) => validations.push(Validation {
                    condition: c.value.clone(),
                    error_message: m.value.clone(),
                }),
                _ => self.diags.push(self.error(
                    b.span.clone(),
                    "a `validation` block needs `condition` and `error_message`",
                )),
            }
        }
        Variable {
            description: self.literal_string(&body, "description"),
            sensitive: self.literal_bool(&body, "sensitive"),
            default: body.attr("default").map(|a| a.value.clone()),
            name,
            span,
            type_name,
            validations,
        }
    }

    fn resource(
        &mut self,
        labels: Vec<String>,
        span: Range<usize>,
        raw: &structure::Body,
    ) -> Option<Resource> {
        let mut body = self.body(raw);
        let mut depends_on = Vec::new();
        let mut lifecycle = Lifecycle::default();
        let mut ok = true;
        body.attrs.retain(|attr| match attr.name.as_str() {
            "depends_on" => {
                match &attr.value.expr {
                    hcl::Expression::Array(items) => {
                        for r in &attr.value.refs {
                            if let Some(node) = r.target.node() {
                                depends_on.push((node, r.span.clone()));
                            }
                        }
                        if items.len() != attr.value.refs.len() {
                            self.diags.push(self.error(
                                attr.value.span.clone(),
                                "`depends_on` takes a list of resource references, like `[docker_network.app]`",
                            ));
                            ok = false;
                        }
                    }
                    _ => {
                        self.diags.push(self.error(attr.value.span.clone(), "`depends_on` must be a list"));
                        ok = false;
                    }
                }
                false
            }
            "count" | "for_each" | "provider" => {
                self.diags.push(
                    self.error(attr.name_span.clone(), format!("`{}` is not supported", attr.name))
                        .with_help("declare each resource, or use `replicas` on docker_container"),
                );
                ok = false;
                false
            }
            _ => true,
        });
        body.blocks.retain(|block| {
            if block.name != "lifecycle" {
                return true;
            }
            self.only(
                &block.body,
                &["prevent_destroy", "create_before_destroy", "ignore_changes"],
                &[],
                "lifecycle",
            );
            lifecycle.prevent_destroy = self.literal_bool(&block.body, "prevent_destroy");
            lifecycle.create_before_destroy =
                self.literal_bool(&block.body, "create_before_destroy");
            if let Some(attr) = block.body.attr("ignore_changes") {
                match &attr.value.expr {
                    hcl::Expression::Array(items) => {
                        for item in items {
                            match item {
                                hcl::Expression::Variable(v) => {
                                    lifecycle.ignore_changes.push(v.to_string())
                                }
                                hcl::Expression::String(s) => {
                                    lifecycle.ignore_changes.push(s.clone())
                                }
                                _ => {
                                    self.diags.push(self.error(
                                        attr.value.span.clone(),
                                        "`ignore_changes` takes a list of attribute names",
                                    ));
                                }
                            }
                        }
                    }
                    _ => self.diags.push(self.error(
                        attr.value.span.clone(),
                        "`ignore_changes` takes a list of attribute names",
                    )),
                }
            }
            false
        });
        // Attribute names in ignore_changes are parsed as references to
        // undeclared roots; they are not references.
        let [type_name, name] = <[String; 2]>::try_from(labels).ok()?;
        ok.then_some(Resource {
            type_name,
            name,
            span,
            body,
            depends_on,
            lifecycle,
        })
    }

    fn body(&mut self, body: &structure::Body) -> Body {
        let mut out = Body::default();
        let mut names: HashSet<String> = HashSet::new();
        for structure in body.iter() {
            match structure {
                Structure::Attribute(attr) => {
                    let name = attr.key.as_str().to_owned();
                    let name_span = attr.key.span().unwrap_or(0..0);
                    if !names.insert(name.clone()) {
                        self.diags.push(
                            self.error(name_span, format!("attribute `{name}` is set twice")),
                        );
                        continue;
                    }
                    let value = self.expr(&attr.value);
                    out.attrs.push(Attr {
                        name,
                        name_span,
                        value,
                    });
                }
                Structure::Block(block) => {
                    out.blocks.push(Block {
                        name: block.ident.as_str().to_owned(),
                        span: block.ident.span().unwrap_or(0..0),
                        labels: block.labels.iter().map(|l| l.as_str().to_owned()).collect(),
                        body: self.body(&block.body),
                    });
                }
            }
        }
        out
    }

    fn expr(&mut self, expr: &hcl_edit::expr::Expression) -> Expr {
        let span = expr.span().unwrap_or(0..0);
        let (refs, calls) = refs::collect(expr);
        for call in calls {
            if !functions::NAMES.contains(&call.name.as_str()) {
                let mut d = self.error(call.span, format!("unknown function `{}`", call.name));
                if let Some(best) = closest(&call.name, functions::NAMES.iter().copied()) {
                    d = d.with_help(format!("did you mean `{best}`?"));
                }
                self.diags.push(d);
            }
        }
        Expr {
            expr: hcl::Expression::from(expr.clone()),
            span,
            refs,
        }
    }

    fn only(&mut self, body: &Body, attrs: &[&str], blocks: &[&str], what: &str) {
        for attr in &body.attrs {
            if !attrs.contains(&attr.name.as_str()) {
                let mut d = self.error(
                    attr.name_span.clone(),
                    format!("unknown attribute `{}` in `{what}`", attr.name),
                );
                d = match closest(&attr.name, attrs.iter().copied()) {
                    Some(best) => d.with_help(format!("did you mean `{best}`?")),
                    None => d.with_help(format!("valid attributes: {}", attrs.join(", "))),
                };
                self.diags.push(d);
            }
        }
        for block in &body.blocks {
            if !blocks.contains(&block.name.as_str()) {
                self.diags.push(self.error(
                    block.span.clone(),
                    format!("unexpected block `{}` in `{what}`", block.name),
                ));
            }
        }
    }

    fn literal_string(&mut self, body: &Body, name: &str) -> Option<String> {
        let attr = body.attr(name)?;
        match &attr.value.expr {
            hcl::Expression::String(s) => Some(s.clone()),
            _ => {
                self.diags.push(self.error(
                    attr.value.span.clone(),
                    format!("`{name}` must be a literal string"),
                ));
                None
            }
        }
    }

    fn literal_bool(&mut self, body: &Body, name: &str) -> bool {
        let Some(attr) = body.attr(name) else {
            return false;
        };
        match &attr.value.expr {
            hcl::Expression::Bool(b) => *b,
            _ => {
                self.diags.push(self.error(
                    attr.value.span.clone(),
                    format!("`{name}` must be `true` or `false`"),
                ));
                false
            }
        }
    }
}

fn is_known_type(t: &str) -> bool {
    let t: String = t.chars().filter(|c| !c.is_whitespace()).collect();
    let base = t.split('(').next().unwrap_or("");
    matches!(
        base,
        "string" | "number" | "bool" | "any" | "list" | "map" | "set" | "object" | "tuple"
    ) && (t.contains('(') == t.ends_with(')'))
}
