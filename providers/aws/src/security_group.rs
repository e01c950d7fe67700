//! `aws_security_group`: a VPC security group with inline `ingress` and
//! `egress` rules.
//!
//! | attribute | change |
//! |---|---|
//! | `name`, `name_prefix`, `description`, `vpc_id` | replace |
//! | `ingress`, `egress` | in place: `RevokeSecurityGroupIngress`/`Egress` of the rules that went away, then `AuthorizeSecurityGroupIngress`/`Egress` of the new ones |
//! | `tags` | in place: `CreateTags` / `DeleteTags` |
//! | `revoke_rules_on_delete`, `timeouts` | berth's behaviour only |
//!
//! Computed: `id`, `arn`, `owner_id`, `tags_all` (equal to `tags`), and
//! `name` / `vpc_id` when left out.
//!
//! Rules are sets, as in Terraform. berth brings them into one canonical
//! form at plan time, which is also how refresh reports them, so order and
//! spelling never show as drift:
//! - every attribute present: `cidr_blocks`, `ipv6_cidr_blocks`,
//!   `prefix_list_ids`, `security_groups` (sorted lists, `[]` when unset),
//!   `self` (`false`), `description` (`""`);
//! - `protocol` lower-case, by name where there is one (`"6"` → `"tcp"`,
//!   `"17"` → `"udp"`, `"1"` → `"icmp"`, `"58"` → `"icmpv6"`) and `"-1"` for
//!   all (`"all"` is accepted); with `"-1"` both ports are 0;
//! - rules with the same protocol, ports and description are merged into
//!   one (AWS keeps a description per address, not per rule); rules are
//!   sorted by protocol, ports and description.
//!
//! As in Terraform, the allow-all egress rule AWS adds to a new group is
//! removed unless the configuration has it too, and a change of a rule's
//! description alone revokes and re-authorizes it.
//!
//! Where berth differs from Terraform:
//! - a group without `name` or `name_prefix` is named `berth-` and 20 hex
//!   digits derived from the state's lineage and the address (Terraform:
//!   `terraform-` and a timestamp); `description` defaults to "Managed by
//!   berth".
//! - `security_groups` in a rule are group ids (as Terraform recommends for
//!   VPC groups); names of EC2-Classic groups are not supported.
//! - deleting retries `DependencyViolation` (an instance still using the
//!   group is terminating) until `timeouts.delete` (default 15m, as in
//!   Terraform).
//!
//! Ownership: berth's tags are set at creation (`TagSpecification` of type
//! `security-group`); refresh is one paged `DescribeSecurityGroups`
//! filtered by them; an existing group of the configured name is adopted
//! only when its tags name the same owner and address.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use berth_provider::http::Idempotency;
use berth_provider::{
    Applied, ApplyRequest, AttrProblem, AttrSchema, AttrType, Attrs, BlockSchema, DeleteRequest,
    Nesting, Observed, Ownership, Progress, ProviderError, ResourceSchema, Value,
};
use serde::Deserialize;
use serde_json::Map;

use crate::attrs;
use crate::client::{Api, ApiError, Paged, Params, Poller, human};
use crate::duration::{timeout, timeouts_block};
use crate::settings::partition;
use crate::tags;
use crate::xml::{Items, Tag, present, tag_map};

/// The resource type name.
pub(crate) const TYPE: &str = "aws_security_group";

const DEFAULT_DESCRIPTION: &str = "Managed by berth";
const DEFAULT_CREATE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const DEFAULT_DELETE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// The largest `MaxResults` of `DescribeSecurityGroups`.
const PAGE: u32 = 1000;

fn rule_block(name: &'static str) -> BlockSchema {
    use AttrType::*;
    let o = AttrSchema::optional;
    BlockSchema {
        name,
        nesting: Nesting::List,
        force_new: false,
        attributes: vec![
            AttrSchema::required("from_port", Number),
            AttrSchema::required("to_port", Number),
            AttrSchema::required("protocol", String),
            o("cidr_blocks", ListOfString),
            o("ipv6_cidr_blocks", ListOfString),
            o("prefix_list_ids", ListOfString),
            o("security_groups", ListOfString),
            o("self", Bool),
            o("description", String),
        ],
        blocks: vec![],
    }
}

