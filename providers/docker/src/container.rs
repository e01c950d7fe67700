//! `docker_container`: the schema, and the lifecycle of a container
//! resource as one or more replicas. `replicas = 1` is one container named
//! exactly `name`; `replicas = N > 1` are `name-1` … `name-N`, each labelled
//! `berth.replica=<k>`. Creating (with conflict handling, network
//! attachment, waiting for health and rollback), updating in place (restart
//! policy, memory, CPU shares, scaling, restarting stopped or recreating
//! missing replicas), deleting, and refreshing all replicas with one list
//! call all live here; the rolling replacement is in [`crate::rolling`].
//!
//! When `replicas > 1` (or a `load_balancer` block is set) and a `ports`
//! block has an `external` TCP port, the resource also owns a load balancer
//! container `<name>-lb` ([`crate::lb`]) that publishes that port; the
//! replicas then publish it no more and are reached by name on the load
//! balancer's network (the first `networks_advanced`, else `<name>-net`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use berth_provider::{
    Applied, ApplyRequest, AttrSchema, AttrType, Attrs, BlockSchema, DeleteRequest, Nesting,
    Observed, Ownership, Progress, ProviderError, ResourceSchema, Value, labels,
};
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummary, ContainerSummaryStateEnum,
    ContainerUpdateBody, EndpointSettings, HealthConfig, HealthStatusEnum, HostConfig,
    HostConfigLogConfig, NetworkConnectRequest, NetworkingConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RenameContainerOptions, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;

use crate::Conn;
use crate::attrs;
use crate::client::{self, api, api_ctx, is_conflict, is_not_found, message};
use crate::duration::parse_duration;
use crate::health::{HTTP_CHECK_TIMEOUT, HttpCheck, HttpProbe};
use crate::image;
use crate::lb::{self, Balancer, LbKind, LbPort, LbSpec};
use crate::network::labels_block;

/// The resource type name.
pub(crate) const TYPE: &str = "docker_container";

/// The label holding a replica's index when `replicas > 1`.
pub const REPLICA_LABEL: &str = "berth.replica";

const DEFAULT_WAIT_TIMEOUT: i64 = 60;
const DEFAULT_GRACE_SECONDS: i64 = 10;
const POLL_INTERVAL: Duration = Duration::from_millis(500);
const LOG_LINES: usize = 20;
/// The listen port of the load balancer's first published port; the next
/// ones listen on 81, 82, ...
const LB_FIRST_LISTEN_PORT: u16 = 80;

/// The schema of `docker_container`.
pub(crate) fn schema() -> ResourceSchema {
    use AttrType::*;
    let s = |name, ty| AttrSchema::optional(name, ty);
    ResourceSchema {
        type_name: TYPE,
        attributes: vec![
            AttrSchema::required("name", String).force_new(),
            AttrSchema::required("image", String).force_new(),
            s("command", ListOfString).force_new(),
            s("entrypoint", ListOfString).force_new(),
            s("env", ListOfString).force_new(),
            s("restart", String).and_computed(),
            s("wait", Bool).and_computed(),
            s("wait_timeout", Number).and_computed(),
            s("must_run", Bool).and_computed(),
            s("destroy_grace_seconds", Number),
            s("log_driver", String).force_new(),
            s("user", String).force_new(),
            s("working_dir", String).force_new(),
            s("memory", Number),
            s("cpu_shares", Number),
            s("replicas", Number).and_computed(),
            // How many replicas a rolling replacement replaces at once.
            s("max_parallel", Number),
            AttrSchema::computed("id", String),
            AttrSchema::computed("container_ids", ListOfString),
            AttrSchema::computed("image_id", String).force_new(),
        ],
        blocks: vec![
            BlockSchema {
                name: "ports",
                nesting: Nesting::List,
                force_new: true,
                attributes: vec![
                    AttrSchema::required("internal", Number),
                    s("external", Number),
                    s("ip", String),
                    s("protocol", String),
                ],
                blocks: vec![],
            },
            labels_block(),
            BlockSchema {
                name: "volumes",
                nesting: Nesting::List,
                force_new: true,
                attributes: vec![
                    s("host_path", String),
                    AttrSchema::required("container_path", String),
                    s("volume_name", String),
                    s("read_only", Bool),
                ],
                blocks: vec![],
            },
            BlockSchema {
                name: "networks_advanced",
                nesting: Nesting::List,
                force_new: true,
                attributes: vec![
                    AttrSchema::required("name", String),
                    s("aliases", ListOfString),
                ],
                blocks: vec![],
            },
            BlockSchema {
                name: "healthcheck",
                nesting: Nesting::Single,
                force_new: true,
                attributes: vec![
                    // Docker's health check (`test`), berth's HTTP check
                    // (`path`, `port`), or both.
                    s("test", ListOfString),
                    s("interval", String),
                    s("timeout", String),
                    s("start_period", String),
                    s("retries", Number),
                    s("path", String),
                    s("port", Number),
                ],
                blocks: vec![],
            },
            BlockSchema {
                name: "load_balancer",
                nesting: Nesting::Single,
                force_new: true,
                // `kind`: "berth-proxy" (default) or "nginx"; `drain`: the
                // longest wait for a leaving replica's requests.
                attributes: vec![s("kind", String), s("image", String), s("drain", String)],
                blocks: vec![],
            },
        ],
    }
}

