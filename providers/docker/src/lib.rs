//! The docker provider: `docker_network`, `docker_image` and
//! `docker_container` through the Docker Engine API (bollard).
//!
//! [`DockerProvider`] implements [`berth_provider::Provider`] and
//! dispatches each call to the module owning the resource type. Everything
//! it creates carries the owner labels, so
//! [`refresh`](berth_provider::Provider::refresh) is one label-filtered list
//! call per type and engine.
//!
//! **Engines** (module `hosts`, `engines`): every resource may name the host
//! it lives on in a `host { address, port, user, private_key, ... }` block;
//! the Docker API then goes through one SSH connection per host (berth-ssh),
//! and berth's HTTP health checks through `direct-tcpip` channels of it.
//! Without a block, the provider's default: its `host` (`ssh://...` with
//! `private_key`, or a local engine address), else `DOCKER_HOST`, else the
//! local socket. Engines are connected on first use. Objects on SSH hosts
//! record `host_target` and `host_fingerprint` in state: refresh and delete
//! find them there, and the fingerprint is the trust-on-first-use record of
//! the host's key. Registry credentials (`registry_auth` blocks or GitLab
//! CI's `CI_REGISTRY*` variables) go with every pull, on every host.
//!
//! A `docker_container` replacement rolls ([`Provider::replaces_itself`],
//! module `rolling`): new replicas are health-gated before old ones go, and
//! replicas sharing a published port sit behind a load balancer (module
//! `lb`: berth-proxy by default, or nginx) whose upstreams change without a
//! restart as they do.

mod attrs;
mod client;
mod container;
mod context;
mod duration;
mod engines;
mod health;
mod hosts;
mod image;
mod lb;
mod network;
mod registry;
mod registry_api;
mod registry_image;
mod rolling;

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use berth_provider::{
    Applied, ApplyRequest, AttrProblem, Attrs, DeleteRequest, Observed, Ownership, Progress,
    Provider, ProviderContext, ProviderError, ResourceSchema,
};

pub use client::DEFAULT_HOST;
pub use container::REPLICA_LABEL;
pub use health::{DirectHttpProbe, HttpProbe, SshHttpProbe};
pub use registry::{CredentialSource, Login, LoginFuture};

use engines::{Engine, Engines};
use hosts::{Location, Recorded, Settings};

/// The provider for `docker_*` resources.
pub struct DockerProvider {
    ctx: ProviderContext,
    schemas: Vec<ResourceSchema>,
    settings: RwLock<Option<Arc<Settings>>>,
    auths: RwLock<Arc<registry::Auths>>,
    credential_source: Option<Arc<dyn CredentialSource>>,
    engines: Engines,
    hints: hosts::Hints,
}

/// What the resource modules work with: the engine's client, the registry
/// credentials and the HTTP readiness probe that reaches its containers.
pub(crate) struct Conn {
    pub(crate) docker: bollard::Docker,
    pub(crate) auths: Arc<registry::Auths>,
    pub(crate) probe: Arc<dyn HttpProbe>,
}

impl DockerProvider {
    /// A provider that resolves relative paths against `ctx.base_dir`. It
    /// connects to nothing until an engine is first needed. berth's HTTP
    /// readiness checks (`healthcheck { path }`) connect directly to the
    /// containers' IPs on the local engine, and through the SSH connection
    /// on hosts reached over SSH.
    pub fn new(ctx: ProviderContext) -> Self {
        Self::with_http_probe(ctx, Arc::new(DirectHttpProbe))
    }

    /// Like [`DockerProvider::new`], with the HTTP readiness checks of the
    /// local engine's containers made through `probe` (for a local engine
    /// whose containers' IPs are reachable only through some other way).
    pub fn with_http_probe(ctx: ProviderContext, probe: Arc<dyn HttpProbe>) -> Self {
        let mut schemas = vec![
            network::schema(),
            image::schema(),
            container::schema(),
            registry_image::schema(),
        ];
        for schema in &mut schemas {
            schema.blocks.push(hosts::block_schema());
        }
        Self {
            ctx,
            schemas,
            settings: RwLock::new(None),
            auths: RwLock::new(Arc::default()),
            credential_source: None,
            engines: Engines::new(probe),
            hints: hosts::Hints::default(),
        }
    }

