//! An in-process fake of GitLab's project CI/CD variables API (REST v4),
//! built from GitLab's docs and request spec (`spec/requests/api/ci/
//! variables_spec.rb`, `Ci::Maskable`, `VariablesHelpers#find_variable`):
//!
//! - `GET/POST /api/v4/projects/:id/variables`, `GET/PUT/DELETE
//!   /api/v4/projects/:id/variables/:key` with `filter[environment_scope]`;
//! - `:id` is a numeric id or a URL-encoded path (`group%2Fsub%2Fproject`);
//!   an unknown project is 404 `{"message":"404 Project Not Found"}`;
//! - offset pagination (`page`, `per_page` default 20 capped at 100) with
//!   `x-page`, `x-per-page`, `x-next-page` (empty on the last page),
//!   `x-prev-page`, `x-total`, `x-total-pages`;
//! - 201 create, 400 duplicate key+scope, 400 masking rules, 400 plan limit,
//!   404 missing variable, 409 ambiguous key without a filter, 204 delete;
//! - hidden variables read back with `"value": null`, and refuse changes of
//!   `masked`;
//! - `PRIVATE-TOKEN` auth, 401 `{"message":"401 Unauthorized"}` otherwise
//!   (job tokens are not accepted on this API);
//! - `RateLimit-*` headers, and a switch for 429 with `Retry-After: 1` and a
//!   plain-text `Retry later` body;
//! - injected server errors: the next requests answered with a 5xx and
//!   GitLab's `{"message":"500 Internal Server Error"}`-style body, before
//!   anything is stored;
//! - per-route request counters.
//!
//! The masking rules are written out again here from GitLab's regexes,
//! independently of the provider's own check.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use berth_gitlab::GitLabProvider;
use berth_provider::{
    Applied, ApplyRequest, Attrs, DeleteRequest, Observed, Ownership, Provider, ProviderContext,
    ProviderError, hash_attrs,
};
use serde_json::{Value, json};

/// The token the double accepts.
pub const TOKEN: &str = "glpat-double-0123456789abcdef";

/// One stored variable, value included (hidden or not).
#[derive(Clone, Debug, PartialEq)]
pub struct Var {
    pub key: String,
    pub value: String,
    pub variable_type: String,
    pub protected: bool,
    pub masked: bool,
    pub raw: bool,
    pub hidden: bool,
    pub environment_scope: String,
    pub description: Option<String>,
}

impl Var {
    /// A plain `env_var` in scope `*`.
    pub fn new(key: &str, value: &str) -> Self {
        Self {
            key: key.to_owned(),
            value: value.to_owned(),
            variable_type: "env_var".to_owned(),
            protected: false,
            masked: false,
            raw: false,
            hidden: false,
            environment_scope: "*".to_owned(),
            description: None,
        }
    }

    /// The same variable in another scope.
    pub fn scoped(mut self, scope: &str) -> Self {
        self.environment_scope = scope.to_owned();
        self
    }

    fn entity(&self, legacy: bool) -> Value {
        let mut entity = json!({
            "variable_type": self.variable_type,
            "key": self.key,
            "value": if self.hidden { Value::Null } else { Value::from(self.value.clone()) },
            "hidden": self.hidden,
            "protected": self.protected,
            "masked": self.masked,
            "raw": self.raw,
            "environment_scope": self.environment_scope,
            "description": self.description,
        });
        if let Some(map) = entity.as_object_mut().filter(|_| legacy) {
            map.remove("hidden");
        }
        entity
    }
}

struct Project {
    id: u64,
    path: String,
    vars: Vec<Var>,
}

#[derive(Default)]
struct Inner {
    projects: Vec<Project>,
    counts: BTreeMap<String, u64>,
    throttle: u32,
    failures: Vec<u16>,
    max_vars: Option<usize>,
    auth_seen: Vec<String>,
    raw_paths: Vec<String>,
    legacy: bool,
}

/// A running fake GitLab on 127.0.0.1 with a free port. Dropping it stops
/// the server.
pub struct Double {
    /// `http://127.0.0.1:PORT/api/v4`.
    pub base_url: String,
    state: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Double {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Double {
    /// Starts a double with two projects: id 1 `group/project` and id 2
    /// `group/sub/project`.
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(Inner::default()));
        {
            let mut s = state.lock().expect("lock");
            s.projects.push(Project {
                id: 1,
                path: "group/project".into(),
                vars: Vec::new(),
            });
            s.projects.push(Project {
                id: 2,
                path: "group/sub/project".into(),
                vars: Vec::new(),
            });
        }
        let app = Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base_url: format!("http://{addr}/api/v4"),
            state,
            task,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.state.lock().expect("double state lock")
    }

