//! `gitlab_project_variable`: a project's CI/CD variable, with the names of
//! Terraform's gitlab provider (`project`, `key`, `value`, `variable_type`,
//! `protected`, `masked`, `raw`, `environment_scope`, `description`) plus
//! `hidden` (GitLab 17.4's masked-and-hidden variables).
//!
//! Identity is (project, key, environment_scope): the same key in several
//! scopes is several resources, and the berth id is
//! `project|key|environment_scope` (none of GitLab's project paths, keys or
//! scopes may contain `|`). Those three and `hidden` force replacement;
//! everything else is updated in place with `PUT ...?filter[environment_scope]`.
//!
//! Variables carry no labels, so refresh lists each project that state
//! mentions once (paged by `x-next-page`) and matches the recorded ids. It
//! never reports a value: a hidden variable's `value` is reported as `null`
//! (GitLab answers so), which the plan names as a value that cannot be read
//! back, and the engine judges value changes against the keyed hash it
//! stored.
//!
//! A create that meets an existing variable with the same key and scope
//! (GitLab's 400 "has already been taken") fails with an explanation, as
//! Terraform does: berth cannot import yet and will not take over a variable
//! it did not record. One exception: a variable identical in every attribute
//! (value included; never a hidden one, whose value cannot be read) is what
//! berth's own create made when berth was killed, or its answer lost, before
//! the state write; it is taken over, which changes nothing in GitLab.

use std::collections::{BTreeMap, HashMap};

use berth_provider::{
    Applied, ApplyRequest, AttrProblem, AttrSchema, AttrType, Attrs, DeleteRequest, Observed,
    ProviderError, ResourceSchema, Value,
};
use reqwest::Method;
use serde::Deserialize;

use crate::attrs;
use crate::client::{GitLab, encode_segment, is_already_taken};
use crate::masking;

/// The resource type name.
pub(crate) const TYPE: &str = "gitlab_project_variable";

const DEFAULT_TYPE: &str = "env_var";
const DEFAULT_SCOPE: &str = "*";
const FILTER: &str = "filter[environment_scope]";
const MAX_KEY_LEN: usize = 255;
const MAX_DESCRIPTION_LEN: usize = 255;

/// The schema of `gitlab_project_variable`.
pub(crate) fn schema() -> ResourceSchema {
    ResourceSchema {
        type_name: TYPE,
        attributes: vec![
            AttrSchema::required("project", AttrType::String).force_new(),
            AttrSchema::required("key", AttrType::String).force_new(),
            AttrSchema::required("value", AttrType::String).sensitive(),
            AttrSchema::optional("variable_type", AttrType::String).default("\"env_var\""),
            AttrSchema::optional("protected", AttrType::Bool).default("false"),
            // No default: a hidden variable is always masked, so `prepare`
            // derives it from `hidden` when it is left out.
            AttrSchema::optional("masked", AttrType::Bool).and_computed(),
            AttrSchema::optional("raw", AttrType::Bool).default("false"),
            AttrSchema::optional("environment_scope", AttrType::String)
                .default("\"*\"")
                .force_new(),
            AttrSchema::optional("description", AttrType::String).default("\"\""),
            AttrSchema::optional("hidden", AttrType::Bool)
                .default("false")
                .force_new(),
        ],
        blocks: vec![],
    }
}

/// Which variable: the part of the configuration that cannot change in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ident {
    pub(crate) project: String,
    pub(crate) key: String,
    pub(crate) scope: String,
}

impl Ident {
    /// `project|key|environment_scope`.
    pub(crate) fn encode(&self) -> String {
        format!("{}|{}|{}", self.project, self.key, self.scope)
    }

    /// The inverse of [`Ident::encode`].
    pub(crate) fn decode(id: &str) -> Option<Self> {
        let mut parts = id.splitn(3, '|');
        let project = parts.next().filter(|p| !p.is_empty())?;
        let key = parts.next().filter(|k| !k.is_empty())?;
        let scope = parts.next().filter(|s| !s.is_empty())?;
        Some(Self {
            project: project.to_owned(),
            key: key.to_owned(),
            scope: scope.to_owned(),
        })
    }

