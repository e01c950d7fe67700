//! The double's contract check: DigitalOcean's official OpenAPI spec
//! (`shared/specs/digitalocean`, loaded once per test binary) and a small
//! validator for the JSON Schema subset it uses, so that neither the
//! double's answers nor berth's requests can drift from the real API.
//!
//! Where the operations come from:
//!
//! - `digitalocean-droplets-sshkeys.bundled.yaml` (every `$ref` inlined):
//!   droplets (list, create, get, delete, delete by tag), droplet actions
//!   (list, post, post by tag, get), `GET /v2/actions/{action_id}` and SSH
//!   keys (list, create, get, update, delete);
//! - the multi-file sources beside it, with their `$ref`s resolved here:
//!   `specification/resources/firewalls/*.yml` (list, create, get, update,
//!   delete, droplets, rules and tags of a firewall) and
//!   `specification/resources/tags/*.yml` (list, create, get, delete,
//!   assign and unassign resources). Their paths are the root spec's
//!   (`/v2/firewalls/{firewall_id}`, `/v2/tags/{tag_id}/resources`, ...),
//!   which the per-operation files do not carry.
//!
//! What is checked, per request: the path and query parameters (unknown
//! query parameters too) and the JSON body against `requestBody`; per
//! answer: that the status is documented (or a `default` exists), the JSON
//! body against that status's schema (no body where the spec has no
//! content), and every documented header (`ratelimit-*`) present and of its
//! schema.
//!
//! Schema keywords enforced: `type` (OpenAPI 3.0 `nullable` honoured),
//! `enum`, `required`, `properties`, `additionalProperties`, `items`,
//! `minItems`, `maxItems`, `uniqueItems`, `minLength`, `maxLength`,
//! `pattern` (anchors, character classes, `.`, `?`, `*`, `+`, `{n,m}`:
//! what the spec's patterns use), `minimum`, `maximum`, `exclusiveMinimum`,
//! `exclusiveMaximum`, `multipleOf`, `allOf`, `anyOf`, `oneOf` (exactly
//! one), `not`. Ignored: `format`, `discriminator` (its mappings point into
//! files the bundle does not carry; the `anyOf`/`oneOf` it sits on still
//! applies), `readOnly`, `writeOnly`, `deprecated`, `default`, examples,
//! descriptions.
//!
//! The spec directory is `BERTH_DO_SPEC_DIR` if set, else the first
//! `shared/specs/digitalocean` found walking up from the crate's directory
//! (the checkout's sibling `shared/`). A missing spec fails the test with
//! that message; it never skips.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{Map, Value};

/// The bundled single-file subset.
const BUNDLE: &str = "digitalocean-droplets-sshkeys.bundled.yaml";

/// Multi-file operations: file under `specification/resources/`, method,
/// path in the root spec.
const SOURCES: &[(&str, &str, &str)] = &[
    ("firewalls/firewalls_list.yml", "GET", "/v2/firewalls"),
    ("firewalls/firewalls_create.yml", "POST", "/v2/firewalls"),
    (
        "firewalls/firewalls_get.yml",
        "GET",
        "/v2/firewalls/{firewall_id}",
    ),
    (
        "firewalls/firewalls_update.yml",
        "PUT",
        "/v2/firewalls/{firewall_id}",
    ),
    (
        "firewalls/firewalls_delete.yml",
        "DELETE",
        "/v2/firewalls/{firewall_id}",
    ),
    (
        "firewalls/firewalls_assign_droplets.yml",
        "POST",
        "/v2/firewalls/{firewall_id}/droplets",
    ),
    (
        "firewalls/firewalls_delete_droplets.yml",
        "DELETE",
        "/v2/firewalls/{firewall_id}/droplets",
    ),
    (
        "firewalls/firewalls_add_rules.yml",
        "POST",
        "/v2/firewalls/{firewall_id}/rules",
    ),
    (
        "firewalls/firewalls_delete_rules.yml",
        "DELETE",
        "/v2/firewalls/{firewall_id}/rules",
    ),
    (
        "firewalls/firewalls_add_tags.yml",
        "POST",
        "/v2/firewalls/{firewall_id}/tags",
    ),
    (
        "firewalls/firewalls_delete_tags.yml",
        "DELETE",
        "/v2/firewalls/{firewall_id}/tags",
    ),
    ("tags/tags_list.yml", "GET", "/v2/tags"),
    ("tags/tags_create.yml", "POST", "/v2/tags"),
    ("tags/tags_get.yml", "GET", "/v2/tags/{tag_id}"),
    ("tags/tags_delete.yml", "DELETE", "/v2/tags/{tag_id}"),
    (
        "tags/tags_assign_resources.yml",
        "POST",
        "/v2/tags/{tag_id}/resources",
    ),
    (
        "tags/tags_unassign_resources.yml",
        "DELETE",
        "/v2/tags/{tag_id}/resources",
    ),
];

