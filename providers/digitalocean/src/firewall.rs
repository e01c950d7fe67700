//! `digitalocean_firewall`: a cloud firewall (`/v2/firewalls`), with
//! Terraform's attribute names: `name`, `droplet_ids`, `tags` (the droplet
//! tags the firewall applies to), `inbound_rule { protocol, port_range,
//! source_addresses, source_droplet_ids, source_load_balancer_uids,
//! source_kubernetes_ids, source_tags }` and `outbound_rule { protocol,
//! port_range, destination_addresses, destination_droplet_ids,
//! destination_load_balancer_uids, destination_kubernetes_ids,
//! destination_tags }`; computed `id`, `status`, `created_at`.
//!
//! Everything updates in place with one `PUT` of the whole firewall, as in
//! Terraform. Rules and the lists inside them are sets: berth sorts them at
//! plan time so that their order is never a change. `port_range = "all"`
//! (or `"1-65535"`, or `"0"`) means every port and is shown as `"all"`;
//! ICMP rules have no `port_range`.
//!
//! Ownership: the firewall's `tags` attach it to droplets, so berth marks
//! it with `berth-fw-env:`, `berth-fw-lineage:`, `berth-fw-addr:` and
//! `berth-fw-cfg:` tags, which no droplet carries (see
//! [`crate::ownership`]). They are created with `POST /v2/tags` first (a
//! firewall may only name existing tags; configured `tags` are created the
//! same way) and kept in every `PUT`. The API cannot filter firewalls by
//! tag, so refresh is one paged list of all firewalls, filtered by berth.

use berth_provider::{
    Applied, ApplyRequest, AttrProblem, AttrSchema, AttrType, Attrs, BlockSchema, DeleteRequest,
    Nesting, Observed, Ownership, ProviderError, ResourceSchema, Value,
};
use reqwest::Method;
use serde_json::{Map, json};

use crate::attrs;
use crate::client::Api;
use crate::ownership::{self, Kind};

/// The resource type name.
pub(crate) const TYPE: &str = "digitalocean_firewall";

/// The target lists of a rule: Terraform's suffix and the API's key.
const TARGETS: [(&str, &str); 5] = [
    ("addresses", "addresses"),
    ("droplet_ids", "droplet_ids"),
    ("load_balancer_uids", "load_balancer_uids"),
    ("kubernetes_ids", "kubernetes_ids"),
    ("tags", "tags"),
];

/// Inbound or outbound: the block name, the attribute prefix, the API's
/// list and target object keys.
#[derive(Clone, Copy)]
struct Direction {
    block: &'static str,
    prefix: &'static str,
    api_rules: &'static str,
    api_target: &'static str,
}

const INBOUND: Direction = Direction {
    block: "inbound_rule",
    prefix: "source_",
    api_rules: "inbound_rules",
    api_target: "sources",
};

const OUTBOUND: Direction = Direction {
    block: "outbound_rule",
    prefix: "destination_",
    api_rules: "outbound_rules",
    api_target: "destinations",
};