/// The defaults of the top-level optional attributes, put into the desired
/// configuration at plan time and into state at apply time, so that drift
/// in them (`replicas`, `must_run`) compares against a real value.
fn defaults() -> [(&'static str, Value); 5] {
    [
        ("replicas", Value::from(1)),
        ("must_run", Value::from(true)),
        ("restart", Value::from("no")),
        ("wait", Value::from(false)),
        ("wait_timeout", Value::from(DEFAULT_WAIT_TIMEOUT)),
    ]
}

fn fill_defaults(config: &mut Attrs) {
    for (key, value) in defaults() {
        if config.get(key).is_none_or(Value::is_null) {
            config.insert(key.to_owned(), value);
        }
    }
}

/// Plan time: fills defaults and, when the image reference resolves locally,
/// puts its id into `image_id` so that a moved tag shows as a replacement.
pub(crate) async fn prepare(
    docker: Option<&Docker>,
    config: &mut Attrs,
) -> Result<(), ProviderError> {
    fill_defaults(config);
    if let (Some(docker), Some(reference)) = (docker, attrs::non_empty_string(config, "image")?) {
        match image::local_id(docker, &reference).await {
            Ok(Some(id)) => {
                config.insert("image_id".into(), Value::from(id));
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(image = %reference, "cannot resolve image at plan time: {e}"),
        }
    }
    Ok(())
}

#[derive(Clone, Debug)]
struct PortSpec {
    internal: u16,
    external: Option<u16>,
    ip: String,
    protocol: String,
}

#[derive(Clone, Debug)]
struct VolumeSpec {
    /// Host path or volume name; `None` for an anonymous volume.
    source: Option<String>,
    container_path: String,
    read_only: bool,
}

#[derive(Clone, Debug)]
struct NetworkSpec {
    name: String,
    aliases: Vec<String>,
}

/// A parsed `docker_container` configuration.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    name: String,
    image: String,
    command: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    env: Option<Vec<String>>,
    ports: Vec<PortSpec>,
    labels: BTreeMap<String, String>,
    volumes: Vec<VolumeSpec>,
    networks: Vec<NetworkSpec>,
    pub(crate) restart: RestartPolicy,
    healthcheck: Option<HealthConfig>,
    /// berth's own HTTP check, `healthcheck { path, port }`.
    pub(crate) http_check: Option<HttpCheck>,
    pub(crate) wait: bool,
    pub(crate) wait_timeout: Duration,
    must_run: bool,
    log_driver: Option<String>,
    user: Option<String>,
    working_dir: Option<String>,
    memory_mb: Option<i64>,
    cpu_shares: Option<i64>,
    pub(crate) replicas: u32,
    /// Replicas replaced at once by a rolling replacement.
    pub(crate) max_parallel: u32,
    /// The load balancer in front of the replicas, if there is one.
    pub(crate) lb: Option<LbSpec>,
}

fn config_error(message: impl Into<String>) -> ProviderError {
    ProviderError::Config(message.into())
}

fn parse_restart(value: &str) -> Result<RestartPolicy, ProviderError> {
    let (name, count) = match value.split_once(':') {
        Some((name, count)) => (name, Some(count)),
        None => (value, None),
    };
    let policy = match name {
        "" | "no" => RestartPolicyNameEnum::NO,
        "always" => RestartPolicyNameEnum::ALWAYS,
        "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
        "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
        other => {
            return Err(config_error(format!(
                "`restart` must be one of no, always, unless-stopped, on-failure[:N], got `{other}`"
            )));
        }
    };
    let maximum_retry_count = match count {
        None => None,
        Some(_) if policy != RestartPolicyNameEnum::ON_FAILURE => {
            return Err(config_error(
                "`restart`: a retry count is only valid with on-failure",
            ));
        }
        Some(n) => Some(
            n.parse::<i64>()
                .map_err(|_| config_error(format!("`restart`: invalid retry count `{n}`")))?,
        ),
    };
    Ok(RestartPolicy {
        name: Some(policy),
        maximum_retry_count,
    })
}

fn port_number(value: i64, what: &str) -> Result<u16, ProviderError> {
    u16::try_from(value).ok().filter(|p| *p > 0).ok_or_else(|| {
        config_error(format!(
            "`{what}` must be a port between 1 and 65535, got {value}"
        ))
    })
}

fn duration_attr(block: &Attrs, key: &str) -> Result<Option<i64>, ProviderError> {
    match attrs::non_empty_string(block, key)? {
        None => Ok(None),
        Some(s) => parse_duration(&s)
            .map(Some)
            .map_err(|e| config_error(format!("`healthcheck.{key}`: {e}"))),
    }
}

impl Spec {
    pub(crate) fn parse(config: &Attrs, base_dir: &Path) -> Result<Self, ProviderError> {
        let name = attrs::required_string(config, "name")?;
        let replicas = attrs::int(config, "replicas")?.unwrap_or(1);
        let replicas = u32::try_from(replicas)
            .ok()
            .filter(|r| *r >= 1)
            .ok_or_else(|| {
                config_error(format!("`replicas` must be at least 1, got {replicas}"))
            })?;
        let max_parallel = attrs::int(config, "max_parallel")?.unwrap_or(1);
        let max_parallel = u32::try_from(max_parallel)
            .ok()
            .filter(|m| *m >= 1)
            .ok_or_else(|| {
                config_error(format!(
                    "`max_parallel` must be at least 1, got {max_parallel}"
                ))
            })?;
        let lb_block = attrs::block(config, "load_balancer")?;
        // A load balancer fronts the replicas when there are several, or
        // when the configuration asks for one.
        let wants_lb = replicas > 1 || lb_block.is_some();

        let mut ports = Vec::new();
        for block in attrs::blocks(config, "ports")? {
            let internal = attrs::int(&block, "internal")?
                .ok_or_else(|| config_error("`ports.internal` is required"))?;
            let external = attrs::int(&block, "external")?
                .map(|e| port_number(e, "ports.external"))
                .transpose()?;
            let protocol =
                attrs::non_empty_string(&block, "protocol")?.unwrap_or_else(|| "tcp".into());
            if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
                return Err(config_error(format!(
                    "`ports.protocol` must be tcp, udp or sctp, got `{protocol}`"
                )));
            }
            let balanced = wants_lb && protocol == "tcp";
            if let Some(external) = external
                && !balanced
                && u32::from(external) + replicas - 1 > 65535
            {
                return Err(config_error(format!(
                    "`ports.external` {external} leaves no room for {replicas} replicas \
                     (replica k uses external + k - 1)"
                )));
            }
            ports.push(PortSpec {
                internal: port_number(internal, "ports.internal")?,
                external,
                ip: attrs::non_empty_string(&block, "ip")?.unwrap_or_else(|| "0.0.0.0".into()),
                protocol,
            });
        }

        let mut volumes = Vec::new();
        for block in attrs::blocks(config, "volumes")? {
            let container_path = attrs::non_empty_string(&block, "container_path")?
                .ok_or_else(|| config_error("`volumes.container_path` is required"))?;
            let host_path = attrs::non_empty_string(&block, "host_path")?;
            let volume_name = attrs::non_empty_string(&block, "volume_name")?;
            let source = match (host_path, volume_name) {
                (Some(_), Some(_)) => {
                    return Err(config_error(
                        "`volumes`: set either host_path or volume_name, not both",
                    ));
                }
                (Some(host), None) => Some(base_dir.join(host).to_string_lossy().into_owned()),
                (None, volume) => volume,
            };
            volumes.push(VolumeSpec {
                source,
                container_path,
                read_only: attrs::boolean(&block, "read_only")?.unwrap_or(false),
            });
        }

        let mut networks = Vec::new();
        for block in attrs::blocks(config, "networks_advanced")? {
            networks.push(NetworkSpec {
                name: attrs::non_empty_string(&block, "name")?
                    .ok_or_else(|| config_error("`networks_advanced.name` is required"))?,
                aliases: attrs::string_list(&block, "aliases")?.unwrap_or_default(),
            });
        }

        let (healthcheck, http_check) = match attrs::block(config, "healthcheck")? {
            None => (None, None),
            Some(block) => {
                let test = attrs::string_list(&block, "test")?.filter(|t| !t.is_empty());
                let path = attrs::non_empty_string(&block, "path")?;
                let port = attrs::int(&block, "port")?
                    .map(|p| port_number(p, "healthcheck.port"))
                    .transpose()?;
                let http_check = if path.is_some() || port.is_some() {
                    let port = port.or(ports.first().map(|p| p.internal)).ok_or_else(|| {
                        config_error(
                            "`healthcheck.port` is required for the HTTP check when there is \
                             no `ports` block",
                        )
                    })?;
                    let path = path.unwrap_or_else(|| "/".to_owned());
                    if !path.starts_with('/') {
                        return Err(config_error(format!(
                            "`healthcheck.path` must start with `/`, got `{path}`"
                        )));
                    }
                    Some(HttpCheck { path, port })
                } else {
                    None
                };
                let healthcheck = match test {
                    Some(test) => Some(HealthConfig {
                        test: Some(test),
                        interval: duration_attr(&block, "interval")?,
                        timeout: duration_attr(&block, "timeout")?,
                        start_period: duration_attr(&block, "start_period")?,
                        retries: attrs::int(&block, "retries")?,
                        ..Default::default()
                    }),
                    None if http_check.is_some() => None,
                    None => {
                        return Err(config_error(
                            "`healthcheck` needs `test` (Docker's health check) or \
                             `path`/`port` (berth's HTTP check)",
                        ));
                    }
                };
                (healthcheck, http_check)
            }
        };

        let balanced: Vec<&PortSpec> = ports
            .iter()
            .filter(|p| wants_lb && p.protocol == "tcp" && p.external.is_some())
            .collect();
        let lb = if balanced.is_empty() {
            None
        } else {
            let (kind, image, drain) = match &lb_block {
                Some(block) => (
                    attrs::non_empty_string(block, "kind")?,
                    attrs::non_empty_string(block, "image")?,
                    attrs::non_empty_string(block, "drain")?,
                ),
                None => (None, None, None),
            };
            let kind = match kind.as_deref() {
                Some(name) => LbKind::parse(name).ok_or_else(|| {
                    config_error(format!(
                        "`load_balancer.kind` must be \"berth-proxy\" or \"nginx\", got `{name}`"
                    ))
                })?,
                // An image without a kind is an nginx image: that is what
                // `image` meant before kinds existed.
                None if image.is_some() => LbKind::Nginx,
                None => LbKind::default(),
            };
            let drain = match drain {
                Some(text) => {
                    let nanos = parse_duration(&text)
                        .map_err(|e| config_error(format!("`load_balancer.drain`: {e}")))?;
                    Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
                }
                None => kind.default_drain(),
            };
            let (network, managed_network) = match networks.first() {
                Some(first) => (first.name.clone(), false),
                None => (format!("{name}-net"), true),
            };
            Some(LbSpec {
                kind,
                drain,
                name: format!("{name}-lb"),
                image: image.unwrap_or_else(|| kind.default_image().to_owned()),
                network,
                managed_network,
                ports: balanced
                    .iter()
                    .zip(LB_FIRST_LISTEN_PORT..)
                    .map(|(p, listen)| LbPort {
                        listen,
                        internal: p.internal,
                        external: p.external.unwrap_or_default(),
                        ip: p.ip.clone(),
                    })
                    .collect(),
            })
        };

        let wait_timeout = attrs::int(config, "wait_timeout")?.unwrap_or(DEFAULT_WAIT_TIMEOUT);
        let wait_timeout = u64::try_from(wait_timeout)
            .map_err(|_| config_error("`wait_timeout` must not be negative"))?;

        Ok(Self {
            name,
            image: attrs::required_string(config, "image")?,
            command: attrs::string_list(config, "command")?,
            entrypoint: attrs::string_list(config, "entrypoint")?,
            env: attrs::string_list(config, "env")?,
            ports,
            labels: attrs::user_labels(config)?,
            volumes,
            networks,
            restart: parse_restart(&attrs::string(config, "restart")?.unwrap_or_default())?,
            healthcheck,
            http_check,
            wait: attrs::boolean(config, "wait")?.unwrap_or(false),
            wait_timeout: Duration::from_secs(wait_timeout),
            must_run: attrs::boolean(config, "must_run")?.unwrap_or(true),
            log_driver: attrs::non_empty_string(config, "log_driver")?,
            user: attrs::non_empty_string(config, "user")?,
            working_dir: attrs::non_empty_string(config, "working_dir")?,
            memory_mb: attrs::int(config, "memory")?.filter(|m| *m > 0),
            cpu_shares: attrs::int(config, "cpu_shares")?.filter(|c| *c > 0),
            replicas,
            max_parallel,
            lb,
        })
    }

    /// Whether a replacement of this resource is done by the provider, one
    /// replica (or `max_parallel`) at a time, the new one health-gated
    /// before the old one goes: with several replicas, a load balancer, or
    /// anything to wait for (a health check or `wait`). Otherwise the
    /// engine deletes and creates.
    pub(crate) fn rolls(&self) -> bool {
        self.replicas > 1
            || self.lb.is_some()
            || self.healthcheck.is_some()
            || self.http_check.is_some()
            || self.wait
    }

    /// The container name of replica `k` (1-based).
    pub(crate) fn replica_name(&self, k: u32) -> String {
        replica_name(&self.name, self.replicas, k)
    }

    fn memory_bytes(&self) -> Option<i64> {
        self.memory_mb.map(|mb| mb.saturating_mul(1024 * 1024))
    }

    /// Whether the load balancer publishes `port` instead of the replicas.
    fn balanced(&self, port: &PortSpec) -> bool {
        self.lb.is_some() && port.external.is_some() && port.protocol == "tcp"
    }

    /// Whether the replicas themselves publish fixed host ports, so that a
    /// new replica cannot run beside the old one it replaces.
    pub(crate) fn has_fixed_ports(&self) -> bool {
        self.ports
            .iter()
            .any(|p| p.external.is_some() && !self.balanced(p))
    }

    /// The network the replicas are reached on: the first
    /// `networks_advanced`, else the load balancer's.
    pub(crate) fn home_network(&self) -> Option<&str> {
        self.networks
            .first()
            .map(|n| n.name.as_str())
            .or(self.lb.as_ref().map(|lb| lb.network.as_str()))
    }

    /// The create body of replica `k`.
    fn body(&self, image_id: &str, k: u32, labels: HashMap<String, String>) -> ContainerCreateBody {
        let mut exposed = Vec::new();
        let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for port in &self.ports {
            let key = format!("{}/{}", port.internal, port.protocol);
            if !exposed.contains(&key) {
                exposed.push(key.clone());
            }
            if self.balanced(port) {
                // The load balancer publishes it; the replica is reached on
                // the network.
                continue;
            }
            let host_port = port
                .external
                .map(|e| (u32::from(e) + k - 1).to_string())
                .unwrap_or_default();
            bindings
                .entry(key)
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(PortBinding {
                    host_ip: Some(port.ip.clone()),
                    host_port: Some(host_port),
                });
        }

        let mut binds = Vec::new();
        let mut anonymous = Vec::new();
        for volume in &self.volumes {
            match &volume.source {
                Some(source) => binds.push(format!(
                    "{source}:{}{}",
                    volume.container_path,
                    if volume.read_only { ":ro" } else { "" }
                )),
                None => anonymous.push(volume.container_path.clone()),
            }
        }

        let first = self
            .networks
            .first()
            .map(|n| (n.name.clone(), n.aliases.clone()))
            .or_else(|| self.lb.as_ref().map(|lb| (lb.network.clone(), Vec::new())));
        let (network_mode, networking_config) = match first {
            Some((name, aliases)) => (
                Some(name.clone()),
                Some(NetworkingConfig {
                    endpoints_config: Some(HashMap::from([(
                        name,
                        EndpointSettings {
                            aliases: (!aliases.is_empty()).then_some(aliases),
                            ..Default::default()
                        },
                    )])),
                }),
            ),
            None => (None, None),
        };

        ContainerCreateBody {
            image: Some(image_id.to_owned()),
            cmd: self.command.clone(),
            entrypoint: self.entrypoint.clone(),
            env: self.env.clone(),
            user: self.user.clone(),
            working_dir: self.working_dir.clone(),
            labels: Some(labels),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            volumes: (!anonymous.is_empty()).then_some(anonymous),
            healthcheck: self.healthcheck.clone(),
            host_config: Some(HostConfig {
                port_bindings: (!bindings.is_empty()).then_some(bindings),
                binds: (!binds.is_empty()).then_some(binds),
                restart_policy: Some(self.restart.clone()),
                network_mode,
                memory: self.memory_bytes(),
                cpu_shares: self.cpu_shares,
                log_config: self.log_driver.as_ref().map(|driver| HostConfigLogConfig {
                    typ: Some(driver.clone()),
                    config: None,
                }),
                ..Default::default()
            }),
            networking_config,
            ..Default::default()
        }
    }

    fn update_body(&self) -> ContainerUpdateBody {
        let memory = self.memory_bytes();
        ContainerUpdateBody {
            restart_policy: Some(self.restart.clone()),
            memory,
            // Docker sets swap to twice the memory limit at create time; keep
            // that ratio so that raising the limit is accepted.
            memory_swap: memory.map(|m| m.saturating_mul(2)),
            cpu_shares: self.cpu_shares,
            ..Default::default()
        }
    }
}

