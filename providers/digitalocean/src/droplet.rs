//! `digitalocean_droplet`: the schema, and create (then wait for `active`
//! and a public IPv4), update in place, delete (then wait for 404) and
//! refresh (one paged list by berth's lineage tag) of droplets.
//!
//! Attributes follow Terraform's `digitalocean_droplet`:
//!
//! | attribute | change |
//! |---|---|
//! | `image`, `region`, `ssh_keys`, `user_data`, `vpc_uuid`, `monitoring`, `droplet_agent` | replace |
//! | `ipv6` | replace (see below) |
//! | `name` | in place: `rename` action, waited for |
//! | `size` | in place: power off (`shutdown` first when `graceful_shutdown`), `resize` action (`disk = resize_disk`), power on again if it was on |
//! | `backups` | in place: `enable_backups` / `disable_backups` action |
//! | `tags` | in place: tag / untag (`/v2/tags/{tag}/resources`) |
//! | `resize_disk`, `graceful_shutdown`, `timeouts` | berth's behaviour only, no API call |
//!
//! Computed: `id`, `urn`, `status`, `ipv4_address`, `ipv4_address_private`,
//! `ipv6_address`, `memory`, `vcpus`, `disk`, `locked`, `created_at`,
//! `price_hourly`, `price_monthly` (and `region` / `vpc_uuid` when left out).
//!
//! Where berth differs from Terraform:
//! - `ipv6`: Terraform enables IPv6 in place and replaces only to turn it
//!   off; berth's schema cannot make the direction matter, so any change of
//!   `ipv6` replaces the droplet (the plan says so).
//! - `user_data` is sensitive (stored as a keyed hash; Terraform stores a
//!   SHA-1 of it).
//! - `image`, `region`, `ssh_keys` and `user_data` are not read back by
//!   refresh (the API does not return the last three; an image given by id
//!   would compare unequal to its slug). Drift in them is not detected.
//! - `timeouts { create, update, delete }` default to 5m, 10m and 5m
//!   (Terraform: 60m each).
//! - Not supported yet: `volume_ids`, `backup_policy`, `private_networking`
//!   (deprecated upstream).
//!
//! berth's own tags (see [`crate::ownership`]) are added to the droplet's
//! tags and hidden from `tags`; configured tags may not start with `berth-`.
//! Removing berth's tags from a droplet by hand makes refresh lose it.

use std::time::{Duration, Instant};

use berth_provider::{
    Applied, ApplyRequest, AttrProblem, AttrSchema, AttrType, Attrs, BlockSchema, DeleteRequest,
    Nesting, Observed, Ownership, Progress, ProviderError, ResourceSchema, Value,
};
use reqwest::Method;
use serde_json::json;

use crate::attrs;
use crate::client::{Api, Poller};
use crate::duration::parse_duration;
use crate::ownership::{self, Kind};

/// The resource type name.
pub(crate) const TYPE: &str = "digitalocean_droplet";

const DEFAULT_CREATE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
const DEFAULT_UPDATE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const DEFAULT_DELETE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// The most `user_data` DigitalOcean accepts.
const MAX_USER_DATA: usize = 64 * 1024;
/// How long a graceful `shutdown` may take before berth powers off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(120);

/// The schema of `digitalocean_droplet`.
pub(crate) fn schema() -> ResourceSchema {
    use AttrType::*;
    let o = AttrSchema::optional;
    let c = AttrSchema::computed;
    ResourceSchema {
        type_name: TYPE,
        attributes: vec![
            AttrSchema::required("name", String),
            AttrSchema::required("image", String).force_new(),
            AttrSchema::required("size", String),
            o("region", String).and_computed().force_new(),
            o("ssh_keys", ListOfString).force_new(),
            o("tags", ListOfString).default("[]"),
            o("user_data", String).force_new().sensitive(),
            o("vpc_uuid", String).and_computed().force_new(),
            o("monitoring", Bool).default("false").force_new(),
            o("ipv6", Bool).default("false").force_new(),
            o("backups", Bool).default("false"),
            o("resize_disk", Bool).default("true"),
            o("graceful_shutdown", Bool).default("false"),
            o("droplet_agent", Bool).force_new(),
            c("id", String),
            c("urn", String),
            c("status", String),
            c("ipv4_address", String),
            c("ipv4_address_private", String),
            c("ipv6_address", String),
            c("memory", Number),
            c("vcpus", Number),
            c("disk", Number),
            c("locked", Bool),
            c("created_at", String),
            c("price_hourly", Number),
            c("price_monthly", Number),
        ],
        blocks: vec![timeouts_block()],
    }
}

