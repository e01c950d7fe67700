//! The load balancer in front of a `docker_container`'s replicas: a
//! container `<name>-lb` on the replicas' network that publishes the
//! resource's `ports { external }` and forwards to `<replica>:<internal>`.
//! Two kinds (`load_balancer { kind }`, [`LbKind`]):
//!
//! * **`berth-proxy`** (the default; the `providers/proxy` crate, image
//!   [`PROXY_IMAGE`] from scripts/build-proxy-image.sh): berth writes
//!   `/etc/berth-proxy/upstreams.json` (each replica's IP on the network,
//!   looked up by container name) through the archive API; the proxy polls
//!   it and switches without closing any client connection. berth asks the
//!   proxy's admin port (through the same [`HttpProbe`] as health checks,
//!   so it works over SSH) when the new set is in effect (`/applied`) and
//!   when no request is left in flight to the replicas taken out
//!   (`/drained`), so the drain ends as soon as they are done.
//! * **`nginx`** (image [`NGINX_IMAGE`], or any image with `/usr/sbin/nginx`
//!   and `/etc/nginx`): berth writes `/etc/nginx/nginx.conf` (servers by
//!   container name, resolved by Docker's DNS when nginx loads the file),
//!   then `nginx -t` and `nginx -s reload` through the exec API. nginx
//!   cannot say when its old workers are done, so the drain is a fixed
//!   wait, and a reload may close idle keep-alive client connections.
//!   A `load_balancer` block that names an `image` but no `kind` means
//!   nginx, as it did before kinds existed.
//!
//! The container carries the resource's `berth.address` and owner labels
//! plus `berth.role=lb`, so refresh and delete see it as part of the
//! resource without counting it as a replica, and `berth.lb-hash` (kind,
//! image, network, ports) to tell whether a replacement can keep it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use berth_provider::{Ownership, Progress, ProviderError, labels};
use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig,
    PortBinding, RestartPolicy,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectNetworkOptions, ListNetworksOptionsBuilder,
    UploadToContainerOptions,
};
use futures_util::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::client::{self, api_ctx, is_conflict, is_not_found, message};
use crate::health::HttpProbe;
use crate::image;
use crate::registry::Auths;

/// The image of the `nginx` kind when `load_balancer { image }` is not set.
pub(crate) const NGINX_IMAGE: &str = "nginx:1.27-alpine";
/// The image of the `berth-proxy` kind when `load_balancer { image }` is
/// not set: what scripts/build-proxy-image.sh builds for this version.
pub(crate) const PROXY_IMAGE: &str = concat!("berth-proxy:", env!("CARGO_PKG_VERSION"));

/// The label telling what part of a resource an object is.
pub(crate) const ROLE_LABEL: &str = "berth.role";
/// [`ROLE_LABEL`] of the load balancer container.
pub(crate) const ROLE_LB: &str = "lb";
/// [`ROLE_LABEL`] of a network berth created for the load balancer.
pub(crate) const ROLE_NETWORK: &str = "lb-network";
/// The hash of what the load balancer container was created with.
pub(crate) const HASH_LABEL: &str = "berth.lb-hash";
/// On replicas: the name of the load balancer in front of them.
pub(crate) const FRONTED_BY_LABEL: &str = "berth.lb";

const NGINX: &str = "/usr/sbin/nginx";
const CONF_DIR: &str = "/etc/nginx";
const PROXY_CONF_DIR: &str = "/etc/berth-proxy";
const PROXY_FILE: &str = "upstreams.json";
/// The proxy's admin port (not published; reached on the network).
const PROXY_ADMIN_PORT: u16 = 9180;
/// How long a new load balancer has to answer HTTP.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the proxy has to take a new upstream file (it polls every
/// 100 ms).
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often berth asks the proxy whether a change is in effect or drained.
const PROXY_POLL: Duration = Duration::from_millis(25);
/// The default `load_balancer { drain }` of nginx: how long it gets to
/// switch to a reloaded configuration (new workers up, old ones no longer
/// accepting) and finish what the old workers serve before a replica it
/// stopped sending to is stopped.
pub(crate) const NGINX_DRAIN: Duration = Duration::from_secs(1);
/// The default `load_balancer { drain }` of the proxy: the longest berth
/// waits for requests in flight to a replica taken out (it stops waiting as
/// soon as the proxy says none is left).
pub(crate) const PROXY_DRAIN: Duration = Duration::from_secs(10);