    fn from_attrs(config: &Attrs) -> Result<Self, ProviderError> {
        let ident = Self {
            project: attrs::required_string(config, "project")?,
            key: attrs::required_string(config, "key")?,
            scope: attrs::string(config, "environment_scope")?
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| DEFAULT_SCOPE.to_owned()),
        };
        if ident.project.contains('|') || ident.scope.contains('|') {
            return Err(ProviderError::Config(
                "`project` and `environment_scope` cannot contain `|`".to_owned(),
            ));
        }
        Ok(ident)
    }

    fn variable_path(&self) -> String {
        format!(
            "/projects/{}/variables/{}",
            encode_segment(&self.project),
            encode_segment(&self.key)
        )
    }

    fn describe(&self) -> String {
        format!(
            "CI/CD variable {} (environment scope `{}`) in project {}",
            self.key, self.scope, self.project
        )
    }
}

/// A desired variable. Deliberately not `Debug`: it holds the value.
struct Spec {
    ident: Ident,
    value: String,
    variable_type: String,
    protected: bool,
    masked: bool,
    raw: bool,
    description: String,
    hidden: bool,
}

impl Spec {
    fn parse(config: &Attrs) -> Result<Self, ProviderError> {
        let hidden = attrs::boolean(config, "hidden")?.unwrap_or(false);
        Ok(Self {
            ident: Ident::from_attrs(config)?,
            value: attrs::string(config, "value")?
                .ok_or_else(|| ProviderError::Config("`value` is required".to_owned()))?,
            variable_type: attrs::string(config, "variable_type")?
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| DEFAULT_TYPE.to_owned()),
            protected: attrs::boolean(config, "protected")?.unwrap_or(false),
            masked: attrs::boolean(config, "masked")?.unwrap_or(hidden) || hidden,
            raw: attrs::boolean(config, "raw")?.unwrap_or(false),
            description: attrs::string(config, "description")?.unwrap_or_default(),
            hidden,
        })
    }

    /// The configuration with every default filled in, as state records it.
    fn attrs(&self, config: &Attrs) -> Attrs {
        let mut out = config.clone();
        out.insert("project".into(), Value::from(self.ident.project.clone()));
        out.insert("key".into(), Value::from(self.ident.key.clone()));
        out.insert(
            "environment_scope".into(),
            Value::from(self.ident.scope.clone()),
        );
        out.insert(
            "variable_type".into(),
            Value::from(self.variable_type.clone()),
        );
        out.insert("protected".into(), Value::from(self.protected));
        out.insert("masked".into(), Value::from(self.masked));
        out.insert("raw".into(), Value::from(self.raw));
        out.insert("description".into(), Value::from(self.description.clone()));
        out.insert("hidden".into(), Value::from(self.hidden));
        out
    }
}

/// A variable as GitLab lists it. `value` is left out on purpose: berth
/// never reads secrets back.
#[derive(Debug, Deserialize)]
struct ApiVariable {
    key: String,
    #[serde(default)]
    variable_type: Option<String>,
    #[serde(default)]
    protected: Option<bool>,
    #[serde(default)]
    masked: Option<bool>,
    #[serde(default)]
    raw: Option<bool>,
    #[serde(default)]
    hidden: Option<bool>,
    #[serde(default)]
    environment_scope: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

impl ApiVariable {
    fn scope(&self) -> &str {
        self.environment_scope.as_deref().unwrap_or(DEFAULT_SCOPE)
    }