fn rule_block(dir: Direction, names: [&'static str; 5]) -> BlockSchema {
    let mut attributes = vec![
        AttrSchema::required("protocol", AttrType::String),
        AttrSchema::optional("port_range", AttrType::String),
    ];
    attributes.extend(
        names
            .into_iter()
            .map(|n| AttrSchema::optional(n, AttrType::ListOfString)),
    );
    BlockSchema {
        name: dir.block,
        nesting: Nesting::List,
        force_new: false,
        attributes,
        blocks: vec![],
    }
}

/// The schema of `digitalocean_firewall`.
pub(crate) fn schema() -> ResourceSchema {
    ResourceSchema {
        type_name: TYPE,
        attributes: vec![
            AttrSchema::required("name", AttrType::String),
            AttrSchema::optional("droplet_ids", AttrType::ListOfString).default("[]"),
            AttrSchema::optional("tags", AttrType::ListOfString).default("[]"),
            AttrSchema::computed("id", AttrType::String),
            AttrSchema::computed("status", AttrType::String),
            AttrSchema::computed("created_at", AttrType::String),
        ],
        blocks: vec![
            rule_block(
                INBOUND,
                [
                    "source_addresses",
                    "source_droplet_ids",
                    "source_load_balancer_uids",
                    "source_kubernetes_ids",
                    "source_tags",
                ],
            ),
            rule_block(
                OUTBOUND,
                [
                    "destination_addresses",
                    "destination_droplet_ids",
                    "destination_load_balancer_uids",
                    "destination_kubernetes_ids",
                    "destination_tags",
                ],
            ),
        ],
    }
}

/// `all`, `0` and `1-65535` are every port.
fn is_all_ports(p: &str) -> bool {
    matches!(p.trim(), "all" | "0" | "1-65535")
}

fn valid_port_range(p: &str) -> bool {
    let port = |s: &str| s.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n));
    if is_all_ports(p) {
        return true;
    }
    match p.split_once('-') {
        Some((a, b)) => port(a) && port(b) && a.parse::<u32>().ok() <= b.parse::<u32>().ok(),
        None => port(p),
    }
}

/// One rule in berth's canonical form: Terraform's names, lowercase
/// protocol, `all` for every port, no `port_range` for ICMP, sorted lists,
/// empty lists left out.
fn canonical_rule(dir: Direction, rule: &Attrs) -> Result<Value, ProviderError> {
    let mut out = Map::new();
    let protocol = attrs::string(rule, "protocol")?
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if protocol != "icmp"
        && let Some(p) = attrs::non_empty_string(rule, "port_range")?
    {
        let p = if is_all_ports(&p) {
            "all".to_owned()
        } else {
            p.trim().to_owned()
        };
        out.insert("port_range".into(), Value::from(p));
    }
    out.insert("protocol".into(), Value::from(protocol));
    for (suffix, _) in TARGETS {
        let key = format!("{}{suffix}", dir.prefix);
        let items = attrs::string_set(rule, &key).map_err(|_| {
            ProviderError::Config(format!("`{}.{key}` must be a list of strings", dir.block))
        })?;
        if !items.is_empty() {
            out.insert(key, attrs::list_value(&items));
        }
    }
    Ok(Value::Object(out))
}

fn sort_rules(mut rules: Vec<Value>) -> Vec<Value> {
    rules.sort_by_key(|r| r.to_string());
    rules.dedup();
    rules
}

fn canonical_rules(dir: Direction, config: &Attrs) -> Result<Vec<Value>, ProviderError> {
    let rules = attrs::blocks(config, dir.block)?
        .iter()
        .map(|r| canonical_rule(dir, r))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(sort_rules(rules))
}

/// A canonical rule as the API wants it.
fn api_rule(dir: Direction, rule: &Value) -> Result<Value, ProviderError> {
    let protocol = rule.get("protocol").and_then(Value::as_str).unwrap_or("");
    let ports = match rule.get("port_range").and_then(Value::as_str) {
        Some(p) if !is_all_ports(p) => p.to_owned(),
        _ => "0".to_owned(),
    };
    let mut target = Map::new();
    for (suffix, api_key) in TARGETS {
        let items = attrs::json_strings(rule.get(format!("{}{suffix}", dir.prefix)));
        if items.is_empty() {
            continue;
        }
        let value = if suffix == "droplet_ids" {
            Value::Array(
                items
                    .iter()
                    .map(|i| droplet_id(i, &format!("{}.{}{suffix}", dir.block, dir.prefix)))
                    .collect::<Result<_, _>>()?,
            )
        } else {
            attrs::list_value(&items)
        };
        target.insert(api_key.into(), value);
    }
    Ok(json!({
        "protocol": protocol,
        "ports": ports,
        dir.api_target: Value::Object(target),
    }))
}