/// Which load balancer runs in front of the replicas.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) enum LbKind {
    /// berth's own proxy (`providers/proxy`).
    #[default]
    #[serde(rename = "berth-proxy")]
    Proxy,
    /// nginx, reloaded through the exec API.
    #[serde(rename = "nginx")]
    Nginx,
}

impl LbKind {
    /// The kind named `name` in `load_balancer { kind }`.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        match name {
            "berth-proxy" => Some(Self::Proxy),
            "nginx" => Some(Self::Nginx),
            _ => None,
        }
    }

    /// The image used when `load_balancer { image }` is not set.
    pub(crate) fn default_image(self) -> &'static str {
        match self {
            Self::Proxy => PROXY_IMAGE,
            Self::Nginx => NGINX_IMAGE,
        }
    }

    /// The drain used when `load_balancer { drain }` is not set.
    pub(crate) fn default_drain(self) -> Duration {
        match self {
            Self::Proxy => PROXY_DRAIN,
            Self::Nginx => NGINX_DRAIN,
        }
    }

    /// nginx load balancers were hashed before kinds existed: leaving the
    /// kind out of their hash keeps those containers.
    fn is_nginx(&self) -> bool {
        *self == Self::Nginx
    }
}

/// One published port of the load balancer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct LbPort {
    /// The port nginx listens on inside its container (80, 81, ...).
    pub listen: u16,
    /// The replicas' port.
    pub internal: u16,
    /// The host port.
    pub external: u16,
    /// The host address.
    pub ip: String,
}

/// What the load balancer of a resource looks like.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct LbSpec {
    /// Which load balancer.
    #[serde(skip_serializing_if = "LbKind::is_nginx")]
    pub kind: LbKind,
    /// The longest wait for requests to a replica taken out (nginx: the
    /// wait). Not part of the hash: it needs no new container.
    #[serde(skip)]
    pub drain: Duration,
    /// Container name, `<name>-lb`.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// The network it shares with the replicas.
    pub network: String,
    /// Whether berth creates that network (`<name>-net`).
    pub managed_network: bool,
    /// Published ports, one `server` block each.
    pub ports: Vec<LbPort>,
}

impl LbSpec {
    /// A hash of everything that needs a new container when it changes.
    pub(crate) fn hash(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    }
}

fn upstream_name(port: &LbPort) -> String {
    format!("berth_{}", port.listen)
}

/// The nginx.conf balancing over `servers` (container names, resolved by
/// Docker's DNS when nginx loads the file). With no server, every port
/// answers 502.
pub(crate) fn nginx_config(lb: &LbSpec, address: &str, servers: &[String]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "# Written by berth for {address}; berth rewrites it whenever the replicas change.\n"
    ));
    out.push_str(
        "worker_processes auto;\n\
         pid /run/nginx.pid;\n\
         error_log stderr warn;\n\
         events {\n    worker_connections 1024;\n}\n\
         http {\n\
         \x20   access_log off;\n\
         \x20   server_tokens off;\n\
         \x20   client_body_temp_path /tmp/berth-nginx-client-body;\n\
         \x20   proxy_temp_path /tmp/berth-nginx-proxy;\n",
    );
    for port in &lb.ports {
        out.push_str(&format!("    upstream {} {{\n", upstream_name(port)));
        if servers.is_empty() {
            out.push_str("        server 127.0.0.1:9 down;\n");
        }
        for server in servers {
            out.push_str(&format!(
                "        server {server}:{} max_fails=1 fail_timeout=5s;\n",
                port.internal
            ));
        }
        out.push_str("    }\n");
    }
    for port in &lb.ports {
        out.push_str(&format!(
            "    server {{\n\
             \x20       listen {listen};\n\
             \x20       location / {{\n\
             \x20           proxy_pass http://{upstream};\n\
             \x20           proxy_http_version 1.1;\n\
             \x20           proxy_set_header Connection \"\";\n\
             \x20           proxy_set_header Host $host;\n\
             \x20           proxy_set_header X-Real-IP $remote_addr;\n\
             \x20           proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
             \x20           proxy_set_header X-Forwarded-Proto $scheme;\n\
             \x20           proxy_connect_timeout 2s;\n\
             \x20           proxy_next_upstream error timeout http_502 http_503;\n\
             \x20           proxy_next_upstream_tries 0;\n\
             \x20       }}\n\
             \x20   }}\n",
            listen = port.listen,
            upstream = upstream_name(port),
        ));
    }
    out.push_str("}\n");
    out
}