    /// Registry logins from `source` for the registries it serves and no
    /// `registry_auth` block gives a username or password for (berth's
    /// binary plugs in ECR's, from the AWS provider).
    pub fn with_credential_source(mut self, source: Arc<dyn CredentialSource>) -> Self {
        self.credential_source = Some(source);
        self
    }

    fn settings(&self) -> Result<Arc<Settings>, ProviderError> {
        self.settings
            .read()
            .ok()
            .and_then(|guard| guard.clone())
            .ok_or_else(|| {
                ProviderError::Config(
                    "the docker provider is used before it was configured".to_owned(),
                )
            })
    }

    /// The engine the resource configured with `config` lives on.
    async fn configured_engine(
        &self,
        config: &Attrs,
        progress: Progress<'_>,
    ) -> Result<Engine, ProviderError> {
        let settings = self.settings()?;
        let location = settings.location_of(config, &self.ctx.base_dir)?;
        self.engines
            .get(&location, &settings.local_url, progress)
            .await
    }

    /// Where state (or refresh) says the object of `address` is.
    fn recorded_location(&self, address: &str, attrs: &Attrs) -> Result<Location, ProviderError> {
        let settings = self.settings()?;
        self.hints.resolve(
            address,
            &Recorded::from_attrs(attrs),
            &settings,
            &self.ctx.base_dir,
        )
    }

    fn conn(&self, engine: &Engine) -> Conn {
        Conn {
            docker: engine.docker.clone(),
            auths: self
                .auths
                .read()
                .map(|a| Arc::clone(&a))
                .unwrap_or_default(),
            probe: Arc::clone(&engine.probe),
        }
    }

    /// Lists `type_name` on one engine.
    async fn list(
        &self,
        type_name: &str,
        engine: &Engine,
        owner: &Ownership,
        recorded: &[(String, String)],
    ) -> Result<Vec<Observed>, ProviderError> {
        let docker = &engine.docker;
        let result = match type_name {
            network::TYPE => network::refresh(docker, owner).await,
            image::TYPE => image::refresh(docker, owner, recorded).await,
            container::TYPE => container::refresh(docker, owner).await,
            registry_image::TYPE => {
                registry_image::refresh(&self.conn(engine).auths, recorded).await
            }
            other => Err(unknown_type(other)),
        };
        result.map_err(|e| engine.name_host(e))
    }

    /// Replaces a container whose host changed: the new containers come up
    /// on the new host first, then the old ones go from the old host. Two
    /// ways to the same daemon (the local socket and `ssh://localhost`, or
    /// two logins) are not a move: that is an ordinary rolling replacement.
    async fn move_container(
        &self,
        request: &ApplyRequest<'_>,
        from: &Location,
        progress: Progress<'_>,
    ) -> Result<Applied, ProviderError> {
        let settings = self.settings()?;
        let to = self.configured_engine(request.config, progress).await?;
        // The old host may be gone already (a replaced machine is destroyed
        // before what ran on it is replaced): try it for a short while, and
        // say what was left rather than fail with the new containers up.
        let from = match from {
            Location::Ssh(spec) => {
                let mut spec = spec.clone();
                spec.timeout = spec.timeout.min(OLD_HOST_TIMEOUT);
                Location::Ssh(spec)
            }
            Location::Local => Location::Local,
        };
        let old = self.engines.get(&from, &settings.local_url, progress).await;
        if let Ok(old) = &old
            && same_daemon(&old.docker, &to.docker).await
        {
            let mut applied =
                rolling::replace(&self.conn(&to), request, &self.ctx.base_dir, progress)
                    .await
                    .map_err(|e| to.name_host(e))?;
            to.stamp(&mut applied.attrs);
            return Ok(applied);
        }
        progress(&format!(
            "moving from {} to {}: the new containers start before the old ones go",
            from.key(),
            to.ssh.as_ref().map(|(t, _)| t.as_str()).unwrap_or("local")
        ));
        let mut applied = container::create(&self.conn(&to), request, &self.ctx.base_dir, progress)
            .await
            .map_err(|e| to.name_host(e))?;
        to.stamp(&mut applied.attrs);
        let grace = container::destroy_grace(request.prior.unwrap_or(request.config))?;
        let removed = match old {
            Ok(old) => {
                container::remove_all(&old.docker, request.owner, request.address, grace, progress)
                    .await
                    .map_err(|e| old.name_host(e))
            }
            Err(e) => Err(e),
        };
        if let Err(e) = removed {
            let line = format!(
                "{}: the previous containers on {} were not removed ({e}); if that host still \
                 exists, remove the containers labelled berth.address={} there",
                request.address,
                from.key(),
                request.address
            );
            tracing::warn!("{line}");
            progress(&line);
        }
        Ok(applied)
    }
}