/// The schema of `aws_security_group`.
pub(crate) fn schema() -> ResourceSchema {
    use AttrType::*;
    let o = AttrSchema::optional;
    let c = AttrSchema::computed;
    ResourceSchema {
        type_name: TYPE,
        attributes: vec![
            o("name", String).and_computed().force_new(),
            o("name_prefix", String).force_new(),
            o("description", String)
                .default("\"Managed by berth\"")
                .force_new(),
            o("vpc_id", String).and_computed().force_new(),
            o("revoke_rules_on_delete", Bool).default("false"),
            o("tags", MapOfString).default("{}"),
            c("id", String),
            c("arn", String),
            c("owner_id", String),
            c("tags_all", MapOfString),
        ],
        blocks: vec![
            rule_block("ingress"),
            rule_block("egress"),
            timeouts_block(&["create", "delete"]),
        ],
    }
}

/// What a rule allows traffic from or to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Target {
    Cidr(String),
    Ipv6(String),
    PrefixList(String),
    Group(String),
    Myself,
}

/// One rule for one target: AWS's unit of authorizing and revoking.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Atom {
    protocol: String,
    from: i64,
    to: i64,
    description: String,
    target: Target,
}

impl Atom {
    /// `Group(own id)` is the same as `self = true`.
    fn normalized(mut self, own_id: &str) -> Self {
        if matches!(&self.target, Target::Group(g) if g == own_id) {
            self.target = Target::Myself;
        }
        self
    }
}

/// The canonical protocol name, or why it is not one.
fn canonical_protocol(p: &str) -> Result<String, String> {
    let p = p.trim().to_ascii_lowercase();
    Ok(match p.as_str() {
        "-1" | "all" => "-1".to_owned(),
        "tcp" | "6" => "tcp".to_owned(),
        "udp" | "17" => "udp".to_owned(),
        "icmp" | "1" => "icmp".to_owned(),
        "icmpv6" | "58" => "icmpv6".to_owned(),
        n if n.parse::<u8>().is_ok() => n.parse::<u8>().map(|n| n.to_string()).unwrap_or_default(),
        _ => {
            return Err(format!(
                "protocol `{p}` is not `tcp`, `udp`, `icmp`, `icmpv6`, `-1` (all) or a protocol \
                 number"
            ));
        }
    })
}

/// The atoms of one configured rule.
fn rule_atoms(block: &str, rule: &Attrs) -> Result<Vec<Atom>, ProviderError> {
    let err = |m: String| ProviderError::Config(format!("`{block}`: {m}"));
    let protocol = canonical_protocol(&attrs::required_string(rule, "protocol")?).map_err(err)?;
    let from =
        attrs::integer(rule, "from_port")?.ok_or_else(|| err("`from_port` is required".into()))?;
    let to = attrs::integer(rule, "to_port")?.ok_or_else(|| err("`to_port` is required".into()))?;
    if !(-1..=65535).contains(&from) || !(-1..=65535).contains(&to) {
        return Err(err(format!(
            "ports must be -1 to 65535, not {from} and {to}"
        )));
    }
    let (from, to) = if protocol == "-1" {
        if from != 0 || to != 0 {
            return Err(err(format!(
                "from_port ({from}) and to_port ({to}) must both be 0 with protocol \"-1\" (all)"
            )));
        }
        (0, 0)
    } else {
        if matches!(protocol.as_str(), "tcp" | "udp") && (from < 0 || from > to) {
            return Err(err(format!(
                "from_port ({from}) must be between 0 and to_port ({to}) for {protocol}"
            )));
        }
        (from, to)
    };
    let description = attrs::string(rule, "description")?.unwrap_or_default();
    let mut targets: Vec<Target> = Vec::new();
    targets.extend(
        attrs::string_set(rule, "cidr_blocks")?
            .into_iter()
            .map(Target::Cidr),
    );
    targets.extend(
        attrs::string_set(rule, "ipv6_cidr_blocks")?
            .into_iter()
            .map(Target::Ipv6),
    );
    targets.extend(
        attrs::string_set(rule, "prefix_list_ids")?
            .into_iter()
            .map(Target::PrefixList),
    );
    targets.extend(
        attrs::string_set(rule, "security_groups")?
            .into_iter()
            .map(Target::Group),
    );
    if attrs::boolean(rule, "self")?.unwrap_or(false) {
        targets.push(Target::Myself);
    }
    if targets.is_empty() {
        return Err(err(
            "a rule needs one of `cidr_blocks`, `ipv6_cidr_blocks`, `prefix_list_ids`, \
             `security_groups` or `self = true`"
                .into(),
        ));
    }
    Ok(targets
        .into_iter()
        .map(|target| Atom {
            protocol: protocol.clone(),
            from,
            to,
            description: description.clone(),
            target,
        })
        .collect())
}

fn config_atoms(config: &Attrs, block: &str) -> Result<BTreeSet<Atom>, ProviderError> {
    let mut out = BTreeSet::new();
    for rule in attrs::blocks(config, block)? {
        out.extend(rule_atoms(block, &rule)?);
    }
    Ok(out)
}