/// One replica in the proxy's upstream file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct ProxyUpstream {
    /// The container name (for logs and the status page).
    pub name: String,
    /// Its IP on the load balancer's network.
    pub ip: String,
}

/// The proxy's `upstreams.json` balancing over `upstreams`, and its version
/// (a hash of the upstreams, which the proxy reports once in effect).
pub(crate) fn proxy_file(address: &str, upstreams: &[ProxyUpstream]) -> (String, String) {
    let listed = serde_json::to_vec(upstreams).unwrap_or_default();
    let version = hex::encode(Sha256::digest(&listed))
        .get(..16)
        .unwrap_or_default()
        .to_owned();
    let text = serde_json::json!({
        "version": version,
        "owner": address,
        "upstreams": upstreams,
    })
    .to_string();
    (version, text)
}

/// A tar holding one file `name`, for the archive API.
fn config_tar(name: &str, text: &str) -> Result<Vec<u8>, ProviderError> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    builder
        .append_data(&mut header, name, text.as_bytes())
        .and_then(|_| builder.into_inner())
        .map_err(|e| ProviderError::Api(format!("cannot pack {name}: {e}")))
}

/// Who the load balancer belongs to.
pub(crate) struct Owner<'a> {
    pub address: &'a str,
    pub owner: &'a Ownership,
    pub config_hash: &'a str,
}

impl Owner<'_> {
    fn labels(&self, role: &str) -> HashMap<String, String> {
        let mut labels: HashMap<String, String> = self
            .owner
            .labels(self.address, self.config_hash)
            .into_iter()
            .collect();
        labels.insert(ROLE_LABEL.to_owned(), role.to_owned());
        labels
    }

    fn owns(&self, labels: &HashMap<String, String>) -> bool {
        labels.get(labels::ADDRESS).map(String::as_str) == Some(self.address)
            && labels.get(labels::ENV) == Some(&self.owner.env)
            && labels.get(labels::LINEAGE) == Some(&self.owner.lineage)
    }
}

/// Creates the berth-managed network of `lb` unless it exists (as this
/// resource's); a network of that name that is not is a conflict.
pub(crate) async fn ensure_network(
    docker: &Docker,
    lb: &LbSpec,
    who: &Owner<'_>,
    progress: Progress<'_>,
) -> Result<(), ProviderError> {
    if !lb.managed_network {
        return Ok(());
    }
    match docker
        .inspect_network(&lb.network, None::<InspectNetworkOptions>)
        .await
    {
        Ok(network) => {
            let theirs = network.labels.unwrap_or_default();
            if network.name.as_deref() == Some(lb.network.as_str()) && who.owns(&theirs) {
                return Ok(());
            }
            return Err(ProviderError::Api(format!(
                "a network named {} already exists and is not the load balancer network of {} \
                 in this berth environment; remove it, or name a network in `networks_advanced`",
                lb.network, who.address
            )));
        }
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(api_ctx(format!("cannot inspect network {}", lb.network))(e)),
    }
    progress(&format!("creating network {}", lb.network));
    docker
        .create_network(NetworkCreateRequest {
            name: lb.network.clone(),
            driver: Some("bridge".to_owned()),
            labels: Some(who.labels(ROLE_NETWORK)),
            ..Default::default()
        })
        .await
        .map_err(api_ctx(format!("cannot create network {}", lb.network)))?;
    Ok(())
}

