//! Expression evaluation with unknown values.
//!
//! A [`Scope`] holds what is known so far: input variables, locals, and the
//! attributes of resources (from state at plan time, from results at apply
//! time). An expression that refers to something not yet known evaluates to
//! [`PValue::Unknown`] — shown as `(known after apply)` — instead of an
//! error. Sensitivity travels the same way: a value computed from a
//! sensitive variable or attribute is sensitive.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use berth_provider::{AttrSchema, AttrType, BlockSchema, Nesting, ResourceSchema, Value};
use hcl::eval::Evaluate;

use super::{Body, Config, Expr, RefTarget, functions};
use crate::diag::{Diagnostic, Diagnostics};

/// A value at plan time: known, or known only after apply.
#[derive(Clone, Debug, PartialEq)]
pub enum PValue {
    /// The value.
    Known(Value),
    /// Known after apply.
    Unknown,
}

impl PValue {
    /// The value, if known.
    pub fn known(&self) -> Option<&Value> {
        match self {
            Self::Known(v) => Some(v),
            Self::Unknown => None,
        }
    }
}

/// A resource body evaluated against its schema.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evaluated {
    /// Top-level attributes and blocks, defaults filled in.
    pub attrs: BTreeMap<String, PValue>,
    /// Names of top-level attributes whose values are sensitive.
    pub sensitive: BTreeSet<String>,
}

impl Evaluated {
    /// All values, if every one is known.
    pub fn all_known(&self) -> Option<BTreeMap<String, Value>> {
        self.attrs
            .iter()
            .map(|(k, v)| v.known().map(|v| (k.clone(), v.clone())))
            .collect()
    }
}

/// What is known while evaluating.
#[derive(Clone, Default)]
pub struct Scope {
    env: String,
    vars: hcl::Map<String, hcl::Value>,
    locals: hcl::Map<String, hcl::Value>,
    resources: BTreeMap<String, hcl::Map<String, hcl::Value>>,
    /// `local.x`, `TYPE.NAME` (wholly unknown) or `TYPE.NAME.ATTR`.
    unknown: HashSet<String>,
    /// `var.x`, `local.x` or `TYPE.NAME.ATTR`.
    sensitive: HashSet<String>,
}

impl Scope {
    /// An empty scope for environment `env`.
    pub fn new(env: &str) -> Self {
        Self {
            env: env.to_owned(),
            ..Self::default()
        }
    }

    /// Declares an input variable.
    pub fn set_var(&mut self, name: &str, value: Value, sensitive: bool) {
        self.vars.insert(name.to_owned(), to_hcl(&value));
        if sensitive {
            self.sensitive.insert(format!("var.{name}"));
        }
    }

    /// Declares a local value.
    pub fn set_local(&mut self, name: &str, value: PValue, sensitive: bool) {
        let key = format!("local.{name}");
        match value {
            PValue::Known(v) => {
                self.unknown.remove(&key);
                self.locals.insert(name.to_owned(), to_hcl(&v));
            }
            PValue::Unknown => {
                self.unknown.insert(key.clone());
            }
        }
        if sensitive {
            self.sensitive.insert(key);
        }
    }

    /// Declares a resource's attributes. `unknown` names attributes known
    /// only after apply; `attrs: None` makes the whole resource unknown.
    pub fn set_resource(
        &mut self,
        address: &str,
        attrs: Option<&BTreeMap<String, Value>>,
        unknown: &[String],
        sensitive: &BTreeSet<String>,
    ) {
        let Some((type_name, name)) = address.split_once('.') else {
            return;
        };
        match attrs {
            None => {
                self.unknown.insert(address.to_owned());
            }
            Some(attrs) => {
                let prefix = format!("{address}.");
                self.unknown
                    .retain(|u| u != address && !u.starts_with(&prefix));
                let object: hcl::Map<String, hcl::Value> =
                    attrs.iter().map(|(k, v)| (k.clone(), to_hcl(v))).collect();
                self.resources
                    .entry(type_name.to_owned())
                    .or_default()
                    .insert(name.to_owned(), hcl::Value::Object(object));
                for u in unknown {
                    self.unknown.insert(format!("{address}.{u}"));
                }
            }
        }
        for s in sensitive {
            self.sensitive.insert(format!("{address}.{s}"));
        }
    }