fn timeouts_block() -> BlockSchema {
    BlockSchema {
        name: "timeouts",
        nesting: Nesting::Single,
        force_new: false,
        attributes: vec![
            AttrSchema::optional("create", AttrType::String),
            AttrSchema::optional("update", AttrType::String),
            AttrSchema::optional("delete", AttrType::String),
        ],
        blocks: vec![],
    }
}

/// The waits of one droplet.
#[derive(Clone, Copy, Debug)]
struct Timeouts {
    create: Duration,
    update: Duration,
    delete: Duration,
}

fn timeouts(config: &Attrs) -> Result<Timeouts, ProviderError> {
    let block = attrs::block(config, "timeouts")?.unwrap_or_default();
    let get = |key: &str, default: Duration| -> Result<Duration, ProviderError> {
        match attrs::non_empty_string(&block, key)? {
            None => Ok(default),
            Some(s) => parse_duration(&s)
                .map_err(|e| ProviderError::Config(format!("`timeouts.{key}`: {e}"))),
        }
    };
    Ok(Timeouts {
        create: get("create", DEFAULT_CREATE_TIMEOUT)?,
        update: get("update", DEFAULT_UPDATE_TIMEOUT)?,
        delete: get("delete", DEFAULT_DELETE_TIMEOUT)?,
    })
}

/// A parsed configuration.
#[derive(Clone, Debug)]
struct Spec {
    name: String,
    image: String,
    size: String,
    region: Option<String>,
    ssh_keys: Vec<String>,
    tags: Vec<String>,
    user_data: Option<String>,
    vpc_uuid: Option<String>,
    monitoring: bool,
    ipv6: bool,
    backups: bool,
    resize_disk: bool,
    graceful_shutdown: bool,
    droplet_agent: Option<bool>,
    timeouts: Timeouts,
}

impl Spec {
    fn parse(config: &Attrs) -> Result<Self, ProviderError> {
        let tags = attrs::string_set(config, "tags")?;
        if let Some(problem) = ownership::check_user_tags(&tags).into_iter().next() {
            return Err(ProviderError::Config(format!("`tags`: {problem}")));
        }
        Ok(Self {
            name: attrs::required_string(config, "name")?,
            image: attrs::required_string(config, "image")?,
            size: attrs::required_string(config, "size")?,
            region: attrs::non_empty_string(config, "region")?,
            ssh_keys: attrs::string_set(config, "ssh_keys")?,
            tags,
            user_data: attrs::non_empty_string(config, "user_data")?,
            vpc_uuid: attrs::non_empty_string(config, "vpc_uuid")?,
            monitoring: attrs::boolean(config, "monitoring")?.unwrap_or(false),
            ipv6: attrs::boolean(config, "ipv6")?.unwrap_or(false),
            backups: attrs::boolean(config, "backups")?.unwrap_or(false),
            resize_disk: attrs::boolean(config, "resize_disk")?.unwrap_or(true),
            graceful_shutdown: attrs::boolean(config, "graceful_shutdown")?.unwrap_or(false),
            droplet_agent: attrs::boolean(config, "droplet_agent")?,
            timeouts: timeouts(config)?,
        })
    }