/// Removes the load balancer networks berth created for `address`, except
/// `keep`. A network still in use by something else is left, with a warning.
pub(crate) async fn remove_networks(
    docker: &Docker,
    owner: &Ownership,
    address: &str,
    keep: Option<&str>,
    progress: Progress<'_>,
) -> Result<(), ProviderError> {
    let filters = client::label_filters(
        owner,
        &[
            format!("{}={address}", labels::ADDRESS),
            format!("{ROLE_LABEL}={ROLE_NETWORK}"),
        ],
    );
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .map_err(api_ctx(format!("cannot list the networks of {address}")))?;
    for network in networks {
        let name = network.name.unwrap_or_default();
        if Some(name.as_str()) == keep {
            continue;
        }
        let id = network.id.unwrap_or_default();
        progress(&format!("removing network {name}"));
        match docker.remove_network(&id).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) if is_conflict(&e) || client::status(&e) == Some(403) => {
                tracing::warn!(network = %name, "network still in use, leaving it: {}", message(&e));
            }
            Err(e) => return Err(api_ctx(format!("cannot remove network {name}"))(e)),
        }
    }
    Ok(())
}

/// Everything the load balancer's lifecycle needs.
pub(crate) struct Balancer<'a> {
    pub docker: &'a Docker,
    pub auths: &'a Auths,
    pub probe: &'a dyn HttpProbe,
    pub spec: &'a LbSpec,
    pub who: Owner<'a>,
    pub restart: RestartPolicy,
}