    fn ref_unknown(&self, target: &RefTarget) -> bool {
        match target {
            RefTarget::Local(n) => self.unknown.contains(&format!("local.{n}")),
            RefTarget::Resource {
                type_name,
                name,
                attr,
            } => {
                let addr = format!("{type_name}.{name}");
                if self.unknown.contains(&addr) {
                    return true;
                }
                match attr {
                    Some(a) => self.unknown.contains(&format!("{addr}.{a}")),
                    None => {
                        let prefix = format!("{addr}.");
                        self.unknown.iter().any(|u| u.starts_with(&prefix))
                    }
                }
            }
            _ => false,
        }
    }

    fn ref_sensitive(&self, target: &RefTarget) -> bool {
        match target {
            RefTarget::Var(n) => self.sensitive.contains(&format!("var.{n}")),
            RefTarget::Local(n) => self.sensitive.contains(&format!("local.{n}")),
            RefTarget::Resource {
                type_name,
                name,
                attr,
            } => {
                let addr = format!("{type_name}.{name}");
                match attr {
                    Some(a) => self.sensitive.contains(&format!("{addr}.{a}")),
                    None => {
                        let prefix = format!("{addr}.");
                        self.sensitive.iter().any(|s| s.starts_with(&prefix))
                    }
                }
            }
            _ => false,
        }
    }

    /// Whether `expr` depends on anything sensitive.
    pub fn is_sensitive(&self, expr: &Expr) -> bool {
        expr.refs.iter().any(|r| self.ref_sensitive(&r.target))
    }