fn replica_name(name: &str, replicas: u32, k: u32) -> String {
    if replicas == 1 {
        name.to_owned()
    } else {
        format!("{name}-{k}")
    }
}

/// Everything a replica needs besides the spec.
pub(crate) struct Target<'a> {
    pub(crate) conn: &'a Conn,
    pub(crate) address: &'a str,
    pub(crate) owner: &'a Ownership,
    pub(crate) config_hash: &'a str,
    pub(crate) image_id: String,
}

impl Target<'_> {
    pub(crate) fn docker(&self) -> &Docker {
        &self.conn.docker
    }

    fn labels(&self, spec: &Spec, k: u32) -> HashMap<String, String> {
        let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
        labels.extend(self.owner.labels(self.address, self.config_hash));
        if spec.replicas > 1 {
            labels.insert(REPLICA_LABEL.to_owned(), k.to_string());
        }
        if let Some(lb) = &spec.lb {
            labels.insert(lb::FRONTED_BY_LABEL.to_owned(), lb.name.clone());
        }
        labels
    }

    /// Whether a container's labels say it belongs to this resource.
    fn owns(&self, labels: &HashMap<String, String>) -> bool {
        labels.get(labels::ADDRESS).map(String::as_str) == Some(self.address)
            && labels.get(labels::ENV) == Some(&self.owner.env)
            && labels.get(labels::LINEAGE) == Some(&self.owner.lineage)
    }

    /// Who owns the load balancer.
    pub(crate) fn lb_owner(&self) -> lb::Owner<'_> {
        lb::Owner {
            address: self.address,
            owner: self.owner,
            config_hash: self.config_hash,
        }
    }

    /// The load balancer of `spec`, if it has one.
    pub(crate) fn balancer<'s>(&'s self, spec: &'s Spec) -> Option<Balancer<'s>> {
        spec.lb.as_ref().map(|lb| Balancer {
            docker: &self.conn.docker,
            auths: &self.conn.auths,
            probe: self.conn.probe.as_ref(),
            spec: lb,
            who: self.lb_owner(),
            restart: spec.restart.clone(),
        })
    }

    /// Creates replica `k` under the name `name` (not started) and connects
    /// its extra networks. The container's id is pushed onto `created` as
    /// soon as it exists.
    pub(crate) async fn create_replica_named(
        &self,
        spec: &Spec,
        k: u32,
        name: &str,
        created: &mut Vec<(String, String)>,
    ) -> Result<String, ProviderError> {
        let docker = self.docker();
        let options = || Some(CreateContainerOptionsBuilder::new().name(name).build());
        let body = spec.body(&self.image_id, k, self.labels(spec, k));
        let response = match docker.create_container(options(), body.clone()).await {
            Ok(response) => response,
            Err(e) if is_conflict(&e) => {
                self.clear_name(name, &e).await?;
                docker
                    .create_container(options(), body)
                    .await
                    .map_err(api_ctx(format!("cannot create container {name}")))?
            }
            Err(e) => return Err(api_ctx(format!("cannot create container {name}"))(e)),
        };
        let id = response.id;
        created.push((name.to_owned(), id.clone()));
        for warning in response.warnings {
            tracing::warn!(container = %name, "{warning}");
        }
        for network in spec.networks.iter().skip(1) {
            let request = NetworkConnectRequest {
                container: id.clone(),
                endpoint_config: Some(EndpointSettings {
                    aliases: (!network.aliases.is_empty()).then(|| network.aliases.clone()),
                    ..Default::default()
                }),
            };
            docker
                .connect_network(&network.name, request)
                .await
                .map_err(api_ctx(format!(
                    "cannot connect container {name} to network {}",
                    network.name
                )))?;
        }
        Ok(id)
    }

    /// A create hit a name conflict: removes the holder if it is a leftover
    /// of this very resource, and fails naming it otherwise.
    async fn clear_name(
        &self,
        name: &str,
        conflict: &bollard::errors::Error,
    ) -> Result<(), ProviderError> {
        let docker = self.docker();
        let holder = match docker.inspect_container(name, None).await {
            Ok(holder) => holder,
            // Gone meanwhile: the retry will tell.
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(_) => {
                return Err(ProviderError::Api(format!(
                    "cannot create container {name}: {}",
                    message(conflict)
                )));
            }
        };
        let holder_labels = holder
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        let holder_id = holder.id.clone().unwrap_or_default();
        if !self.owns(&holder_labels) {
            // A container started from a berth-built image inherits that
            // image's labels: only a docker_container address means berth.
            let address = holder_labels
                .get(labels::ADDRESS)
                .filter(|a| attrs::address_is_type(a, TYPE));
            let owner = match address {
                Some(address) => format!(
                    "it belongs to {address} in berth environment `{}`",
                    holder_labels
                        .get(labels::ENV)
                        .map(String::as_str)
                        .unwrap_or("?")
                ),
                None => "it is not managed by berth".to_owned(),
            };
            return Err(ProviderError::Api(format!(
                "a container named {name} already exists ({}) and {owner}; \
                 remove or rename it, or choose another name",
                short(&holder_id)
            )));
        }
        tracing::info!(container = %name, "replacing leftover container of {}", self.address);
        remove(docker, &holder_id).await
    }

    /// Creates and starts replicas `ks`, then waits for them if asked.
    /// Anything this call created is removed again when a step fails.
    async fn create_replicas(
        &self,
        spec: &Spec,
        ks: &[u32],
        progress: Progress<'_>,
    ) -> Result<Vec<(u32, String)>, ProviderError> {
        let mut created = Vec::new();
        match self
            .create_replicas_inner(spec, ks, &mut created, progress)
            .await
        {
            Ok(ids) => Ok(ids),
            Err(e) => {
                for (name, id) in created.iter().rev() {
                    progress(&format!("removing {name} after the failure"));
                    if let Err(cleanup) = remove(self.docker(), id).await {
                        tracing::warn!(container = %name, "cleanup failed: {cleanup}");
                    }
                }
                Err(e)
            }
        }
    }

    async fn create_replicas_inner(
        &self,
        spec: &Spec,
        ks: &[u32],
        created: &mut Vec<(String, String)>,
        progress: Progress<'_>,
    ) -> Result<Vec<(u32, String)>, ProviderError> {
        let mut ids = Vec::new();
        for &k in ks {
            let name = spec.replica_name(k);
            progress(&format!("creating container {name}"));
            let id = self.create_replica_named(spec, k, &name, created).await?;
            self.start(&id, &name).await?;
            ids.push((k, id));
        }
        if spec.wait {
            for (k, id) in &ids {
                self.wait_ready(spec, id, &spec.replica_name(*k), progress)
                    .await?;
            }
        }
        Ok(ids)
    }

    /// Starts a created container; a failure carries its last log lines.
    pub(crate) async fn start(&self, id: &str, name: &str) -> Result<(), ProviderError> {
        if let Err(e) = self.docker().start_container(id, None).await {
            let logs = tail_logs(self.docker(), id).await;
            return Err(ProviderError::Api(format!(
                "cannot start container {name}: {}{logs}",
                message(&e)
            )));
        }
        Ok(())
    }

    /// Waits until the container is ready: see [`wait_ready`].
    pub(crate) async fn wait_ready(
        &self,
        spec: &Spec,
        id: &str,
        name: &str,
        progress: Progress<'_>,
    ) -> Result<(), ProviderError> {
        wait_ready(
            self.docker(),
            self.conn.probe.as_ref(),
            Readiness {
                id,
                name,
                http_check: spec.http_check.as_ref(),
                network: spec.home_network(),
                timeout: spec.wait_timeout,
            },
            progress,
        )
        .await
    }
}