/// Whether two clients reach the same Docker daemon (same engine ID).
async fn same_daemon(a: &bollard::Docker, b: &bollard::Docker) -> bool {
    match (a.info().await, b.info().await) {
        (Ok(x), Ok(y)) => x.id.is_some() && x.id == y.id,
        _ => false,
    }
}

/// How long a host move tries to reach the previous host to remove what
/// ran there.
const OLD_HOST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn unknown_type(type_name: &str) -> ProviderError {
    ProviderError::Config(format!(
        "the docker provider has no resource type `{type_name}` \
         (it serves docker_network, docker_image and docker_container)"
    ))
}

/// Whether two locations are the same engine (an SSH host reached as
/// another user is the same machine).
fn same_engine(a: &Location, b: &Location) -> bool {
    match (a, b) {
        (Location::Local, Location::Local) => true,
        (Location::Ssh(x), Location::Ssh(y)) => x.host_port() == y.host_port(),
        _ => false,
    }
}

#[async_trait]
impl Provider for DockerProvider {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn schemas(&self) -> &[ResourceSchema] {
        &self.schemas
    }

    /// Accepts `host` (a local engine address, or `ssh://user@host:port`
    /// with `private_key`, `passphrase`, `host_key`, `known_hosts_file`)
    /// and `registry_auth { address, username, password, endpoint }` blocks
    /// (credentials for pulls on every host; GitLab CI's `CI_REGISTRY`,
    /// `CI_REGISTRY_USER` and `CI_REGISTRY_PASSWORD` are used for their
    /// registry when no block names it). Connects to nothing: each engine
    /// is connected on first use.
    async fn configure(&self, config: &Attrs) -> Result<(), ProviderError> {
        let settings = Settings::from_config(
            config,
            std::env::var("DOCKER_HOST").ok(),
            &self.ctx.base_dir,
        )?;
        let auths = registry::Auths::from_config(config, |key| std::env::var(key).ok())?
            .with_source(self.credential_source.clone());
        let poisoned = || ProviderError::Api("the docker provider lock is poisoned".to_owned());
        *self.settings.write().map_err(|_| poisoned())? = Some(Arc::new(settings));
        self.hints.settings_changed();
        *self.auths.write().map_err(|_| poisoned())? = Arc::new(auths);
        Ok(())
    }

    fn validate(&self, _type_name: &str, config: &Attrs) -> Vec<AttrProblem> {
        hosts::validate_block(config)
            .map(|message| AttrProblem {
                attribute: hosts::BLOCK.to_owned(),
                message,
            })
            .into_iter()
            .collect()
    }