    /// What refresh reports; `null` descriptions read as `""` (the default).
    fn observed_attrs(&self, project: &str) -> Attrs {
        let mut out = Attrs::new();
        out.insert("project".into(), Value::from(project));
        out.insert("key".into(), Value::from(self.key.clone()));
        out.insert("environment_scope".into(), Value::from(self.scope()));
        out.insert(
            "variable_type".into(),
            Value::from(self.variable_type.as_deref().unwrap_or(DEFAULT_TYPE)),
        );
        out.insert(
            "protected".into(),
            Value::from(self.protected.unwrap_or(false)),
        );
        out.insert("masked".into(), Value::from(self.masked.unwrap_or(false)));
        out.insert("raw".into(), Value::from(self.raw.unwrap_or(false)));
        out.insert(
            "description".into(),
            Value::from(self.description.clone().unwrap_or_default()),
        );
        // GitLab before 17.4 has no `hidden`: then say nothing about it.
        if let Some(hidden) = self.hidden {
            out.insert("hidden".into(), Value::from(hidden));
            // GitLab answers `value: null` for a hidden variable; reporting
            // that null tells the engine the value cannot be read back (the
            // plan says so). Other values are not reported at all.
            if hidden {
                out.insert("value".into(), Value::Null);
            }
        }
        out
    }
}

/// Plan time: fills every default so that state and refreshed values
/// compare like with like. `masked` defaults to `hidden`.
pub(crate) fn prepare(config: &mut Attrs) -> Result<(), ProviderError> {
    fn fill(config: &mut Attrs, key: &str, value: Value) {
        if config.get(key).is_none_or(Value::is_null) {
            config.insert(key.to_owned(), value);
        }
    }
    if let Some(project) = attrs::string(config, "project")? {
        config.insert("project".into(), Value::from(project));
    }
    let hidden = attrs::boolean(config, "hidden")?.unwrap_or(false);
    fill(config, "variable_type", Value::from(DEFAULT_TYPE));
    fill(config, "protected", Value::from(false));
    fill(config, "masked", Value::from(hidden));
    fill(config, "raw", Value::from(false));
    fill(config, "environment_scope", Value::from(DEFAULT_SCOPE));
    fill(config, "description", Value::from(""));
    fill(config, "hidden", Value::from(hidden));
    Ok(())
}

/// Collects [`AttrProblem`]s while reading attributes.
struct Problems<'a> {
    config: &'a Attrs,
    found: Vec<AttrProblem>,
}

impl Problems<'_> {
    fn add(&mut self, attribute: &str, message: String) {
        self.found.push(AttrProblem {
            attribute: attribute.to_owned(),
            message,
        });
    }

    fn string(&mut self, key: &str) -> Option<String> {
        attrs::string(self.config, key).unwrap_or_else(|e| {
            self.add(key, attrs::problem_text(&e));
            None
        })
    }

    fn boolean(&mut self, key: &str) -> Option<bool> {
        attrs::boolean(self.config, key).unwrap_or_else(|e| {
            self.add(key, attrs::problem_text(&e));
            None
        })
    }
}

/// Checks known values before any API call: the key's format, the
/// variable type, identity characters, and GitLab's masking rules for
/// masked and hidden variables. Messages never include the value.
pub(crate) fn validate(config: &Attrs) -> Vec<AttrProblem> {
    let mut p = Problems {
        config,
        found: Vec::new(),
    };
    if let Some(project) = p.string("project") {
        if project.trim().is_empty() {
            p.add(
                "project",
                "`project` must be a numeric project id or a path such as group/sub/project"
                    .to_owned(),
            );
        } else if project.contains('|') || project.chars().any(char::is_whitespace) {
            p.add(
                "project",
                "`project` must be a numeric project id or a path such as group/sub/project \
                 (no spaces or `|`)"
                    .to_owned(),
            );
        }
    }
    if let Some(key) = p.string("key")
        && (key.is_empty()
            || key.len() > MAX_KEY_LEN
            || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        p.add(
            "key",
            format!(
                "`key` must be 1 to {MAX_KEY_LEN} characters of letters, digits and `_` \
                     (GitLab's rule for variable keys)"
            ),
        );
    }
    if let Some(kind) = p.string("variable_type")
        && kind != "env_var"
        && kind != "file"
    {
        p.add(
            "variable_type",
            format!("`variable_type` must be `env_var` or `file`, not `{kind}`"),
        );
    }
    if let Some(scope) = p.string("environment_scope")
        && (scope.is_empty() || scope.contains('|'))
    {
        p.add(
            "environment_scope",
            "`environment_scope` must be `*` or an environment name or pattern \
                 (not empty, no `|`)"
                .to_owned(),
        );
    }
    if let Some(description) = p.string("description")
        && description.chars().count() > MAX_DESCRIPTION_LEN
    {
        p.add(
            "description",
            format!("`description` must be at most {MAX_DESCRIPTION_LEN} characters"),
        );
    }
    let hidden = p.boolean("hidden").unwrap_or(false);
    let masked = p.boolean("masked");
    let raw = p.boolean("raw").unwrap_or(false);
    p.boolean("protected");
    if hidden && masked == Some(false) {
        p.add(
            "masked",
            "a hidden variable is always masked: remove `masked = false` or set `hidden = false`"
                .to_owned(),
        );
    }
    if hidden || masked == Some(true) {
        let kind = if hidden { "hidden" } else { "masked" };
        if let Some(value) = p.string("value") {
            for rule in masking::violations(&value, raw) {
                p.add("value", rule.message(kind));
            }
        }
    }
    p.found
}