    /// Adds a project.
    pub fn add_project(&self, id: u64, path: &str) {
        self.lock().projects.push(Project {
            id,
            path: path.to_owned(),
            vars: Vec::new(),
        });
    }

    /// Stores a variable directly, bypassing the API.
    pub fn seed(&self, project_id: u64, var: Var) {
        let mut s = self.lock();
        let project = s
            .projects
            .iter_mut()
            .find(|p| p.id == project_id)
            .expect("seeded project exists");
        project.vars.push(var);
    }

    /// Removes a variable directly, bypassing the API.
    pub fn remove(&self, project_id: u64, key: &str, scope: &str) {
        let mut s = self.lock();
        if let Some(project) = s.projects.iter_mut().find(|p| p.id == project_id) {
            project
                .vars
                .retain(|v| !(v.key == key && v.environment_scope == scope));
        }
    }

    /// Changes a variable directly (out-of-band edits).
    pub fn edit(&self, project_id: u64, key: &str, scope: &str, f: impl FnOnce(&mut Var)) {
        let mut s = self.lock();
        let var = s
            .projects
            .iter_mut()
            .find(|p| p.id == project_id)
            .and_then(|p| {
                p.vars
                    .iter_mut()
                    .find(|v| v.key == key && v.environment_scope == scope)
            })
            .expect("edited variable exists");
        f(var);
    }

    /// The variables of a project, in creation order.
    pub fn vars(&self, project_id: u64) -> Vec<Var> {
        self.lock()
            .projects
            .iter()
            .find(|p| p.id == project_id)
            .map(|p| p.vars.clone())
            .unwrap_or_default()
    }

    /// One variable.
    pub fn var(&self, project_id: u64, key: &str, scope: &str) -> Option<Var> {
        self.vars(project_id)
            .into_iter()
            .find(|v| v.key == key && v.environment_scope == scope)
    }

    /// Requests seen on a route, e.g. `GET /projects/:id/variables`.
    pub fn count(&self, route: &str) -> u64 {
        self.lock().counts.get(route).copied().unwrap_or(0)
    }

    /// All counters.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.lock().counts.clone()
    }

    /// Answers the next `n` requests with 429.
    pub fn throttle(&self, n: u32) {
        self.lock().throttle = n;
    }

    /// Answers the next requests with these statuses (500, 502, 503, ...),
    /// one each, in order, without acting on them.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.lock().failures.extend_from_slice(statuses);
    }

    /// GitLab's plan limit on variables per project.
    pub fn limit_vars(&self, n: usize) {
        self.lock().max_vars = Some(n);
    }

    /// Behaves like GitLab before 17.4: no `hidden` in answers, and
    /// `masked_and_hidden` is an unknown parameter (ignored).
    pub fn legacy(&self) {
        self.lock().legacy = true;
    }

    /// The auth header names requests carried (`PRIVATE-TOKEN`, `JOB-TOKEN`,
    /// `none`).
    pub fn auth_seen(&self) -> Vec<String> {
        self.lock().auth_seen.clone()
    }

    /// The raw (still encoded) request paths seen.
    pub fn raw_paths(&self) -> Vec<String> {
        self.lock().raw_paths.clone()
    }
}

// ---------------------------------------------------------------- server

fn json_response(status: StatusCode, body: Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    add_rate_headers(response.headers_mut());
    response
}

fn message(status: StatusCode, text: &str) -> Response {
    json_response(status, json!({ "message": text }))
}

fn field_error(field: &str, text: &str) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        json!({ "message": { field: [text] } }),
    )
}

fn add_rate_headers(headers: &mut HeaderMap) {
    headers.insert(
        "ratelimit-name",
        HeaderValue::from_static("throttle_authenticated_api"),
    );
    headers.insert("ratelimit-limit", HeaderValue::from_static("2000"));
    headers.insert("ratelimit-observed", HeaderValue::from_static("1"));
    headers.insert("ratelimit-remaining", HeaderValue::from_static("1999"));
    let reset = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() + 60)
        .unwrap_or(0);
    if let Ok(v) = HeaderValue::from_str(&reset.to_string()) {
        headers.insert("ratelimit-reset", v);
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Grape's Boolean coercion for JSON and form values.
fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s == "true" || s == "1" => Some(true),
        Value::String(s) if s == "false" || s == "0" => Some(false),
        _ => None,
    }
}

fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `Ci::Maskable`: `\A[a-zA-Z0-9_+=/@:.~-]{8,}\z` when expanded, `\A\S{8,}\z`
/// when raw.
fn maskable(value: &str, raw: bool) -> bool {
    let long_enough = value.chars().count() >= 8;
    if raw {
        long_enough
            && !value
                .chars()
                .any(|c| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c'))
    } else {
        long_enough
            && value.chars().all(|c| {
                c.is_ascii_alphanumeric()
                    || matches!(c, '_' | '+' | '=' | '/' | '@' | ':' | '.' | '~' | '-')
            })
    }
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 255
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

async fn handle(
    State(state): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let raw_path = uri.path().to_owned();
    let Some(rest) = raw_path.strip_prefix("/api/v4/projects/") else {
        return message(StatusCode::NOT_FOUND, "404 Not Found");
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let (route, key_segment) = match segments.as_slice() {
        [_, "variables"] => ("/projects/:id/variables", None),
        [_, "variables", key] => ("/projects/:id/variables/:key", Some(*key)),
        _ => return message(StatusCode::NOT_FOUND, "404 Not Found"),
    };
    let mut s = match state.lock() {
        Ok(s) => s,
        Err(_) => return message(StatusCode::INTERNAL_SERVER_ERROR, "poisoned"),
    };
    *s.counts.entry(format!("{method} {route}")).or_default() += 1;
    s.raw_paths.push(raw_path.clone());

    if s.throttle > 0 {
        s.throttle -= 1;
        let mut response = (StatusCode::TOO_MANY_REQUESTS, "Retry later\n").into_response();
        let h = response.headers_mut();
        add_rate_headers(h);
        h.insert("retry-after", HeaderValue::from_static("1"));
        h.insert(
            "content-type",
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return response;
    }

    if !s.failures.is_empty() {
        let code = s.failures.remove(0);
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let text = format!(
            "{code} {}",
            status.canonical_reason().unwrap_or("Server Error")
        );
        // No RateLimit-* headers: this is not a throttled answer.
        return (status, axum::Json(json!({ "message": text }))).into_response();
    }

    let auth = if headers.contains_key("private-token") {
        "PRIVATE-TOKEN"
    } else if headers.contains_key("job-token") {
        "JOB-TOKEN"
    } else {
        "none"
    };
    s.auth_seen.push(auth.to_owned());
    let token_ok = headers
        .get("private-token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t == TOKEN);
    if !token_ok {
        return message(StatusCode::UNAUTHORIZED, "401 Unauthorized");
    }

    let Some(project_ref) = percent_decode(segments[0]) else {
        return message(StatusCode::NOT_FOUND, "404 Project Not Found");
    };
    let max_vars = s.max_vars;
    let legacy = s.legacy;
    let Some(project) = s
        .projects
        .iter_mut()
        .find(|p| p.id.to_string() == project_ref || p.path.eq_ignore_ascii_case(&project_ref))
    else {
        return message(StatusCode::NOT_FOUND, "404 Project Not Found");
    };

    let params: serde_json::Map<String, Value> = if body.is_empty() {
        serde_json::Map::new()
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(map)) => map,
            _ => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "body is not a JSON object"}),
                );
            }
        }
    };
    let filter = query.get("filter[environment_scope]").cloned();

    match (method.clone(), key_segment) {
        (Method::GET, None) => list_vars(project, &query, legacy),
        (Method::POST, None) => create_var(project, &params, max_vars, legacy),
        (m, Some(key)) => {
            let Some(key) = percent_decode(key) else {
                return message(StatusCode::NOT_FOUND, "404 Variable Not Found");
            };
            let matches: Vec<usize> = project
                .vars
                .iter()
                .enumerate()
                .filter(|(_, v)| {
                    v.key == key && filter.as_deref().is_none_or(|f| v.environment_scope == f)
                })
                .map(|(i, _)| i)
                .collect();
            let index = match matches.as_slice() {
                [] => return message(StatusCode::NOT_FOUND, "404 Variable Not Found"),
                [one] => *one,
                _ => {
                    return message(
                        StatusCode::CONFLICT,
                        "There are multiple variables with provided parameters. Please use 'filter[environment_scope]'",
                    );
                }
            };
            match m {
                Method::GET => json_response(StatusCode::OK, project.vars[index].entity(legacy)),
                Method::PUT => update_var(&mut project.vars[index], &params, legacy),
                Method::DELETE => {
                    project.vars.remove(index);
                    let mut response = StatusCode::NO_CONTENT.into_response();
                    add_rate_headers(response.headers_mut());
                    response
                }
                _ => message(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed"),
            }
        }
        _ => message(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed"),
    }
}

fn list_vars(project: &Project, query: &HashMap<String, String>, legacy: bool) -> Response {
    let page = query
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    let per_page = query
        .get("per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(20)
        .min(100);
    let total = project.vars.len();
    let total_pages = total.div_ceil(per_page).max(1);
    let items: Vec<Value> = project
        .vars
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|v| v.entity(legacy))
        .collect();
    let mut response = json_response(StatusCode::OK, Value::Array(items));
    let h = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    set("x-page", page.to_string());
    set("x-per-page", per_page.to_string());
    set("x-total", total.to_string());
    set("x-total-pages", total_pages.to_string());
    set(
        "x-next-page",
        if page < total_pages {
            (page + 1).to_string()
        } else {
            String::new()
        },
    );
    set(
        "x-prev-page",
        if page > 1 {
            (page - 1).to_string()
        } else {
            String::new()
        },
    );
    response
}

fn create_var(
    project: &mut Project,
    params: &serde_json::Map<String, Value>,
    max_vars: Option<usize>,
    legacy: bool,
) -> Response {
    let Some(key) = params.get("key").and_then(as_string) else {
        return json_response(StatusCode::BAD_REQUEST, json!({"error": "key is missing"}));
    };
    let Some(value) = params.get("value").and_then(as_string) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": "value is missing"}),
        );
    };
    let variable_type = params
        .get("variable_type")
        .and_then(as_string)
        .unwrap_or_else(|| "env_var".to_owned());
    if variable_type != "env_var" && variable_type != "file" {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": "variable_type does not have a valid value"}),
        );
    }
    let flag = |name: &str| params.get(name).and_then(as_bool).unwrap_or(false);
    let hidden = !legacy && flag("masked_and_hidden");
    let var = Var {
        key: key.clone(),
        value,
        variable_type,
        protected: flag("protected"),
        masked: flag("masked") || hidden,
        raw: flag("raw"),
        hidden,
        environment_scope: params
            .get("environment_scope")
            .and_then(as_string)
            .unwrap_or_else(|| "*".to_owned()),
        description: params.get("description").and_then(as_string),
    };
    if !valid_key(&key) {
        return field_error("key", "can contain only letters, digits and '_'.");
    }
    if project
        .vars
        .iter()
        .any(|v| v.key == var.key && v.environment_scope == var.environment_scope)
    {
        return field_error("key", &format!("({key}) has already been taken"));
    }
    if var.masked && !maskable(&var.value, var.raw) {
        return field_error("value", "is invalid");
    }
    if let Some(max) = max_vars.filter(|max| project.vars.len() >= *max) {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"message": {"base": [format!("Maximum number of project ci variables ({max}) exceeded")]}}),
        );
    }
    let entity = var.entity(legacy);
    project.vars.push(var);
    json_response(StatusCode::CREATED, entity)
}

