//! `aws_ecr_repository`, and registry credentials for pushing and pulling
//! (`GetAuthorizationToken`), over ECR's JSON 1.1 API.
//!
//! | attribute | change |
//! |---|---|
//! | `name`, `encryption_configuration` | replace |
//! | `image_tag_mutability` | in place: `PutImageTagMutability` |
//! | `image_scanning_configuration` | in place: `PutImageScanningConfiguration` |
//! | `tags` | in place: `TagResource` / `UntagResource` |
//! | `force_delete`, `timeouts` | berth's behaviour only: `DeleteRepository` with `force` |
//!
//! Computed: `id` (the name, as in Terraform), `arn`, `registry_id`,
//! `repository_url`, `tags_all` (equal to `tags`).
//!
//! `image_tag_mutability` defaults to `MUTABLE` and
//! `image_scanning_configuration` to one block with `scan_on_push = false`
//! (what AWS reports for a repository created without them), so that
//! refresh never shows them as drift.
//!
//! Refresh and ownership: `DescribeRepositories` returns no tags, and
//! reading them is one `ListTagsForResource` per repository. So refresh is
//! one paged `DescribeRepositories` of the registry that reports the
//! repositories whose names state records (none at all when state records
//! none, without a call), and it does not read tags or
//! `encryption_configuration` (drift in them is not detected). A repository
//! berth created but never recorded is adopted when it is created again:
//! `CreateRepository` answers `RepositoryAlreadyExistsException`, berth
//! reads the existing repository's tags (one call) and takes it over, with
//! the configured settings and tags, only if they name the same owner and
//! address; otherwise it reports the conflict. Unlike EC2 objects, such a
//! repository shows as "create" in the plan rather than "adopt".
//!
//! Credentials: [`crate::AwsProvider::ecr_credentials`] returns the user
//! (`AWS`) and password decoded from `GetAuthorizationToken`'s base64
//! `AWS:password`, cached per registry until five minutes before
//! `expiresAt` (12 hours on AWS; moto's tokens are already expired and are
//! not cached). The token request goes to the registry's own region: the
//! configured ECR endpoint when the region matches or an endpoint was
//! configured, else `api.ecr.<region>.amazonaws.com`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use berth_provider::http::Idempotency;
use berth_provider::{
    Applied, ApplyRequest, AttrProblem, AttrSchema, AttrType, Attrs, BlockSchema, DeleteRequest,
    Nesting, Observed, Progress, ProviderError, ResourceSchema, Value,
};
use serde_json::json;

use crate::attrs;
use crate::client::{Api, ApiError};
use crate::duration::timeouts_block;
use crate::settings::{Secret, default_ecr_endpoint};
use crate::tags;

/// The resource type name.
pub(crate) const TYPE: &str = "aws_ecr_repository";

/// The largest `maxResults` of `DescribeRepositories`.
const PAGE: u32 = 1000;
/// A bound on the pages of one list.
const MAX_PAGES: usize = 10_000;
/// How long before `expiresAt` a cached token is renewed.
const TOKEN_MARGIN: Duration = Duration::from_secs(5 * 60);
const MUTABILITY: [&str; 4] = [
    "MUTABLE",
    "IMMUTABLE",
    "IMMUTABLE_WITH_EXCLUSION",
    "MUTABLE_WITH_EXCLUSION",
];

/// The schema of `aws_ecr_repository`.
pub(crate) fn schema() -> ResourceSchema {
    use AttrType::*;
    let o = AttrSchema::optional;
    let c = AttrSchema::computed;
    ResourceSchema {
        type_name: TYPE,
        attributes: vec![
            AttrSchema::required("name", String).force_new(),
            o("image_tag_mutability", String).default("\"MUTABLE\""),
            o("force_delete", Bool).default("false"),
            o("tags", MapOfString).default("{}"),
            c("id", String),
            c("arn", String),
            c("registry_id", String),
            c("repository_url", String),
            c("tags_all", MapOfString),
        ],
        blocks: vec![
            BlockSchema {
                name: "image_scanning_configuration",
                nesting: Nesting::List,
                force_new: false,
                attributes: vec![AttrSchema::required("scan_on_push", Bool)],
                blocks: vec![],
            },
            BlockSchema {
                name: "encryption_configuration",
                nesting: Nesting::List,
                force_new: true,
                attributes: vec![o("encryption_type", String), o("kms_key", String)],
                blocks: vec![],
            },
            timeouts_block(&["delete"]),
        ],
    }
}