/// One parameter of an operation.
#[derive(Debug)]
struct Param {
    name: String,
    location: String,
    required: bool,
    schema: Value,
}

/// One documented answer.
#[derive(Debug)]
struct Answer {
    /// The `application/json` schema; `None`: no body.
    schema: Option<Value>,
    /// Documented headers and their schemas.
    headers: Vec<(String, Value)>,
}

/// One operation of the spec.
#[derive(Debug)]
pub struct Operation {
    /// `droplets_list`, ...
    pub id: String,
    /// `GET`, ...
    pub method: String,
    /// `/v2/droplets/{droplet_id}`, ...
    pub path: String,
    segments: Vec<String>,
    params: Vec<Param>,
    /// Whether a body is required, and its schema.
    body: Option<(bool, Value)>,
    answers: BTreeMap<String, Answer>,
}

/// The loaded spec.
#[derive(Debug)]
pub struct Spec {
    /// Every operation, the bundle's first.
    pub operations: Vec<Operation>,
    /// Where it was loaded from.
    pub dir: PathBuf,
}

/// The spec, loaded on first use.
pub fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| match load() {
        Ok(s) => s,
        Err(e) => panic!("the DigitalOcean OpenAPI spec cannot be loaded: {e}"),
    })
}

fn spec_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("BERTH_DO_SPEC_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let start = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in start.ancestors() {
        let candidate = dir.join("shared/specs/digitalocean");
        if candidate.join(BUNDLE).is_file() {
            return Ok(candidate);
        }
    }
    Err(format!(
        "no shared/specs/digitalocean/{BUNDLE} above {}; set BERTH_DO_SPEC_DIR",
        start.display()
    ))
}

fn load() -> Result<Spec, String> {
    let dir = spec_dir()?;
    let mut docs = Docs::default();
    let bundle_path = dir.join(BUNDLE);
    let bundle = docs.get(&bundle_path)?;
    let mut operations = Vec::new();
    let paths = bundle
        .get("paths")
        .and_then(Value::as_object)
        .ok_or("the bundle has no `paths`")?;
    for (path, item) in paths {
        let Some(item) = item.as_object() else {
            continue;
        };
        for (method, op) in item {
            if !matches!(method.as_str(), "get" | "post" | "put" | "patch" | "delete") {
                continue;
            }
            let op = docs.resolve(op, &bundle_path, 0)?;
            operations.push(operation(&method.to_uppercase(), path, &op)?);
        }
    }
    let resources = dir.join("specification/resources");
    for (file, method, path) in SOURCES {
        let file = resources.join(file);
        let op = docs.get(&file)?;
        let op = docs.resolve(&op, &file, 0)?;
        operations.push(operation(method, path, &op)?);
    }
    Ok(Spec { operations, dir })
}