    /// The `POST /v2/droplets` body, with berth's tags added.
    fn create_body(&self, berth_tags: &[String]) -> Value {
        let mut tags = self.tags.clone();
        tags.extend(berth_tags.iter().cloned());
        let mut body = json!({
            "name": self.name,
            "size": self.size,
            "image": id_or_slug(&self.image),
            "ssh_keys": self.ssh_keys.iter().map(|k| id_or_slug(k)).collect::<Vec<_>>(),
            "backups": self.backups,
            "ipv6": self.ipv6,
            "monitoring": self.monitoring,
            "tags": tags,
        });
        if let Some(map) = body.as_object_mut() {
            if let Some(region) = &self.region {
                map.insert("region".into(), Value::from(region.as_str()));
            }
            if let Some(user_data) = &self.user_data {
                map.insert("user_data".into(), Value::from(user_data.as_str()));
            }
            if let Some(vpc) = &self.vpc_uuid {
                map.insert("vpc_uuid".into(), Value::from(vpc.as_str()));
            }
            if let Some(agent) = self.droplet_agent {
                map.insert("with_droplet_agent".into(), Value::from(agent));
            }
        }
        body
    }
}

/// Image and SSH key references: a number is an id, anything else a slug
/// or fingerprint.
fn id_or_slug(s: &str) -> Value {
    match s.parse::<u64>() {
        Ok(n) if !s.starts_with('0') || s == "0" => Value::from(n),
        _ => Value::from(s),
    }
}

/// DigitalOcean's droplet name rule:
/// `^[a-zA-Z0-9]?[a-z0-9A-Z.\-]*[a-z0-9A-Z]$`, at most 255 characters.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric())
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
            "must be a hostname: letters, digits, `.` and `-`, ending in a letter or digit, \
             at most 255 characters"
                .to_owned(),
        );
    }
    match attrs::string_list(config, "tags") {
        Ok(Some(tags)) => {
            for p in ownership::check_user_tags(&tags) {
                problem("tags", p);
            }
        }
        Ok(None) => {}
        Err(e) => problem("tags", e.to_string()),
    }
    if let Ok(Some(user_data)) = attrs::string(config, "user_data")
        && user_data.len() > MAX_USER_DATA
    {
        problem(
            "user_data",
            format!(
                "is {} bytes; DigitalOcean accepts at most {MAX_USER_DATA}",
                user_data.len()
            ),
        );
    }
    if let Ok(Some(keys)) = attrs::string_list(config, "ssh_keys")
        && keys.iter().any(|k| k.trim().is_empty())
    {
        problem(
            "ssh_keys",
            "entries must be SSH key ids or fingerprints, not empty".to_owned(),
        );
    }
    if let Err(e) = timeouts(config) {
        problem("timeouts", e.to_string());
    }
    problems
}

/// Plan time: sorts the set-like lists (`tags`, `ssh_keys`) so that their
/// order is not a change, and fills the defaults.
pub(crate) fn prepare(config: &mut Attrs) -> Result<(), ProviderError> {
    let tags = attrs::string_set(config, "tags")?;
    config.insert("tags".into(), attrs::list_value(&tags));
    if config.get("ssh_keys").is_some_and(|v| !v.is_null()) {
        let keys = attrs::string_set(config, "ssh_keys")?;
        config.insert("ssh_keys".into(), attrs::list_value(&keys));
    }
    for (key, default) in [
        ("monitoring", false),
        ("ipv6", false),
        ("backups", false),
        ("resize_disk", true),
        ("graceful_shutdown", false),
    ] {
        if config.get(key).is_none_or(Value::is_null) {
            config.insert(key.into(), Value::from(default));
        }
    }
    Ok(())
}

fn has_feature(droplet: &Value, feature: &str) -> bool {
    attrs::json_strings(droplet.get("features"))
        .iter()
        .any(|f| f == feature)
}