/// Whether `host` is an ECR registry: `<account>.dkr.ecr.<region>.amazonaws.com`
/// (or `.amazonaws.com.cn`, or `dkr.ecr-fips`). A scheme, port or path
/// around the host is ignored.
pub fn is_ecr_registry(host: &str) -> bool {
    ecr_registry_parts(host).is_some()
}

/// The host of a registry address given with or without scheme, port and
/// path, lower-cased.
fn registry_host(registry: &str) -> String {
    let s = registry.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    let s = s.split(':').next().unwrap_or(s);
    s.to_ascii_lowercase()
}

/// The account and region of an ECR registry host.
fn ecr_registry_parts(registry: &str) -> Option<(String, String)> {
    let host = registry_host(registry);
    let rest = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    let (account, rest) = rest.split_once('.')?;
    let region = rest
        .strip_prefix("dkr.ecr.")
        .or_else(|| rest.strip_prefix("dkr.ecr-fips."))?;
    let account_ok = !account.is_empty() && account.bytes().all(|b| b.is_ascii_digit());
    let region_ok = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    (account_ok && region_ok).then(|| (account.to_owned(), region.to_owned()))
}

/// A registry login.
#[derive(Clone, Debug)]
struct Login {
    user: String,
    password: Secret,
    expires_at: SystemTime,
}

/// Registry logins by host, kept until shortly before they expire.
#[derive(Debug, Default)]
pub(crate) struct TokenCache(Mutex<HashMap<String, Login>>);

impl TokenCache {
    fn get(&self, host: &str, now: SystemTime) -> Option<(String, String)> {
        let cache = self.0.lock().ok()?;
        let login = cache.get(host)?;
        (now + TOKEN_MARGIN < login.expires_at)
            .then(|| (login.user.clone(), login.password.expose().to_owned()))
    }

    fn put(&self, host: &str, login: Login, now: SystemTime) {
        if now + TOKEN_MARGIN >= login.expires_at {
            return;
        }
        if let Ok(mut cache) = self.0.lock() {
            cache.insert(host.to_owned(), login);
        }
    }
}

/// Decodes an `authorizationToken` (`base64("AWS:password")`).
fn decode_token(token: &str) -> Result<(String, Secret), ProviderError> {
    let bad = || {
        ProviderError::Api(
            "ECR API: the authorization token is not base64 of `user:password`".into(),
        )
    };
    let bytes = STANDARD.decode(token.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (user, password) = text.split_once(':').ok_or_else(bad)?;
    Ok((user.to_owned(), Secret::new(password)))
}

/// `expiresAt` (seconds since the epoch, possibly fractional) as a time.
fn expiry(v: Option<&Value>) -> SystemTime {
    match v.and_then(Value::as_f64) {
        Some(secs) if secs > 0.0 => {
            SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs.min(1.0e11))
        }
        _ => SystemTime::UNIX_EPOCH,
    }
}