fn operation(method: &str, path: &str, op: &Value) -> Result<Operation, String> {
    let id = op["operationId"].as_str().unwrap_or(path).to_owned();
    let params = op["parameters"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| Param {
                    name: p["name"].as_str().unwrap_or("").to_owned(),
                    location: p["in"].as_str().unwrap_or("").to_owned(),
                    required: p["required"].as_bool().unwrap_or(false),
                    schema: p.get("schema").cloned().unwrap_or(Value::Null),
                })
                .collect()
        })
        .unwrap_or_default();
    let body = op.get("requestBody").map(|rb| {
        (
            rb["required"].as_bool().unwrap_or(false),
            rb.pointer("/content/application~1json/schema")
                .cloned()
                .unwrap_or(Value::Null),
        )
    });
    let mut answers = BTreeMap::new();
    if let Some(rs) = op["responses"].as_object() {
        for (status, r) in rs {
            let headers = r["headers"]
                .as_object()
                .map(|hs| {
                    hs.iter()
                        .map(|(k, h)| {
                            (
                                k.to_ascii_lowercase(),
                                h.get("schema").cloned().unwrap_or(Value::Null),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            answers.insert(
                status.clone(),
                Answer {
                    schema: r.pointer("/content/application~1json/schema").cloned(),
                    headers,
                },
            );
        }
    }
    if answers.is_empty() {
        return Err(format!("{method} {path}: no responses"));
    }
    Ok(Operation {
        id,
        method: method.to_owned(),
        path: path.to_owned(),
        segments: path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        params,
        body,
        answers,
    })
}

/// Parsed YAML files by path.
#[derive(Default)]
struct Docs {
    files: BTreeMap<PathBuf, Value>,
}

impl Docs {
    fn get(&mut self, path: &Path) -> Result<Value, String> {
        let path = normalize(path);
        if let Some(v) = self.files.get(&path) {
            return Ok(v.clone());
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let docs = yaml_rust2::YamlLoader::load_from_str(&text)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let value = docs.first().map(yaml_to_json).unwrap_or(Value::Null);
        self.files.insert(path, value.clone());
        Ok(value)
    }

    /// `value` with every `$ref` replaced by what it points at (relative to
    /// `file`), examples and `x-` extensions left out.
    fn resolve(&mut self, value: &Value, file: &Path, depth: u32) -> Result<Value, String> {
        if depth > 64 {
            return Err(format!("{}: `$ref`s nest too deep", file.display()));
        }
        match value {
            Value::Object(map) => {
                if let Some(r) = map.get("$ref").and_then(Value::as_str) {
                    let (target_file, fragment) = match r.split_once('#') {
                        Some((f, frag)) => (f, frag),
                        None => (r, ""),
                    };
                    let target_file = if target_file.is_empty() {
                        file.to_path_buf()
                    } else {
                        file.parent().unwrap_or(Path::new(".")).join(target_file)
                    };
                    let doc = self.get(&target_file)?;
                    let target = if fragment.is_empty() {
                        doc
                    } else {
                        doc.pointer(fragment).cloned().ok_or_else(|| {
                            format!("{}: `$ref: {r}` points at nothing", file.display())
                        })?
                    };
                    return self.resolve(&target, &target_file, depth + 1);
                }
                let mut out = Map::new();
                for (k, v) in map {
                    if k == "example" || k == "examples" || k.starts_with("x-") {
                        continue;
                    }
                    out.insert(k.clone(), self.resolve(v, file, depth)?);
                }
                Ok(Value::Object(out))
            }
            Value::Array(items) => items
                .iter()
                .map(|v| self.resolve(v, file, depth))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            other => Ok(other.clone()),
        }
    }
}

fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn yaml_to_json(y: &yaml_rust2::Yaml) -> Value {
    use yaml_rust2::Yaml;
    match y {
        Yaml::Real(s) => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| Value::String(s.clone()), Value::Number),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(a) => Value::Array(a.iter().map(yaml_to_json).collect()),
        Yaml::Hash(h) => {
            let mut m = Map::new();
            for (k, v) in h {
                let key = match k {
                    Yaml::String(s) | Yaml::Real(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    _ => continue,
                };
                m.insert(key, yaml_to_json(v));
            }
            Value::Object(m)
        }
        Yaml::Null | Yaml::Alias(_) | Yaml::BadValue => Value::Null,
    }
}

impl Spec {
    /// The operation for `method` and the request path's segments, with
    /// the path parameters; a literal segment wins over a parameter
    /// (`/v2/droplets/actions` over `/v2/droplets/{droplet_id}`).
    pub fn find(
        &self,
        method: &str,
        segments: &[String],
    ) -> Option<(&Operation, BTreeMap<String, String>)> {
        let mut best: Option<(usize, &Operation, BTreeMap<String, String>)> = None;
        for op in &self.operations {
            if op.method != method || op.segments.len() != segments.len() {
                continue;
            }
            let mut params = BTreeMap::new();
            let mut literal = 0;
            let matched = op.segments.iter().zip(segments).all(|(t, s)| {
                if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                    params.insert(name.to_owned(), s.clone());
                    true
                } else {
                    literal += 1;
                    t == s
                }
            });
            if matched && best.as_ref().is_none_or(|(l, _, _)| literal > *l) {
                best = Some((literal, op, params));
            }
        }
        best.map(|(_, op, params)| (op, params))
    }
}

impl Operation {
    /// Problems with a request: its path and query parameters and its body
    /// (`None`: none sent; `Some(Err)`: not JSON).
    pub fn check_request(
        &self,
        path_params: &BTreeMap<String, String>,
        query: &BTreeMap<String, String>,
        body: Option<Result<&Value, ()>>,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        for p in &self.params {
            let given = match p.location.as_str() {
                "path" => path_params.get(&p.name),
                "query" => query.get(&p.name),
                _ => continue,
            };
            match given {
                None if p.required => {
                    problems.push(format!("{} parameter `{}` missing", p.location, p.name))
                }
                None => {}
                Some(raw) => {
                    if let Err(e) = check_param(&p.schema, raw) {
                        problems.push(format!(
                            "{} parameter `{}` = {raw:?}: {e}",
                            p.location, p.name
                        ));
                    }
                }
            }
        }
        for k in query.keys() {
            if !self
                .params
                .iter()
                .any(|p| p.location == "query" && &p.name == k)
            {
                problems.push(format!("query parameter `{k}` is not in the spec"));
            }
        }
        match (&self.body, body) {
            (_, Some(Err(()))) => problems.push("the body is not JSON".to_owned()),
            (None, Some(Ok(_))) => problems.push("a body where the spec has none".to_owned()),
            (Some((true, _)), None) => problems.push("the required body is missing".to_owned()),
            (Some((_, schema)), Some(Ok(v))) => {
                validate(schema, v, "body", &mut problems);
            }
            _ => {}
        }
        problems
    }

    /// Problems with an answer: undocumented status, body against the
    /// status's schema, documented headers.
    pub fn check_response(
        &self,
        status: u16,
        headers: &BTreeMap<String, String>,
        body: Option<Result<&Value, ()>>,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let Some(answer) = self
            .answers
            .get(&status.to_string())
            .or_else(|| self.answers.get("default"))
        else {
            return vec![format!("status {status} is not documented")];
        };
        match (&answer.schema, body) {
            (_, Some(Err(()))) => problems.push(format!("{status}: the body is not JSON")),
            (None, Some(Ok(_))) => {
                problems.push(format!("{status}: a body where the spec has none"))
            }
            (Some(_), None) => problems.push(format!("{status}: no body where the spec has one")),
            (Some(schema), Some(Ok(v))) => {
                validate(schema, v, &format!("{status} body"), &mut problems);
            }
            (None, None) => {}
        }
        for (name, schema) in &answer.headers {
            match headers.get(name) {
                None => problems.push(format!("{status}: header `{name}` missing")),
                Some(raw) => {
                    if let Err(e) = check_param(schema, raw) {
                        problems.push(format!("{status}: header `{name}: {raw}`: {e}"));
                    }
                }
            }
        }
        problems
    }
}

/// A parameter or header given as text: valid if the text itself, or the
/// number or boolean it spells, matches.
fn check_param(schema: &Value, raw: &str) -> Result<(), String> {
    let mut first = Vec::new();
    validate(schema, &Value::String(raw.to_owned()), "", &mut first);
    if first.is_empty() {
        return Ok(());
    }
    let typed = raw
        .parse::<i64>()
        .map(Value::from)
        .ok()
        .or_else(|| {
            raw.parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
        })
        .or_else(|| raw.parse::<bool>().ok().map(Value::Bool));
    if let Some(v) = typed {
        let mut second = Vec::new();
        validate(schema, &v, "", &mut second);
        if second.is_empty() {
            return Ok(());
        }
        return Err(second.join("; "));
    }
    Err(first.join("; "))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_type(v: &Value, t: &str) -> bool {
    match t {
        "integer" => match v {
            Value::Number(n) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        },
        "number" => v.is_number(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "null" => v.is_null(),
        _ => true,
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

/// Whether `value` matches `schema`.
pub fn matches(schema: &Value, value: &Value) -> bool {
    let mut e = Vec::new();
    validate(schema, value, "", &mut e);
    e.is_empty()
}

/// Appends to `errors` every way `value` (at `at`) breaks `schema`.
pub fn validate(schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(s) = schema.as_object() else {
        return;
    };
    if value.is_null() && s.get("nullable") == Some(&Value::Bool(true)) {
        return;
    }
    if let Some(t) = s.get("type") {
        let ok = match t {
            Value::String(t) => is_type(value, t),
            Value::Array(ts) => ts
                .iter()
                .filter_map(Value::as_str)
                .any(|t| is_type(value, t)),
            _ => true,
        };
        if !ok {
            errors.push(format!(
                "{at}: expected {}, got {} {}",
                t.as_str().map_or_else(|| t.to_string(), str::to_owned),
                type_name(value),
                short(value)
            ));
            return;
        }
    }
    if let Some(options) = s.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        errors.push(format!(
            "{at}: {} is not one of {}",
            short(value),
            short(&Value::Array(options.clone()))
        ));
    }
    match value {
        Value::String(text) => {
            let len = text.chars().count() as u64;
            if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                errors.push(format!("{at}: longer than {max} characters"));
            }
            if let Some(min) = s.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                errors.push(format!("{at}: shorter than {min} characters"));
            }
            if let Some(p) = s.get("pattern").and_then(Value::as_str) {
                match Pattern::parse(p) {
                    Ok(re) if re.is_match(text) => {}
                    Ok(_) => errors.push(format!("{at}: {text:?} does not match /{p}/")),
                    Err(e) => errors.push(format!("{at}: pattern /{p}/ unsupported: {e}")),
                }
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            let excl = |k: &str| s.get(k) == Some(&Value::Bool(true));
            if let Some(min) = s.get("minimum").and_then(Value::as_f64)
                && (x < min || (excl("exclusiveMinimum") && x == min))
            {
                errors.push(format!("{at}: {x} is below the minimum {min}"));
            }
            if let Some(max) = s.get("maximum").and_then(Value::as_f64)
                && (x > max || (excl("exclusiveMaximum") && x == max))
            {
                errors.push(format!("{at}: {x} is above the maximum {max}"));
            }
            if let Some(m) = s.get("multipleOf").and_then(Value::as_f64)
                && m > 0.0
                && ((x / m).round() - x / m).abs() > 1e-9
            {
                errors.push(format!("{at}: {x} is not a multiple of {m}"));
            }
        }
        Value::Array(items) => {
            if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                errors.push(format!("{at}: more than {max} items"));
            }
            if let Some(min) = s.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                errors.push(format!("{at}: fewer than {min} items"));
            }
            if s.get("uniqueItems") == Some(&Value::Bool(true)) {
                for (i, a) in items.iter().enumerate() {
                    if items[..i].contains(a) {
                        errors.push(format!("{at}: {} appears twice", short(a)));
                    }
                }
            }
            if let Some(item_schema) = s.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate(item_schema, item, &format!("{at}[{i}]"), errors);
                }
            }
        }
        Value::Object(map) => {
            if let Some(required) = s.get("required").and_then(Value::as_array) {
                for r in required.iter().filter_map(Value::as_str) {
                    if !map.contains_key(r) {
                        errors.push(format!("{at}: required property `{r}` missing"));
                    }
                }
            }
            let props = s.get("properties").and_then(Value::as_object);
            for (k, v) in map {
                match props.and_then(|p| p.get(k)) {
                    Some(ps) => validate(ps, v, &format!("{at}.{k}"), errors),
                    None => match s.get("additionalProperties") {
                        Some(Value::Bool(false)) => {
                            errors.push(format!("{at}: property `{k}` is not allowed"))
                        }
                        Some(extra @ Value::Object(_)) => {
                            validate(extra, v, &format!("{at}.{k}"), errors)
                        }
                        _ => {}
                    },
                }
            }
        }
        _ => {}
    }
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        for sub in all {
            validate(sub, value, at, errors);
        }
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array) {
        let mut best: Option<Vec<String>> = None;
        for sub in any {
            let mut e = Vec::new();
            validate(sub, value, at, &mut e);
            if e.is_empty() {
                best = None;
                break;
            }
            if best.as_ref().is_none_or(|b| e.len() < b.len()) {
                best = Some(e);
            }
        }
        if let Some(e) = best {
            errors.push(format!(
                "{at}: matches none of anyOf (closest: {})",
                e.join("; ")
            ));
        }
    }
    if let Some(one) = s.get("oneOf").and_then(Value::as_array) {
        let mut results: Vec<Vec<String>> = Vec::new();
        for sub in one {
            let mut e = Vec::new();
            validate(sub, value, at, &mut e);
            results.push(e);
        }
        let ok = results.iter().filter(|e| e.is_empty()).count();
        if ok == 0 {
            let closest = results
                .iter()
                .min_by_key(|e| e.len())
                .cloned()
                .unwrap_or_default();
            errors.push(format!(
                "{at}: matches none of oneOf (closest: {})",
                closest.join("; ")
            ));
        } else if ok > 1 {
            errors.push(format!(
                "{at}: matches {ok} schemas of oneOf, not exactly one"
            ));
        }
    }
    if let Some(not) = s.get("not")
        && matches(not, value)
    {
        errors.push(format!("{at}: matches a `not` schema"));
    }
}

/// A regular expression of the subset the spec's `pattern`s use.
#[derive(Debug)]
pub struct Pattern {
    start: bool,
    end: bool,
    atoms: Vec<(Atom, usize, usize)>,
}

#[derive(Debug)]
enum Atom {
    Any,
    Set {
        negated: bool,
        items: Vec<(char, char)>,
    },
}

impl Atom {
    fn accepts(&self, c: char) -> bool {
        match self {
            Atom::Any => c != '\n',
            Atom::Set { negated, items } => {
                items.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
            }
        }
    }
}

fn escaped(c: char) -> Result<Vec<(char, char)>, String> {
    Ok(match c {
        'd' => vec![('0', '9')],
        'w' => vec![('a', 'z'), ('A', 'Z'), ('0', '9'), ('_', '_')],
        's' => vec![(' ', ' '), ('\t', '\t'), ('\n', '\n'), ('\r', '\r')],
        c if c.is_ascii_alphanumeric() => return Err(format!("escape \\{c}")),
        c => vec![(c, c)],
    })
}

impl Pattern {
    /// Parses `p`; an error names what is not supported.
    pub fn parse(p: &str) -> Result<Pattern, String> {
        let chars: Vec<char> = p.chars().collect();
        let mut i = 0;
        let start = chars.first() == Some(&'^');
        if start {
            i = 1;
        }
        let mut atoms: Vec<(Atom, usize, usize)> = Vec::new();
        let mut end = false;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            let atom = match c {
                '$' if i == chars.len() => {
                    end = true;
                    continue;
                }
                '.' => Atom::Any,
                '\\' => {
                    let e = *chars.get(i).ok_or("a trailing backslash")?;
                    i += 1;
                    Atom::Set {
                        negated: false,
                        items: escaped(e)?,
                    }
                }
                '[' => {
                    let negated = chars.get(i) == Some(&'^');
                    if negated {
                        i += 1;
                    }
                    let mut items = Vec::new();
                    let mut first = true;
                    loop {
                        let c = *chars.get(i).ok_or("an unclosed [")?;
                        i += 1;
                        if c == ']' && !first {
                            break;
                        }
                        first = false;
                        let lo = if c == '\\' {
                            let e = *chars.get(i).ok_or("a trailing backslash")?;
                            i += 1;
                            let set = escaped(e)?;
                            if set.len() > 1 || set[0].0 != set[0].1 {
                                items.extend(set);
                                continue;
                            }
                            set[0].0
                        } else {
                            c
                        };
                        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|c| *c != ']')
                        {
                            let mut hi = chars[i + 1];
                            i += 2;
                            if hi == '\\' {
                                hi = *chars.get(i).ok_or("a trailing backslash")?;
                                i += 1;
                            }
                            items.push((lo, hi));
                        } else {
                            items.push((lo, lo));
                        }
                    }
                    Atom::Set { negated, items }
                }
                '(' | ')' | '|' | '^' | '$' => return Err(format!("`{c}`")),
                '*' | '+' | '?' | '{' => {
                    return Err(format!("a quantifier `{c}` with nothing before it"));
                }
                c => Atom::Set {
                    negated: false,
                    items: vec![(c, c)],
                },
            };
            let (min, max) = match chars.get(i) {
                Some('?') => (0, 1),
                Some('*') => (0, usize::MAX),
                Some('+') => (1, usize::MAX),
                Some('{') => {
                    let close = chars[i..]
                        .iter()
                        .position(|c| *c == '}')
                        .ok_or("an unclosed {")?;
                    let inner: String = chars[i + 1..i + close].iter().collect();
                    let num = |s: &str| s.trim().parse::<usize>().map_err(|e| e.to_string());
                    let range = match inner.split_once(',') {
                        None => (num(&inner)?, num(&inner)?),
                        Some((lo, "")) => (num(lo)?, usize::MAX),
                        Some((lo, hi)) => (num(lo)?, num(hi)?),
                    };
                    i += close;
                    range
                }
                _ => (1, 1),
            };
            if (min, max) != (1, 1) {
                i += 1;
            }
            atoms.push((atom, min, max));
        }
        Ok(Pattern { start, end, atoms })
    }

    /// Whether the pattern matches (a part of) `text`, as JSON Schema's
    /// `pattern` does.
    pub fn is_match(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        let starts: Vec<usize> = if self.start {
            vec![0]
        } else {
            (0..=chars.len()).collect()
        };
        starts.into_iter().any(|s| self.match_at(0, &chars, s))
    }

    fn match_at(&self, atom: usize, chars: &[char], pos: usize) -> bool {
        let Some((a, min, max)) = self.atoms.get(atom) else {
            return !self.end || pos == chars.len();
        };
        let mut n = 0;
        while n < *max && pos + n < chars.len() && a.accepts(chars[pos + n]) {
            n += 1;
        }
        if n < *min {
            return false;
        }
        (*min..=n)
            .rev()
            .any(|k| self.match_at(atom + 1, chars, pos + k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patterns_of_the_spec() {
        let host = Pattern::parse(r"^[a-zA-Z0-9]?[a-z0-9A-Z.\-]*[a-z0-9A-Z]$").unwrap();
        assert!(host.is_match("web-1.example.com"));
        assert!(host.is_match("a"));
        assert!(!host.is_match("web_1"));
        assert!(!host.is_match("web-"));
        let tag = Pattern::parse(r"^[a-zA-Z0-9_\-\:]+$").unwrap();
        assert!(tag.is_match("berth-env:prod"));
        assert!(!tag.is_match("a b"));
        assert!(!tag.is_match(""));
        let fw = Pattern::parse(r"^[a-zA-Z0-9][a-zA-Z0-9\.-]+$").unwrap();
        assert!(fw.is_match("web-fw"));
        assert!(!fw.is_match("w"));
        assert!(Pattern::parse("^a{2,3}$").unwrap().is_match("aaa"));
        assert!(!Pattern::parse("^a{2,3}$").unwrap().is_match("aaaa"));
        assert!(Pattern::parse("(a|b)").is_err());
    }

    #[test]
    fn schema_keywords() {
        let s = json!({"type": "object", "required": ["a"], "properties": {
            "a": {"type": "integer", "minimum": 1},
            "b": {"type": "string", "nullable": true, "enum": ["x", "y"]},
            "c": {"oneOf": [{"type": "integer"}, {"type": "string"}]}
        }});
        assert!(matches(&s, &json!({"a": 1, "b": null, "c": "z"})));
        assert!(!matches(&s, &json!({"b": "x"})));
        assert!(!matches(&s, &json!({"a": 0})));
        assert!(!matches(&s, &json!({"a": 1, "b": "z"})));
        assert!(!matches(&s, &json!({"a": 1, "c": true})));
        assert!(!matches(&s, &json!({"a": "1"})));
    }
}