    async fn prepare(&self, type_name: &str, config: &mut Attrs) -> Result<(), ProviderError> {
        match type_name {
            network::TYPE => network::prepare(config),
            image::TYPE => image::prepare(config, &self.ctx.base_dir).await,
            container::TYPE => {
                container::prepare(None, config).await?;
                // The image's id at plan time, where it can be had without
                // waiting for a host: one look-up per engine and image for
                // the whole run, however many containers use it.
                let Some(reference) = attrs::non_empty_string(config, "image")? else {
                    return Ok(());
                };
                let Ok(settings) = self.settings() else {
                    return Ok(());
                };
                let Ok(location) = settings.location_of(config, &self.ctx.base_dir) else {
                    return Ok(());
                };
                let Some(docker) = self.engines.ready(&location, &settings.local_url).await else {
                    return Ok(());
                };
                match self
                    .engines
                    .image_id(&location.key(), &docker, &reference)
                    .await
                {
                    Ok(Some(id)) => {
                        config.insert("image_id".into(), berth_provider::Value::from(id));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(image = %reference, "cannot resolve image at plan time: {e}")
                    }
                }
                Ok(())
            }
            registry_image::TYPE => {
                // The local image's id and pushed digest at plan time,
                // where the engine can be had without waiting for a host.
                let docker = match self.settings() {
                    Ok(settings) => match settings.location_of(config, &self.ctx.base_dir) {
                        Ok(location) => self.engines.ready(&location, &settings.local_url).await,
                        Err(_) => None,
                    },
                    Err(_) => None,
                };
                registry_image::prepare(docker.as_ref(), config).await
            }
            other => Err(unknown_type(other)),
        }
    }

    fn hint(
        &self,
        type_name: &str,
        address: &str,
        config: Option<&Attrs>,
        recorded: Option<&Attrs>,
    ) {
        self.hints
            .add(type_name, address, config, recorded, &self.engines.store);
    }