    fn context(&self, expr: &Expr) -> hcl::eval::Context<'static> {
        let mut ctx = hcl::eval::Context::new();
        functions::register(&mut ctx);
        let mut berth = hcl::Map::new();
        berth.insert("env".to_owned(), hcl::Value::String(self.env.clone()));
        ctx.declare_var("berth", hcl::Value::Object(berth));
        ctx.declare_var("var", hcl::Value::Object(self.vars.clone()));
        ctx.declare_var("local", hcl::Value::Object(self.locals.clone()));
        let mut types: BTreeMap<&str, hcl::Map<String, hcl::Value>> = BTreeMap::new();
        for r in &expr.refs {
            if let RefTarget::Resource {
                type_name, name, ..
            } = &r.target
                && let Some(v) = self.resources.get(type_name).and_then(|m| m.get(name))
            {
                types
                    .entry(type_name.as_str())
                    .or_default()
                    .insert(name.clone(), v.clone());
            }
        }
        for (t, objects) in types {
            ctx.declare_var(t, hcl::Value::Object(objects));
        }
        ctx
    }

    /// Evaluates one expression. `what` names it in errors.
    pub fn eval(&self, config: &Config, expr: &Expr) -> Result<PValue, Diagnostic> {
        if expr.refs.iter().any(|r| self.ref_unknown(&r.target)) {
            return Ok(PValue::Unknown);
        }
        let ctx = self.context(expr);
        match expr.expr.evaluate(&ctx) {
            Ok(value) => Ok(PValue::Known(from_hcl(&value))),
            Err(error) => {
                let message = describe_error(&error, self.is_sensitive(expr));
                Err(config
                    .error(expr.span.clone(), "cannot evaluate expression")
                    .with_label(message))
            }
        }
    }

    /// Evaluates a resource body against its schema: every attribute and
    /// block, defaults filled in, types checked and converted.
    pub fn eval_body(
        &self,
        config: &Config,
        body: &Body,
        schema: &ResourceSchema,
    ) -> Result<Evaluated, Diagnostics> {
        let mut diags = Diagnostics::default();
        let mut out = Evaluated::default();
        for attr in &body.attrs {
            let Some(attr_schema) = schema.attribute(&attr.name) else {
                continue;
            };
            if self.is_sensitive(&attr.value) || attr_schema.sensitive {
                out.sensitive.insert(attr.name.clone());
            }
            match self.eval(config, &attr.value) {
                Ok(PValue::Known(v)) => match convert(&v, attr_schema.ty) {
                    Ok(v) => {
                        out.attrs.insert(attr.name.clone(), PValue::Known(v));
                    }
                    Err(expected) => diags.push(type_error(
                        config,
                        &attr.value,
                        &attr.name,
                        expected,
                        &v,
                        out.sensitive.contains(&attr.name),
                    )),
                },
                Ok(PValue::Unknown) => {
                    out.attrs.insert(attr.name.clone(), PValue::Unknown);
                }
                Err(d) => diags.push(d),
            }
        }
        for block_schema in &schema.blocks {
            let blocks: Vec<&super::Block> = body
                .blocks
                .iter()
                .filter(|b| b.name == block_schema.name)
                .collect();
            if blocks.is_empty() {
                continue;
            }
            let mut items = Vec::new();
            let mut unknown = false;
            for block in blocks {
                match self.eval_block(config, &block.body, block_schema, &mut diags) {
                    Some((PValue::Known(v), sensitive)) => {
                        items.push(v);
                        if sensitive {
                            out.sensitive.insert(block_schema.name.to_owned());
                        }
                    }
                    Some((PValue::Unknown, sensitive)) => {
                        unknown = true;
                        if sensitive {
                            out.sensitive.insert(block_schema.name.to_owned());
                        }
                    }
                    None => {}
                }
            }
            let value = if unknown {
                PValue::Unknown
            } else {
                match block_schema.nesting {
                    Nesting::Single => {
                        PValue::Known(items.into_iter().next().unwrap_or(Value::Null))
                    }
                    Nesting::List => PValue::Known(Value::Array(items)),
                }
            };
            out.attrs.insert(block_schema.name.to_owned(), value);
        }
        fill_defaults(&schema.attributes, &mut out.attrs);
        if diags.has_errors() {
            Err(diags)
        } else {
            Ok(out)
        }
    }

    /// Evaluates a body without a schema (provider blocks): attributes by
    /// name, nested blocks as lists of objects. Unknown values are left out.
    pub fn eval_untyped(
        &self,
        config: &Config,
        body: &Body,
    ) -> Result<BTreeMap<String, Value>, Diagnostics> {
        let mut diags = Diagnostics::default();
        let mut out = BTreeMap::new();
        for attr in &body.attrs {
            match self.eval(config, &attr.value) {
                Ok(PValue::Known(v)) => {
                    out.insert(attr.name.clone(), v);
                }
                Ok(PValue::Unknown) => {}
                Err(d) => diags.push(d),
            }
        }
        for block in &body.blocks {
            match self.eval_untyped(config, &block.body) {
                Ok(inner) => {
                    let entry = out
                        .entry(block.name.clone())
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if let Value::Array(items) = entry {
                        items.push(Value::Object(inner.into_iter().collect()));
                    }
                }
                Err(d) => diags.extend(d),
            }
        }
        if diags.has_errors() {
            Err(diags)
        } else {
            Ok(out)
        }
    }

    fn eval_block(
        &self,
        config: &Config,
        body: &Body,
        schema: &BlockSchema,
        diags: &mut Diagnostics,
    ) -> Option<(PValue, bool)> {
        let mut object = BTreeMap::new();
        let mut unknown = false;
        let mut sensitive = false;
        let mut failed = false;
        for attr in &body.attrs {
            let Some(attr_schema) = schema.attributes.iter().find(|a| a.name == attr.name) else {
                continue;
            };
            let attr_sensitive = self.is_sensitive(&attr.value) || attr_schema.sensitive;
            sensitive |= attr_sensitive;
            match self.eval(config, &attr.value) {
                Ok(PValue::Known(v)) => match convert(&v, attr_schema.ty) {
                    Ok(v) => {
                        object.insert(attr.name.clone(), PValue::Known(v));
                    }
                    Err(expected) => {
                        diags.push(type_error(
                            config,
                            &attr.value,
                            &attr.name,
                            expected,
                            &v,
                            attr_sensitive,
                        ));
                        failed = true;
                    }
                },
                Ok(PValue::Unknown) => unknown = true,
                Err(d) => {
                    diags.push(d);
                    failed = true;
                }
            }
        }
        for inner in &schema.blocks {
            let mut items = Vec::new();
            for block in body.blocks.iter().filter(|b| b.name == inner.name) {
                match self.eval_block(config, &block.body, inner, diags) {
                    Some((PValue::Known(v), s)) => {
                        items.push(v);
                        sensitive |= s;
                    }
                    Some((PValue::Unknown, s)) => {
                        unknown = true;
                        sensitive |= s;
                    }
                    None => failed = true,
                }
            }
            if !items.is_empty() {
                let v = match inner.nesting {
                    Nesting::Single => items.into_iter().next().unwrap_or(Value::Null),
                    Nesting::List => Value::Array(items),
                };
                object.insert(inner.name.to_owned(), PValue::Known(v));
            }
        }
        if failed {
            return None;
        }
        if unknown {
            return Some((PValue::Unknown, sensitive));
        }
        fill_defaults(&schema.attributes, &mut object);
        let object = object
            .into_iter()
            .filter_map(|(k, v)| v.known().cloned().map(|v| (k, v)))
            .collect();
        Some((PValue::Known(Value::Object(object)), sensitive))
    }
}