/// Force-removes a container; one that is gone already is fine.
pub(crate) async fn remove(docker: &Docker, id: &str) -> Result<(), ProviderError> {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        // 409 "removal already in progress" is as good as done.
        Err(e) if is_conflict(&e) && message(&e).contains("already in progress") => Ok(()),
        Err(e) => Err(api_ctx(format!("cannot remove container {}", short(id)))(e)),
    }
}

/// Stops a container gracefully (`grace` seconds before SIGKILL).
pub(crate) async fn stop(docker: &Docker, id: &str, grace: i64) -> Result<(), ProviderError> {
    let grace = grace.clamp(0, i64::from(i32::MAX));
    // The engine answers a stop only once the container is down: allow the
    // grace period on top of the usual request timeout.
    let patient = docker
        .clone()
        .with_timeout(Duration::from_secs(120 + grace.unsigned_abs()));
    let options = StopContainerOptionsBuilder::new().t(grace as i32).build();
    match patient.stop_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(api_ctx(format!("cannot stop container {}", short(id)))(e)),
    }
}

/// Stops a container gracefully, then force-removes it.
pub(crate) async fn stop_and_remove(
    docker: &Docker,
    id: &str,
    grace: i64,
) -> Result<(), ProviderError> {
    if let Err(e) = stop(docker, id, grace).await {
        tracing::warn!(container = %short(id), "stop failed, removing anyway: {e}");
    }
    remove(docker, id).await
}

/// Renames a container.
pub(crate) async fn rename(docker: &Docker, id: &str, name: &str) -> Result<(), ProviderError> {
    docker
        .rename_container(
            id,
            RenameContainerOptions {
                name: name.to_owned(),
            },
        )
        .await
        .map_err(api_ctx(format!(
            "cannot rename container {} to {name}",
            short(id)
        )))
}

/// The last lines of a container's output, formatted to append to an error.
pub(crate) async fn tail_logs(docker: &Docker, id: &str) -> String {
    let options = LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .tail(&LOG_LINES.to_string())
        .build();
    let mut stream = docker.logs(id, Some(options));
    let mut text = String::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(output) => text.push_str(&output.to_string()),
            Err(_) => break,
        }
    }
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LOG_LINES)..];
    if tail.is_empty() {
        "\n(the container wrote no log output)".to_owned()
    } else {
        format!(
            "\nlast {} log line(s):\n{}",
            tail.len(),
            tail.iter()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    }
}

/// The container's IP on `network` (else on any network it is on).
pub(crate) fn ip_on(info: &ContainerInspectResponse, network: Option<&str>) -> Option<String> {
    let networks = info.network_settings.as_ref()?.networks.as_ref()?;
    let ip = |ep: &EndpointSettings| ep.ip_address.clone().filter(|ip| !ip.is_empty());
    if let Some(ip) = network.and_then(|n| networks.get(n)).and_then(ip) {
        return Some(ip);
    }
    let mut names: Vec<&String> = networks.keys().collect();
    names.sort();
    names.into_iter().find_map(|n| ip(&networks[n]))
}

/// What [`wait_ready`] waits for.
pub(crate) struct Readiness<'a> {
    pub id: &'a str,
    pub name: &'a str,
    /// berth's HTTP check, made once Docker says the container is fine.
    pub http_check: Option<&'a HttpCheck>,
    /// The network whose IP the HTTP check uses.
    pub network: Option<&'a str>,
    pub timeout: Duration,
}