/// An API rule in berth's canonical form.
fn from_api_rule(dir: Direction, rule: &Value) -> Value {
    let mut a = Attrs::new();
    if let Some(p) = rule.get("protocol") {
        a.insert("protocol".into(), p.clone());
    }
    if let Some(p) = attrs::json_text(rule.get("ports")) {
        a.insert("port_range".into(), Value::from(p));
    }
    let target = rule.get(dir.api_target);
    for (suffix, api_key) in TARGETS {
        let items = attrs::json_strings(target.and_then(|t| t.get(api_key)));
        a.insert(format!("{}{suffix}", dir.prefix), attrs::list_value(&items));
    }
    canonical_rule(dir, &a).unwrap_or(Value::Null)
}

fn droplet_id(s: &str, key: &str) -> Result<Value, ProviderError> {
    s.trim().parse::<u64>().map(Value::from).map_err(|_| {
        ProviderError::Config(format!("`{key}`: `{s}` is not a droplet id (a number)"))
    })
}

/// `^[a-zA-Z0-9][a-zA-Z0-9\.-]+$`
fn valid_name(name: &str) -> bool {
    name.len() >= 2
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
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
            "must start with a letter or digit and hold only letters, digits, `.` and `-` \
             (at least 2 characters)"
                .to_owned(),
        );
    }
    if let Ok(Some(tags)) = attrs::string_list(config, "tags") {
        for p in ownership::check_user_tags(&tags) {
            problem("tags", p);
        }
    }
    if let Ok(Some(ids)) = attrs::string_list(config, "droplet_ids") {
        for id in ids {
            if let Err(e) = droplet_id(&id, "droplet_ids") {
                problem("droplet_ids", e.to_string());
            }
        }
    }
    for dir in [INBOUND, OUTBOUND] {
        let rules = match attrs::blocks(config, dir.block) {
            Ok(r) => r,
            Err(e) => {
                problem(dir.block, e.to_string());
                continue;
            }
        };
        for rule in rules {
            let protocol = attrs::string(&rule, "protocol")
                .ok()
                .flatten()
                .unwrap_or_default()
                .to_ascii_lowercase();
            if !matches!(protocol.as_str(), "tcp" | "udp" | "icmp") {
                problem(
                    dir.block,
                    format!("`protocol` must be tcp, udp or icmp, got `{protocol}`"),
                );
                continue;
            }
            match attrs::non_empty_string(&rule, "port_range").ok().flatten() {
                None if protocol != "icmp" => problem(
                    dir.block,
                    format!(
                        "`port_range` is required for {protocol} rules (e.g. \"22\", \"8000-9000\", \"all\")"
                    ),
                ),
                Some(p) if protocol != "icmp" && !valid_port_range(&p) => problem(
                    dir.block,
                    format!("`port_range` `{p}` must be a port, a range like 8000-9000, or all"),
                ),
                _ => {}
            }
            let ids_key = format!("{}droplet_ids", dir.prefix);
            if let Ok(Some(ids)) = attrs::string_list(&rule, &ids_key) {
                for id in ids {
                    if let Err(e) = droplet_id(&id, &format!("{}.{ids_key}", dir.block)) {
                        problem(dir.block, e.to_string());
                    }
                }
            }
        }
    }
    problems
}

/// Plan time: puts the rules, `droplet_ids` and `tags` into their sorted,
/// canonical form.
pub(crate) fn prepare(config: &mut Attrs) -> Result<(), ProviderError> {
    for key in ["droplet_ids", "tags"] {
        let set = attrs::string_set(config, key)?;
        config.insert(key.into(), attrs::list_value(&set));
    }
    let mut any = false;
    for dir in [INBOUND, OUTBOUND] {
        let rules = canonical_rules(dir, config)?;
        any |= !rules.is_empty();
        config.insert(dir.block.into(), Value::Array(rules));
    }
    if !any {
        return Err(no_rules());
    }
    Ok(())
}

fn no_rules() -> ProviderError {
    ProviderError::Config("a firewall needs at least one inbound_rule or outbound_rule".to_owned())
}