    /// One label-filtered list call per engine that holds (or, for new
    /// resources, will hold) objects of `type_name`: each address is looked
    /// for where state records it, else where it is configured.
    async fn refresh(
        &self,
        type_name: &str,
        owner: &Ownership,
        recorded: &[(String, String)],
    ) -> Result<Vec<Observed>, ProviderError> {
        let settings = self.settings()?;
        let groups = self
            .hints
            .groups(type_name, &settings, &self.ctx.base_dir)?;
        let log = |line: &str| tracing::warn!("{line}");
        let Some(groups) = groups else {
            // Nothing hinted: the default engine, as without hosts.
            let location = settings.default_location().map_err(ProviderError::Config)?;
            let engine = self
                .engines
                .get(&location, &settings.local_url, &log)
                .await?;
            let mut observed = self.list(type_name, &engine, owner, recorded).await?;
            for o in &mut observed {
                engine.stamp(&mut o.attrs);
            }
            return Ok(observed);
        };
        let grouped: BTreeSet<&String> = groups.iter().flat_map(|g| &g.addresses).collect();
        // Every engine at once: one host waiting to boot does not hold up
        // the others.
        let lists = groups.iter().map(|group| async {
            let engine = match self
                .engines
                .get(&group.location, &settings.local_url, &log)
                .await
            {
                Ok(engine) => engine,
                Err(e) if !group.needed => {
                    tracing::debug!(
                        engine = %group.location.key(),
                        "not refreshing {type_name} there (nothing recorded on it): {e}"
                    );
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            let here: Vec<(String, String)> = recorded
                .iter()
                .filter(|(address, _)| group.addresses.contains(address))
                .cloned()
                .collect();
            let observed = self.list(type_name, &engine, owner, &here).await?;
            Ok(Some((engine, observed)))
        });
        let listed = futures_util::future::join_all(lists).await;
        let mut out: Vec<Observed> = Vec::new();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        for (group, result) in groups.iter().zip(listed) {
            let Some((engine, observed)) = result? else {
                continue;
            };
            for mut o in observed {
                // An address configured or recorded elsewhere is not
                // reported from here; one nobody knows (a leftover) is,
                // once.
                let mine = group.addresses.contains(&o.address) || !grouped.contains(&o.address);
                if mine && seen.insert(o.address.clone()) {
                    engine.stamp(&mut o.attrs);
                    out.push(o);
                }
            }
        }
        Ok(out)
    }

    async fn create(
        &self,
        request: ApplyRequest<'_>,
        progress: Progress<'_>,
    ) -> Result<Applied, ProviderError> {
        let _images = self.engines.images_changing();
        let engine = self.configured_engine(request.config, progress).await?;
        let conn = self.conn(&engine);
        let base_dir = &self.ctx.base_dir;
        let result = match request.type_name {
            network::TYPE => network::create(&conn.docker, &request).await,
            image::TYPE => {
                image::create(&conn.docker, &conn.auths, &request, base_dir, progress).await
            }
            container::TYPE => container::create(&conn, &request, base_dir, progress).await,
            registry_image::TYPE => {
                registry_image::create(&conn.docker, &conn.auths, &request, progress).await
            }
            other => Err(unknown_type(other)),
        };
        let mut applied = result.map_err(|e| engine.name_host(e))?;
        engine.stamp(&mut applied.attrs);
        Ok(applied)
    }

    async fn update(
        &self,
        request: ApplyRequest<'_>,
        progress: Progress<'_>,
    ) -> Result<Applied, ProviderError> {
        let _images = self.engines.images_changing();
        let engine = self.configured_engine(request.config, progress).await?;
        let conn = self.conn(&engine);
        let base_dir = &self.ctx.base_dir;
        let result = match request.type_name {
            network::TYPE => network::update(&conn.docker, &request).await,
            image::TYPE => image::update(&conn.docker, &request).await,
            container::TYPE => container::update(&conn, &request, base_dir, progress).await,
            registry_image::TYPE => {
                registry_image::update(&conn.docker, &conn.auths, &request, progress).await
            }
            other => Err(unknown_type(other)),
        };
        let mut applied = result.map_err(|e| engine.name_host(e))?;
        engine.stamp(&mut applied.attrs);
        Ok(applied)
    }

    /// `docker_container` replacements roll when there is something to
    /// keep serving and something to gate on: several replicas, a load
    /// balancer, a health check or `wait`.
    fn replaces_itself(
        &self,
        type_name: &str,
        config: &Attrs,
        create_before_destroy: bool,
    ) -> bool {
        // With create_before_destroy the new container would clash with the
        // old one's name: the rolling path starts it under a temporary name.
        type_name == container::TYPE && (create_before_destroy || container::rolls(config))
    }

    /// Rolls on the container's host; when the host changed, the new
    /// containers start on the new host before the old ones are removed.
    async fn replace(
        &self,
        request: ApplyRequest<'_>,
        progress: Progress<'_>,
    ) -> Result<Applied, ProviderError> {
        let _images = self.engines.images_changing();
        if request.type_name != container::TYPE {
            return Err(ProviderError::Config(format!(
                "{} cannot be replaced in place",
                request.type_name
            )));
        }
        let settings = self.settings()?;
        let to = settings.location_of(request.config, &self.ctx.base_dir)?;
        let from = match request.prior {
            Some(prior) => self.recorded_location(request.address, prior)?,
            None => to.clone(),
        };
        if !same_engine(&from, &to) {
            return self.move_container(&request, &from, progress).await;
        }
        let engine = self.engines.get(&to, &settings.local_url, progress).await?;
        let mut applied =
            rolling::replace(&self.conn(&engine), &request, &self.ctx.base_dir, progress)
                .await
                .map_err(|e| engine.name_host(e))?;
        engine.stamp(&mut applied.attrs);
        Ok(applied)
    }

    /// Deletes on the engine state records the object on (a host whose
    /// configuration is gone is found through other resources' `host`
    /// blocks or the provider's default host).
    async fn delete(
        &self,
        request: DeleteRequest<'_>,
        progress: Progress<'_>,
    ) -> Result<(), ProviderError> {
        let _images = self.engines.images_changing();
        let settings = self.settings()?;
        let location = self.recorded_location(request.address, request.attrs)?;
        let engine = self
            .engines
            .get(&location, &settings.local_url, progress)
            .await?;
        let docker = &engine.docker;
        let result = match request.type_name {
            network::TYPE => network::delete(docker, &request).await,
            image::TYPE => image::delete(docker, &request).await,
            container::TYPE => container::delete(docker, &request, progress).await,
            registry_image::TYPE => {
                registry_image::delete(&self.conn(&engine).auths, &request, progress).await
            }
            other => Err(unknown_type(other)),
        };
        result.map_err(|e| engine.name_host(e))
    }
}