/// The output of the container's last health check, formatted to append
/// to an error.
fn health_output(info: &ContainerInspectResponse) -> String {
    let last = info
        .state
        .as_ref()
        .and_then(|s| s.health.as_ref())
        .and_then(|h| h.log.as_ref())
        .and_then(|log| log.last());
    match last {
        Some(result) => {
            let output = result.output.as_deref().unwrap_or("").trim();
            format!(
                "\nlast health check: exit code {}{}",
                result.exit_code.unwrap_or(-1),
                if output.is_empty() {
                    String::new()
                } else {
                    format!(", output: {output}")
                }
            )
        }
        None => String::new(),
    }
}

/// Polls the container until it is ready: Docker's health check passes
/// (or, without one, it runs), and then berth's HTTP check, if any, gets a
/// 2xx answer. Fails when it turns unhealthy, exits, or the timeout passes,
/// with its last log lines and health check output.
pub(crate) async fn wait_ready(
    docker: &Docker,
    probe: &dyn HttpProbe,
    what: Readiness<'_>,
    progress: Progress<'_>,
) -> Result<(), ProviderError> {
    let Readiness {
        id,
        name,
        http_check,
        network,
        timeout,
    } = what;
    progress(&format!("waiting for {name} to become healthy"));
    let deadline = Instant::now() + timeout;
    let mut http_failure: Option<String> = None;
    loop {
        let info = docker
            .inspect_container(id, None)
            .await
            .map_err(api_ctx(format!("cannot inspect container {name}")))?;
        let state = info.state.clone().unwrap_or_default();
        let running = state.running.unwrap_or(false);
        let restarting = state.restarting.unwrap_or(false);
        let health = state.health.as_ref().and_then(|h| h.status);
        let docker_ok = match health {
            Some(HealthStatusEnum::HEALTHY) => true,
            Some(HealthStatusEnum::UNHEALTHY) => {
                let logs = tail_logs(docker, id).await;
                return Err(ProviderError::Api(format!(
                    "container {name} is unhealthy{}{logs}",
                    health_output(&info)
                )));
            }
            Some(HealthStatusEnum::STARTING) => false,
            // No health check: running is what Docker can tell.
            _ => running && !restarting,
        };
        if !running && !restarting {
            let logs = tail_logs(docker, id).await;
            return Err(ProviderError::Api(format!(
                "container {name} exited with code {} while waiting for it to become healthy{logs}",
                state.exit_code.unwrap_or(-1)
            )));
        }
        if docker_ok {
            match http_check {
                None => {
                    progress(&format!("{name} is healthy"));
                    return Ok(());
                }
                Some(check) => match ip_on(&info, network) {
                    None => http_failure = Some("the container has no IP address".to_owned()),
                    Some(ip) => {
                        match probe
                            .get(&ip, check.port, &check.path, HTTP_CHECK_TIMEOUT)
                            .await
                        {
                            Ok(status) if (200..300).contains(&status) => {
                                progress(&format!(
                                    "{name} is healthy ({} answered {status})",
                                    check.url(&ip)
                                ));
                                return Ok(());
                            }
                            Ok(status) => {
                                http_failure = Some(format!("{} answered {status}", check.url(&ip)))
                            }
                            Err(e) => http_failure = Some(format!("{}: {e}", check.url(&ip))),
                        }
                    }
                },
            }
        }
        if Instant::now() >= deadline {
            let logs = tail_logs(docker, id).await;
            let http = http_failure
                .map(|f| format!("\nlast HTTP check: {f}"))
                .unwrap_or_default();
            return Err(ProviderError::Timeout(format!(
                "container {name} did not become healthy within {}s{}{http}{logs}",
                timeout.as_secs(),
                health_output(&info)
            )));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// One container of a resource found by a list call: a replica, the load
/// balancer, or a temporary one of an interrupted rolling replacement.
#[derive(Clone, Debug)]
pub(crate) struct Replica {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) index: u32,
    pub(crate) running: bool,
    pub(crate) image_id: Option<String>,
    pub(crate) config_hash: Option<String>,
    /// `berth.role` (`lb` for the load balancer).
    role: Option<String>,
    /// `berth.lb-hash` of a load balancer.
    pub(crate) lb_hash: Option<String>,
    /// `berth.lb` of a replica: the load balancer that fronts it.
    fronted_by: Option<String>,
}

/// A temporary container name, `<name>-<kind>-<8 hex>`: kind `next` for a
/// new replica before its switch, `prev` for an old one renamed out of the
/// way.
pub(crate) fn temporary_name(name: &str, kind: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.write(name.as_bytes());
    format!("{name}-{kind}-{:08x}", hasher.finish() & 0xffff_ffff)
}

/// Whether `name` is one [`temporary_name`] made.
pub(crate) fn is_temporary(name: &str) -> bool {
    let Some((rest, suffix)) = name.rsplit_once('-') else {
        return false;
    };
    suffix.len() == 8
        && suffix.bytes().all(|b| b.is_ascii_hexdigit())
        && (rest.ends_with("-next") || rest.ends_with("-prev"))
}

impl Replica {
    fn from_summary(summary: ContainerSummary) -> Self {
        let labels = summary.labels.unwrap_or_default();
        let name = summary
            .names
            .and_then(|names| names.into_iter().next())
            .map(|n| n.trim_start_matches('/').to_owned())
            .unwrap_or_default();
        let index = labels
            .get(REPLICA_LABEL)
            .and_then(|k| k.parse().ok())
            .unwrap_or(1);
        Self {
            id: summary.id.unwrap_or_default(),
            name,
            index,
            running: summary.state == Some(ContainerSummaryStateEnum::RUNNING),
            image_id: summary.image_id,
            config_hash: labels.get(labels::CONFIG_HASH).cloned(),
            role: labels.get(lb::ROLE_LABEL).cloned(),
            lb_hash: labels.get(lb::HASH_LABEL).cloned(),
            fronted_by: labels.get(lb::FRONTED_BY_LABEL).cloned(),
        }
    }

    fn is_lb(&self) -> bool {
        self.role.as_deref() == Some(lb::ROLE_LB)
    }
}

/// The containers of one resource, sorted out.
#[derive(Clone, Debug, Default)]
pub(crate) struct Objects {
    /// Replicas by index.
    pub(crate) replicas: Vec<Replica>,
    /// The load balancer.
    pub(crate) lb: Option<Replica>,
    /// Leftovers of an interrupted rolling replacement (and any second
    /// load balancer).
    pub(crate) temporaries: Vec<Replica>,
}

impl Objects {
    fn sort(all: Vec<Replica>) -> Self {
        let mut objects = Self::default();
        for replica in all {
            if replica.is_lb() {
                if objects.lb.is_none() {
                    objects.lb = Some(replica);
                } else {
                    objects.temporaries.push(replica);
                }
            } else if is_temporary(&replica.name) {
                objects.temporaries.push(replica);
            } else {
                objects.replicas.push(replica);
            }
        }
        objects
            .replicas
            .sort_by(|a, b| (a.index, &a.name).cmp(&(b.index, &b.name)));
        objects
    }

    /// Names of the running replicas among `wanted`, in that order.
    pub(crate) fn running_names(&self, wanted: &[String]) -> Vec<String> {
        wanted
            .iter()
            .filter(|name| self.replicas.iter().any(|r| &r.name == *name && r.running))
            .cloned()
            .collect()
    }
}

/// Every container of `address` (all states) with one list call.
pub(crate) async fn list_objects(
    docker: &Docker,
    owner: &Ownership,
    address: &str,
) -> Result<Objects, ProviderError> {
    let filters = client::label_filters(owner, &[format!("{}={address}", labels::ADDRESS)]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let all: Vec<Replica> = docker
        .list_containers(Some(options))
        .await
        .map_err(api_ctx(format!("cannot list the containers of {address}")))?
        .into_iter()
        .map(Replica::from_summary)
        .collect();
    Ok(Objects::sort(all))
}

pub(crate) fn applied(spec: &Spec, config: &Attrs, image_id: &str, ids: &[String]) -> Applied {
    let mut attrs = config.clone();
    fill_defaults(&mut attrs);
    attrs.insert("replicas".into(), Value::from(spec.replicas));
    let first = ids.first().cloned().unwrap_or_default();
    attrs.insert("id".into(), Value::from(first.clone()));
    attrs.insert("container_ids".into(), Value::from(ids.to_vec()));
    attrs.insert("image_id".into(), Value::from(image_id.to_owned()));
    Applied { id: first, attrs }
}

/// The image id to create replicas from: the one prepared into the config,
/// else the reference resolved now (pulled when missing, with the
/// registry's credentials).
pub(crate) async fn resolve_image(
    conn: &Conn,
    spec: &Spec,
    config: &Attrs,
    progress: Progress<'_>,
) -> Result<String, ProviderError> {
    if let Some(id) = attrs::non_empty_string(config, "image_id")?
        && image::local_id(&conn.docker, &id).await?.is_some()
    {
        return Ok(id);
    }
    let image = image::ensure_image(&conn.docker, &conn.auths, &spec.image, progress).await?;
    image
        .id
        .ok_or_else(|| ProviderError::Api(format!("image {} has no id", spec.image)))
}

/// Whether a replacement of `config` rolls (see [`Spec::rolls`]). `config` may lack the
/// attributes unknown at plan time (an image built in the same apply); what
/// decides rolling (replicas, a load balancer, a health check, `wait`) is
/// then read directly.
pub(crate) fn rolls(config: &Attrs) -> bool {
    if let Ok(spec) = Spec::parse(config, Path::new(".")) {
        return spec.rolls();
    }
    let set = |key: &str| {
        config
            .get(key)
            .is_some_and(|v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
    };
    attrs::int(config, "replicas")
        .ok()
        .flatten()
        .is_some_and(|n| n > 1)
        || set("load_balancer")
        || set("healthcheck")
        || attrs::boolean(config, "wait").ok().flatten() == Some(true)
}

/// Creates every replica, then the load balancer in front of them.
pub(crate) async fn create(
    conn: &Conn,
    req: &ApplyRequest<'_>,
    base_dir: &Path,
    progress: Progress<'_>,
) -> Result<Applied, ProviderError> {
    let spec = Spec::parse(req.config, base_dir)?;
    let image_id = resolve_image(conn, &spec, req.config, progress).await?;
    let target = Target {
        conn,
        address: req.address,
        owner: req.owner,
        config_hash: req.config_hash,
        image_id,
    };
    if let Some(balancer) = target.balancer(&spec) {
        balancer.ensure_image(progress).await?;
        lb::ensure_network(&conn.docker, balancer.spec, &target.lb_owner(), progress).await?;
    }
    let ks: Vec<u32> = (1..=spec.replicas).collect();
    let created = match target.create_replicas(&spec, &ks, progress).await {
        Ok(created) => created,
        Err(e) => {
            if spec.lb.is_some() {
                let _ =
                    lb::remove_networks(&conn.docker, req.owner, req.address, None, progress).await;
            }
            return Err(e);
        }
    };
    let ids: Vec<String> = created.into_iter().map(|(_, id)| id).collect();
    if let Some(balancer) = target.balancer(&spec) {
        let servers: Vec<String> = ks.iter().map(|k| spec.replica_name(*k)).collect();
        if let Err(e) = balancer.create(&servers, progress).await {
            for id in ids.iter().rev() {
                if let Err(cleanup) = remove(&conn.docker, id).await {
                    tracing::warn!(container = %short(id), "cleanup failed: {cleanup}");
                }
            }
            let _ = lb::remove_networks(&conn.docker, req.owner, req.address, None, progress).await;
            return Err(e);
        }
    }
    Ok(applied(&spec, req.config, &target.image_id, &ids))
}

/// Updates in place: restart policy, memory and CPU shares on every
/// replica; scales to `replicas`; recreates missing replicas and starts
/// stopped ones when `must_run`; keeps the load balancer running and
/// pointed at the replicas (scaling down takes replicas out of it before
/// they stop).
pub(crate) async fn update(
    conn: &Conn,
    req: &ApplyRequest<'_>,
    base_dir: &Path,
    progress: Progress<'_>,
) -> Result<Applied, ProviderError> {
    let docker = &conn.docker;
    let spec = Spec::parse(req.config, base_dir)?;
    let mut config = req.config.clone();
    if !config.contains_key("image_id")
        && let Some(prior) = req.prior.and_then(|p| p.get("image_id"))
    {
        config.insert("image_id".into(), prior.clone());
    }
    let image_id = resolve_image(conn, &spec, &config, progress).await?;
    let target = Target {
        conn,
        address: req.address,
        owner: req.owner,
        config_hash: req.config_hash,
        image_id,
    };

    let objects = list_objects(docker, req.owner, req.address).await?;
    for leftover in &objects.temporaries {
        progress(&format!("removing leftover container {}", leftover.name));
        remove(docker, &leftover.id).await?;
    }
    // A load balancer that no longer fits (or is no longer wanted) goes
    // first: it may hold ports the replicas need.
    let mut lb_existing = objects.lb.clone();
    if let Some(existing) = &lb_existing
        && spec.lb.as_ref().map(LbSpec::hash) != existing.lb_hash
    {
        progress(&format!("removing load balancer {}", existing.name));
        stop_and_remove(docker, &existing.id, 1).await?;
        lb_existing = None;
    }
    let balancer = target.balancer(&spec);
    if let Some(balancer) = &balancer {
        if lb_existing.is_none() {
            balancer.ensure_image(progress).await?;
        }
        lb::ensure_network(docker, balancer.spec, &target.lb_owner(), progress).await?;
    }

    let existing = &objects.replicas;
    let wanted: Vec<(u32, String)> = (1..=spec.replicas)
        .map(|k| (k, spec.replica_name(k)))
        .collect();
    let wanted_names: Vec<String> = wanted.iter().map(|(_, n)| n.clone()).collect();
    let kept: Vec<&Replica> = existing
        .iter()
        .filter(|r| wanted_names.contains(&r.name))
        .collect();
    let mut extra: Vec<&Replica> = existing
        .iter()
        .filter(|r| !wanted_names.contains(&r.name))
        .collect();
    extra.sort_by(|a, b| (b.index, &b.name).cmp(&(a.index, &a.name)));
    let missing: Vec<u32> = wanted
        .iter()
        .filter(|(_, name)| !existing.iter().any(|r| r.name == *name))
        .map(|(k, _)| *k)
        .collect();

    for replica in &kept {
        docker
            .update_container(&replica.id, spec.update_body())
            .await
            .map_err(api_ctx(format!("cannot update container {}", replica.name)))?;
    }

    let grace = destroy_grace(req.config)?;
    // Replicas about to go leave the load balancer first.
    if !extra.is_empty()
        && let (Some(balancer), Some(lb)) = (&balancer, &lb_existing)
        && lb.running
    {
        let staying = objects.running_names(&wanted_names);
        balancer.reload(&lb.id, &staying, progress).await?;
        balancer.drain(&lb.id, progress).await;
    }
    // With fixed host ports the old replicas must free them first;
    // otherwise the new ones come up before the old ones go.
    if spec.has_fixed_ports() {
        remove_replicas(docker, &extra, grace, progress).await?;
    }
    if !missing.is_empty() {
        target.create_replicas(&spec, &missing, progress).await?;
    }
    if !spec.has_fixed_ports() {
        remove_replicas(docker, &extra, grace, progress).await?;
    }

    if spec.must_run {
        for replica in kept.iter().filter(|r| !r.running) {
            progress(&format!("starting container {}", replica.name));
            docker
                .start_container(&replica.id, None)
                .await
                .map_err(api_ctx(format!("cannot start container {}", replica.name)))?;
        }
        if spec.wait {
            for replica in kept.iter().filter(|r| !r.running) {
                target
                    .wait_ready(&spec, &replica.id, &replica.name, progress)
                    .await?;
            }
        }
    }

    let now = list_objects(docker, req.owner, req.address).await?;
    if let Some(balancer) = &balancer {
        let servers = now.running_names(&wanted_names);
        match &lb_existing {
            Some(lb) if lb.running => balancer.reload(&lb.id, &servers, progress).await?,
            Some(lb) => {
                progress(&format!("starting load balancer {}", lb.name));
                balancer.start(&lb.id, &servers, progress).await?;
            }
            None => {
                balancer.create(&servers, progress).await?;
            }
        }
    }
    let keep_network = spec
        .lb
        .as_ref()
        .filter(|lb| lb.managed_network)
        .map(|lb| lb.network.as_str());
    lb::remove_networks(docker, req.owner, req.address, keep_network, progress).await?;

    let ids: Vec<String> = wanted_names
        .iter()
        .filter_map(|name| {
            now.replicas
                .iter()
                .find(|r| &r.name == name)
                .map(|r| r.id.clone())
        })
        .collect();
    Ok(applied(&spec, req.config, &target.image_id, &ids))
}

pub(crate) async fn remove_replicas(
    docker: &Docker,
    replicas: &[&Replica],
    grace: i64,
    progress: Progress<'_>,
) -> Result<(), ProviderError> {
    for replica in replicas {
        progress(&format!("removing container {}", replica.name));
        stop_and_remove(docker, &replica.id, grace).await?;
    }
    Ok(())
}

pub(crate) fn destroy_grace(attrs: &Attrs) -> Result<i64, ProviderError> {
    Ok(attrs::int(attrs, "destroy_grace_seconds")?.unwrap_or(DEFAULT_GRACE_SECONDS))
}

/// Removes every container of the resource (the load balancer first, so
/// nothing is sent to replicas that are stopping) and the network berth
/// created for it.
pub(crate) async fn remove_all(
    docker: &Docker,
    owner: &Ownership,
    address: &str,
    grace: i64,
    progress: Progress<'_>,
) -> Result<(), ProviderError> {
    let objects = list_objects(docker, owner, address).await?;
    if let Some(lb) = &objects.lb {
        progress(&format!("removing load balancer {}", lb.name));
        stop_and_remove(docker, &lb.id, grace.min(1)).await?;
    }
    let mut doomed: Vec<&Replica> = objects.temporaries.iter().collect();
    doomed.extend(objects.replicas.iter().rev());
    remove_replicas(docker, &doomed, grace, progress).await?;
    lb::remove_networks(docker, owner, address, None, progress).await
}

/// Stops (with `destroy_grace_seconds`) and removes every replica of the
/// resource, its load balancer and its network; what is gone already is
/// fine.
pub(crate) async fn delete(
    docker: &Docker,
    req: &DeleteRequest<'_>,
    progress: Progress<'_>,
) -> Result<(), ProviderError> {
    let grace = destroy_grace(req.attrs)?;
    remove_all(docker, req.owner, req.address, grace, progress).await
}

/// Lists every container of the owner with one call and reports one
/// observation per resource address.
pub(crate) async fn refresh(
    docker: &Docker,
    owner: &Ownership,
) -> Result<Vec<Observed>, ProviderError> {
    let filters = client::label_filters(owner, &[]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let containers = docker.list_containers(Some(options)).await.map_err(api)?;
    let mut by_address: BTreeMap<String, Vec<Replica>> = BTreeMap::new();
    for summary in containers {
        let Some(address) = summary
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::ADDRESS))
            .filter(|a| attrs::address_is_type(a, TYPE))
            .cloned()
        else {
            continue;
        };
        by_address
            .entry(address)
            .or_default()
            .push(Replica::from_summary(summary));
    }
    Ok(by_address
        .into_iter()
        .filter_map(|(address, all)| observe(address, &Objects::sort(all)))
        .collect())
}

/// The observation of one resource; none when only leftovers of an
/// interrupted rollout are there.
fn observe(address: String, objects: &Objects) -> Option<Observed> {
    let replicas = &objects.replicas;
    if replicas.is_empty() && objects.lb.is_none() {
        return None;
    }
    let first = replicas.first();
    let id = first
        .or(objects.lb.as_ref())
        .map(|r| r.id.clone())
        .unwrap_or_default();
    let mut attrs = Attrs::new();
    attrs.insert("id".into(), Value::from(id.clone()));
    attrs.insert("replicas".into(), Value::from(replicas.len()));
    attrs.insert(
        "container_ids".into(),
        Value::from(replicas.iter().map(|r| r.id.clone()).collect::<Vec<_>>()),
    );
    if let Some(image_id) = first.and_then(|r| r.image_id.clone()) {
        attrs.insert("image_id".into(), Value::from(image_id));
    }
    // Reported only when false: a resource with `must_run = false` whose
    // containers happen to run is not drift. A load balancer that is
    // stopped, or missing while the replicas expect one, counts as not
    // running: the update that follows brings it back.
    let lb_down = match &objects.lb {
        Some(lb) => !lb.running,
        None => replicas.iter().any(|r| r.fronted_by.is_some()),
    };
    if replicas.iter().any(|r| !r.running) || lb_down {
        attrs.insert("must_run".into(), Value::from(false));
    }
    Some(Observed {
        address,
        id,
        attrs,
        config_hash: first.and_then(|r| r.config_hash.clone()),
    })
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(v: Value) -> Attrs {
        match v {
            Value::Object(map) => map.into_iter().collect(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn rolling_is_decided_without_the_image_built_in_the_same_apply() {
        // At plan time an image rebuilt in the same apply is unknown and
        // left out; the replicas still roll.
        assert!(rolls(&config(json!({"name": "web", "replicas": 2}))));
        assert!(rolls(&config(
            json!({"name": "web", "healthcheck": {"path": "/api/ping"}})
        )));
        assert!(rolls(&config(json!({"name": "web", "wait": true}))));
        assert!(!rolls(&config(json!({"name": "web", "replicas": 1}))));
        assert!(!rolls(&config(json!({"name": "web", "healthcheck": []}))));
    }

    #[test]
    fn replica_names() {
        assert_eq!(replica_name("web", 1, 1), "web");
        assert_eq!(replica_name("web", 3, 2), "web-2");
    }

    #[test]
    fn body_maps_ports_per_replica() {
        let spec = Spec::parse(
            &config(json!({
                "name": "web", "image": "app", "replicas": 3,
                "ports": [{"internal": 80, "external": 8080, "protocol": "udp"}, {"internal": 53, "protocol": "udp"}],
                "healthcheck": {"test": ["CMD", "true"], "interval": "1m30s", "retries": 3},
                "memory": 64, "restart": "on-failure:5",
                "volumes": [{"host_path": "data", "container_path": "/data", "read_only": true},
                            {"container_path": "/scratch"}],
                "networks_advanced": [{"name": "a", "aliases": ["x"]}, {"name": "b"}],
            })),
            Path::new("/base"),
        )
        .unwrap();
        let body = spec.body("sha256:abc", 2, HashMap::new());
        let host = body.host_config.unwrap();
        let bindings = host.port_bindings.unwrap();
        // Not TCP, so not balanced: replica k publishes external + k - 1.
        let web = bindings["80/udp"].as_ref().unwrap();
        assert_eq!(web[0].host_port.as_deref(), Some("8081"));
        assert_eq!(web[0].host_ip.as_deref(), Some("0.0.0.0"));
        assert_eq!(
            bindings["53/udp"].as_ref().unwrap()[0].host_port.as_deref(),
            Some("")
        );
        assert_eq!(host.binds.unwrap(), ["/base/data:/data:ro"]);
        assert_eq!(body.volumes.unwrap(), ["/scratch"]);
        assert_eq!(host.memory, Some(64 * 1024 * 1024));
        assert_eq!(host.network_mode.as_deref(), Some("a"));
        assert_eq!(host.restart_policy.unwrap().maximum_retry_count, Some(5));
        assert_eq!(body.healthcheck.unwrap().interval, Some(90_000_000_000));
        let endpoints = body.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(
            endpoints["a"].aliases.as_deref(),
            Some(&["x".to_owned()][..])
        );
    }

    #[test]
    fn bad_configs_are_config_errors() {
        for bad in [
            json!({"name": "w", "image": "i", "replicas": 0}),
            json!({"name": "w", "image": "i", "restart": "sometimes"}),
            json!({"name": "w", "image": "i", "ports": [{"internal": 70000}]}),
            json!({"name": "w", "image": "i", "ports": [{"internal": 80, "external": 65535, "protocol": "udp"}], "replicas": 2}),
            json!({"name": "w", "image": "i", "healthcheck": {"test": ["CMD", "true"], "interval": "soon"}}),
        ] {
            assert!(
                matches!(
                    Spec::parse(&config(bad.clone()), Path::new("/")),
                    Err(ProviderError::Config(_))
                ),
                "{bad} should be refused"
            );
        }
    }

    #[test]
    fn defaults_fill_only_missing_attributes() {
        let mut c = config(json!({"replicas": 3, "must_run": null}));
        fill_defaults(&mut c);
        assert_eq!(c["replicas"], json!(3));
        assert_eq!(c["must_run"], json!(true));
        assert_eq!(c["restart"], json!("no"));
    }

    fn replica(index: u32, running: bool) -> Replica {
        Replica {
            id: format!("id{index}"),
            name: format!("w-{index}"),
            index,
            running,
            image_id: Some("sha256:x".into()),
            config_hash: Some("h".into()),
            role: None,
            lb_hash: None,
            fronted_by: None,
        }
    }

    #[test]
    fn observe_reports_must_run_only_when_false() {
        let objects = |replicas: Vec<Replica>| Objects {
            replicas,
            ..Default::default()
        };
        let o = observe(
            "docker_container.w".into(),
            &objects(vec![replica(1, true), replica(2, true)]),
        )
        .unwrap();
        assert_eq!(o.attrs["replicas"], json!(2));
        assert_eq!(o.attrs["container_ids"], json!(["id1", "id2"]));
        assert!(!o.attrs.contains_key("must_run"));
        let o = observe(
            "docker_container.w".into(),
            &objects(vec![replica(1, true), replica(2, false)]),
        )
        .unwrap();
        assert_eq!(o.attrs["must_run"], json!(false));
    }

    #[test]
    fn the_load_balancer_is_part_of_the_resource_but_not_a_replica() {
        let mut lb = replica(9, true);
        lb.name = "w-lb".into();
        lb.role = Some(lb::ROLE_LB.into());
        let mut fronted = vec![replica(1, true), replica(2, true)];
        for r in &mut fronted {
            r.fronted_by = Some("w-lb".into());
        }
        let mut temp = replica(1, true);
        temp.name = "w-1-next-0a1b2c3d".into();
        let mut all = fronted.clone();
        all.push(lb.clone());
        all.push(temp);
        let objects = Objects::sort(all);
        assert_eq!(objects.replicas.len(), 2);
        assert_eq!(objects.lb.as_ref().map(|l| l.name.as_str()), Some("w-lb"));
        assert_eq!(objects.temporaries.len(), 1);
        let o = observe("docker_container.w".into(), &objects).unwrap();
        assert_eq!(o.attrs["replicas"], json!(2));
        assert_eq!(o.attrs["container_ids"], json!(["id1", "id2"]));
        assert!(!o.attrs.contains_key("must_run"));

        // A stopped or missing load balancer is reported as not running.
        let mut stopped = objects.clone();
        stopped.lb.as_mut().unwrap().running = false;
        let o = observe("docker_container.w".into(), &stopped).unwrap();
        assert_eq!(o.attrs["must_run"], json!(false));
        let missing = Objects::sort(fronted);
        let o = observe("docker_container.w".into(), &missing).unwrap();
        assert_eq!(o.attrs["must_run"], json!(false));

        // Only leftovers: nothing to observe.
        let mut only = replica(1, false);
        only.name = "w-prev-0a1b2c3d".into();
        assert!(observe("docker_container.w".into(), &Objects::sort(vec![only])).is_none());
    }

    #[test]
    fn temporary_names_are_recognised() {
        let next = temporary_name("web-2", "next");
        assert!(next.starts_with("web-2-next-"), "{next}");
        assert!(is_temporary(&next));
        assert!(is_temporary(&temporary_name("web", "prev")));
        assert!(!is_temporary("web-2"));
        assert!(!is_temporary("web-next"));
        assert!(!is_temporary("my-next-service"));
    }

    #[test]
    fn several_replicas_with_an_external_port_get_a_load_balancer() {
        let spec = Spec::parse(
            &config(json!({
                "name": "web", "image": "app", "replicas": 3,
                "ports": [{"internal": 5000, "external": 8080, "ip": "127.0.0.1"},
                          {"internal": 53, "external": 5353, "protocol": "udp"}],
            })),
            Path::new("/"),
        )
        .unwrap();
        let lb = spec.lb.clone().expect("a load balancer");
        assert_eq!(lb.name, "web-lb");
        assert_eq!(lb.image, lb::PROXY_IMAGE);
        assert_eq!(lb.kind, LbKind::Proxy, "berth-proxy is the default kind");
        assert_eq!(lb.network, "web-net");
        assert!(lb.managed_network);
        assert_eq!(
            lb.ports,
            vec![LbPort {
                listen: 80,
                internal: 5000,
                external: 8080,
                ip: "127.0.0.1".into()
            }]
        );
        assert!(spec.rolls());
        // The replicas no longer publish the balanced port, but the UDP
        // one keeps the per-replica rule; they live on the LB network.
        let body = spec.body("sha256:abc", 2, HashMap::new());
        assert!(body.exposed_ports.unwrap().contains(&"5000/tcp".to_owned()));
        let host = body.host_config.unwrap();
        let bindings = host.port_bindings.unwrap();
        assert!(!bindings.contains_key("5000/tcp"), "{bindings:?}");
        assert_eq!(
            bindings["53/udp"].as_ref().unwrap()[0].host_port.as_deref(),
            Some("5354")
        );
        assert_eq!(host.network_mode.as_deref(), Some("web-net"));
        assert!(spec.has_fixed_ports());
        assert_eq!(spec.home_network(), Some("web-net"));
    }

    #[test]
    fn load_balancer_kind_image_and_drain() {
        let base = json!({
            "name": "web", "image": "app", "replicas": 2,
            "ports": [{"internal": 5000, "external": 8080}],
        });
        let with = |lb: serde_json::Value| {
            let mut c = base.clone();
            c["load_balancer"] = lb;
            Spec::parse(&config(c), Path::new("/")).map(|s| s.lb.expect("a load balancer"))
        };
        let lb =
            with(json!({"kind": "berth-proxy", "image": "registry.test/berth-proxy:1"})).unwrap();
        assert_eq!(lb.kind, LbKind::Proxy);
        assert_eq!(lb.image, "registry.test/berth-proxy:1");
        assert_eq!(lb.drain, lb::PROXY_DRAIN);
        let lb = with(json!({"kind": "nginx", "drain": "250ms"})).unwrap();
        assert_eq!(lb.kind, LbKind::Nginx);
        assert_eq!(lb.image, lb::NGINX_IMAGE);
        assert_eq!(lb.drain, Duration::from_millis(250));
        let err = with(json!({"kind": "haproxy"})).unwrap_err().to_string();
        assert!(
            err.contains("load_balancer.kind") && err.contains("haproxy"),
            "{err}"
        );
        let err = with(json!({"drain": "soon"})).unwrap_err().to_string();
        assert!(err.contains("load_balancer.drain"), "{err}");
    }

    #[test]
    fn a_single_container_gets_a_load_balancer_only_when_asked() {
        let base = json!({
            "name": "web", "image": "app",
            "ports": [{"internal": 5000, "external": 8080}],
            "networks_advanced": [{"name": "front"}],
        });
        let spec = Spec::parse(&config(base.clone()), Path::new("/")).unwrap();
        assert!(spec.lb.is_none());
        assert!(spec.has_fixed_ports());
        assert!(!spec.rolls(), "nothing to gate on: the engine replaces it");

        let mut with_lb = base.clone();
        with_lb["load_balancer"] = json!({"image": "berth-test-nginx:latest"});
        let spec = Spec::parse(&config(with_lb), Path::new("/")).unwrap();
        let lb = spec.lb.clone().expect("a load balancer");
        assert_eq!(lb.image, "berth-test-nginx:latest");
        assert_eq!(lb.kind, LbKind::Nginx, "an image without a kind is nginx");
        assert_eq!(lb.network, "front");
        assert!(!lb.managed_network);
        assert!(!spec.has_fixed_ports());
        assert!(spec.rolls());

        let mut gated = base;
        gated["healthcheck"] = json!({"path": "/api/ping"});
        let spec = Spec::parse(&config(gated), Path::new("/")).unwrap();
        assert!(spec.rolls());
        assert_eq!(
            spec.http_check,
            Some(HttpCheck {
                path: "/api/ping".into(),
                port: 5000
            })
        );
        assert!(spec.healthcheck.is_none());
    }

    #[test]
    fn rolling_settings_are_checked() {
        for bad in [
            json!({"name": "w", "image": "i", "max_parallel": 0}),
            json!({"name": "w", "image": "i", "healthcheck": {"path": "/up"}}),
            json!({"name": "w", "image": "i", "healthcheck": {"path": "up", "port": 80}}),
            json!({"name": "w", "image": "i", "healthcheck": {"interval": "1s"}}),
        ] {
            assert!(
                matches!(
                    Spec::parse(&config(bad.clone()), Path::new("/")),
                    Err(ProviderError::Config(_))
                ),
                "{bad} should be refused"
            );
        }
        let spec = Spec::parse(
            &config(json!({"name": "w", "image": "i", "replicas": 4, "max_parallel": 2})),
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(spec.max_parallel, 2);
        assert!(spec.lb.is_none(), "no published port, no load balancer");
        assert!(spec.rolls());
        assert!(rolls(&config(
            json!({"name": "w", "image": "i", "wait": true})
        )));
        assert!(!rolls(&config(json!({"name": "w", "image": "i"}))));
        assert!(!rolls(&config(
            json!({"name": "w", "image": "i", "replicas": 0})
        )));
    }
}