impl Balancer<'_> {
    fn body(&self, image_id: &str) -> ContainerCreateBody {
        let mut exposed = Vec::new();
        let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for port in &self.spec.ports {
            let key = format!("{}/tcp", port.listen);
            exposed.push(key.clone());
            bindings.insert(
                key,
                Some(vec![PortBinding {
                    host_ip: Some(port.ip.clone()),
                    host_port: Some(port.external.to_string()),
                }]),
            );
        }
        let mut labels = self.who.labels(ROLE_LB);
        labels.insert(HASH_LABEL.to_owned(), self.spec.hash());
        // The proxy's entrypoint is the binary; its arguments say what to
        // listen on (nginx takes everything from its file).
        let cmd = (self.spec.kind == LbKind::Proxy).then(|| {
            let mut cmd = vec!["serve".to_owned()];
            for port in &self.spec.ports {
                cmd.push("--listen".to_owned());
                cmd.push(format!("{}:{}", port.listen, port.internal));
            }
            cmd.push("--admin".to_owned());
            cmd.push(PROXY_ADMIN_PORT.to_string());
            cmd
        });
        ContainerCreateBody {
            image: Some(image_id.to_owned()),
            cmd,
            labels: Some(labels),
            exposed_ports: Some(exposed),
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                restart_policy: Some(self.restart.clone()),
                network_mode: Some(self.spec.network.clone()),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    self.spec.network.clone(),
                    EndpointSettings::default(),
                )])),
            }),
            ..Default::default()
        }
    }

    /// The id of the load balancer's image, pulled (with the registry's
    /// credentials) when it is not there. Called before anything is
    /// changed, so that a missing image stops an apply early.
    pub(crate) async fn ensure_image(
        &self,
        progress: Progress<'_>,
    ) -> Result<String, ProviderError> {
        let image = image::ensure_image(self.docker, self.auths, &self.spec.image, progress)
            .await
            .map_err(|e| match e {
                ProviderError::Api(m) => ProviderError::Api(format!(
                    "the load balancer image (`load_balancer {{ image }}`): {m}"
                )),
                other => other,
            })?;
        Ok(image.id.unwrap_or_else(|| self.spec.image.clone()))
    }

    /// Creates and starts the load balancer in front of `servers` and waits
    /// until it answers HTTP. Returns its id; on failure nothing is left.
    pub(crate) async fn create(
        &self,
        servers: &[String],
        progress: Progress<'_>,
    ) -> Result<String, ProviderError> {
        let image_id = self.ensure_image(progress).await?;
        let name = &self.spec.name;
        progress(&format!("creating load balancer {name}"));
        let options = || Some(CreateContainerOptionsBuilder::new().name(name).build());
        let response = match self
            .docker
            .create_container(options(), self.body(&image_id))
            .await
        {
            Ok(response) => response,
            Err(e) if is_conflict(&e) => {
                self.clear_name(&e).await?;
                self.docker
                    .create_container(options(), self.body(&image_id))
                    .await
                    .map_err(api_ctx(format!("cannot create container {name}")))?
            }
            Err(e) => return Err(api_ctx(format!("cannot create container {name}"))(e)),
        };
        let id = response.id;
        match self.start(&id, servers, progress).await {
            Ok(()) => Ok(id),
            Err(e) => {
                if let Err(cleanup) = crate::container::remove(self.docker, &id).await {
                    tracing::warn!(container = %name, "cleanup failed: {cleanup}");
                }
                Err(e)
            }
        }
    }

    /// Writes the configuration into the (created or stopped) load
    /// balancer `id`, starts it and waits until it answers HTTP.
    pub(crate) async fn start(
        &self,
        id: &str,
        servers: &[String],
        progress: Progress<'_>,
    ) -> Result<(), ProviderError> {
        let name = &self.spec.name;
        self.upload(id, servers).await?;
        if let Err(e) = self.docker.start_container(id, None).await {
            let logs = crate::container::tail_logs(self.docker, id).await;
            return Err(ProviderError::Api(format!(
                "cannot start load balancer {name}: {}{logs}",
                message(&e)
            )));
        }
        progress(&format!("waiting for load balancer {name} to answer"));
        self.wait_answering(id).await
    }

    /// Waits until the load balancer answers HTTP: nginx (any status) on
    /// its first port, the proxy on its admin port's `/healthz`.
    async fn wait_answering(&self, id: &str) -> Result<(), ProviderError> {
        let name = &self.spec.name;
        let (port, path) = match self.spec.kind {
            LbKind::Proxy => (PROXY_ADMIN_PORT, "/healthz"),
            LbKind::Nginx => match self.spec.ports.first() {
                Some(port) => (port.listen, "/"),
                None => return Ok(()),
            },
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last = String::new();
        loop {
            let info = self
                .docker
                .inspect_container(id, None)
                .await
                .map_err(api_ctx(format!("cannot inspect container {name}")))?;
            let state = info.state.clone().unwrap_or_default();
            if !state.running.unwrap_or(false) && !state.restarting.unwrap_or(false) {
                let logs = crate::container::tail_logs(self.docker, id).await;
                return Err(ProviderError::Api(format!(
                    "load balancer {name} exited with code {}{logs}",
                    state.exit_code.unwrap_or(-1)
                )));
            }
            if let Some(ip) = crate::container::ip_on(&info, Some(&self.spec.network)) {
                match self
                    .probe
                    .get(&ip, port, path, Duration::from_secs(2))
                    .await
                {
                    Ok(status) if self.spec.kind == LbKind::Nginx || status == 200 => {
                        return Ok(());
                    }
                    Ok(status) => last = format!("{path} answered {status}"),
                    Err(e) => last = e,
                }
            }
            if Instant::now() >= deadline {
                let logs = crate::container::tail_logs(self.docker, id).await;
                return Err(ProviderError::Timeout(format!(
                    "load balancer {name} did not answer HTTP within {}s ({last}){logs}",
                    START_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A create hit a name conflict: a leftover load balancer of this
    /// resource is removed, anything else is an error naming it.
    async fn clear_name(&self, conflict: &bollard::errors::Error) -> Result<(), ProviderError> {
        let name = &self.spec.name;
        let holder = match self.docker.inspect_container(name, None).await {
            Ok(holder) => holder,
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(_) => {
                return Err(ProviderError::Api(format!(
                    "cannot create container {name}: {}",
                    message(conflict)
                )));
            }
        };
        let labels = holder
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        if !self.who.owns(&labels) || labels.get(ROLE_LABEL).map(String::as_str) != Some(ROLE_LB) {
            return Err(ProviderError::Api(format!(
                "a container named {name} already exists and is not the load balancer of {} \
                 in this berth environment; remove or rename it",
                self.who.address
            )));
        }
        crate::container::remove(self.docker, holder.id.as_deref().unwrap_or(name)).await
    }

    /// Writes the configuration for `servers` into the container `id`;
    /// for the proxy, the version of the file written.
    async fn upload(&self, id: &str, servers: &[String]) -> Result<Option<String>, ProviderError> {
        let (dir, file, text, version) = match self.spec.kind {
            LbKind::Nginx => (
                CONF_DIR,
                "nginx.conf",
                nginx_config(self.spec, self.who.address, servers),
                None,
            ),
            LbKind::Proxy => {
                let upstreams = self.upstreams(servers).await?;
                let (version, text) = proxy_file(self.who.address, &upstreams);
                (PROXY_CONF_DIR, PROXY_FILE, text, Some(version))
            }
        };
        let tar = config_tar(file, &text)?;
        self.docker
            .upload_to_container(
                id,
                Some(UploadToContainerOptions {
                    path: dir.to_owned(),
                    ..Default::default()
                }),
                bollard::body_full(tar.into()),
            )
            .await
            .map_err(api_ctx(format!(
                "cannot write {dir}/{file} into {}",
                self.spec.name
            )))?;
        Ok(version)
    }

    /// The IPs of `servers` on the load balancer's network. A replica that
    /// is gone or has no address there is left out, with a warning.
    async fn upstreams(&self, servers: &[String]) -> Result<Vec<ProxyUpstream>, ProviderError> {
        let mut upstreams = Vec::with_capacity(servers.len());
        for server in servers {
            let info = match self.docker.inspect_container(server, None).await {
                Ok(info) => info,
                Err(e) if is_not_found(&e) => {
                    tracing::warn!(container = %server, "gone: left out of the load balancer");
                    continue;
                }
                Err(e) => return Err(api_ctx(format!("cannot inspect container {server}"))(e)),
            };
            let networks = info
                .network_settings
                .as_ref()
                .and_then(|n| n.networks.as_ref());
            match networks
                .and_then(|n| n.get(&self.spec.network))
                .and_then(|ep| ep.ip_address.clone())
                .filter(|ip| !ip.is_empty())
            {
                Some(ip) => upstreams.push(ProxyUpstream {
                    name: server.clone(),
                    ip,
                }),
                None => tracing::warn!(
                    container = %server,
                    network = %self.spec.network,
                    "no address on the load balancer's network: left out"
                ),
            }
        }
        if upstreams.is_empty() && !servers.is_empty() {
            return Err(ProviderError::Api(format!(
                "load balancer {}: none of {} has an address on network {}",
                self.spec.name,
                servers.join(", "),
                self.spec.network
            )));
        }
        Ok(upstreams)
    }

    /// The load balancer's IP on its network, for the admin endpoint.
    async fn address(&self, id: &str) -> Result<String, ProviderError> {
        let info = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(api_ctx(format!(
                "cannot inspect container {}",
                self.spec.name
            )))?;
        crate::container::ip_on(&info, Some(&self.spec.network)).ok_or_else(|| {
            ProviderError::Api(format!(
                "load balancer {} has no address on network {}",
                self.spec.name, self.spec.network
            ))
        })
    }

    /// Asks the proxy's admin endpoint `path` until it answers 200 (true)
    /// or `within` has passed (false).
    async fn ask_proxy(&self, ip: &str, path: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(200) = self
                .probe
                .get(ip, PROXY_ADMIN_PORT, path, Duration::from_secs(2))
                .await
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(PROXY_POLL).await;
        }
    }

    /// Points the running load balancer `id` at `servers`, and returns
    /// once the change is in effect. nginx: writes the configuration,
    /// checks it (`nginx -t`) and reloads. The proxy: writes its upstream
    /// file and waits until it reports that version in effect.
    pub(crate) async fn reload(
        &self,
        id: &str,
        servers: &[String],
        progress: Progress<'_>,
    ) -> Result<(), ProviderError> {
        let name = &self.spec.name;
        let started = Instant::now();
        let version = self.upload(id, servers).await?;
        let listed = if servers.is_empty() {
            "no replicas".to_owned()
        } else {
            servers.join(", ")
        };
        if let Some(version) = version {
            let ip = self.address(id).await?;
            if !self
                .ask_proxy(&ip, &format!("/applied?version={version}"), APPLY_TIMEOUT)
                .await
            {
                let logs = crate::container::tail_logs(self.docker, id).await;
                return Err(ProviderError::Timeout(format!(
                    "load balancer {name} did not take the new upstreams ({listed}) within \
                     {}s{logs}",
                    APPLY_TIMEOUT.as_secs()
                )));
            }
            progress(&format!(
                "load balancer {name}: now {listed} (in effect after {:.2}s)",
                started.elapsed().as_secs_f64()
            ));
            return Ok(());
        }
        let (code, output) = exec(self.docker, id, &[NGINX, "-t", "-q"]).await?;
        if code != 0 {
            return Err(ProviderError::Api(format!(
                "load balancer {name}: the new configuration does not load (nginx -t exited \
                 {code}); it still serves the previous one:\n{}",
                indent(&output)
            )));
        }
        let (code, output) = exec(self.docker, id, &[NGINX, "-s", "reload"]).await?;
        if code != 0 {
            return Err(ProviderError::Api(format!(
                "load balancer {name}: nginx -s reload exited {code}:\n{}",
                indent(&output)
            )));
        }
        progress(&format!(
            "load balancer {name}: reloaded with {listed} ({:.2}s)",
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// Waits until replicas just taken out of the load balancer `id` have
    /// finished the requests it sent them, so they can be stopped. The
    /// proxy says when (at most `drain`); for nginx this is a wait of
    /// `drain`.
    pub(crate) async fn drain(&self, id: &str, progress: Progress<'_>) {
        let name = &self.spec.name;
        let started = Instant::now();
        match self.spec.kind {
            LbKind::Nginx => tokio::time::sleep(self.spec.drain).await,
            LbKind::Proxy => {
                let drained = match self.address(id).await {
                    Ok(ip) => self.ask_proxy(&ip, "/drained", self.spec.drain).await,
                    Err(e) => {
                        tracing::warn!("{e}");
                        false
                    }
                };
                if !drained {
                    progress(&format!(
                        "load balancer {name}: requests still in flight after {}s \
                         (load_balancer {{ drain }}); going on",
                        self.spec.drain.as_secs_f64()
                    ));
                    return;
                }
            }
        }
        progress(&format!(
            "load balancer {name}: drained after {:.2}s",
            started.elapsed().as_secs_f64()
        ));
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `cmd` in the running container `id`; its exit code and output.
async fn exec(docker: &Docker, id: &str, cmd: &[&str]) -> Result<(i64, String), ProviderError> {
    let what = cmd.join(" ");
    let created = docker
        .create_exec(
            id,
            CreateExecOptions {
                cmd: Some(cmd.to_vec()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .map_err(api_ctx(format!("cannot run `{what}` in {}", short(id))))?;
    let mut output = String::new();
    if let StartExecResults::Attached {
        output: mut stream, ..
    } = docker
        .start_exec(&created.id, None)
        .await
        .map_err(api_ctx(format!("cannot run `{what}` in {}", short(id))))?
    {
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => output.push_str(&chunk.to_string()),
                Err(e) => {
                    return Err(ProviderError::Api(format!(
                        "`{what}` in {}: {}",
                        short(id),
                        message(&e)
                    )));
                }
            }
        }
    }
    // The output ends before the engine records the exit code.
    for _ in 0..50 {
        let inspect = docker
            .inspect_exec(&created.id)
            .await
            .map_err(api_ctx(format!("cannot inspect `{what}` in {}", short(id))))?;
        if !inspect.running.unwrap_or(false) {
            return Ok((inspect.exit_code.unwrap_or(-1), output));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ProviderError::Timeout(format!(
        "`{what}` in {} did not finish",
        short(id)
    )))
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LbSpec {
        LbSpec {
            kind: LbKind::Nginx,
            drain: NGINX_DRAIN,
            name: "web-lb".into(),
            image: NGINX_IMAGE.into(),
            network: "web-net".into(),
            managed_network: true,
            ports: vec![
                LbPort {
                    listen: 80,
                    internal: 5000,
                    external: 8080,
                    ip: "127.0.0.1".into(),
                },
                LbPort {
                    listen: 81,
                    internal: 9090,
                    external: 9999,
                    ip: "0.0.0.0".into(),
                },
            ],
        }
    }

    #[test]
    fn config_lists_every_replica_per_port() {
        let text = nginx_config(
            &spec(),
            "docker_container.web",
            &["web-1".into(), "web-2".into(), "web-3-next-0a1b2c3d".into()],
        );
        assert!(text.contains("upstream berth_80 {\n        server web-1:5000 max_fails=1 fail_timeout=5s;\n        server web-2:5000"), "{text}");
        assert!(text.contains("server web-3-next-0a1b2c3d:5000"), "{text}");
        assert!(
            text.contains("upstream berth_81 {\n        server web-1:9090"),
            "{text}"
        );
        assert!(text.contains("listen 80;"), "{text}");
        assert!(text.contains("listen 81;"), "{text}");
        assert!(text.contains("proxy_pass http://berth_80;"), "{text}");
        assert!(text.contains("proxy_pass http://berth_81;"), "{text}");
        assert!(
            text.contains("proxy_next_upstream error timeout http_502 http_503;"),
            "{text}"
        );
        assert!(text.contains("pid /run/nginx.pid;"), "{text}");
        assert!(text.starts_with("# Written by berth for docker_container.web"));
        // Balanced braces: nginx would refuse anything else.
        assert_eq!(text.matches('{').count(), text.matches('}').count());
    }

    #[test]
    fn config_without_replicas_still_loads() {
        let text = nginx_config(&spec(), "docker_container.web", &[]);
        assert!(text.contains("server 127.0.0.1:9 down;"), "{text}");
        assert!(!text.contains(":5000"), "{text}");
    }

    #[test]
    fn hash_follows_what_needs_a_new_container() {
        let a = spec();
        let mut b = spec();
        assert_eq!(a.hash(), b.hash());
        b.image = "berth-test-nginx:latest".into();
        assert_ne!(a.hash(), b.hash());
        let mut c = spec();
        c.ports[0].external = 8081;
        assert_ne!(a.hash(), c.hash());
        // The kind needs a new container, the drain does not.
        let mut d = spec();
        d.kind = LbKind::Proxy;
        assert_ne!(a.hash(), d.hash());
        let mut e = spec();
        e.drain = Duration::from_secs(30);
        assert_eq!(a.hash(), e.hash());
    }

    #[test]
    fn nginx_balancers_hash_as_before_kinds_existed() {
        // The JSON hashed for an nginx balancer has no `kind`, so the
        // containers berth created before keep their hash.
        let json = serde_json::to_string(&spec()).unwrap();
        assert!(!json.contains("kind"), "{json}");
        assert!(!json.contains("drain"), "{json}");
        let mut proxy = spec();
        proxy.kind = LbKind::Proxy;
        let json = serde_json::to_string(&proxy).unwrap();
        assert!(
            json.starts_with(r#"{"kind":"berth-proxy","name":"web-lb""#),
            "{json}"
        );
    }

    #[test]
    fn kinds_by_name_with_their_defaults() {
        assert_eq!(LbKind::parse("berth-proxy"), Some(LbKind::Proxy));
        assert_eq!(LbKind::parse("nginx"), Some(LbKind::Nginx));
        assert_eq!(LbKind::parse("haproxy"), None);
        assert_eq!(LbKind::default(), LbKind::Proxy);
        assert_eq!(LbKind::Proxy.default_image(), PROXY_IMAGE);
        assert_eq!(
            PROXY_IMAGE,
            format!("berth-proxy:{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(LbKind::Nginx.default_image(), "nginx:1.27-alpine");
        assert!(LbKind::Proxy.default_drain() > LbKind::Nginx.default_drain());
    }

    #[test]
    fn proxy_file_lists_replicas_by_ip_with_a_version_of_the_list() {
        let up = |name: &str, ip: &str| ProxyUpstream {
            name: name.into(),
            ip: ip.into(),
        };
        let (version, text) = proxy_file(
            "docker_container.web",
            &[
                up("web-1", "172.18.0.3"),
                up("web-2-next-0a1b", "172.18.0.4"),
            ],
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["version"], version.as_str());
        assert_eq!(version.len(), 16);
        assert_eq!(parsed["owner"], "docker_container.web");
        assert_eq!(
            parsed["upstreams"],
            serde_json::json!([
                {"name": "web-1", "ip": "172.18.0.3"},
                {"name": "web-2-next-0a1b", "ip": "172.18.0.4"}
            ])
        );
        // Another set, another version; the same set, the same one.
        let (other, _) = proxy_file("docker_container.web", &[up("web-1", "172.18.0.3")]);
        assert_ne!(version, other);
        let (again, _) = proxy_file(
            "docker_container.web",
            &[
                up("web-1", "172.18.0.3"),
                up("web-2-next-0a1b", "172.18.0.4"),
            ],
        );
        assert_eq!(version, again);
    }

    #[test]
    fn config_tar_holds_one_file() {
        let tar = config_tar("nginx.conf", "x y z\n").unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let entries: Vec<_> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().size().unwrap(),
                )
            })
            .collect();
        assert_eq!(entries, vec![("nginx.conf".to_owned(), 6)]);
    }
}