/// Registry credentials for `registry` (see the module docs).
pub(crate) async fn credentials(
    api: &Api,
    registry: &str,
) -> Result<(String, String), ProviderError> {
    let host = registry_host(registry);
    let Some((_account, region)) = ecr_registry_parts(&host) else {
        return Err(ProviderError::Config(format!(
            "`{registry}` is not an ECR registry (<account>.dkr.ecr.<region>.amazonaws.com)"
        )));
    };
    let now = SystemTime::now();
    if let Some(hit) = api.ecr_tokens.get(&host, now) {
        return Ok(hit);
    }
    let url = if api.settings.ecr_overridden || region == api.settings.region {
        api.settings.ecr.clone()
    } else {
        default_ecr_endpoint(&region)?
    };
    let answer = api
        .ecr_at(
            &url,
            &region,
            "GetAuthorizationToken",
            &json!({}),
            Idempotency::Safe,
        )
        .await
        .map_err(|e| e.context(format!("cannot get a login for {host}")))?;
    let data = answer.pointer("/authorizationData/0").ok_or_else(|| {
        ProviderError::Api("ECR API: GetAuthorizationToken returned no data".into())
    })?;
    let token = data
        .get("authorizationToken")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ProviderError::Api("ECR API: GetAuthorizationToken returned no token".into())
        })?;
    let (user, password) = decode_token(token)?;
    let login = Login {
        user: user.clone(),
        password: password.clone(),
        expires_at: expiry(data.get("expiresAt")),
    };
    api.ecr_tokens.put(&host, login, now);
    Ok((user, password.expose().to_owned()))
}

/// A parsed configuration.
struct Spec {
    name: String,
    mutability: String,
    scan_on_push: bool,
    encryption: Option<(String, Option<String>)>,
    tags: BTreeMap<String, String>,
}

impl Spec {
    fn parse(config: &Attrs) -> Result<Self, ProviderError> {
        let tags = attrs::string_map(config, "tags")?;
        if let Some(problem) = tags::check_user_tags(&tags).into_iter().next() {
            return Err(ProviderError::Config(format!("`tags`: {problem}")));
        }
        let scan_on_push = match attrs::blocks(config, "image_scanning_configuration")?.first() {
            Some(b) => attrs::boolean(b, "scan_on_push")?.unwrap_or(false),
            None => false,
        };
        let encryption = match attrs::blocks(config, "encryption_configuration")?.first() {
            Some(b) => Some((
                attrs::non_empty_string(b, "encryption_type")?
                    .unwrap_or_else(|| "AES256".to_owned()),
                attrs::non_empty_string(b, "kms_key")?,
            )),
            None => None,
        };
        Ok(Self {
            name: attrs::required_string(config, "name")?,
            mutability: attrs::non_empty_string(config, "image_tag_mutability")?
                .unwrap_or_else(|| "MUTABLE".to_owned()),
            scan_on_push,
            encryption,
            tags,
        })
    }
}

/// ECR's repository name rule: lower-case letters, digits and `._-/`
/// separators, 2 to 256 characters, starting with a letter or digit.
fn valid_name(name: &str) -> bool {
    (2..=256).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && !name.ends_with('/')
}

/// Checks known values before any call.
pub(crate) fn validate(config: &Attrs) -> Vec<AttrProblem> {
    let mut problems = Vec::new();
    let mut problem = |attribute: &str, message: String| {
        problems.push(AttrProblem {
            attribute: attribute.to_owned(),
            message,
        })
    };
    if let Ok(Some(name)) = attrs::string(config, "name")
        && !valid_name(&name)
    {
        problem(
            "name",
            "must be 2 to 256 lower-case letters, digits and `.`, `_`, `-`, `/`, starting with \
             a letter or digit"
                .to_owned(),
        );
    }
    if let Ok(Some(m)) = attrs::string(config, "image_tag_mutability")
        && !MUTABILITY.contains(&m.as_str())
    {
        problem(
            "image_tag_mutability",
            format!("must be one of {}", MUTABILITY.join(", ")),
        );
    }
    for block in ["image_scanning_configuration", "encryption_configuration"] {
        if let Ok(b) = attrs::blocks(config, block)
            && b.len() > 1
        {
            problem(block, "may appear at most once".to_owned());
        }
    }
    if let Ok(b) = attrs::blocks(config, "encryption_configuration")
        && let Some(b) = b.first()
        && let Ok(Some(t)) = attrs::string(b, "encryption_type")
        && !matches!(t.as_str(), "AES256" | "KMS" | "KMS_DSSE")
    {
        problem(
            "encryption_configuration",
            "`encryption_type` must be AES256, KMS or KMS_DSSE".to_owned(),
        );
    }
    match attrs::string_map(config, "tags") {
        Ok(t) => tags::check_user_tags(&t)
            .into_iter()
            .for_each(|p| problem("tags", p)),
        Err(e) => problem("tags", e.to_string()),
    }
    problems
}