fn ip(droplet: &Value, family: &str, kind: &str) -> Option<String> {
    droplet
        .pointer(&format!("/networks/{family}"))
        .and_then(Value::as_array)?
        .iter()
        .find(|n| n.get("type").and_then(Value::as_str) == Some(kind))
        .and_then(|n| n.get("ip_address"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn status(droplet: &Value) -> String {
    droplet
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_owned()
}

/// What the API shows of a droplet, under the schema's names: the computed
/// attributes plus those refresh compares (`name`, `size`, `tags`,
/// `monitoring`, `backups`, `ipv6`, `vpc_uuid`, `region`).
fn read_back(droplet: &Value) -> Attrs {
    let mut a = Attrs::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v.filter(|v| !v.is_null()) {
            a.insert(k.to_owned(), v);
        }
    };
    let id = attrs::json_text(droplet.get("id"));
    put("id", id.clone().map(Value::from));
    put("urn", id.map(|id| Value::from(format!("do:droplet:{id}"))));
    put("name", droplet.get("name").cloned());
    put(
        "size",
        droplet
            .get("size_slug")
            .or_else(|| droplet.pointer("/size/slug"))
            .cloned(),
    );
    put("status", droplet.get("status").cloned());
    put("ipv4_address", ip(droplet, "v4", "public").map(Value::from));
    put(
        "ipv4_address_private",
        ip(droplet, "v4", "private").map(Value::from),
    );
    let v6 = ip(droplet, "v6", "public");
    put("ipv6", v6.as_ref().map(|_| Value::from(true)));
    put("ipv6_address", v6.map(|v| Value::from(v.to_lowercase())));
    put("memory", droplet.get("memory").cloned());
    put("vcpus", droplet.get("vcpus").cloned());
    put("disk", droplet.get("disk").cloned());
    put("locked", droplet.get("locked").cloned());
    put("created_at", droplet.get("created_at").cloned());
    put(
        "price_hourly",
        droplet.pointer("/size/price_hourly").cloned(),
    );
    put(
        "price_monthly",
        droplet.pointer("/size/price_monthly").cloned(),
    );
    put("vpc_uuid", droplet.get("vpc_uuid").cloned());
    put("region", droplet.pointer("/region/slug").cloned());
    let tags = ownership::user_tags(&attrs::json_strings(droplet.get("tags")));
    put("tags", Some(attrs::list_value(&attrs::sorted_set(tags))));
    put(
        "monitoring",
        Some(Value::from(has_feature(droplet, "monitoring"))),
    );
    put(
        "backups",
        Some(Value::from(has_feature(droplet, "backups"))),
    );
    a
}

/// The configuration plus what only the API knows. `region` and
/// `vpc_uuid` are taken from the API only when the configuration leaves
/// them out (a region prefix like `nyc` stays as written).
fn applied(config: &Attrs, droplet: &Value) -> Result<Applied, ProviderError> {
    let seen = read_back(droplet);
    let id = seen
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| ProviderError::Api("DigitalOcean API: a droplet without an id".into()))?;
    let schema = schema();
    let mut out = config.clone();
    for (k, v) in seen {
        let computed_only = schema
            .attribute(&k)
            .is_some_and(|a| a.computed && !a.optional && !a.required);
        let fills_gap = matches!(k.as_str(), "region" | "vpc_uuid")
            && config.get(&k).is_none_or(Value::is_null);
        if computed_only || fills_gap {
            out.insert(k, v);
        }
    }
    Ok(Applied { id, attrs: out })
}

async fn get_droplet(api: &Api, id: &str) -> Result<Value, crate::client::ApiError> {
    let answer = api
        .get(&["v2", "droplets", id], &format!("read droplet {id}"))
        .await?;
    Ok(answer.get("droplet").cloned().unwrap_or(Value::Null))
}

fn human(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs / 60, secs % 60) {
        (0, 0) => format!("{}ms", d.as_millis()),
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

/// Polls the droplet until it is `active` with a public IPv4, reporting each
/// new state through `progress`.
async fn wait_active(
    api: &Api,
    id: &str,
    name: &str,
    timeout: Duration,
    setting: &str,
    progress: Progress<'_>,
) -> Result<Value, ProviderError> {
    let deadline = Instant::now() + timeout;
    let mut poller = Poller::new(api.timing);
    let mut last_line = String::new();
    let mut last_state = "not visible yet".to_owned();
    loop {
        match get_droplet(api, id).await {
            Ok(droplet) => {
                let status = status(&droplet);
                let has_ip = ip(&droplet, "v4", "public").is_some();
                if status == "active" && has_ip {
                    return Ok(droplet);
                }
                let line = if status == "active" {
                    "status active, waiting for a public IPv4 address".to_owned()
                } else {
                    format!("status {status}, waiting for active")
                };
                last_state = if status == "active" {
                    "active without a public IPv4 address".to_owned()
                } else {
                    format!("status {status}")
                };
                if line != last_line {
                    progress(&line);
                    last_line = line;
                }
            }
            // Right after the create call the droplet may not be listed yet.
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.context(format!("cannot read droplet {name} (id {id})"))),
        }
        if !poller.pause(deadline).await {
            return Err(ProviderError::Timeout(format!(
                "droplet {name} (id {id}) did not become active with a public IPv4 address \
                 within {} ({setting}); it is {last_state}. It exists and carries berth's tags: \
                 the next plan finds it and adopts it if the configuration is unchanged",
                human(timeout)
            )));
        }
    }
}

/// Creates the droplet and waits until it is active with a public IPv4.
pub(crate) async fn create(
    api: &Api,
    req: &ApplyRequest<'_>,
    progress: Progress<'_>,
) -> Result<Applied, ProviderError> {
    let spec = Spec::parse(req.config)?;
    let berth_tags = ownership::tags_for(Kind::Droplet, req.owner, req.address, req.config_hash)?;
    let answer = api
        .call(
            Method::POST,
            api.url(&["v2", "droplets"]),
            Some(&spec.create_body(&berth_tags)),
            &format!("create droplet {}", spec.name),
        )
        .await
        .map_err(|e| e.context(format!("cannot create droplet {}", spec.name)))?;
    let id = answer
        .pointer("/droplet/id")
        .and_then(|v| attrs::json_text(Some(v)))
        .ok_or_else(|| {
            ProviderError::Api(format!(
                "DigitalOcean API: droplet {} was accepted without an id",
                spec.name
            ))
        })?;
    progress(&format!(
        "droplet {id} created (status {}), waiting for active",
        answer
            .pointer("/droplet/status")
            .and_then(Value::as_str)
            .unwrap_or("new")
    ));
    let droplet = wait_active(
        api,
        &id,
        &spec.name,
        spec.timeouts.create,
        "timeouts.create",
        progress,
    )
    .await?;
    applied(req.config, &droplet)
}

/// Updates what can change in place, in Terraform's order: name, size,
/// backups, tags; then reads the droplet back.
pub(crate) async fn update(
    api: &Api,
    req: &ApplyRequest<'_>,
    progress: Progress<'_>,
) -> Result<Applied, ProviderError> {
    let spec = Spec::parse(req.config)?;
    let id = req
        .prior_id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ProviderError::Api("cannot update a droplet without its id".into()))?;
    let deadline = Instant::now() + spec.timeouts.update;
    let droplet = get_droplet(api, id)
        .await
        .map_err(|e| e.context(format!("cannot read droplet {id}")))?;

    let current_name = droplet.get("name").and_then(Value::as_str).unwrap_or("");
    if current_name != spec.name {
        progress(&format!("renaming {current_name} to {}", spec.name));
        api.droplet_action(
            id,
            json!({"type": "rename", "name": spec.name}),
            deadline,
            progress,
        )
        .await?;
    }

    let current_size = attrs::json_text(droplet.get("size_slug")).unwrap_or_default();
    if current_size != spec.size {
        resize(api, id, &spec, &droplet, &current_size, deadline, progress).await?;
    }

    if has_feature(&droplet, "backups") != spec.backups {
        let kind = if spec.backups {
            "enable_backups"
        } else {
            "disable_backups"
        };
        progress(&kind.replace('_', " "));
        api.droplet_action(id, json!({ "type": kind }), deadline, progress)
            .await?;
    }

    // Tags: add first (berth's new config-hash tag included), then remove,
    // so that the droplet never stops being berth's.
    let current = attrs::json_strings(droplet.get("tags"));
    let mut wanted = spec.tags.clone();
    wanted.extend(ownership::tags_for(
        Kind::Droplet,
        req.owner,
        req.address,
        req.config_hash,
    )?);
    let has = |list: &[String], t: &str| list.iter().any(|x| x.eq_ignore_ascii_case(t));
    let add: Vec<&String> = wanted.iter().filter(|t| !has(&current, t)).collect();
    let mut remove: Vec<String> = ownership::user_tags(&current)
        .into_iter()
        .filter(|t| !has(&spec.tags, t))
        .collect();
    remove.extend(
        ownership::berth_tags_of(Kind::Droplet, &current)
            .into_iter()
            .filter(|t| !has(&wanted, t)),
    );
    for tag in add {
        if !ownership::is_berth_tag(tag) {
            progress(&format!("tagging {tag}"));
        }
        api.ensure_tag(tag).await?;
        api.tag_droplet(tag, id, true).await?;
    }
    for tag in &remove {
        if !ownership::is_berth_tag(tag) {
            progress(&format!("untagging {tag}"));
        }
        api.tag_droplet(tag, id, false).await?;
    }

    let droplet = get_droplet(api, id)
        .await
        .map_err(|e| e.context(format!("cannot read droplet {id}")))?;
    applied(req.config, &droplet)
}

