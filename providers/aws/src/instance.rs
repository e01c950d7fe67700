//! `aws_instance`: an EC2 instance, created with `RunInstances` and waited
//! for until it runs, updated in place where Terraform does, terminated and
//! waited for until `terminated`.
//!
//! | attribute | change |
//! |---|---|
//! | `ami`, `subnet_id`, `key_name`, `associate_public_ip_address`, `private_ip`, `availability_zone`, `security_groups` | replace |
//! | `user_data`, `user_data_base64` | replace (see below) |
//! | `instance_type` | in place, as Terraform: `StopInstances`, wait for `stopped`, `ModifyInstanceAttribute InstanceType`, `StartInstances` (only if it was running), wait for `running` |
//! | `vpc_security_group_ids` | in place: `ModifyInstanceAttribute GroupId.N` |
//! | `tags` | in place: `CreateTags` / `DeleteTags` |
//! | `user_data_replace_on_change`, `timeouts` | no API call |
//!
//! Computed: `id`, `arn`, `public_ip`, `private_ip`, `public_dns`,
//! `private_dns`, `instance_state`, `primary_network_interface_id`,
//! `tags_all` (equal to `tags`), and `key_name`, `subnet_id`,
//! `vpc_security_group_ids`, `security_groups`, `availability_zone`,
//! `associate_public_ip_address` when left out. `public_ip` and `public_dns`
//! are `""` when the instance has none.
//!
//! Waiting: after `RunInstances` berth polls `DescribeInstances` (pauses
//! growing from 2s to 15s, each new state reported as progress) until the
//! instance is `running` and, when it gets one, has its public IP: when
//! `associate_public_ip_address = true`, or when it is left out and the
//! subnet maps public IPs on launch (`DescribeSubnets`, asked only if the
//! instance has no public IP yet). `timeouts { create }` bounds the wait
//! (default 10m, as Terraform); `update` bounds a type change (10m);
//! `delete` the wait for `terminated` (20m).
//!
//! Idempotency and adoption: `RunInstances` carries a `ClientToken`, the
//! SHA-256 (hex, 64 characters) of the state's lineage, the address and the
//! configuration hash, so a request the HTTP client retries after a lost
//! answer starts one instance, not two (AWS returns the first one). Before
//! `RunInstances`, berth also looks for a live instance carrying this
//! owner's tags with the same address and configuration hash (one
//! `DescribeInstances`) and takes it instead of starting another: that
//! covers a create repeated after berth stopped between the call and the
//! state write, and emulators (moto) that ignore `ClientToken`. AWS keeps a
//! client token for a while after its instance is terminated and answers
//! with the terminated instance; berth then derives the next token (the
//! same hash with a generation number) and tries again.
//!
//! Refresh is one paged `DescribeInstances` filtered by `tag:berth:lineage`,
//! `tag:berth:env` and the live states (`pending`, `running`, `stopping`,
//! `stopped`): terminated and shutting-down instances are not observed.
//!
//! Where berth differs from Terraform:
//! - `user_data` and `user_data_base64` always replace the instance, as
//!   with Terraform's `user_data_replace_on_change = true`. Terraform's
//!   default (false) stops the instance, rewrites the user data and starts
//!   it again; berth's schema cannot make replacement depend on another
//!   attribute, and user data normally only runs on first boot, so
//!   replacing is the change that takes effect. `user_data_replace_on_change`
//!   is accepted and has no effect. Both are sensitive: state stores a
//!   keyed hash (Terraform stores a SHA-1).
//! - `associate_public_ip_address` and `user_data` are not read back by
//!   refresh (a stopped instance loses its public IP, which would read as
//!   a change that replaces it; user data needs a call per instance);
//!   drift in them is not detected.
//! - Not supported yet: `root_block_device`, `ebs_block_device`,
//!   `volume_tags`, `iam_instance_profile`, `launch_template`,
//!   `network_interface`, `monitoring`, `metadata_options`,
//!   `instance_initiated_shutdown_behavior`, `credit_specification`.
//! - `timeouts.create` defaults to 10m, `update` 10m, `delete` 20m (as
//!   Terraform).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use berth_provider::http::Idempotency;
use berth_provider::{
    Applied, ApplyRequest, AttrProblem, AttrSchema, AttrType, Attrs, DeleteRequest, Observed,
    Ownership, Progress, ProviderError, ResourceSchema, Value,
};
use serde::Deserialize;
use sha2::Digest;

use crate::attrs;
use crate::client::{Api, Paged, Params, PollTiming, Poller, human};
use crate::duration::{timeout, timeouts_block};
use crate::settings::partition;
use crate::tags;
use crate::xml::{Items, Tag, present, tag_map};

/// The resource type name.
pub(crate) const TYPE: &str = "aws_instance";

const DEFAULT_CREATE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const DEFAULT_UPDATE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const DEFAULT_DELETE_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// The largest `MaxResults` of `DescribeInstances`.
const PAGE: u32 = 1000;
/// The most user data EC2 accepts (before base64).
const MAX_USER_DATA: usize = 16 * 1024;
/// States in which an instance exists for berth.
const LIVE_STATES: [&str; 4] = ["pending", "running", "stopping", "stopped"];
/// Client token generations tried before giving up.
const TOKEN_GENERATIONS: u32 = 4;