fn scanning_value(scan_on_push: bool) -> Value {
    json!([{ "scan_on_push": scan_on_push }])
}

/// Plan time: fills the defaults AWS would report (see the module docs).
pub(crate) fn prepare(config: &mut Attrs) -> Result<(), ProviderError> {
    let spec_scan = match attrs::blocks(config, "image_scanning_configuration")?.first() {
        Some(b) => attrs::boolean(b, "scan_on_push")?.unwrap_or(false),
        None => false,
    };
    config.insert(
        "image_scanning_configuration".into(),
        scanning_value(spec_scan),
    );
    let t = attrs::string_map(config, "tags")?;
    config.insert("tags".into(), attrs::map_value(&t));
    if config
        .get("image_tag_mutability")
        .is_none_or(Value::is_null)
    {
        config.insert("image_tag_mutability".into(), Value::from("MUTABLE"));
    }
    if config.get("force_delete").is_none_or(Value::is_null) {
        config.insert("force_delete".into(), Value::from(false));
    }
    Ok(())
}

fn text(repo: &Value, key: &str) -> String {
    repo.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// What `DescribeRepositories` shows of a repository.
fn read_back(repo: &Value) -> Attrs {
    let mut a = Attrs::new();
    let name = text(repo, "repositoryName");
    a.insert("id".into(), Value::from(name.as_str()));
    a.insert("name".into(), Value::from(name));
    a.insert("arn".into(), Value::from(text(repo, "repositoryArn")));
    a.insert("registry_id".into(), Value::from(text(repo, "registryId")));
    a.insert(
        "repository_url".into(),
        Value::from(text(repo, "repositoryUri")),
    );
    if let Some(m) = repo.get("imageTagMutability").and_then(Value::as_str) {
        a.insert("image_tag_mutability".into(), Value::from(m));
    }
    let scan = repo
        .pointer("/imageScanningConfiguration/scanOnPush")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    a.insert("image_scanning_configuration".into(), scanning_value(scan));
    a
}

fn tag_list(tags: &BTreeMap<String, String>) -> Value {
    Value::Array(
        tags.iter()
            .map(|(k, v)| json!({"Key": k, "Value": tags::ecr_encode(v)}))
            .collect(),
    )
}

fn tags_from(answer: &Value) -> BTreeMap<String, String> {
    answer
        .get("tags")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|t| {
                    let k = t.get("Key").and_then(Value::as_str)?;
                    let v = t.get("Value").and_then(Value::as_str).unwrap_or_default();
                    Some((k.to_owned(), tags::ecr_decode(v)))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn applied(config: &Attrs, repo: &Value, user_tags: &BTreeMap<String, String>) -> Applied {
    let mut seen = read_back(repo);
    seen.insert("tags".into(), attrs::map_value(user_tags));
    seen.insert("tags_all".into(), attrs::map_value(user_tags));
    Applied {
        id: text(repo, "repositoryName"),
        attrs: attrs::merge_applied(&schema(), config, seen),
    }
}

async fn describe(api: &Api, name: &str) -> Result<Option<Value>, ProviderError> {
    match api
        .ecr(
            "DescribeRepositories",
            &json!({ "repositoryNames": [name] }),
            Idempotency::Safe,
        )
        .await
    {
        Ok(answer) => Ok(answer.pointer("/repositories/0").cloned()),
        Err(e) if e.is("RepositoryNotFoundException") => Ok(None),
        Err(e) => Err(e.context(format!("cannot read repository {name}"))),
    }
}

async fn list_tags(api: &Api, arn: &str) -> Result<BTreeMap<String, String>, ProviderError> {
    let answer = api
        .ecr(
            "ListTagsForResource",
            &json!({ "resourceArn": arn }),
            Idempotency::Safe,
        )
        .await
        .map_err(|e| e.context(format!("cannot read the tags of {arn}")))?;
    Ok(tags_from(&answer))
}

/// Brings mutability, scanning and tags of an existing repository to the
/// configuration; returns the changed user tag keys.
async fn converge(
    api: &Api,
    spec: &Spec,
    repo: &Value,
    current_tags: &BTreeMap<String, String>,
    wanted_tags: &BTreeMap<String, String>,
    progress: Progress<'_>,
) -> Result<(), ProviderError> {
    let name = spec.name.as_str();
    if repo.get("imageTagMutability").and_then(Value::as_str) != Some(spec.mutability.as_str()) {
        api.ecr(
            "PutImageTagMutability",
            &json!({"repositoryName": name, "imageTagMutability": spec.mutability}),
            Idempotency::Safe,
        )
        .await
        .map_err(|e| e.context(format!("cannot set the tag mutability of {name}")))?;
        progress(&format!("image tag mutability is now {}", spec.mutability));
    }
    let scan = repo
        .pointer("/imageScanningConfiguration/scanOnPush")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if scan != spec.scan_on_push {
        api.ecr(
            "PutImageScanningConfiguration",
            &json!({"repositoryName": name, "imageScanningConfiguration": {"scanOnPush": spec.scan_on_push}}),
            Idempotency::Safe,
        )
        .await
        .map_err(|e| e.context(format!("cannot set the image scanning of {name}")))?;
        progress(&format!("scan on push is now {}", spec.scan_on_push));
    }
    let arn = text(repo, "repositoryArn");
    let set: BTreeMap<String, String> = wanted_tags
        .iter()
        .filter(|(k, v)| current_tags.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let remove: Vec<&String> = current_tags
        .keys()
        .filter(|k| !wanted_tags.contains_key(*k) && !k.starts_with("aws:"))
        .collect();
    if !set.is_empty() {
        api.ecr(
            "TagResource",
            &json!({"resourceArn": arn, "tags": tag_list(&set)}),
            Idempotency::Safe,
        )
        .await
        .map_err(|e| e.context(format!("cannot tag repository {name}")))?;
    }
    if !remove.is_empty() {
        api.ecr(
            "UntagResource",
            &json!({"resourceArn": arn, "tagKeys": remove}),
            Idempotency::Safe,
        )
        .await
        .map_err(|e| e.context(format!("cannot untag repository {name}")))?;
    }
    let changed: Vec<&String> = set
        .keys()
        .chain(remove.iter().copied())
        .filter(|k| !tags::is_system_key(k))
        .collect();
    if !changed.is_empty() {
        progress(&format!(
            "tags updated: {}",
            changed
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(())
}

/// Creates the repository with berth's tags, or adopts the one an
/// interrupted apply of this address left.
pub(crate) async fn create(
    api: &Api,
    req: &ApplyRequest<'_>,
    progress: Progress<'_>,
) -> Result<Applied, ProviderError> {
    let spec = Spec::parse(req.config)?;
    let wanted = tags::all_tags(&spec.tags, req.owner, req.address, req.config_hash)?;
    let mut body = json!({
        "repositoryName": spec.name,
        "imageTagMutability": spec.mutability,
        "imageScanningConfiguration": {"scanOnPush": spec.scan_on_push},
        "tags": tag_list(&wanted),
    });
    if let (Some((kind, key)), Some(map)) = (&spec.encryption, body.as_object_mut()) {
        let mut enc = json!({"encryptionType": kind});
        if let (Some(k), Some(m)) = (key, enc.as_object_mut()) {
            m.insert("kmsKey".into(), Value::from(k.as_str()));
        }
        map.insert("encryptionConfiguration".into(), enc);
    }
    match api
        .ecr("CreateRepository", &body, Idempotency::Unsafe)
        .await
    {
        Ok(answer) => {
            let repo = answer.get("repository").cloned().ok_or_else(|| {
                ProviderError::Api(format!(
                    "ECR API: repository {} was created but not returned",
                    spec.name
                ))
            })?;
            Ok(applied(req.config, &repo, &spec.tags))
        }
        Err(e) if e.is("RepositoryAlreadyExistsException") => {
            let Some(repo) = describe(api, &spec.name).await? else {
                return Err(e.context(format!("cannot create repository {}", spec.name)));
            };
            let current = list_tags(api, &text(&repo, "repositoryArn")).await?;
            let ours = tags::marks(req.owner, &current).is_some_and(|m| m.address == req.address);
            if !ours {
                return Err(ProviderError::Api(format!(
                    "cannot create repository {}: {e}; it was not created by berth for {} in \
                     this state (delete it, or choose another `name`)",
                    spec.name, req.address
                )));
            }
            progress(&format!(
                "repository {} was created by an interrupted apply; adopting it",
                spec.name
            ));
            converge(api, &spec, &repo, &current, &wanted, progress).await?;
            let repo = describe(api, &spec.name).await?.unwrap_or(repo);
            Ok(applied(req.config, &repo, &spec.tags))
        }
        Err(e) => Err(e.context(format!("cannot create repository {}", spec.name))),
    }
}

/// Updates mutability, scanning and tags.
pub(crate) async fn update(
    api: &Api,
    req: &ApplyRequest<'_>,
    progress: Progress<'_>,
) -> Result<Applied, ProviderError> {
    let spec = Spec::parse(req.config)?;
    let Some(repo) = describe(api, &spec.name).await? else {
        return Err(ProviderError::Api(format!(
            "repository {} no longer exists; run plan again to create it",
            spec.name
        )));
    };
    let current = list_tags(api, &text(&repo, "repositoryArn")).await?;
    let wanted = tags::all_tags(&spec.tags, req.owner, req.address, req.config_hash)?;
    converge(api, &spec, &repo, &current, &wanted, progress).await?;
    let repo = describe(api, &spec.name).await?.unwrap_or(repo);
    Ok(applied(req.config, &repo, &spec.tags))
}

/// Deletes the repository (with its images when `force_delete`); one that
/// is already gone is fine.
pub(crate) async fn delete(api: &Api, req: &DeleteRequest<'_>) -> Result<(), ProviderError> {
    let name = if req.id.is_empty() {
        attrs::required_string(req.attrs, "name")?
    } else {
        req.id.to_owned()
    };
    let force = attrs::boolean(req.attrs, "force_delete")
        .ok()
        .flatten()
        .unwrap_or(false);
    match api
        .ecr(
            "DeleteRepository",
            &json!({"repositoryName": name, "force": force}),
            Idempotency::Safe,
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is("RepositoryNotFoundException") => Ok(()),
        Err(e @ ApiError::Aws { .. }) if e.is("RepositoryNotEmptyException") => {
            Err(ProviderError::Api(format!(
                "cannot delete repository {name}: {e}; it still holds images (set \
                 `force_delete = true` to delete them with it)"
            )))
        }
        Err(e) => Err(e.context(format!("cannot delete repository {name}"))),
    }
}

/// Reports the recorded repositories that exist, from one paged
/// `DescribeRepositories` (see the module docs).
pub(crate) async fn refresh(
    api: &Api,
    recorded: &[(String, String)],
) -> Result<Vec<Observed>, ProviderError> {
    if recorded.is_empty() {
        return Ok(Vec::new());
    }
    let mut repos = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut body = json!({ "maxResults": api.page_size.unwrap_or(PAGE) });
        if let (Some(t), Some(map)) = (&token, body.as_object_mut()) {
            map.insert("nextToken".into(), Value::from(t.as_str()));
        }
        let page = api
            .ecr("DescribeRepositories", &body, Idempotency::Safe)
            .await
            .map_err(|e| e.context("cannot list repositories"))?;
        if let Some(list) = page.get("repositories").and_then(Value::as_array) {
            repos.extend(list.iter().cloned());
        }
        token = page
            .get("nextToken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    let mut observed = Vec::new();
    for repo in repos {
        let name = text(&repo, "repositoryName");
        let Some((address, _)) = recorded.iter().find(|(_, id)| *id == name) else {
            continue;
        };
        observed.push(Observed {
            address: address.clone(),
            id: name,
            attrs: read_back(&repo),
            config_hash: None,
        });
    }
    observed.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(observed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_are_recognised() {
        assert!(is_ecr_registry(
            "123456789012.dkr.ecr.us-east-1.amazonaws.com"
        ));
        assert!(is_ecr_registry(
            "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com/v2/"
        ));
        assert!(is_ecr_registry(
            "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn:443"
        ));
        assert!(is_ecr_registry(
            "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com"
        ));
        assert!(!is_ecr_registry("registry.gitlab.com"));
        assert!(!is_ecr_registry("public.ecr.aws"));
        assert!(!is_ecr_registry("evil.dkr.ecr.us-east-1.amazonaws.com"));
        assert!(!is_ecr_registry(
            "123.dkr.ecr.us-east-1.amazonaws.com.evil.com"
        ));
        assert_eq!(
            ecr_registry_parts("123456789012.dkr.ecr.us-east-1.amazonaws.com"),
            Some(("123456789012".into(), "us-east-1".into()))
        );
    }

    #[test]
    fn tokens_decode_and_cache_until_expiry() {
        let (user, password) = decode_token("QVdTOjEyMzQ1Njc4OTAxMi1hdXRoLXRva2Vu").unwrap();
        assert_eq!(user, "AWS");
        assert_eq!(password.expose(), "123456789012-auth-token");
        assert!(!format!("{password:?}").contains("auth-token"));
        assert!(decode_token("!!").is_err());

        let cache = TokenCache::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let login = |expires: u64| Login {
            user: "AWS".into(),
            password: Secret::new("p"),
            expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(expires),
        };
        cache.put("h", login(1_000_000 + 60), now);
        assert_eq!(
            cache.get("h", now),
            None,
            "expiring within the margin: not kept"
        );
        cache.put("h", login(1_000_000 + 12 * 3600), now);
        assert_eq!(cache.get("h", now), Some(("AWS".into(), "p".into())));
        let later = now + Duration::from_secs(12 * 3600 - 60);
        assert_eq!(cache.get("h", later), None, "renewed before expiresAt");
        assert_eq!(
            expiry(Some(&json!(1420070400))),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1420070400)
        );
        assert_eq!(
            expiry(Some(&json!(1.5e9))),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_500_000_000)
        );
    }

    #[test]
    fn names_and_defaults() {
        assert!(valid_name("app/web"));
        assert!(!valid_name("App"));
        assert!(!valid_name("a"));
        let mut config: Attrs = [("name".to_owned(), json!("app"))].into();
        prepare(&mut config).unwrap();
        assert_eq!(
            config["image_scanning_configuration"],
            json!([{"scan_on_push": false}])
        );
        assert_eq!(config["image_tag_mutability"], json!("MUTABLE"));
        let s = schema();
        assert!(s.forces_replacement("name"));
        assert!(s.forces_replacement("encryption_configuration"));
        for n in [
            "image_tag_mutability",
            "image_scanning_configuration",
            "tags",
            "force_delete",
        ] {
            assert!(!s.forces_replacement(n), "{n}");
        }
    }
}