/// Resizes as Terraform does: power off (gracefully first if asked), resize,
/// power on again when the droplet was running.
async fn resize(
    api: &Api,
    id: &str,
    spec: &Spec,
    droplet: &Value,
    from: &str,
    deadline: Instant,
    progress: Progress<'_>,
) -> Result<(), ProviderError> {
    let was_on = status(droplet) != "off";
    if was_on {
        let mut off = false;
        if spec.graceful_shutdown {
            progress("shutting down for the resize");
            let grace = deadline.min(Instant::now() + SHUTDOWN_GRACE);
            match api
                .droplet_action(id, json!({"type": "shutdown"}), grace, progress)
                .await
            {
                Ok(()) => off = true,
                Err(e) => progress(&format!("shutdown did not finish ({e}); powering off")),
            }
        }
        if !off {
            progress("powering off for the resize");
            api.droplet_action(id, json!({"type": "power_off"}), deadline, progress)
                .await?;
        }
    }
    progress(&format!("resizing from {from} to {}", spec.size));
    api.droplet_action(
        id,
        json!({"type": "resize", "size": spec.size, "disk": spec.resize_disk}),
        deadline,
        progress,
    )
    .await?;
    if was_on {
        progress("powering on");
        api.droplet_action(id, json!({"type": "power_on"}), deadline, progress)
            .await?;
        let left = deadline.saturating_duration_since(Instant::now());
        wait_active(api, id, &spec.name, left, "timeouts.update", progress).await?;
    }
    Ok(())
}