fn fill_defaults(attrs: &[AttrSchema], out: &mut BTreeMap<String, PValue>) {
    for a in attrs {
        if let Some(default) = a.default
            && !out.contains_key(a.name)
            && let Ok(v) = serde_json::from_str::<Value>(default)
        {
            out.insert(a.name.to_owned(), PValue::Known(v));
        }
    }
}

fn type_error(
    config: &Config,
    expr: &Expr,
    name: &str,
    expected: AttrType,
    got: &Value,
    sensitive: bool,
) -> Diagnostic {
    let got = if sensitive {
        describe_kind(got).to_owned()
    } else {
        format!("{} {}", describe_kind(got), short(got))
    };
    config
        .error(expr.span.clone(), format!("wrong type for `{name}`"))
        .with_label(format!("expected {}, found {got}", expected.describe()))
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

/// A type name for messages.
pub fn describe_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

/// Converts `v` to `ty` the way Terraform does (numbers and bools to
/// strings and back), or returns the expected type.
pub fn convert(v: &Value, ty: AttrType) -> Result<Value, AttrType> {
    match (ty, v) {
        (_, Value::Null) | (AttrType::Any, _) => Ok(v.clone()),
        (AttrType::String, Value::String(_)) => Ok(v.clone()),
        (AttrType::String, Value::Number(n)) => Ok(Value::String(n.to_string())),
        (AttrType::String, Value::Bool(b)) => Ok(Value::String(b.to_string())),
        (AttrType::Number, Value::Number(_)) => Ok(v.clone()),
        (AttrType::Number, Value::String(s)) => {
            s.trim().parse::<i64>().map(Value::from).or_else(|_| {
                s.trim()
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .ok_or(ty)
            })
        }
        (AttrType::Bool, Value::Bool(_)) => Ok(v.clone()),
        (AttrType::Bool, Value::String(s)) if s == "true" || s == "false" => {
            Ok(Value::Bool(s == "true"))
        }
        (AttrType::ListOfString, Value::Array(items)) => items
            .iter()
            .map(|i| convert(i, AttrType::String))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array)
            .map_err(|_| ty),
        (AttrType::MapOfString, Value::Object(map)) => map
            .iter()
            .map(|(k, v)| convert(v, AttrType::String).map(|v| (k.clone(), v)))
            .collect::<Result<serde_json::Map<_, _>, _>>()
            .map(Value::Object)
            .map_err(|_| ty),
        _ => Err(ty),
    }
}

fn describe_error(e: &hcl::eval::Error, sensitive: bool) -> String {
    use hcl::eval::ErrorKind;
    match e.kind() {
        ErrorKind::Unexpected(value, expected) if sensitive => {
            let _ = value;
            format!("unexpected value, expected {expected}")
        }
        ErrorKind::BinaryOp(..) | ErrorKind::UnaryOp(..) if sensitive => {
            "operator cannot be applied to these values".to_owned()
        }
        ErrorKind::FuncCall(_, msg) => msg.clone(),
        ErrorKind::NoSuchKey(key) => format!("no attribute `{key}`"),
        other => other.to_string(),
    }
}

/// JSON to HCL value.
pub fn to_hcl(v: &Value) -> hcl::Value {
    match v {
        Value::Null => hcl::Value::Null,
        Value::Bool(b) => hcl::Value::Bool(*b),
        Value::Number(n) => n
            .as_i64()
            .map(hcl::Value::from)
            .or_else(|| n.as_u64().map(hcl::Value::from))
            .or_else(|| n.as_f64().map(hcl::Value::from))
            .unwrap_or(hcl::Value::Null),
        Value::String(s) => hcl::Value::String(s.clone()),
        Value::Array(items) => hcl::Value::Array(items.iter().map(to_hcl).collect()),
        Value::Object(map) => {
            hcl::Value::Object(map.iter().map(|(k, v)| (k.clone(), to_hcl(v))).collect())
        }
    }
}

/// HCL to JSON value.
pub fn from_hcl(v: &hcl::Value) -> Value {
    match v {
        hcl::Value::Null => Value::Null,
        hcl::Value::Bool(b) => Value::Bool(*b),
        hcl::Value::Number(n) => n
            .as_i64()
            .map(Value::from)
            .or_else(|| n.as_u64().map(Value::from))
            .or_else(|| {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
            })
            .unwrap_or(Value::Null),
        hcl::Value::String(s) => Value::String(s.clone()),
        hcl::Value::Array(items) => Value::Array(items.iter().map(from_hcl).collect()),
        hcl::Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), from_hcl(v))).collect())
        }
    }
}