/// Creates the variable with `POST /projects/:id/variables` (201).
pub(crate) async fn create(gl: &GitLab, req: &ApplyRequest<'_>) -> Result<Applied, ProviderError> {
    let spec = Spec::parse(req.config)?;
    let ident = &spec.ident;
    let what = format!("cannot create {}", ident.describe());

    let mut body = serde_json::Map::new();
    body.insert("key".into(), Value::from(ident.key.clone()));
    body.insert("value".into(), Value::from(spec.value.clone()));
    body.insert(
        "variable_type".into(),
        Value::from(spec.variable_type.clone()),
    );
    body.insert("protected".into(), Value::from(spec.protected));
    body.insert("masked".into(), Value::from(spec.masked));
    body.insert("raw".into(), Value::from(spec.raw));
    body.insert("environment_scope".into(), Value::from(ident.scope.clone()));
    if !spec.description.is_empty() {
        body.insert("description".into(), Value::from(spec.description.clone()));
    }
    if spec.hidden {
        body.insert("masked_and_hidden".into(), Value::from(true));
    }
    let body = Value::Object(body);

    let path = format!("/projects/{}/variables", encode_segment(&ident.project));
    let answer = gl
        .send(&what, Method::POST, &path, &[], Some(&body))
        .await?;
    drop(body);
    if answer.status == 400 && is_already_taken(&answer.body) {
        if is_what_create_makes(gl, &spec).await {
            // berth's own create, whose answer never reached the state
            // (berth was killed, or the answer was lost and the request
            // retried): identical in every attribute, so taking it over
            // changes nothing in GitLab.
            tracing::info!(variable = %ident.encode(), "adopting an identical variable");
            return Ok(Applied {
                id: ident.encode(),
                attrs: spec.attrs(req.config),
            });
        }
        return Err(ProviderError::Api(format!(
            "{what}: it already exists in GitLab and berth's state does not record it (it was \
             created outside berth, or by a berth run that stopped before saving state). berth \
             cannot import variables yet and does not take over ones it did not create: delete \
             it in GitLab (Settings > CI/CD > Variables, or DELETE \
             /projects/:id/variables/{key}?filter[environment_scope]=...) and apply again, or \
             use another key or environment_scope",
            key = ident.key
        )));
    }
    if !answer.is_success() {
        return Err(gl.error(&what, &answer));
    }
    let created: ApiVariable = answer.json(&what)?;
    if spec.hidden && created.hidden != Some(true) {
        // GitLab before 17.4 ignores `masked_and_hidden`: do not leave a
        // visible variable behind that state would call hidden.
        let undo = delete_ident(gl, ident).await;
        let mut message = format!(
            "{what}: GitLab created it but did not hide it (hidden variables need GitLab 17.4 \
             or later)"
        );
        match undo {
            Ok(()) => message.push_str("; berth deleted it again"),
            Err(e) => message.push_str(&format!(
                "; berth could not delete it again, remove it by hand: {e}"
            )),
        }
        return Err(ProviderError::Api(message));
    }
    Ok(Applied {
        id: ident.encode(),
        attrs: spec.attrs(req.config),
    })
}

