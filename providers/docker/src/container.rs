//! `docker_container`: the schema, and the lifecycle of a container
//! resource as one or more replicas. `replicas = 1` is one container named
//! exactly `name`; `replicas = N > 1` are `name-1` … `name-N`, each labelled
//! `berth.replica=<k>`. Creating (with conflict handling, network
//! attachment, waiting for health and rollback), updating in place (restart
//! policy, memory, CPU shares, scaling, restarting stopped or recreating
//! missing replicas), deleting, and refreshing all replicas with one list
//! call all live here.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use berth_provider::{
    Applied, ApplyRequest, AttrSchema, AttrType, Attrs, BlockSchema, DeleteRequest, Nesting,
    Observed, Ownership, Progress, ProviderError, ResourceSchema, Value, labels,
};
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerSummary, ContainerSummaryStateEnum, ContainerUpdateBody,
    EndpointSettings, HealthConfig, HealthStatusEnum, HostConfig, HostConfigLogConfig,
    NetworkConnectRequest, NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;

use crate::attrs;
use crate::client::{self, api, api_ctx, is_conflict, is_not_found, message};
use crate::duration::parse_duration;
use crate::image;
use crate::network::labels_block;

/// The resource type name.
pub(crate) const TYPE: &str = "docker_container";

/// The label holding a replica's index when `replicas > 1`.
pub const REPLICA_LABEL: &str = "berth.replica";