/// The whole firewall as `POST` and `PUT` want it.
fn body(config: &Attrs, berth_tags: &[String]) -> Result<(Value, Vec<String>), ProviderError> {
    let name = attrs::required_string(config, "name")?;
    let user_tags = attrs::string_set(config, "tags")?;
    if let Some(p) = ownership::check_user_tags(&user_tags).into_iter().next() {
        return Err(ProviderError::Config(format!("`tags`: {p}")));
    }
    let mut tags = user_tags;
    tags.extend(berth_tags.iter().cloned());
    let droplet_ids = attrs::string_set(config, "droplet_ids")?
        .iter()
        .map(|i| droplet_id(i, "droplet_ids"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut rules = Map::new();
    let mut any = false;
    for dir in [INBOUND, OUTBOUND] {
        let list = canonical_rules(dir, config)?
            .iter()
            .map(|r| api_rule(dir, r))
            .collect::<Result<Vec<_>, _>>()?;
        any |= !list.is_empty();
        rules.insert(dir.api_rules.into(), Value::Array(list));
    }
    if !any {
        return Err(no_rules());
    }
    let mut body = json!({
        "name": name,
        "droplet_ids": droplet_ids,
        "tags": tags,
    });
    if let Some(map) = body.as_object_mut() {
        map.extend(rules);
    }
    Ok((body, tags))
}

fn applied(config: &Attrs, firewall: &Value) -> Result<Applied, ProviderError> {
    let id = attrs::json_text(firewall.get("id"))
        .ok_or_else(|| ProviderError::Api("DigitalOcean API: a firewall without an id".into()))?;
    let mut out = config.clone();
    out.insert("id".into(), Value::from(id.clone()));
    for key in ["status", "created_at"] {
        if let Some(v) = firewall.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v.clone());
        }
    }
    Ok(Applied { id, attrs: out })
}

/// Creates the firewall (after creating the tags it names).
pub(crate) async fn create(api: &Api, req: &ApplyRequest<'_>) -> Result<Applied, ProviderError> {
    let berth_tags = ownership::tags_for(Kind::Firewall, req.owner, req.address, req.config_hash)?;
    let (body, tags) = body(req.config, &berth_tags)?;
    let name = body.get("name").and_then(Value::as_str).unwrap_or("");
    for tag in &tags {
        api.ensure_tag(tag).await?;
    }
    let answer = api
        .call(
            Method::POST,
            api.url(&["v2", "firewalls"]),
            Some(&body),
            &format!("create firewall {name}"),
        )
        .await
        .map_err(|e| e.context(format!("cannot create firewall {name}")))?;
    let firewall = answer.get("firewall").ok_or_else(|| {
        ProviderError::Api("DigitalOcean API: the firewall was created but not returned".into())
    })?;
    applied(req.config, firewall)
}

/// Replaces the firewall's rules, droplets and tags with one `PUT`.
pub(crate) async fn update(api: &Api, req: &ApplyRequest<'_>) -> Result<Applied, ProviderError> {
    let id = req
        .prior_id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ProviderError::Api("cannot update a firewall without its id".into()))?;
    let berth_tags = ownership::tags_for(Kind::Firewall, req.owner, req.address, req.config_hash)?;
    let (body, tags) = body(req.config, &berth_tags)?;
    for tag in &tags {
        api.ensure_tag(tag).await?;
    }
    let answer = api
        .call(
            Method::PUT,
            api.url(&["v2", "firewalls", id]),
            Some(&body),
            &format!("update firewall {id}"),
        )
        .await
        .map_err(|e| e.context(format!("cannot update firewall {id}")))?;
    let firewall = answer.get("firewall").ok_or_else(|| {
        ProviderError::Api("DigitalOcean API: the firewall was updated but not returned".into())
    })?;
    applied(req.config, firewall)
}

/// Deletes the firewall; one that is already gone is fine.
pub(crate) async fn delete(api: &Api, req: &DeleteRequest<'_>) -> Result<(), ProviderError> {
    let id = req.id;
    if id.is_empty() {
        return Err(ProviderError::Api(
            "cannot delete a firewall without its id".into(),
        ));
    }
    match api
        .call(
            Method::DELETE,
            api.url(&["v2", "firewalls", id]),
            None,
            &format!("delete firewall {id}"),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.context(format!("cannot delete firewall {id}"))),
    }
}