fn update_var(var: &mut Var, params: &serde_json::Map<String, Value>, legacy: bool) -> Response {
    let mut next = var.clone();
    if let Some(masked) = params.get("masked").and_then(as_bool) {
        if var.hidden && !masked {
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({"message": {"base": ["The visibility setting cannot be changed for masked and hidden variables."]}}),
            );
        }
        next.masked = masked;
    }
    if let Some(v) = params.get("value").and_then(as_string) {
        next.value = v;
    }
    if let Some(v) = params.get("variable_type").and_then(as_string) {
        if v != "env_var" && v != "file" {
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({"error": "variable_type does not have a valid value"}),
            );
        }
        next.variable_type = v;
    }
    if let Some(v) = params.get("protected").and_then(as_bool) {
        next.protected = v;
    }
    if let Some(v) = params.get("raw").and_then(as_bool) {
        next.raw = v;
    }
    if let Some(v) = params.get("description") {
        next.description = as_string(v);
    }
    if let Some(v) = params.get("environment_scope").and_then(as_string) {
        next.environment_scope = v;
    }
    if next.masked && !maskable(&next.value, next.raw) {
        return field_error("value", "is invalid");
    }
    *var = next;
    json_response(StatusCode::OK, var.entity(legacy))
}

// --------------------------------------------------------------- harness