const DEFAULT_WAIT_TIMEOUT: i64 = 60;
const DEFAULT_GRACE_SECONDS: i64 = 10;
const POLL_INTERVAL: Duration = Duration::from_millis(500);
const LOG_LINES: usize = 20;

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
                    AttrSchema::required("test", ListOfString),
                    s("interval", String),
                    s("timeout", String),
                    s("start_period", String),
                    s("retries", Number),
                ],
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
struct Spec {
    name: String,
    image: String,
    command: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    env: Option<Vec<String>>,
    ports: Vec<PortSpec>,
    labels: BTreeMap<String, String>,
    volumes: Vec<VolumeSpec>,
    networks: Vec<NetworkSpec>,
    restart: RestartPolicy,
    healthcheck: Option<HealthConfig>,
    wait: bool,
    wait_timeout: Duration,
    must_run: bool,
    log_driver: Option<String>,
    user: Option<String>,
    working_dir: Option<String>,
    memory_mb: Option<i64>,
    cpu_shares: Option<i64>,
    replicas: u32,
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
    fn parse(config: &Attrs, base_dir: &Path) -> Result<Self, ProviderError> {
        let replicas = attrs::int(config, "replicas")?.unwrap_or(1);
        let replicas = u32::try_from(replicas)
            .ok()
            .filter(|r| *r >= 1)
            .ok_or_else(|| {
                config_error(format!("`replicas` must be at least 1, got {replicas}"))
            })?;

        let mut ports = Vec::new();
        for block in attrs::blocks(config, "ports")? {
            let internal = attrs::int(&block, "internal")?
                .ok_or_else(|| config_error("`ports.internal` is required"))?;
            let external = attrs::int(&block, "external")?
                .map(|e| port_number(e, "ports.external"))
                .transpose()?;
            if let Some(external) = external
                && u32::from(external) + replicas - 1 > 65535
            {
                return Err(config_error(format!(
                    "`ports.external` {external} leaves no room for {replicas} replicas \
                     (replica k uses external + k - 1)"
                )));
            }
            let protocol =
                attrs::non_empty_string(&block, "protocol")?.unwrap_or_else(|| "tcp".into());
            if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
                return Err(config_error(format!(
                    "`ports.protocol` must be tcp, udp or sctp, got `{protocol}`"
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

        let healthcheck = match attrs::block(config, "healthcheck")? {
            None => None,
            Some(block) => Some(HealthConfig {
                test: Some(
                    attrs::string_list(&block, "test")?
                        .filter(|t| !t.is_empty())
                        .ok_or_else(|| config_error("`healthcheck.test` is required"))?,
                ),
                interval: duration_attr(&block, "interval")?,
                timeout: duration_attr(&block, "timeout")?,
                start_period: duration_attr(&block, "start_period")?,
                retries: attrs::int(&block, "retries")?,
                ..Default::default()
            }),
        };

        let wait_timeout = attrs::int(config, "wait_timeout")?.unwrap_or(DEFAULT_WAIT_TIMEOUT);
        let wait_timeout = u64::try_from(wait_timeout)
            .map_err(|_| config_error("`wait_timeout` must not be negative"))?;

        Ok(Self {
            name: attrs::required_string(config, "name")?,
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
            wait: attrs::boolean(config, "wait")?.unwrap_or(false),
            wait_timeout: Duration::from_secs(wait_timeout),
            must_run: attrs::boolean(config, "must_run")?.unwrap_or(true),
            log_driver: attrs::non_empty_string(config, "log_driver")?,
            user: attrs::non_empty_string(config, "user")?,
            working_dir: attrs::non_empty_string(config, "working_dir")?,
            memory_mb: attrs::int(config, "memory")?.filter(|m| *m > 0),
            cpu_shares: attrs::int(config, "cpu_shares")?.filter(|c| *c > 0),
            replicas,
        })
    }

    /// The container name of replica `k` (1-based).
    fn replica_name(&self, k: u32) -> String {
        replica_name(&self.name, self.replicas, k)
    }

    fn memory_bytes(&self) -> Option<i64> {
        self.memory_mb.map(|mb| mb.saturating_mul(1024 * 1024))
    }

    fn has_fixed_ports(&self) -> bool {
        self.ports.iter().any(|p| p.external.is_some())
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

        let (network_mode, networking_config) = match self.networks.first() {
            Some(first) => (
                Some(first.name.clone()),
                Some(NetworkingConfig {
                    endpoints_config: Some(HashMap::from([(
                        first.name.clone(),
                        EndpointSettings {
                            aliases: (!first.aliases.is_empty()).then(|| first.aliases.clone()),
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
struct Target<'a> {
    docker: &'a Docker,
    address: &'a str,
    owner: &'a Ownership,
    config_hash: &'a str,
    image_id: String,
}

impl Target<'_> {
    fn labels(&self, spec: &Spec, k: u32) -> HashMap<String, String> {
        let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
        labels.extend(self.owner.labels(self.address, self.config_hash));
        if spec.replicas > 1 {
            labels.insert(REPLICA_LABEL.to_owned(), k.to_string());
        }
        labels
    }

    /// Whether a container's labels say it belongs to this resource.
    fn owns(&self, labels: &HashMap<String, String>) -> bool {
        labels.get(labels::ADDRESS).map(String::as_str) == Some(self.address)
            && labels.get(labels::ENV) == Some(&self.owner.env)
            && labels.get(labels::LINEAGE) == Some(&self.owner.lineage)
    }

    /// Creates replica `k` (not started) and connects its extra networks.
    /// The container's id is pushed onto `created` as soon as it exists.
    async fn create_replica(
        &self,
        spec: &Spec,
        k: u32,
        created: &mut Vec<(String, String)>,
    ) -> Result<String, ProviderError> {
        let name = spec.replica_name(k);
        let options = || Some(CreateContainerOptionsBuilder::new().name(&name).build());
        let body = spec.body(&self.image_id, k, self.labels(spec, k));
        let response = match self.docker.create_container(options(), body.clone()).await {
            Ok(response) => response,
            Err(e) if is_conflict(&e) => {
                self.clear_name(&name, &e).await?;
                self.docker
                    .create_container(options(), body)
                    .await
                    .map_err(api_ctx(format!("cannot create container {name}")))?
            }
            Err(e) => return Err(api_ctx(format!("cannot create container {name}"))(e)),
        };
        let id = response.id;
        created.push((name.clone(), id.clone()));
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
            self.docker
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
        let holder = match self.docker.inspect_container(name, None).await {
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
        remove(self.docker, &holder_id).await
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
                    if let Err(cleanup) = remove(self.docker, id).await {
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
            let id = self.create_replica(spec, k, created).await?;
            if let Err(e) = self.docker.start_container(&id, None).await {
                let logs = tail_logs(self.docker, &id).await;
                return Err(ProviderError::Api(format!(
                    "cannot start container {name}: {}{logs}",
                    message(&e)
                )));
            }
            ids.push((k, id));
        }
        if spec.wait {
            for (k, id) in &ids {
                wait_healthy(
                    self.docker,
                    id,
                    &spec.replica_name(*k),
                    spec.wait_timeout,
                    progress,
                )
                .await?;
            }
        }
        Ok(ids)
    }
}

/// Force-removes a container; one that is gone already is fine.
async fn remove(docker: &Docker, id: &str) -> Result<(), ProviderError> {
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

/// Stops a container gracefully, then force-removes it.
async fn stop_and_remove(docker: &Docker, id: &str, grace: i64) -> Result<(), ProviderError> {
    let grace = grace.clamp(0, i64::from(i32::MAX));
    // The engine answers a stop only once the container is down: allow the
    // grace period on top of the usual request timeout.
    let patient = docker
        .clone()
        .with_timeout(Duration::from_secs(120 + grace.unsigned_abs()));
    let options = StopContainerOptionsBuilder::new().t(grace as i32).build();
    match patient.stop_container(id, Some(options)).await {
        Ok(()) => {}
        Err(e) if is_not_found(&e) => return Ok(()),
        Err(e) => {
            tracing::warn!(container = %short(id), "stop failed, removing anyway: {}", message(&e))
        }
    }
    remove(docker, id).await
}

/// The last lines of a container's output, formatted to append to an error.
async fn tail_logs(docker: &Docker, id: &str) -> String {
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

/// Polls the container until its health check passes (or, without a
/// health check, until it runs). Fails when it turns unhealthy, exits, or
/// the timeout passes, with its last log lines.
async fn wait_healthy(
    docker: &Docker,
    id: &str,
    name: &str,
    timeout: Duration,
    progress: Progress<'_>,
) -> Result<(), ProviderError> {
    progress(&format!("waiting for {name} to become healthy"));
    let deadline = Instant::now() + timeout;
    loop {
        let info = docker
            .inspect_container(id, None)
            .await
            .map_err(api_ctx(format!("cannot inspect container {name}")))?;
        let state = info.state.unwrap_or_default();
        let running = state.running.unwrap_or(false);
        let restarting = state.restarting.unwrap_or(false);
        let health = state.health.and_then(|h| h.status);
        match health {
            Some(HealthStatusEnum::HEALTHY) => {
                progress(&format!("{name} is healthy"));
                return Ok(());
            }
            Some(HealthStatusEnum::UNHEALTHY) => {
                let logs = tail_logs(docker, id).await;
                return Err(ProviderError::Api(format!(
                    "container {name} is unhealthy{logs}"
                )));
            }
            Some(HealthStatusEnum::STARTING) => {}
            // No health check: running is all there is to wait for.
            _ if running && !restarting => return Ok(()),
            _ => {}
        }
        if !running && !restarting {
            let logs = tail_logs(docker, id).await;
            return Err(ProviderError::Api(format!(
                "container {name} exited with code {} while waiting for it to become healthy{logs}",
                state.exit_code.unwrap_or(-1)
            )));
        }
        if Instant::now() >= deadline {
            let logs = tail_logs(docker, id).await;
            return Err(ProviderError::Timeout(format!(
                "container {name} did not become healthy within {}s{logs}",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// One replica found by a list call.
#[derive(Clone, Debug)]
struct Replica {
    id: String,
    name: String,
    index: u32,
    running: bool,
    image_id: Option<String>,
    config_hash: Option<String>,
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
        }
    }
}

/// The replicas of `address` (all states) with one list call, by index.
async fn list_replicas(
    docker: &Docker,
    owner: &Ownership,
    address: &str,
) -> Result<Vec<Replica>, ProviderError> {
    let filters = client::label_filters(owner, &[format!("{}={address}", labels::ADDRESS)]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let mut replicas: Vec<Replica> = docker
        .list_containers(Some(options))
        .await
        .map_err(api_ctx(format!("cannot list the containers of {address}")))?
        .into_iter()
        .map(Replica::from_summary)
        .collect();
    replicas.sort_by(|a, b| (a.index, &a.name).cmp(&(b.index, &b.name)));
    Ok(replicas)
}

fn applied(spec: &Spec, config: &Attrs, image_id: &str, ids: &[String]) -> Applied {
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
/// else the reference resolved now (pulled when missing).
async fn resolve_image(
    docker: &Docker,
    spec: &Spec,
    config: &Attrs,
    progress: Progress<'_>,
) -> Result<String, ProviderError> {
    if let Some(id) = attrs::non_empty_string(config, "image_id")?
        && image::local_id(docker, &id).await?.is_some()
    {
        return Ok(id);
    }
    let image = image::ensure_image(docker, &spec.image, progress).await?;
    image
        .id
        .ok_or_else(|| ProviderError::Api(format!("image {} has no id", spec.image)))
}

/// Creates every replica.
pub(crate) async fn create(
    docker: &Docker,
    req: &ApplyRequest<'_>,
    base_dir: &Path,
    progress: Progress<'_>,
) -> Result<Applied, ProviderError> {
    let spec = Spec::parse(req.config, base_dir)?;
    let image_id = resolve_image(docker, &spec, req.config, progress).await?;
    let target = Target {
        docker,
        address: req.address,
        owner: req.owner,
        config_hash: req.config_hash,
        image_id,
    };
    let ks: Vec<u32> = (1..=spec.replicas).collect();
    let created = target.create_replicas(&spec, &ks, progress).await?;
    let ids: Vec<String> = created.into_iter().map(|(_, id)| id).collect();
    Ok(applied(&spec, req.config, &target.image_id, &ids))
}

/// Updates in place: restart policy, memory and CPU shares on every
/// replica; scales to `replicas`; recreates missing replicas and starts
/// stopped ones when `must_run`.
pub(crate) async fn update(
    docker: &Docker,
    req: &ApplyRequest<'_>,
    base_dir: &Path,
    progress: Progress<'_>,
) -> Result<Applied, ProviderError> {
    let spec = Spec::parse(req.config, base_dir)?;
    let mut config = req.config.clone();
    if !config.contains_key("image_id")
        && let Some(prior) = req.prior.and_then(|p| p.get("image_id"))
    {
        config.insert("image_id".into(), prior.clone());
    }
    let image_id = resolve_image(docker, &spec, &config, progress).await?;
    let target = Target {
        docker,
        address: req.address,
        owner: req.owner,
        config_hash: req.config_hash,
        image_id,
    };

    let existing = list_replicas(docker, req.owner, req.address).await?;
    let wanted: Vec<(u32, String)> = (1..=spec.replicas)
        .map(|k| (k, spec.replica_name(k)))
        .collect();
    let kept: Vec<&Replica> = existing
        .iter()
        .filter(|r| wanted.iter().any(|(_, name)| *name == r.name))
        .collect();
    let mut extra: Vec<&Replica> = existing
        .iter()
        .filter(|r| !wanted.iter().any(|(_, name)| *name == r.name))
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
                wait_healthy(
                    docker,
                    &replica.id,
                    &replica.name,
                    spec.wait_timeout,
                    progress,
                )
                .await?;
            }
        }
    }

    let now = list_replicas(docker, req.owner, req.address).await?;
    let ids: Vec<String> = wanted
        .iter()
        .filter_map(|(_, name)| now.iter().find(|r| r.name == *name).map(|r| r.id.clone()))
        .collect();
    Ok(applied(&spec, req.config, &target.image_id, &ids))
}

async fn remove_replicas(
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

fn destroy_grace(attrs: &Attrs) -> Result<i64, ProviderError> {
    Ok(attrs::int(attrs, "destroy_grace_seconds")?.unwrap_or(DEFAULT_GRACE_SECONDS))
}

/// Stops (with `destroy_grace_seconds`) and removes every replica of the
/// resource; what is gone already is fine.
pub(crate) async fn delete(
    docker: &Docker,
    req: &DeleteRequest<'_>,
    progress: Progress<'_>,
) -> Result<(), ProviderError> {
    let grace = destroy_grace(req.attrs)?;
    let mut replicas = list_replicas(docker, req.owner, req.address).await?;
    replicas.reverse();
    let refs: Vec<&Replica> = replicas.iter().collect();
    remove_replicas(docker, &refs, grace, progress).await
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
        .map(|(address, mut replicas)| {
            replicas.sort_by(|a, b| (a.index, &a.name).cmp(&(b.index, &b.name)));
            observe(address, &replicas)
        })
        .collect())
}

fn observe(address: String, replicas: &[Replica]) -> Observed {
    let first = replicas.first();
    let id = first.map(|r| r.id.clone()).unwrap_or_default();
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
    // containers happen to run is not drift.
    if replicas.iter().any(|r| !r.running) {
        attrs.insert("must_run".into(), Value::from(false));
    }
    Observed {
        address,
        id,
        attrs,
        config_hash: first.and_then(|r| r.config_hash.clone()),
    }
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
    fn replica_names() {
        assert_eq!(replica_name("web", 1, 1), "web");
        assert_eq!(replica_name("web", 3, 2), "web-2");
    }

    #[test]
    fn body_maps_ports_per_replica() {
        let spec = Spec::parse(
            &config(json!({
                "name": "web", "image": "app", "replicas": 3,
                "ports": [{"internal": 80, "external": 8080}, {"internal": 53, "protocol": "udp"}],
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
        let web = bindings["80/tcp"].as_ref().unwrap();
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
            json!({"name": "w", "image": "i", "ports": [{"internal": 80, "external": 65535}], "replicas": 2}),
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

    #[test]
    fn observe_reports_must_run_only_when_false() {
        let replica = |index, running| Replica {
            id: format!("id{index}"),
            name: format!("w-{index}"),
            index,
            running,
            image_id: Some("sha256:x".into()),
            config_hash: Some("h".into()),
        };
        let o = observe(
            "docker_container.w".into(),
            &[replica(1, true), replica(2, true)],
        );
        assert_eq!(o.attrs["replicas"], json!(2));
        assert_eq!(o.attrs["container_ids"], json!(["id1", "id2"]));
        assert!(!o.attrs.contains_key("must_run"));
        let o = observe(
            "docker_container.w".into(),
            &[replica(1, true), replica(2, false)],
        );
        assert_eq!(o.attrs["must_run"], json!(false));
    }
}