/// Whether the variable GitLab already has under the spec's key and scope
/// is exactly what creating it would have made: readable (not hidden), and
/// equal in value, type, protection, masking, raw and description. Any
/// doubt (an error, a field missing) is a no.
async fn is_what_create_makes(gl: &GitLab, spec: &Spec) -> bool {
    #[derive(Deserialize)]
    struct Existing {
        value: Option<String>,
        #[serde(flatten)]
        rest: ApiVariable,
    }
    let ident = &spec.ident;
    let what = format!("cannot read {}", ident.describe());
    let Ok(answer) = gl
        .send(
            &what,
            Method::GET,
            &ident.variable_path(),
            &[(FILTER, &ident.scope)],
            None,
        )
        .await
    else {
        return false;
    };
    if !answer.is_success() || spec.hidden {
        return false;
    }
    let Ok(found) = serde_json::from_str::<Existing>(&answer.body) else {
        return false;
    };
    let v = &found.rest;
    found.value.as_deref() == Some(spec.value.as_str())
        && v.key == ident.key
        && v.environment_scope.as_deref().unwrap_or(DEFAULT_SCOPE) == ident.scope
        && v.variable_type.as_deref().unwrap_or(DEFAULT_TYPE) == spec.variable_type
        && v.protected == Some(spec.protected)
        && v.masked == Some(spec.masked)
        && v.raw.unwrap_or(false) == spec.raw
        && v.hidden != Some(true)
        && v.description.as_deref().unwrap_or("") == spec.description
}

/// Updates value, type, protection, masking, raw and description in place
/// with `PUT /projects/:id/variables/:key?filter[environment_scope]=...`.
/// `masked` is not sent for hidden variables (GitLab refuses any change of
/// their visibility).
pub(crate) async fn update(gl: &GitLab, req: &ApplyRequest<'_>) -> Result<Applied, ProviderError> {
    let spec = Spec::parse(req.config)?;
    if let Some(prior) = req.prior_id.and_then(Ident::decode)
        && prior != spec.ident
    {
        return Err(ProviderError::Config(format!(
            "cannot update {} in place: project, key and environment_scope identify the \
                 variable ({} before), so a change needs replacement",
            spec.ident.describe(),
            prior.encode()
        )));
    }
    let ident = &spec.ident;
    let what = format!("cannot update {}", ident.describe());

    let mut body = serde_json::Map::new();
    body.insert("value".into(), Value::from(spec.value.clone()));
    body.insert(
        "variable_type".into(),
        Value::from(spec.variable_type.clone()),
    );
    body.insert("protected".into(), Value::from(spec.protected));
    if !spec.hidden {
        body.insert("masked".into(), Value::from(spec.masked));
    }
    body.insert("raw".into(), Value::from(spec.raw));
    body.insert("description".into(), Value::from(spec.description.clone()));
    let body = Value::Object(body);

    let answer = gl
        .send(
            &what,
            Method::PUT,
            &ident.variable_path(),
            &[(FILTER, &ident.scope)],
            Some(&body),
        )
        .await?;
    drop(body);
    if answer.status == 404 && answer.body.contains("Variable") {
        return Err(ProviderError::Api(format!(
            "{what}: it no longer exists in GitLab (deleted outside berth?); run berth again \
             so that the plan re-creates it"
        )));
    }
    if !answer.is_success() {
        return Err(gl.error(&what, &answer));
    }
    Ok(Applied {
        id: ident.encode(),
        attrs: spec.attrs(req.config),
    })
}

/// Deletes the variable (`DELETE` with the scope filter, 204); one that is
/// already gone, or whose project is gone, counts as deleted.
pub(crate) async fn delete(gl: &GitLab, req: &DeleteRequest<'_>) -> Result<(), ProviderError> {
    let ident = match Ident::decode(req.id) {
        Some(ident) => ident,
        None => Ident::from_attrs(req.attrs)?,
    };
    delete_ident(gl, &ident).await
}

async fn delete_ident(gl: &GitLab, ident: &Ident) -> Result<(), ProviderError> {
    let what = format!("cannot delete {}", ident.describe());
    let answer = gl
        .send(
            &what,
            Method::DELETE,
            &ident.variable_path(),
            &[(FILTER, &ident.scope)],
            None,
        )
        .await?;
    match answer.status {
        200..=299 => Ok(()),
        404 => {
            tracing::debug!(variable = %ident.encode(), "already gone");
            Ok(())
        }
        _ => Err(gl.error(&what, &answer)),
    }
}