/// Attrs from a JSON object literal.
pub fn attrs(value: Value) -> Attrs {
    match value {
        Value::Object(map) => map.into_iter().collect(),
        other => panic!("not an object: {other}"),
    }
}

/// An environment with nothing set.
pub fn no_env(_: &str) -> Option<String> {
    None
}

/// A provider configured against `double` with the good token, reading no
/// process environment.
pub async fn provider(double: &Double) -> GitLabProvider {
    provider_with_token(double, TOKEN).await
}

/// A provider configured against `double` with `token`.
pub async fn provider_with_token(double: &Double, token: &str) -> GitLabProvider {
    let p = GitLabProvider::with_env(
        ProviderContext {
            base_dir: std::env::temp_dir(),
        },
        no_env,
    );
    p.configure(&attrs(json!({"base_url": double.base_url, "token": token})))
        .await
        .expect("configure");
    p
}

/// The owner every test uses (GitLab variables carry no labels).
pub fn owner() -> Ownership {
    Ownership {
        env: "test".into(),
        lineage: "lineage-test".into(),
    }
}

fn progress(_: &str) {}

/// `prepare` + `validate` (asserting no problems) on a config.
pub async fn planned(p: &GitLabProvider, config: Value) -> Attrs {
    let mut config = attrs(config);
    let problems = p.validate("gitlab_project_variable", &config);
    assert!(problems.is_empty(), "{problems:?}");
    p.prepare("gitlab_project_variable", &mut config)
        .await
        .expect("prepare");
    config
}

/// `create` through the trait.
pub async fn create(
    p: &GitLabProvider,
    address: &str,
    config: &Attrs,
) -> Result<Applied, ProviderError> {
    let owner = owner();
    let hash = hash_attrs(config);
    p.create(
        ApplyRequest {
            type_name: "gitlab_project_variable",
            address,
            config,
            prior: None,
            prior_id: None,
            config_hash: &hash,
            owner: &owner,
        },
        &progress,
    )
    .await
}

/// `update` through the trait.
pub async fn update(
    p: &GitLabProvider,
    address: &str,
    prior: &Applied,
    config: &Attrs,
) -> Result<Applied, ProviderError> {
    let owner = owner();
    let hash = hash_attrs(config);
    p.update(
        ApplyRequest {
            type_name: "gitlab_project_variable",
            address,
            config,
            prior: Some(&prior.attrs),
            prior_id: Some(&prior.id),
            config_hash: &hash,
            owner: &owner,
        },
        &progress,
    )
    .await
}

/// `delete` through the trait.
pub async fn delete(
    p: &GitLabProvider,
    address: &str,
    applied: &Applied,
) -> Result<(), ProviderError> {
    let owner = owner();
    p.delete(
        DeleteRequest {
            type_name: "gitlab_project_variable",
            address,
            id: &applied.id,
            attrs: &applied.attrs,
            owner: &owner,
        },
        &progress,
    )
    .await
}

/// `refresh` through the trait.
pub async fn refresh(
    p: &GitLabProvider,
    recorded: &[(String, String)],
) -> Result<Vec<Observed>, ProviderError> {
    p.refresh("gitlab_project_variable", &owner(), recorded)
        .await
}

/// The attributes the engine would compare after overlaying `observed` on
/// state: every observed attribute must equal the applied one (no drift).
pub fn assert_no_drift(applied: &Applied, observed: &Observed) {
    assert_eq!(applied.id, observed.id);
    // A value is never reported: at most `null`, for a hidden variable
    // (the engine then names it as a value that cannot be read back).
    assert!(
        observed.attrs.get("value").is_none_or(|v| v.is_null()),
        "refresh must not report the value"
    );
    assert_eq!(
        observed.attrs.contains_key("value"),
        observed.attrs.get("hidden") == Some(&serde_json::Value::Bool(true)),
        "`value: null` is reported for hidden variables only"
    );
    for (name, value) in observed.attrs.iter().filter(|(n, _)| *n != "value") {
        assert_eq!(
            applied.attrs.get(name),
            Some(value),
            "drift on `{name}` for {}",
            observed.address
        );
    }
}