/// Deletes the droplet and waits until reading it answers 404.
pub(crate) async fn delete(
    api: &Api,
    req: &DeleteRequest<'_>,
    progress: Progress<'_>,
) -> Result<(), ProviderError> {
    let id = req.id;
    if id.is_empty() {
        return Err(ProviderError::Api(
            "cannot delete a droplet without its id".into(),
        ));
    }
    let timeout = timeouts(req.attrs)
        .map(|t| t.delete)
        .unwrap_or(DEFAULT_DELETE_TIMEOUT);
    match api
        .call(
            Method::DELETE,
            api.url(&["v2", "droplets", id]),
            None,
            &format!("delete droplet {id}"),
        )
        .await
    {
        Ok(_) => {}
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e.context(format!("cannot delete droplet {id}"))),
    }
    progress("destroy requested, waiting for the droplet to be gone");
    let deadline = Instant::now() + timeout;
    let mut poller = Poller::new(api.timing);
    loop {
        if !poller.pause(deadline).await {
            return Err(ProviderError::Timeout(format!(
                "droplet {id} still exists {} after it was deleted (timeouts.delete)",
                human(timeout)
            )));
        }
        match get_droplet(api, id).await {
            Err(e) if e.is_not_found() => return Ok(()),
            Ok(droplet) => tracing::debug!(droplet = id, status = %status(&droplet), "still there"),
            Err(e) => return Err(e.context(format!("cannot read droplet {id}"))),
        }
    }
}