/// The schema of `aws_instance`.
pub(crate) fn schema() -> ResourceSchema {
    use AttrType::*;
    let o = AttrSchema::optional;
    let c = AttrSchema::computed;
    ResourceSchema {
        type_name: TYPE,
        attributes: vec![
            AttrSchema::required("ami", String).force_new(),
            AttrSchema::required("instance_type", String),
            o("key_name", String).and_computed().force_new(),
            o("subnet_id", String).and_computed().force_new(),
            o("vpc_security_group_ids", ListOfString).and_computed(),
            o("security_groups", ListOfString)
                .and_computed()
                .force_new(),
            o("associate_public_ip_address", Bool)
                .and_computed()
                .force_new(),
            o("private_ip", String).and_computed().force_new(),
            o("availability_zone", String).and_computed().force_new(),
            o("user_data", String).force_new().sensitive(),
            o("user_data_base64", String).force_new().sensitive(),
            o("user_data_replace_on_change", Bool).default("false"),
            o("tags", MapOfString).default("{}"),
            c("id", String),
            c("arn", String),
            c("public_ip", String),
            c("public_dns", String),
            c("private_dns", String),
            c("instance_state", String),
            c("primary_network_interface_id", String),
            c("tags_all", MapOfString),
        ],
        blocks: vec![timeouts_block(&["create", "update", "delete"])],
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct StateXml {
    name: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct PlacementXml {
    availability_zone: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct GroupXml {
    group_id: String,
    group_name: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct AttachmentXml {
    device_index: Option<i64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct EniXml {
    network_interface_id: String,
    attachment: AttachmentXml,
    group_set: Items<GroupXml>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct StateReasonXml {
    message: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct InstanceXml {
    instance_id: String,
    image_id: String,
    instance_type: String,
    key_name: Option<String>,
    subnet_id: Option<String>,
    private_ip_address: Option<String>,
    ip_address: Option<String>,
    dns_name: Option<String>,
    private_dns_name: Option<String>,
    instance_state: StateXml,
    placement: PlacementXml,
    group_set: Items<GroupXml>,
    tag_set: Items<Tag>,
    network_interface_set: Items<EniXml>,
    state_reason: StateReasonXml,
    client_token: Option<String>,
}

impl InstanceXml {
    fn primary_eni(&self) -> Option<&EniXml> {
        let enis = &self.network_interface_set.item;
        enis.iter()
            .find(|e| e.attachment.device_index == Some(0))
            .or_else(|| enis.first())
    }

    /// The security groups: the instance's own list, else its primary
    /// network interface's.
    fn groups(&self) -> Vec<GroupXml> {
        if !self.group_set.item.is_empty() {
            return self.group_set.item.clone();
        }
        self.primary_eni()
            .map(|e| e.group_set.item.clone())
            .unwrap_or_default()
    }

    fn group_ids(&self) -> Vec<String> {
        attrs::sorted_set(self.groups().into_iter().map(|g| g.group_id).collect())
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ReservationXml {
    owner_id: String,
    instances_set: Items<InstanceXml>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct DescribeInstances {
    reservation_set: Items<ReservationXml>,
    next_token: Option<String>,
}

impl Paged for DescribeInstances {
    fn next_token(&self) -> Option<String> {
        present(&self.next_token)
    }
}

impl DescribeInstances {
    fn into_found(self) -> impl Iterator<Item = Found> {
        self.reservation_set.item.into_iter().flat_map(|r| {
            let owner_id = r.owner_id;
            r.instances_set.item.into_iter().map(move |instance| Found {
                owner_id: owner_id.clone(),
                instance,
            })
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct SubnetXml {
    map_public_ip_on_launch: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct DescribeSubnets {
    subnet_set: Items<SubnetXml>,
}

/// An instance and the account that owns it (for its ARN).
#[derive(Clone, Debug, Default)]
struct Found {
    owner_id: String,
    instance: InstanceXml,
}

/// What a wait looks at.
trait StateView {
    fn state(&self) -> &str;
    fn has_public_ip(&self) -> bool;
    fn reason(&self) -> Option<String>;
}

impl StateView for Found {
    fn state(&self) -> &str {
        &self.instance.instance_state.name
    }
    fn has_public_ip(&self) -> bool {
        present(&self.instance.ip_address).is_some()
    }
    fn reason(&self) -> Option<String> {
        present(&self.instance.state_reason.message)
    }
}

/// A parsed configuration.
#[derive(Clone, Debug)]
struct Spec {
    ami: String,
    instance_type: String,
    key_name: Option<String>,
    subnet_id: Option<String>,
    vpc_security_group_ids: Option<Vec<String>>,
    security_groups: Option<Vec<String>>,
    associate_public_ip_address: Option<bool>,
    private_ip: Option<String>,
    availability_zone: Option<String>,
    /// Base64, as `RunInstances` takes it.
    user_data: Option<String>,
    tags: BTreeMap<String, String>,
}

impl Spec {
    fn parse(config: &Attrs) -> Result<Self, ProviderError> {
        let tags = attrs::string_map(config, "tags")?;
        if let Some(problem) = tags::check_user_tags(&tags).into_iter().next() {
            return Err(ProviderError::Config(format!("`tags`: {problem}")));
        }
        let user_data = match (
            attrs::non_empty_string(config, "user_data")?,
            attrs::non_empty_string(config, "user_data_base64")?,
        ) {
            (Some(_), Some(_)) => {
                return Err(ProviderError::Config(
                    "`user_data` and `user_data_base64` conflict; set one".into(),
                ));
            }
            (Some(plain), None) => Some(STANDARD.encode(plain.as_bytes())),
            (None, Some(b64)) => Some(b64.trim().to_owned()),
            (None, None) => None,
        };
        let set = |key: &str| -> Result<Option<Vec<String>>, ProviderError> {
            Ok(attrs::string_list(config, key)?.map(attrs::sorted_set))
        };
        Ok(Self {
            ami: attrs::required_string(config, "ami")?,
            instance_type: attrs::required_string(config, "instance_type")?,
            key_name: attrs::non_empty_string(config, "key_name")?,
            subnet_id: attrs::non_empty_string(config, "subnet_id")?,
            vpc_security_group_ids: set("vpc_security_group_ids")?,
            security_groups: set("security_groups")?,
            associate_public_ip_address: attrs::boolean(config, "associate_public_ip_address")?,
            private_ip: attrs::non_empty_string(config, "private_ip")?,
            availability_zone: attrs::non_empty_string(config, "availability_zone")?,
            user_data,
            tags,
        })
    }
}

/// The `ClientToken` of generation `generation` (see the module docs).
pub(crate) fn client_token(
    owner: &Ownership,
    address: &str,
    config_hash: &str,
    generation: u32,
) -> String {
    let mut text = format!("berth\0{}\0{address}\0{config_hash}", owner.lineage);
    if generation > 0 {
        text.push_str(&format!("\0{generation}"));
    }
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// `RunInstances` parameters for one instance.
fn run_params(spec: &Spec, tags: &BTreeMap<String, String>, token: &str) -> Params {
    let mut p = Params::new();
    p.set("ImageId", spec.ami.as_str())
        .set("InstanceType", spec.instance_type.as_str())
        .set("MinCount", "1")
        .set("MaxCount", "1")
        .set("ClientToken", token);
    if let Some(k) = &spec.key_name {
        p.set("KeyName", k.as_str());
    }
    if let Some(u) = &spec.user_data {
        p.set("UserData", u.as_str());
    }
    if let Some(az) = &spec.availability_zone {
        p.set("Placement.AvailabilityZone", az.as_str());
    }
    let groups = spec.vpc_security_group_ids.clone().unwrap_or_default();
    match spec.associate_public_ip_address {
        // The choice of a public IP is a property of the network interface:
        // the subnet, groups and private IP then go there too.
        Some(public) => {
            let ni = "NetworkInterface.1";
            p.set(format!("{ni}.DeviceIndex"), "0")
                .set(format!("{ni}.AssociatePublicIpAddress"), public.to_string())
                .set(format!("{ni}.DeleteOnTermination"), "true");
            if let Some(s) = &spec.subnet_id {
                p.set(format!("{ni}.SubnetId"), s.as_str());
            }
            if let Some(ip) = &spec.private_ip {
                p.set(format!("{ni}.PrivateIpAddress"), ip.as_str());
            }
            p.list(&format!("{ni}.SecurityGroupId"), &groups);
        }
        None => {
            if let Some(s) = &spec.subnet_id {
                p.set("SubnetId", s.as_str());
            }
            if let Some(ip) = &spec.private_ip {
                p.set("PrivateIpAddress", ip.as_str());
            }
            p.list("SecurityGroupId", &groups);
            if let Some(names) = &spec.security_groups {
                p.list("SecurityGroup", names);
            }
        }
    }
    tags::tag_specification(&mut p, 1, "instance", tags);
    p
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
    for key in ["ami", "instance_type"] {
        if let Ok(Some(v)) = attrs::string(config, key)
            && v.trim().is_empty()
        {
            problem(key, "must not be empty".to_owned());
        }
    }
    let set = |key: &str| config.get(key).is_some_and(|v| !v.is_null());
    if set("user_data") && set("user_data_base64") {
        problem(
            "user_data_base64",
            "conflicts with `user_data`; set one of them".to_owned(),
        );
    }
    if let Ok(Some(u)) = attrs::string(config, "user_data")
        && u.len() > MAX_USER_DATA
    {
        problem(
            "user_data",
            format!("is {} bytes; EC2 accepts at most {MAX_USER_DATA}", u.len()),
        );
    }
    if let Ok(Some(b)) = attrs::string(config, "user_data_base64") {
        match STANDARD.decode(b.trim()) {
            Ok(bytes) if bytes.len() > MAX_USER_DATA => problem(
                "user_data_base64",
                format!(
                    "decodes to {} bytes; EC2 accepts at most {MAX_USER_DATA}",
                    bytes.len()
                ),
            ),
            Ok(_) => {}
            Err(_) => problem("user_data_base64", "is not valid base64".to_owned()),
        }
    }
    if set("security_groups") && set("associate_public_ip_address") {
        problem(
            "security_groups",
            "cannot be combined with `associate_public_ip_address` (EC2 takes only group ids \
             then); use `vpc_security_group_ids`"
                .to_owned(),
        );
    }
    match attrs::string_map(config, "tags") {
        Ok(t) => tags::check_user_tags(&t)
            .into_iter()
            .for_each(|p| problem("tags", p)),
        Err(e) => problem("tags", e.to_string()),
    }
    for op in ["create", "update", "delete"] {
        if let Err(e) = timeout(config, op, Duration::ZERO) {
            problem("timeouts", e.to_string());
        }
    }
    problems
}

/// Plan time: sorts the set-like lists and fills the defaults.
pub(crate) fn prepare(config: &mut Attrs) -> Result<(), ProviderError> {
    for key in ["vpc_security_group_ids", "security_groups"] {
        if config.get(key).is_some_and(|v| !v.is_null()) {
            let items = attrs::string_set(config, key)?;
            config.insert(key.into(), attrs::list_value(&items));
        }
    }
    let t = attrs::string_map(config, "tags")?;
    config.insert("tags".into(), attrs::map_value(&t));
    if config
        .get("user_data_replace_on_change")
        .is_none_or(Value::is_null)
    {
        config.insert("user_data_replace_on_change".into(), Value::from(false));
    }
    Ok(())
}

fn read_back(api: &Api, found: &Found) -> Attrs {
    let i = &found.instance;
    let mut a = Attrs::new();
    let mut put = |k: &str, v: Value| {
        a.insert(k.to_owned(), v);
    };
    let user = tags::user_tags(&tag_map(&i.tag_set));
    put("id", Value::from(i.instance_id.as_str()));
    put(
        "arn",
        Value::from(format!(
            "arn:{}:ec2:{}:{}:instance/{}",
            partition(api.region()),
            api.region(),
            found.owner_id,
            i.instance_id
        )),
    );
    put("ami", Value::from(i.image_id.as_str()));
    put("instance_type", Value::from(i.instance_type.as_str()));
    if let Some(k) = present(&i.key_name) {
        put("key_name", Value::from(k));
    }
    if let Some(s) = present(&i.subnet_id) {
        put("subnet_id", Value::from(s));
    }
    if let Some(az) = present(&i.placement.availability_zone) {
        put("availability_zone", Value::from(az));
    }
    let groups = i.groups();
    put("vpc_security_group_ids", attrs::list_value(&i.group_ids()));
    put(
        "security_groups",
        attrs::list_value(&attrs::sorted_set(
            groups.into_iter().map(|g| g.group_name).collect(),
        )),
    );
    put(
        "private_ip",
        Value::from(present(&i.private_ip_address).unwrap_or_default()),
    );
    put(
        "public_ip",
        Value::from(present(&i.ip_address).unwrap_or_default()),
    );
    put(
        "public_dns",
        Value::from(present(&i.dns_name).unwrap_or_default()),
    );
    put(
        "private_dns",
        Value::from(present(&i.private_dns_name).unwrap_or_default()),
    );
    put(
        "instance_state",
        Value::from(i.instance_state.name.as_str()),
    );
    if let Some(eni) = i.primary_eni() {
        put(
            "primary_network_interface_id",
            Value::from(eni.network_interface_id.as_str()),
        );
    }
    put("tags", attrs::map_value(&user));
    put("tags_all", attrs::map_value(&user));
    a
}

fn applied(api: &Api, config: &Attrs, found: &Found) -> Applied {
    let mut seen = read_back(api, found);
    seen.insert(
        "associate_public_ip_address".into(),
        Value::from(found.has_public_ip()),
    );
    Applied {
        id: found.instance.instance_id.clone(),
        attrs: attrs::merge_applied(&schema(), config, seen),
    }
}

/// One instance by id; `None` when EC2 does not know it.
async fn describe(api: &Api, id: &str) -> Result<Option<Found>, ProviderError> {
    let mut p = Params::new();
    p.set("InstanceId.1", id);
    match api
        .ec2::<DescribeInstances>("DescribeInstances", &p, Idempotency::Safe)
        .await
    {
        Ok(r) => Ok(r.into_found().next()),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.context(format!("cannot read instance {id}"))),
    }
}

/// A live instance that already carries this create's tags.
async fn find_created(api: &Api, req: &ApplyRequest<'_>) -> Result<Option<Found>, ProviderError> {
    let mut p = Params::new();
    tags::owner_filters(&mut p, req.owner);
    p.filter(&format!("tag:{}", tags::ADDRESS), &[req.address])
        .filter(&format!("tag:{}", tags::CONFIG_HASH), &[req.config_hash])
        .filter("instance-state-name", &LIVE_STATES);
    let pages: Vec<DescribeInstances> = api
        .ec2_pages("DescribeInstances", &p, PAGE)
        .await
        .map_err(|e| e.context("cannot look for an instance left by an earlier apply"))?;
    Ok(pages.into_iter().flat_map(|p| p.into_found()).find(|f| {
        tags::marks(req.owner, &tag_map(&f.instance.tag_set))
            .is_some_and(|m| m.address == req.address)
    }))
}

/// What a wait waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Goal {
    Running { public_ip: bool },
    Stopped,
    Terminated,
}

impl Goal {
    fn describe(self) -> &'static str {
        match self {
            Self::Running { public_ip: true } => "running with a public IP address",
            Self::Running { public_ip: false } => "running",
            Self::Stopped => "stopped",
            Self::Terminated => "terminated",
        }
    }
}

/// Polls `look` until the instance reaches `goal`, reporting each new state
/// through `progress`, up to `limit`. `Ok(None)` only for
/// [`Goal::Terminated`] when the instance is gone altogether.
async fn wait_for<T, F, Fut>(
    id: &str,
    goal: Goal,
    limit: Duration,
    setting: &str,
    timing: PollTiming,
    progress: Progress<'_>,
    mut look: F,
) -> Result<Option<T>, ProviderError>
where
    T: StateView,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, ProviderError>>,
{
    let deadline = Instant::now() + limit;
    let mut poller = Poller::new(timing);
    let mut last_line = String::new();
    let mut last_state = "not visible yet".to_owned();
    loop {
        match look().await? {
            None if goal == Goal::Terminated => return Ok(None),
            None => {}
            Some(view) => {
                let state = view.state().to_owned();
                let done = match goal {
                    Goal::Running { public_ip } => {
                        state == "running" && (!public_ip || view.has_public_ip())
                    }
                    Goal::Stopped => state == "stopped",
                    Goal::Terminated => state == "terminated",
                };
                if done {
                    return Ok(Some(view));
                }
                let gone = matches!(state.as_str(), "shutting-down" | "terminated");
                if gone && goal != Goal::Terminated {
                    return Err(ProviderError::Api(format!(
                        "instance {id} is {state} instead of {}{}",
                        goal.describe(),
                        view.reason().map(|r| format!(": {r}")).unwrap_or_default()
                    )));
                }
                let line = if state == "running" && matches!(goal, Goal::Running { .. }) {
                    format!("instance {id} is running, waiting for its public IP address")
                } else {
                    format!("instance {id} is {state}, waiting for {}", goal.describe())
                };
                last_state = if state == "running" && matches!(goal, Goal::Running { .. }) {
                    "running without a public IP address".to_owned()
                } else {
                    state
                };
                if line != last_line {
                    progress(&line);
                    last_line = line;
                }
            }
        }
        if !poller.pause(deadline).await {
            let adopt = if matches!(goal, Goal::Running { .. }) {
                ". It exists and carries berth's tags: the next plan finds it and adopts it if \
                 the configuration is unchanged"
            } else {
                ""
            };
            return Err(ProviderError::Timeout(format!(
                "instance {id} was not {} within {} ({setting}); it is {last_state}{adopt}",
                goal.describe(),
                human(limit)
            )));
        }
    }
}

async fn wait_instance(
    api: &Api,
    id: &str,
    goal: Goal,
    limit: Duration,
    setting: &str,
    progress: Progress<'_>,
) -> Result<Option<Found>, ProviderError> {
    wait_for(id, goal, limit, setting, api.timing, progress, || {
        describe(api, id)
    })
    .await
}

/// Whether the instance will get a public IP worth waiting for.
async fn expects_public_ip(api: &Api, spec: &Spec, found: &Found) -> bool {
    if let Some(explicit) = spec.associate_public_ip_address {
        return explicit;
    }
    if found.has_public_ip() {
        return true;
    }
    let Some(subnet) = present(&found.instance.subnet_id) else {
        return false;
    };
    let mut p = Params::new();
    p.set("SubnetId.1", subnet.as_str());
    match api
        .ec2::<DescribeSubnets>("DescribeSubnets", &p, Idempotency::Safe)
        .await
    {
        Ok(r) => r
            .subnet_set
            .item
            .first()
            .and_then(|s| s.map_public_ip_on_launch)
            .unwrap_or(false),
        Err(e) => {
            tracing::warn!(%subnet, "cannot tell whether the subnet maps public IPs: {e}");
            false
        }
    }
}

/// `RunInstances` with the client token, moving to the next generation of
/// token while AWS answers with a terminated instance.
async fn run(
    api: &Api,
    spec: &Spec,
    tags: &BTreeMap<String, String>,
    req: &ApplyRequest<'_>,
    progress: Progress<'_>,
) -> Result<Found, ProviderError> {
    for generation in 0..TOKEN_GENERATIONS {
        let token = client_token(req.owner, req.address, req.config_hash, generation);
        let params = run_params(spec, tags, &token);
        #[derive(Debug, Default, Deserialize)]
        #[serde(rename_all = "camelCase", default)]
        struct RunInstances {
            owner_id: String,
            instances_set: Items<InstanceXml>,
        }
        let answer: RunInstances = api
            .ec2("RunInstances", &params, Idempotency::Safe)
            .await
            .map_err(|e| e.context(format!("cannot start an instance of {}", spec.ami)))?;
        let Some(instance) = answer.instances_set.item.into_iter().next() else {
            return Err(ProviderError::Api(
                "EC2 API: RunInstances answered without an instance".into(),
            ));
        };
        let found = Found {
            owner_id: answer.owner_id,
            instance,
        };
        if matches!(found.state(), "shutting-down" | "terminated") {
            progress(&format!(
                "the client token belongs to instance {}, which is {}; retrying with a new token",
                found.instance.instance_id,
                found.state()
            ));
            continue;
        }
        return Ok(found);
    }
    Err(ProviderError::Api(format!(
        "EC2 API: RunInstances kept answering with terminated instances for {} client tokens",
        TOKEN_GENERATIONS
    )))
}

/// Starts the instance (or takes the one an earlier attempt started) and
/// waits until it runs.
pub(crate) async fn create(
    api: &Api,
    req: &ApplyRequest<'_>,
    progress: Progress<'_>,
) -> Result<Applied, ProviderError> {
    let spec = Spec::parse(req.config)?;
    let limit = timeout(req.config, "create", DEFAULT_CREATE_TIMEOUT)?;
    let started = Instant::now();
    let wanted_tags = tags::all_tags(&spec.tags, req.owner, req.address, req.config_hash)?;
    let found = match find_created(api, req).await? {
        Some(found) => {
            progress(&format!(
                "instance {} ({}) was started for this configuration by an earlier attempt; \
                 taking it",
                found.instance.instance_id,
                found.state()
            ));
            found
        }
        None => run(api, &spec, &wanted_tags, req, progress).await?,
    };
    let id = found.instance.instance_id.clone();
    if id.is_empty() {
        return Err(ProviderError::Api(
            "EC2 API: the instance was started without an id".into(),
        ));
    }
    let public_ip = expects_public_ip(api, &spec, &found).await;
    progress(&format!(
        "instance {id} is {}, waiting for {}",
        found.state(),
        Goal::Running { public_ip }.describe()
    ));
    let left = limit.saturating_sub(started.elapsed());
    let found = wait_instance(
        api,
        &id,
        Goal::Running { public_ip },
        left,
        "timeouts.create",
        progress,
    )
    .await?
    .ok_or_else(|| ProviderError::Api(format!("instance {id} disappeared")))?;
    Ok(applied(api, req.config, &found))
}

/// Changes the instance type as Terraform does: stop, modify, start again
/// if it was running.
async fn change_type(
    api: &Api,
    spec: &Spec,
    found: &Found,
    limit: Duration,
    progress: Progress<'_>,
) -> Result<(), ProviderError> {
    let id = found.instance.instance_id.as_str();
    let started = Instant::now();
    let left = || limit.saturating_sub(started.elapsed());
    let was_running = matches!(found.state(), "pending" | "running");
    if found.state() != "stopped" {
        progress(&format!(
            "stopping instance {id} to change its type from {} to {}",
            found.instance.instance_type, spec.instance_type
        ));
        let mut p = Params::new();
        p.set("InstanceId.1", id);
        api.ec2_text("StopInstances", &p, Idempotency::Safe)
            .await
            .map_err(|e| e.context(format!("cannot stop instance {id}")))?;
        wait_instance(api, id, Goal::Stopped, left(), "timeouts.update", progress).await?;
    }
    let mut p = Params::new();
    p.set("InstanceId", id)
        .set("InstanceType.Value", spec.instance_type.as_str());
    api.ec2_text("ModifyInstanceAttribute", &p, Idempotency::Safe)
        .await
        .map_err(|e| e.context(format!("cannot change the type of instance {id}")))?;
    progress(&format!("instance type is now {}", spec.instance_type));
    if was_running {
        let mut p = Params::new();
        p.set("InstanceId.1", id);
        api.ec2_text("StartInstances", &p, Idempotency::Safe)
            .await
            .map_err(|e| e.context(format!("cannot start instance {id}")))?;
        let public_ip = expects_public_ip(api, spec, found).await;
        wait_instance(
            api,
            id,
            Goal::Running { public_ip },
            left(),
            "timeouts.update",
            progress,
        )
        .await?;
    }
    Ok(())
}

/// Updates what can change in place: the type, the security groups, the
/// tags.
pub(crate) async fn update(
    api: &Api,
    req: &ApplyRequest<'_>,
    progress: Progress<'_>,
) -> Result<Applied, ProviderError> {
    let spec = Spec::parse(req.config)?;
    let id = req
        .prior_id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ProviderError::Api("cannot update an instance without its id".into()))?;
    let limit = timeout(req.config, "update", DEFAULT_UPDATE_TIMEOUT)?;
    let missing = || {
        ProviderError::Api(format!(
            "instance {id} no longer exists; run plan again to create it"
        ))
    };
    let found = describe(api, id).await?.ok_or_else(missing)?;
    if found.instance.instance_type != spec.instance_type {
        change_type(api, &spec, &found, limit, progress).await?;
    }
    if let Some(wanted) = &spec.vpc_security_group_ids
        && !wanted.is_empty()
        && *wanted != found.instance.group_ids()
    {
        let mut p = Params::new();
        p.set("InstanceId", id).list("GroupId", wanted);
        api.ec2_text("ModifyInstanceAttribute", &p, Idempotency::Safe)
            .await
            .map_err(|e| e.context(format!("cannot change the security groups of {id}")))?;
        progress(&format!("security groups are now {}", wanted.join(", ")));
    }
    let wanted_tags = tags::all_tags(&spec.tags, req.owner, req.address, req.config_hash)?;
    let changed = tags::sync_ec2(api, id, &tag_map(&found.instance.tag_set), &wanted_tags).await?;
    if !changed.is_empty() {
        progress(&format!("tags updated: {}", changed.join(", ")));
    }
    let found = describe(api, id).await?.ok_or_else(missing)?;
    Ok(applied(api, req.config, &found))
}

/// Terminates the instance and waits until it is `terminated`.
pub(crate) async fn delete(
    api: &Api,
    req: &DeleteRequest<'_>,
    progress: Progress<'_>,
) -> Result<(), ProviderError> {
    let id = req.id;
    if id.is_empty() {
        return Err(ProviderError::Api(
            "cannot terminate an instance without its id".into(),
        ));
    }
    let limit =
        timeout(req.attrs, "delete", DEFAULT_DELETE_TIMEOUT).unwrap_or(DEFAULT_DELETE_TIMEOUT);
    let mut p = Params::new();
    p.set("InstanceId.1", id);
    match api
        .ec2_text("TerminateInstances", &p, Idempotency::Safe)
        .await
    {
        Ok(_) => {}
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e.context(format!("cannot terminate instance {id}"))),
    }
    progress(&format!("terminating instance {id}"));
    wait_instance(
        api,
        id,
        Goal::Terminated,
        limit,
        "timeouts.delete",
        progress,
    )
    .await?;
    progress(&format!("instance {id} is terminated"));
    Ok(())
}

/// The owner's live instances: one paged `DescribeInstances` filtered by
/// berth's tags and the live states.
pub(crate) async fn refresh(api: &Api, owner: &Ownership) -> Result<Vec<Observed>, ProviderError> {
    let mut p = Params::new();
    tags::owner_filters(&mut p, owner);
    p.filter("instance-state-name", &LIVE_STATES);
    let pages: Vec<DescribeInstances> = api
        .ec2_pages("DescribeInstances", &p, PAGE)
        .await
        .map_err(|e| e.context("cannot list instances"))?;
    let mut observed = Vec::new();
    for found in pages.into_iter().flat_map(DescribeInstances::into_found) {
        if !LIVE_STATES.contains(&found.state()) {
            continue;
        }
        let Some(marks) = tags::marks(owner, &tag_map(&found.instance.tag_set)) else {
            continue;
        };
        if !attrs::address_is_type(&marks.address, TYPE) || found.instance.instance_id.is_empty() {
            continue;
        }
        observed.push(Observed {
            address: marks.address,
            id: found.instance.instance_id.clone(),
            attrs: read_back(api, &found),
            config_hash: marks.config_hash,
        });
    }
    observed.sort_by(|a, b| a.address.cmp(&b.address).then(a.id.cmp(&b.id)));
    Ok(observed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Mutex;

    fn config(v: Value) -> Attrs {
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    #[test]
    fn replacement_follows_terraform() {
        let s = schema();
        for name in [
            "ami",
            "subnet_id",
            "key_name",
            "user_data",
            "user_data_base64",
            "associate_public_ip_address",
            "security_groups",
            "private_ip",
            "availability_zone",
        ] {
            assert!(s.forces_replacement(name), "{name}");
        }
        for name in [
            "instance_type",
            "vpc_security_group_ids",
            "tags",
            "timeouts",
            "user_data_replace_on_change",
        ] {
            assert!(!s.forces_replacement(name), "{name}");
        }
        assert!(s.is_sensitive("user_data"));
    }

    #[test]
    fn client_tokens_are_deterministic_and_fit() {
        let o = Ownership {
            env: "e".into(),
            lineage: "l".into(),
        };
        let t = client_token(&o, "aws_instance.web", "h", 0);
        assert_eq!(t, client_token(&o, "aws_instance.web", "h", 0));
        assert_eq!(t.len(), 64);
        assert_ne!(t, client_token(&o, "aws_instance.web", "h2", 0));
        assert_ne!(t, client_token(&o, "aws_instance.web", "h", 1));
    }

    #[test]
    fn run_parameters() {
        let spec = Spec::parse(&config(json!({
            "ami": "ami-1", "instance_type": "t3.micro", "key_name": "k",
            "vpc_security_group_ids": ["sg-2", "sg-1"], "user_data": "#!/bin/sh\n",
            "subnet_id": "subnet-1", "associate_public_ip_address": true,
        })))
        .unwrap();
        let tags = BTreeMap::from([("Name".to_owned(), "web".to_owned())]);
        let p = run_params(&spec, &tags, "tok");
        assert_eq!(p.get("ClientToken"), Some("tok"));
        assert_eq!(p.get("UserData"), Some("IyEvYmluL3NoCg=="));
        assert_eq!(p.get("NetworkInterface.1.SubnetId"), Some("subnet-1"));
        assert_eq!(p.get("NetworkInterface.1.SecurityGroupId.1"), Some("sg-1"));
        assert_eq!(
            p.get("NetworkInterface.1.AssociatePublicIpAddress"),
            Some("true")
        );
        assert_eq!(p.get("SubnetId"), None);
        assert_eq!(p.get("TagSpecification.1.ResourceType"), Some("instance"));
        let spec = Spec::parse(&config(json!({
            "ami": "ami-1", "instance_type": "t3.micro", "subnet_id": "subnet-1",
            "vpc_security_group_ids": ["sg-1"],
        })))
        .unwrap();
        let p = run_params(&spec, &tags, "tok");
        assert_eq!(p.get("SubnetId"), Some("subnet-1"));
        assert_eq!(p.get("SecurityGroupId.1"), Some("sg-1"));
    }

    #[test]
    fn describe_replies_are_read() {
        let r: DescribeInstances = crate::xml::parse(
            r#"<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><reservationSet><item><reservationId>r-1</reservationId><ownerId>123456789012</ownerId><groupSet/><instancesSet><item><clientToken>tok</clientToken><networkInterfaceSet><item><association><publicIp>54.1.2.3</publicIp></association><attachment><deviceIndex>0</deviceIndex></attachment><groupSet><item><groupId>sg-9</groupId><groupName>default</groupName></item></groupSet><networkInterfaceId>eni-1</networkInterfaceId></item></networkInterfaceSet><groupSet/><stateReason><code/><message/></stateReason><tagSet><item><key>Name</key><value>web</value></item></tagSet><instanceId>i-1</instanceId><imageId>ami-1</imageId><instanceState><code>16</code><name>running</name></instanceState><privateDnsName>ip-10-0-0-1.ec2.internal</privateDnsName><dnsName>ec2-54-1-2-3.compute-1.amazonaws.com</dnsName><reason/><instanceType>m1.small</instanceType><placement><groupName/><availabilityZone>us-east-1a</availabilityZone></placement><subnetId>subnet-1</subnetId><privateIpAddress>10.0.0.1</privateIpAddress><ipAddress>54.1.2.3</ipAddress></item></instancesSet></item></reservationSet><nextToken>r-2</nextToken><requestId>x</requestId></DescribeInstancesResponse>"#,
        )
        .unwrap();
        assert_eq!(r.next_token().as_deref(), Some("r-2"));
        let found: Vec<Found> = r.into_found().collect();
        assert_eq!(found.len(), 1);
        let f = &found[0];
        assert_eq!(f.owner_id, "123456789012");
        assert_eq!(f.instance.client_token.as_deref(), Some("tok"));
        assert_eq!(f.instance.group_ids(), vec!["sg-9".to_owned()]);
        assert!(f.has_public_ip());
        assert_eq!(f.reason(), None);
    }

    struct Fake(&'static str, bool);

    impl StateView for Fake {
        fn state(&self) -> &str {
            self.0
        }
        fn has_public_ip(&self) -> bool {
            self.1
        }
        fn reason(&self) -> Option<String> {
            Some("Server.InternalError".into())
        }
    }

    fn fast() -> PollTiming {
        PollTiming {
            first: Duration::from_millis(1),
            max: Duration::from_millis(2),
        }
    }

    async fn run_wait(
        goal: Goal,
        script: Vec<Option<Fake>>,
        limit: Duration,
    ) -> (Result<Option<Fake>, ProviderError>, Vec<String>) {
        let lines = Mutex::new(Vec::new());
        let progress = |l: &str| lines.lock().unwrap().push(l.to_owned());
        let script = Mutex::new(script.into_iter());
        let result = wait_for(
            "i-1",
            goal,
            limit,
            "timeouts.create",
            fast(),
            &progress,
            || {
                let next = script.lock().unwrap().next();
                async move {
                    match next {
                        Some(v) => Ok(v),
                        None => Ok(Some(Fake("pending", false))),
                    }
                }
            },
        )
        .await;
        (result, lines.into_inner().unwrap())
    }

    #[tokio::test]
    async fn waits_through_pending_until_running_with_an_ip() {
        let (result, lines) = run_wait(
            Goal::Running { public_ip: true },
            vec![
                None,
                Some(Fake("pending", false)),
                Some(Fake("pending", false)),
                Some(Fake("running", false)),
                Some(Fake("running", true)),
            ],
            Duration::from_secs(30),
        )
        .await;
        let done = result.unwrap().unwrap();
        assert_eq!(done.0, "running");
        assert_eq!(
            lines,
            vec![
                "instance i-1 is pending, waiting for running with a public IP address",
                "instance i-1 is running, waiting for its public IP address",
            ]
        );
    }

    #[tokio::test]
    async fn a_terminated_start_is_an_error_and_a_slow_one_times_out() {
        let (result, _) = run_wait(
            Goal::Running { public_ip: false },
            vec![
                Some(Fake("pending", false)),
                Some(Fake("terminated", false)),
            ],
            Duration::from_secs(30),
        )
        .await;
        let e = result.err().unwrap().to_string();
        assert!(
            e.contains("terminated instead of running: Server.InternalError"),
            "{e}"
        );
        let (result, _) = run_wait(
            Goal::Running { public_ip: false },
            vec![],
            Duration::from_millis(20),
        )
        .await;
        let e = result.err().unwrap();
        assert!(matches!(e, ProviderError::Timeout(_)), "{e}");
        assert!(e.to_string().contains("it is pending"), "{e}");
        assert!(e.to_string().contains("adopts it"), "{e}");
    }

    #[tokio::test]
    async fn termination_is_waited_for() {
        let (result, lines) = run_wait(
            Goal::Terminated,
            vec![
                Some(Fake("shutting-down", false)),
                Some(Fake("shutting-down", false)),
                Some(Fake("terminated", false)),
            ],
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(result.unwrap().unwrap().0, "terminated");
        assert_eq!(
            lines,
            vec!["instance i-1 is shutting-down, waiting for terminated"]
        );
        let (result, _) = run_wait(Goal::Terminated, vec![None], Duration::from_secs(1)).await;
        assert!(result.unwrap().is_none());
    }
}