/// Lists every firewall (one paged call; the API has no tag filter for
/// them) and keeps the owner's.
pub(crate) async fn refresh(api: &Api, owner: &Ownership) -> Result<Vec<Observed>, ProviderError> {
    let firewalls = api
        .list_all(&["v2", "firewalls"], &[], "firewalls", "list firewalls")
        .await
        .map_err(|e| e.context("cannot list firewalls"))?;
    let mut observed = Vec::new();
    for firewall in firewalls {
        let tags = attrs::json_strings(firewall.get("tags"));
        let Some(marks) = ownership::owned_marks(Kind::Firewall, owner, &tags) else {
            continue;
        };
        let Some(address) = marks.address.filter(|a| attrs::address_is_type(a, TYPE)) else {
            continue;
        };
        let Some(id) = attrs::json_text(firewall.get("id")) else {
            continue;
        };
        let mut a = Attrs::new();
        a.insert("id".into(), Value::from(id.clone()));
        if let Some(name) = firewall.get("name") {
            a.insert("name".into(), name.clone());
        }
        for key in ["status", "created_at"] {
            if let Some(v) = firewall.get(key).filter(|v| !v.is_null()) {
                a.insert(key.into(), v.clone());
            }
        }
        a.insert(
            "droplet_ids".into(),
            attrs::list_value(&attrs::sorted_set(attrs::json_strings(
                firewall.get("droplet_ids"),
            ))),
        );
        a.insert(
            "tags".into(),
            attrs::list_value(&attrs::sorted_set(ownership::user_tags(&tags))),
        );
        for dir in [INBOUND, OUTBOUND] {
            let rules = firewall
                .get(dir.api_rules)
                .and_then(Value::as_array)
                .map(|rs| rs.iter().map(|r| from_api_rule(dir, r)).collect())
                .unwrap_or_default();
            a.insert(dir.block.into(), Value::Array(sort_rules(rules)));
        }
        observed.push(Observed {
            address,
            id,
            attrs: a,
            config_hash: marks.config_hash,
        });
    }
    observed.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(observed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(v: Value) -> Attrs {
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    #[test]
    fn rules_round_trip_through_the_api_form() {
        let mut c = config(json!({
            "name": "web",
            "droplet_ids": ["12", "3"],
            "inbound_rule": [
                {"protocol": "tcp", "port_range": "80", "source_addresses": ["::/0", "0.0.0.0/0"], "source_tags": []},
                {"protocol": "ICMP", "port_range": "5", "source_addresses": ["0.0.0.0/0"]},
                {"protocol": "tcp", "port_range": "1-65535", "source_droplet_ids": ["9"]}
            ]
        }));
        prepare(&mut c).unwrap();
        assert_eq!(c["droplet_ids"], json!(["3", "12"]));
        assert_eq!(c["outbound_rule"], json!([]));
        let (body, _) = body(&c, &[]).unwrap();
        let back: Vec<Value> = sort_rules(
            body["inbound_rules"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| from_api_rule(INBOUND, r))
                .collect(),
        );
        assert_eq!(Value::Array(back), c["inbound_rule"]);
        assert!(
            body["inbound_rules"]
                .to_string()
                .contains(r#""droplet_ids":[9]"#)
        );
        assert!(
            c["inbound_rule"]
                .to_string()
                .contains(r#""port_range":"all""#)
        );
    }

    #[test]
    fn validation_names_the_block() {
        let c = config(json!({"name": "w", "inbound_rule": [{"protocol": "tcp"}]}));
        let problems = validate(&c);
        assert!(problems.iter().any(|p| p.attribute == "name"));
        assert!(
            problems
                .iter()
                .any(|p| p.attribute == "inbound_rule" && p.message.contains("port_range"))
        );
        let mut c = config(json!({"name": "web"}));
        assert!(
            prepare(&mut c)
                .unwrap_err()
                .to_string()
                .contains("at least one")
        );
    }
}