/// One paged list per project that state mentions; each recorded variable
/// that still exists is observed, the others are not (the engine plans
/// their re-creation). A project GitLab does not know (404) has no
/// variables left.
pub(crate) async fn refresh(
    gl: &GitLab,
    recorded: &[(String, String)],
) -> Result<Vec<Observed>, ProviderError> {
    let mut by_project: BTreeMap<String, Vec<(&str, Ident)>> = BTreeMap::new();
    for (address, id) in recorded {
        let ident = Ident::decode(id).ok_or_else(|| {
            ProviderError::Config(format!(
                "state records {address} with id `{id}`, which is not a {TYPE} id \
                 (project|key|environment_scope)"
            ))
        })?;
        by_project
            .entry(ident.project.clone())
            .or_default()
            .push((address.as_str(), ident));
    }

    let mut observed = Vec::new();
    for (project, wanted) in by_project {
        let what = format!("cannot list the CI/CD variables of project {project}");
        let path = format!("/projects/{}/variables", encode_segment(&project));
        let items = match gl.list_all(&what, &path).await? {
            Ok(items) => items,
            Err(answer) if answer.status == 404 => {
                tracing::warn!(%project, "GitLab does not know this project (404): its variables count as gone");
                continue;
            }
            Err(answer) => return Err(gl.error(&what, &answer)),
        };
        let mut found: HashMap<(String, String), ApiVariable> = HashMap::new();
        for item in items {
            let variable: ApiVariable = serde_json::from_value(item).map_err(|e| {
                ProviderError::Api(format!(
                    "{what}: GitLab listed a variable berth cannot read: {e}"
                ))
            })?;
            found.insert(
                (variable.key.clone(), variable.scope().to_owned()),
                variable,
            );
        }
        for (address, ident) in wanted {
            if let Some(variable) = found.get(&(ident.key.clone(), ident.scope.clone())) {
                observed.push(Observed {
                    address: address.to_owned(),
                    id: ident.encode(),
                    attrs: variable.observed_attrs(&project),
                    config_hash: None,
                });
            }
        }
    }
    observed.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(observed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(v: Value) -> Attrs {
        match v {
            Value::Object(m) => m.into_iter().collect(),
            _ => Attrs::new(),
        }
    }

    #[test]
    fn ids_round_trip() {
        let ident = Ident {
            project: "group/sub/project".into(),
            key: "API_KEY".into(),
            scope: "review/*".into(),
        };
        assert_eq!(ident.encode(), "group/sub/project|API_KEY|review/*");
        assert_eq!(Ident::decode(&ident.encode()), Some(ident));
        assert_eq!(Ident::decode("42|K"), None);
        assert_eq!(Ident::decode("|K|*"), None);
    }

    #[test]
    fn prepare_fills_defaults_and_masks_hidden_variables() {
        let mut c = attrs(json!({"project": 42, "key": "K", "value": "v"}));
        prepare(&mut c).unwrap();
        assert_eq!(c["project"], json!("42"));
        assert_eq!(c["variable_type"], json!("env_var"));
        assert_eq!(c["environment_scope"], json!("*"));
        assert_eq!(c["masked"], json!(false));
        assert_eq!(c["hidden"], json!(false));
        assert_eq!(c["description"], json!(""));

        let mut c = attrs(json!({"project": "p", "key": "K", "value": "v", "hidden": true}));
        prepare(&mut c).unwrap();
        assert_eq!(c["masked"], json!(true));
    }

    #[test]
    fn schema_marks_identity_as_force_new() {
        let s = schema();
        for name in ["project", "key", "environment_scope", "hidden"] {
            assert!(s.forces_replacement(name), "{name}");
        }
        for name in [
            "value",
            "protected",
            "masked",
            "raw",
            "variable_type",
            "description",
        ] {
            assert!(!s.forces_replacement(name), "{name}");
        }
        assert!(s.is_sensitive("value"));
    }
}