/// Atoms as canonical rule objects (see the module docs).
fn rules_value(atoms: &BTreeSet<Atom>) -> Value {
    #[derive(Default)]
    struct Lists {
        cidr: BTreeSet<String>,
        ipv6: BTreeSet<String>,
        prefix: BTreeSet<String>,
        groups: BTreeSet<String>,
        myself: bool,
    }
    let mut grouped: BTreeMap<(String, i64, i64, String), Lists> = BTreeMap::new();
    for a in atoms {
        let lists = grouped
            .entry((a.protocol.clone(), a.from, a.to, a.description.clone()))
            .or_default();
        match &a.target {
            Target::Cidr(c) => lists.cidr.insert(c.clone()),
            Target::Ipv6(c) => lists.ipv6.insert(c.clone()),
            Target::PrefixList(p) => lists.prefix.insert(p.clone()),
            Target::Group(g) => lists.groups.insert(g.clone()),
            Target::Myself => {
                lists.myself = true;
                true
            }
        };
    }
    let list =
        |s: &BTreeSet<String>| Value::Array(s.iter().map(|v| Value::from(v.as_str())).collect());
    Value::Array(
        grouped
            .into_iter()
            .map(|((protocol, from, to, description), l)| {
                let mut m = Map::new();
                m.insert("cidr_blocks".into(), list(&l.cidr));
                m.insert("description".into(), Value::from(description));
                m.insert("from_port".into(), Value::from(from));
                m.insert("ipv6_cidr_blocks".into(), list(&l.ipv6));
                m.insert("prefix_list_ids".into(), list(&l.prefix));
                m.insert("protocol".into(), Value::from(protocol));
                m.insert("security_groups".into(), list(&l.groups));
                m.insert("self".into(), Value::from(l.myself));
                m.insert("to_port".into(), Value::from(to));
                Value::Object(m)
            })
            .collect(),
    )
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct PairXml {
    group_id: String,
    description: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RangeXml {
    cidr_ip: String,
    description: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Range6Xml {
    cidr_ipv6: String,
    description: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct PrefixXml {
    prefix_list_id: String,
    description: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct PermXml {
    ip_protocol: String,
    from_port: Option<i64>,
    to_port: Option<i64>,
    groups: Items<PairXml>,
    ip_ranges: Items<RangeXml>,
    ipv6_ranges: Items<Range6Xml>,
    prefix_list_ids: Items<PrefixXml>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct SecurityGroupXml {
    group_id: String,
    group_name: String,
    group_description: String,
    vpc_id: Option<String>,
    owner_id: String,
    security_group_arn: Option<String>,
    ip_permissions: Items<PermXml>,
    ip_permissions_egress: Items<PermXml>,
    tag_set: Items<Tag>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct DescribeSecurityGroups {
    security_group_info: Items<SecurityGroupXml>,
    next_token: Option<String>,
}

impl Paged for DescribeSecurityGroups {
    fn next_token(&self) -> Option<String> {
        present(&self.next_token)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct CreateSecurityGroup {
    group_id: String,
}

fn perm_atoms(perms: &Items<PermXml>, own_id: &str) -> BTreeSet<Atom> {
    let mut out = BTreeSet::new();
    for p in &perms.item {
        let Ok(protocol) = canonical_protocol(&p.ip_protocol) else {
            continue;
        };
        let (from, to) = if protocol == "-1" {
            (0, 0)
        } else {
            (p.from_port.unwrap_or(0), p.to_port.unwrap_or(0))
        };
        let mut push = |target: Target, description: &Option<String>| {
            out.insert(
                Atom {
                    protocol: protocol.clone(),
                    from,
                    to,
                    description: description.clone().unwrap_or_default(),
                    target,
                }
                .normalized(own_id),
            );
        };
        for r in &p.ip_ranges.item {
            push(Target::Cidr(r.cidr_ip.clone()), &r.description);
        }
        for r in &p.ipv6_ranges.item {
            push(Target::Ipv6(r.cidr_ipv6.clone()), &r.description);
        }
        for r in &p.prefix_list_ids.item {
            push(Target::PrefixList(r.prefix_list_id.clone()), &r.description);
        }
        for r in &p.groups.item {
            push(Target::Group(r.group_id.clone()), &r.description);
        }
    }
    out
}

/// `IpPermissions.N...` for `atoms`, grouped by protocol and ports.
fn permission_params(p: &mut Params, atoms: &[&Atom], own_id: &str) {
    let mut grouped: BTreeMap<(String, i64, i64), Vec<&Atom>> = BTreeMap::new();
    for a in atoms {
        grouped
            .entry((a.protocol.clone(), a.from, a.to))
            .or_default()
            .push(a);
    }
    for (n, ((protocol, from, to), atoms)) in grouped.into_iter().enumerate() {
        let base = format!("IpPermissions.{}", n + 1);
        p.set(format!("{base}.IpProtocol"), protocol.as_str());
        if protocol != "-1" {
            p.set(format!("{base}.FromPort"), from.to_string());
            p.set(format!("{base}.ToPort"), to.to_string());
        }
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for a in atoms {
            let (list, field, value) = match &a.target {
                Target::Cidr(c) => ("IpRanges", "CidrIp", c.as_str()),
                Target::Ipv6(c) => ("Ipv6Ranges", "CidrIpv6", c.as_str()),
                Target::PrefixList(id) => ("PrefixListIds", "PrefixListId", id.as_str()),
                Target::Group(g) => ("Groups", "GroupId", g.as_str()),
                Target::Myself => ("Groups", "GroupId", own_id),
            };
            let i = counts.entry(list).or_default();
            *i += 1;
            p.set(format!("{base}.{list}.{i}.{field}"), value);
            if !a.description.is_empty() {
                p.set(
                    format!("{base}.{list}.{i}.Description"),
                    a.description.as_str(),
                );
            }
        }
    }
}

/// A parsed configuration.
struct Spec {
    name: Option<String>,
    name_prefix: Option<String>,
    description: String,
    vpc_id: Option<String>,
    tags: BTreeMap<String, String>,
    ingress: BTreeSet<Atom>,
    egress: BTreeSet<Atom>,
}

impl Spec {
    fn parse(config: &Attrs) -> Result<Self, ProviderError> {
        let tags = attrs::string_map(config, "tags")?;
        if let Some(problem) = tags::check_user_tags(&tags).into_iter().next() {
            return Err(ProviderError::Config(format!("`tags`: {problem}")));
        }
        Ok(Self {
            name: attrs::non_empty_string(config, "name")?,
            name_prefix: attrs::non_empty_string(config, "name_prefix")?,
            description: attrs::string(config, "description")?
                .unwrap_or_else(|| DEFAULT_DESCRIPTION.to_owned()),
            vpc_id: attrs::non_empty_string(config, "vpc_id")?,
            tags,
            ingress: config_atoms(config, "ingress")?,
            egress: config_atoms(config, "egress")?,
        })
    }
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
    for key in ["name", "name_prefix"] {
        if let Ok(Some(name)) = attrs::string(config, key) {
            if name.is_empty() || name.len() > 255 {
                problem(key, "must be 1 to 255 characters".to_owned());
            } else if name.to_ascii_lowercase().starts_with("sg-") {
                problem(key, "must not start with `sg-` (AWS refuses it)".to_owned());
            }
        }
    }
    if config.get("name").is_some_and(|v| !v.is_null())
        && config.get("name_prefix").is_some_and(|v| !v.is_null())
    {
        problem(
            "name_prefix",
            "conflicts with `name`; set one of them".to_owned(),
        );
    }
    if let Ok(Some(d)) = attrs::string(config, "description")
        && (d.len() > 255 || !d.is_ascii())
    {
        problem(
            "description",
            "must be at most 255 ASCII characters".to_owned(),
        );
    }
    for block in ["ingress", "egress"] {
        match attrs::blocks(config, block) {
            Ok(rules) => {
                for rule in rules {
                    // Unknown values are filled in later; only complain
                    // about what is known and wrong.
                    if let Err(e) = rule_atoms(block, &rule) {
                        problem(block, e.to_string().replace("invalid configuration: ", ""));
                    }
                }
            }
            Err(e) => problem(block, e.to_string()),
        }
    }
    match attrs::string_map(config, "tags") {
        Ok(t) => tags::check_user_tags(&t)
            .into_iter()
            .for_each(|p| problem("tags", p)),
        Err(e) => problem("tags", e.to_string()),
    }
    for op in ["create", "delete"] {
        if let Err(e) = timeout(config, op, Duration::ZERO) {
            problem("timeouts", e.to_string());
        }
    }
    problems
}

/// Plan time: rules in canonical form (see the module docs), defaults
/// filled.
pub(crate) fn prepare(config: &mut Attrs) -> Result<(), ProviderError> {
    for block in ["ingress", "egress"] {
        let atoms = config_atoms(config, block)?;
        config.insert(block.into(), rules_value(&atoms));
    }
    let t = attrs::string_map(config, "tags")?;
    config.insert("tags".into(), attrs::map_value(&t));
    if config.get("description").is_none_or(Value::is_null) {
        config.insert("description".into(), Value::from(DEFAULT_DESCRIPTION));
    }
    if config
        .get("revoke_rules_on_delete")
        .is_none_or(Value::is_null)
    {
        config.insert("revoke_rules_on_delete".into(), Value::from(false));
    }
    Ok(())
}

fn arn(api: &Api, sg: &SecurityGroupXml) -> String {
    present(&sg.security_group_arn).unwrap_or_else(|| {
        format!(
            "arn:{}:ec2:{}:{}:security-group/{}",
            partition(api.region()),
            api.region(),
            sg.owner_id,
            sg.group_id
        )
    })
}

fn read_back(api: &Api, sg: &SecurityGroupXml) -> Attrs {
    let mut a = Attrs::new();
    let user = tags::user_tags(&tag_map(&sg.tag_set));
    a.insert("id".into(), Value::from(sg.group_id.as_str()));
    a.insert("arn".into(), Value::from(arn(api, sg)));
    a.insert("owner_id".into(), Value::from(sg.owner_id.as_str()));
    a.insert("name".into(), Value::from(sg.group_name.as_str()));
    a.insert(
        "description".into(),
        Value::from(sg.group_description.as_str()),
    );
    if let Some(vpc) = present(&sg.vpc_id) {
        a.insert("vpc_id".into(), Value::from(vpc));
    }
    a.insert(
        "ingress".into(),
        rules_value(&perm_atoms(&sg.ip_permissions, &sg.group_id)),
    );
    a.insert(
        "egress".into(),
        rules_value(&perm_atoms(&sg.ip_permissions_egress, &sg.group_id)),
    );
    a.insert("tags".into(), attrs::map_value(&user));
    a.insert("tags_all".into(), attrs::map_value(&user));
    a
}

async fn describe(api: &Api, id: &str) -> Result<Option<SecurityGroupXml>, ApiError> {
    let mut p = Params::new();
    p.set("GroupId.1", id);
    match api
        .ec2::<DescribeSecurityGroups>("DescribeSecurityGroups", &p, Idempotency::Safe)
        .await
    {
        Ok(r) => Ok(r.security_group_info.item.into_iter().next()),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads the group, waiting out the moment right after creation when AWS
/// may not list it yet.
async fn describe_until_visible(
    api: &Api,
    id: &str,
    deadline: Instant,
) -> Result<SecurityGroupXml, ProviderError> {
    let mut poller = Poller::new(api.timing);
    loop {
        match describe(api, id).await {
            Ok(Some(sg)) => return Ok(sg),
            Ok(None) => {}
            Err(e) => return Err(e.context(format!("cannot read security group {id}"))),
        }
        if !poller.pause(deadline).await {
            return Err(ProviderError::Timeout(format!(
                "security group {id} was created but is not visible yet"
            )));
        }
    }
}

async fn find_by_name(
    api: &Api,
    name: &str,
    vpc_id: Option<&str>,
) -> Result<Option<SecurityGroupXml>, ProviderError> {
    let mut p = Params::new();
    p.filter("group-name", &[name]);
    if let Some(vpc) = vpc_id {
        p.filter("vpc-id", &[vpc]);
    }
    let r: DescribeSecurityGroups = api
        .ec2("DescribeSecurityGroups", &p, Idempotency::Safe)
        .await
        .map_err(|e| e.context(format!("cannot look up security group {name}")))?;
    Ok(r.security_group_info.item.into_iter().next())
}

/// Revokes and authorizes rules until the group's rules are `ingress` and
/// `egress`.
async fn sync_rules(
    api: &Api,
    sg: &SecurityGroupXml,
    ingress: &BTreeSet<Atom>,
    egress: &BTreeSet<Atom>,
    progress: Progress<'_>,
) -> Result<(), ProviderError> {
    let id = sg.group_id.as_str();
    for (direction, current, wanted) in [
        ("Ingress", perm_atoms(&sg.ip_permissions, id), ingress),
        ("Egress", perm_atoms(&sg.ip_permissions_egress, id), egress),
    ] {
        let wanted: BTreeSet<Atom> = wanted.iter().cloned().map(|a| a.normalized(id)).collect();
        let revoke: Vec<&Atom> = current.difference(&wanted).collect();
        let authorize: Vec<&Atom> = wanted.difference(&current).collect();
        if !revoke.is_empty() {
            let mut p = Params::new();
            p.set("GroupId", id);
            permission_params(&mut p, &revoke, id);
            match api
                .ec2_text(
                    &format!("RevokeSecurityGroup{direction}"),
                    &p,
                    Idempotency::Safe,
                )
                .await
            {
                Ok(_) => {}
                Err(e) if e.is("InvalidPermission.NotFound") => {}
                Err(e) => {
                    return Err(e.context(format!(
                        "cannot revoke {} {} rule(s) of security group {id}",
                        revoke.len(),
                        direction.to_ascii_lowercase()
                    )));
                }
            }
        }
        if !authorize.is_empty() {
            let mut p = Params::new();
            p.set("GroupId", id);
            permission_params(&mut p, &authorize, id);
            match api
                .ec2_text(
                    &format!("AuthorizeSecurityGroup{direction}"),
                    &p,
                    Idempotency::Safe,
                )
                .await
            {
                Ok(_) => {}
                Err(e) if e.is("InvalidPermission.Duplicate") => {}
                Err(e) => {
                    return Err(e.context(format!(
                        "cannot authorize {} {} rule(s) of security group {id}",
                        authorize.len(),
                        direction.to_ascii_lowercase()
                    )));
                }
            }
        }
        if !revoke.is_empty() || !authorize.is_empty() {
            progress(&format!(
                "{}: {} rule(s) authorized, {} revoked",
                direction.to_ascii_lowercase(),
                authorize.len(),
                revoke.len()
            ));
        }
    }
    Ok(())
}

fn applied(api: &Api, config: &Attrs, sg: &SecurityGroupXml) -> Applied {
    Applied {
        id: sg.group_id.clone(),
        attrs: attrs::merge_applied(&schema(), config, read_back(api, sg)),
    }
}

/// Creates the group with berth's tags, sets its rules (removing AWS's
/// default egress rule unless configured), and reads it back.
pub(crate) async fn create(
    api: &Api,
    req: &ApplyRequest<'_>,
    progress: Progress<'_>,
) -> Result<Applied, ProviderError> {
    let spec = Spec::parse(req.config)?;
    let deadline = Instant::now() + timeout(req.config, "create", DEFAULT_CREATE_TIMEOUT)?;
    let name = match &spec.name {
        Some(n) => n.clone(),
        None => attrs::generated_name(spec.name_prefix.as_deref(), &req.owner.lineage, req.address),
    };
    let wanted_tags = tags::all_tags(&spec.tags, req.owner, req.address, req.config_hash)?;
    let mut p = Params::new();
    p.set("GroupName", name.as_str())
        .set("GroupDescription", spec.description.as_str());
    if let Some(vpc) = &spec.vpc_id {
        p.set("VpcId", vpc.as_str());
    }
    tags::tag_specification(&mut p, 1, "security-group", &wanted_tags);
    let group_id = match api
        .ec2::<CreateSecurityGroup>("CreateSecurityGroup", &p, Idempotency::Unsafe)
        .await
    {
        Ok(r) if !r.group_id.is_empty() => r.group_id,
        Ok(_) => {
            return Err(ProviderError::Api(format!(
                "EC2 API: security group {name} was created without an id"
            )));
        }
        Err(e) if e.is("InvalidGroup.Duplicate") => {
            let existing = find_by_name(api, &name, spec.vpc_id.as_deref()).await?;
            let ours = existing.as_ref().is_some_and(|sg| {
                tags::marks(req.owner, &tag_map(&sg.tag_set))
                    .is_some_and(|m| m.address == req.address)
            });
            match existing {
                Some(sg) if ours => {
                    progress(&format!(
                        "security group {name} ({}) was created by an interrupted apply; adopting it",
                        sg.group_id
                    ));
                    tags::sync_ec2(api, &sg.group_id, &tag_map(&sg.tag_set), &wanted_tags).await?;
                    sg.group_id
                }
                _ => {
                    return Err(ProviderError::Api(format!(
                        "cannot create security group {name}: {e}; it was not created by berth \
                         for {} in this state (delete or rename it, or choose another `name`)",
                        req.address
                    )));
                }
            }
        }
        Err(e) => return Err(e.context(format!("cannot create security group {name}"))),
    };
    progress(&format!("security group {group_id} created"));
    let sg = describe_until_visible(api, &group_id, deadline).await?;
    sync_rules(api, &sg, &spec.ingress, &spec.egress, progress).await?;
    let sg = describe_until_visible(api, &group_id, deadline).await?;
    Ok(applied(api, req.config, &sg))
}

/// Brings rules and tags to the configuration.
pub(crate) async fn update(
    api: &Api,
    req: &ApplyRequest<'_>,
    progress: Progress<'_>,
) -> Result<Applied, ProviderError> {
    let spec = Spec::parse(req.config)?;
    let id = req.prior_id.filter(|id| !id.is_empty()).ok_or_else(|| {
        ProviderError::Api("cannot update a security group without its id".into())
    })?;
    let Some(sg) = describe(api, id)
        .await
        .map_err(|e| e.context(format!("cannot read security group {id}")))?
    else {
        return Err(ProviderError::Api(format!(
            "security group {id} no longer exists; run plan again to create it"
        )));
    };
    sync_rules(api, &sg, &spec.ingress, &spec.egress, progress).await?;
    let wanted_tags = tags::all_tags(&spec.tags, req.owner, req.address, req.config_hash)?;
    let changed = tags::sync_ec2(api, id, &tag_map(&sg.tag_set), &wanted_tags).await?;
    if !changed.is_empty() {
        progress(&format!("tags updated: {}", changed.join(", ")));
    }
    let deadline = Instant::now() + DEFAULT_CREATE_TIMEOUT;
    let sg = describe_until_visible(api, id, deadline).await?;
    Ok(applied(api, req.config, &sg))
}

/// Deletes the group (revoking its rules first if asked), retrying while
/// AWS reports it still in use.
pub(crate) async fn delete(
    api: &Api,
    req: &DeleteRequest<'_>,
    progress: Progress<'_>,
) -> Result<(), ProviderError> {
    let id = req.id;
    if id.is_empty() {
        return Err(ProviderError::Api(
            "cannot delete a security group without its id".into(),
        ));
    }
    let limit =
        timeout(req.attrs, "delete", DEFAULT_DELETE_TIMEOUT).unwrap_or(DEFAULT_DELETE_TIMEOUT);
    let deadline = Instant::now() + limit;
    if attrs::boolean(req.attrs, "revoke_rules_on_delete")
        .ok()
        .flatten()
        .unwrap_or(false)
    {
        match describe(api, id).await {
            Ok(Some(sg)) => {
                progress("revoking all rules before deleting");
                sync_rules(api, &sg, &BTreeSet::new(), &BTreeSet::new(), progress).await?;
            }
            Ok(None) => return Ok(()),
            Err(e) => return Err(e.context(format!("cannot read security group {id}"))),
        }
    }
    let mut poller = Poller::new(api.timing);
    let mut reported = false;
    loop {
        let mut p = Params::new();
        p.set("GroupId", id);
        match api
            .ec2_text("DeleteSecurityGroup", &p, Idempotency::Safe)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) if e.is("DependencyViolation") => {
                if !reported {
                    progress("still in use (DependencyViolation); retrying until it is free");
                    reported = true;
                }
                if !poller.pause(deadline).await {
                    return Err(ProviderError::Timeout(format!(
                        "security group {id} was still in use after {} (timeouts.delete): {e}",
                        human(limit)
                    )));
                }
            }
            Err(e) => return Err(e.context(format!("cannot delete security group {id}"))),
        }
    }
}

/// The owner's groups: one paged `DescribeSecurityGroups` filtered by
/// berth's tags.
pub(crate) async fn refresh(api: &Api, owner: &Ownership) -> Result<Vec<Observed>, ProviderError> {
    let mut p = Params::new();
    tags::owner_filters(&mut p, owner);
    let pages: Vec<DescribeSecurityGroups> = api
        .ec2_pages("DescribeSecurityGroups", &p, PAGE)
        .await
        .map_err(|e| e.context("cannot list security groups"))?;
    let mut observed = Vec::new();
    for sg in pages.iter().flat_map(|p| &p.security_group_info.item) {
        let Some(marks) = tags::marks(owner, &tag_map(&sg.tag_set)) else {
            continue;
        };
        if !attrs::address_is_type(&marks.address, TYPE) || sg.group_id.is_empty() {
            continue;
        }
        observed.push(Observed {
            address: marks.address,
            id: sg.group_id.clone(),
            attrs: read_back(api, sg),
            config_hash: marks.config_hash,
        });
    }
    observed.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(observed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(v: Value) -> Attrs {
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    #[test]
    fn replacement_follows_terraform() {
        let s = schema();
        for name in ["name", "name_prefix", "description", "vpc_id"] {
            assert!(s.forces_replacement(name), "{name}");
        }
        for name in [
            "ingress",
            "egress",
            "tags",
            "revoke_rules_on_delete",
            "timeouts",
        ] {
            assert!(!s.forces_replacement(name), "{name}");
        }
    }

    #[test]
    fn rules_are_canonical_and_merged() {
        let mut config = attrs(json!({
            "ingress": [
                {"from_port": 22, "to_port": 22, "protocol": "TCP", "cidr_blocks": ["10.1.0.0/16"]},
                {"from_port": 22.0, "to_port": 22, "protocol": "6", "cidr_blocks": ["10.0.0.0/8", "10.1.0.0/16"]},
                {"from_port": 0, "to_port": 0, "protocol": "all", "self": true, "description": "peers"},
            ],
        }));
        prepare(&mut config).unwrap();
        assert_eq!(
            config["ingress"],
            json!([
                {"cidr_blocks": [], "description": "peers", "from_port": 0, "ipv6_cidr_blocks": [],
                 "prefix_list_ids": [], "protocol": "-1", "security_groups": [], "self": true, "to_port": 0},
                {"cidr_blocks": ["10.0.0.0/8", "10.1.0.0/16"], "description": "", "from_port": 22,
                 "ipv6_cidr_blocks": [], "prefix_list_ids": [], "protocol": "tcp", "security_groups": [],
                 "self": false, "to_port": 22},
            ])
        );
        assert_eq!(config["egress"], json!([]));
        assert_eq!(config["description"], json!("Managed by berth"));
        // Preparing twice changes nothing.
        let again = {
            let mut c = config.clone();
            prepare(&mut c).unwrap();
            c
        };
        assert_eq!(again, config);
    }

    #[test]
    fn bad_rules_are_reported() {
        let config = attrs(json!({
            "ingress": [{"from_port": 22, "to_port": 22, "protocol": "-1", "cidr_blocks": ["0.0.0.0/0"]}],
            "egress": [{"from_port": 80, "to_port": 80, "protocol": "tcp"}],
        }));
        let problems = validate(&config);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].message.contains("must both be 0"),
            "{problems:?}"
        );
        assert!(problems[1].message.contains("needs one of"), "{problems:?}");
    }

    #[test]
    fn aws_rules_read_back_like_configured_ones() {
        let sg: DescribeSecurityGroups = crate::xml::parse(
            r#"<DescribeSecurityGroupsResponse><securityGroupInfo><item><groupId>sg-1</groupId><ipPermissionsEgress><item><ipProtocol>-1</ipProtocol><groups/><ipRanges><item><cidrIp>0.0.0.0/0</cidrIp></item></ipRanges><ipv6Ranges/><prefixListIds/></item></ipPermissionsEgress><tagSet/><vpcId>vpc-1</vpcId><ownerId>123456789012</ownerId><groupName>g</groupName><groupDescription>d</groupDescription><ipPermissions><item><ipProtocol>tcp</ipProtocol><fromPort>22</fromPort><toPort>22</toPort><groups><item><groupId>sg-1</groupId><userId>1</userId></item></groups><ipRanges><item><description>ssh</description><cidrIp>10.0.0.0/8</cidrIp></item></ipRanges><ipv6Ranges/><prefixListIds/></item></ipPermissions></item></securityGroupInfo><requestId>r</requestId></DescribeSecurityGroupsResponse>"#,
        )
        .unwrap();
        let sg = &sg.security_group_info.item[0];
        let ingress = perm_atoms(&sg.ip_permissions, "sg-1");
        assert_eq!(
            rules_value(&ingress),
            json!([
                {"cidr_blocks": [], "description": "", "from_port": 22, "ipv6_cidr_blocks": [],
                 "prefix_list_ids": [], "protocol": "tcp", "security_groups": [], "self": true, "to_port": 22},
                {"cidr_blocks": ["10.0.0.0/8"], "description": "ssh", "from_port": 22, "ipv6_cidr_blocks": [],
                 "prefix_list_ids": [], "protocol": "tcp", "security_groups": [], "self": false, "to_port": 22},
            ])
        );
        let egress = perm_atoms(&sg.ip_permissions_egress, "sg-1");
        assert_eq!(egress.len(), 1);
        let mut p = Params::new();
        let atoms: Vec<&Atom> = ingress.iter().collect();
        permission_params(&mut p, &atoms, "sg-1");
        assert_eq!(p.get("IpPermissions.1.IpProtocol"), Some("tcp"));
        assert_eq!(p.get("IpPermissions.1.Groups.1.GroupId"), Some("sg-1"));
        assert_eq!(
            p.get("IpPermissions.1.IpRanges.1.CidrIp"),
            Some("10.0.0.0/8")
        );
        assert_eq!(p.get("IpPermissions.1.IpRanges.1.Description"), Some("ssh"));
        let mut p = Params::new();
        let all: Vec<&Atom> = egress.iter().collect();
        permission_params(&mut p, &all, "sg-1");
        assert_eq!(p.get("IpPermissions.1.IpProtocol"), Some("-1"));
        assert_eq!(p.get("IpPermissions.1.FromPort"), None);
    }
}