/// Lists the owner's droplets: one paged `GET /v2/droplets?tag_name=...`.
pub(crate) async fn refresh(api: &Api, owner: &Ownership) -> Result<Vec<Observed>, ProviderError> {
    let tag = ownership::lineage_tag(Kind::Droplet, owner);
    let droplets = api
        .list_all(
            &["v2", "droplets"],
            &[("tag_name", &tag)],
            "droplets",
            "list droplets",
        )
        .await
        .map_err(|e| e.context("cannot list droplets"))?;
    let mut observed = Vec::new();
    for droplet in droplets {
        let tags = attrs::json_strings(droplet.get("tags"));
        let Some(marks) = ownership::owned_marks(Kind::Droplet, owner, &tags) else {
            continue;
        };
        let Some(address) = marks.address.filter(|a| attrs::address_is_type(a, TYPE)) else {
            continue;
        };
        let mut attrs = read_back(&droplet);
        // A region prefix in the configuration (`nyc`) would never equal the
        // slug (`nyc3`), and a droplet cannot move: region is not compared.
        attrs.remove("region");
        let Some(id) = attrs.get("id").and_then(Value::as_str).map(str::to_owned) else {
            continue;
        };
        observed.push(Observed {
            address,
            id,
            attrs,
            config_hash: marks.config_hash,
        });
    }
    observed.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(observed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_api_pattern() {
        assert!(valid_name("web-1.example.com"));
        assert!(valid_name("a"));
        assert!(!valid_name("web_1"));
        assert!(!valid_name("web-"));
        assert!(!valid_name(""));
    }

    #[test]
    fn ids_and_slugs() {
        assert_eq!(id_or_slug("123"), json!(123));
        assert_eq!(id_or_slug("ubuntu-24-04-x64"), json!("ubuntu-24-04-x64"));
        assert_eq!(id_or_slug("3b:16:bf"), json!("3b:16:bf"));
    }

    #[test]
    fn replacement_follows_terraform() {
        let s = schema();
        for name in [
            "image",
            "region",
            "ssh_keys",
            "user_data",
            "vpc_uuid",
            "monitoring",
            "ipv6",
        ] {
            assert!(s.forces_replacement(name), "{name}");
        }
        for name in ["name", "size", "tags", "backups", "timeouts"] {
            assert!(!s.forces_replacement(name), "{name}");
        }
    }

    #[test]
    fn read_back_hides_berth_tags() {
        let d = json!({
            "id": 7, "name": "web", "status": "active", "size_slug": "s-1vcpu-1gb",
            "features": ["monitoring"],
            "tags": ["web", "berth-env:prod", "app"],
            "networks": {"v4": [
                {"ip_address": "10.0.0.2", "type": "private"},
                {"ip_address": "203.0.113.7", "type": "public"}
            ], "v6": []}
        });
        let a = read_back(&d);
        assert_eq!(a["id"], json!("7"));
        assert_eq!(a["urn"], json!("do:droplet:7"));
        assert_eq!(a["tags"], json!(["app", "web"]));
        assert_eq!(a["ipv4_address"], json!("203.0.113.7"));
        assert_eq!(a["ipv4_address_private"], json!("10.0.0.2"));
        assert_eq!(a["monitoring"], json!(true));
        assert!(!a.contains_key("ipv6"));
    }
}
