//! The docker provider: `docker_network`, `docker_image` and
//! `docker_container` through the Docker Engine API (bollard).
//!
//! [`DockerProvider`] implements [`berth_provider::Provider`]; it connects in
//! [`configure`](berth_provider::Provider::configure) (provider attribute
//! `host`, else `DOCKER_HOST`, else the local socket; registry credentials
//! from `registry_auth` blocks or GitLab CI's `CI_REGISTRY*` variables) and
//! dispatches each call to the module owning the resource type. Everything
//! it creates carries the owner labels, so
//! [`refresh`](berth_provider::Provider::refresh) is one label-filtered list
//! call per type.
//!
//! A `docker_container` replacement rolls ([`Provider::replaces_itself`],
//! module `rolling`): new replicas are health-gated before old ones go, and
//! replicas sharing a published port sit behind an nginx load balancer
//! (module `lb`) that is reloaded, not restarted, as they change.

mod attrs;
mod client;
mod container;
mod context;
mod duration;
mod health;
mod image;
mod lb;
mod network;
mod registry;
mod rolling;

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use berth_provider::{
    Applied, ApplyRequest, Attrs, DeleteRequest, Observed, Ownership, Progress, Provider,
    ProviderContext, ProviderError, ResourceSchema,
};
use bollard::Docker;

pub use client::DEFAULT_HOST;
pub use container::REPLICA_LABEL;
pub use health::{DirectHttpProbe, HttpProbe};

/// The provider for `docker_*` resources.
pub struct DockerProvider {
    ctx: ProviderContext,
    schemas: Vec<ResourceSchema>,
    docker: RwLock<Option<Docker>>,
    auths: RwLock<Arc<registry::Auths>>,
    probe: Arc<dyn HttpProbe>,
}

/// What the resource modules work with: the connected client, the registry
/// credentials and the HTTP readiness probe.
pub(crate) struct Conn {
    pub(crate) docker: Docker,
    pub(crate) auths: Arc<registry::Auths>,
    pub(crate) probe: Arc<dyn HttpProbe>,
}

impl DockerProvider {
    /// A provider that resolves relative paths against `ctx.base_dir`. It
    /// does not connect until [`Provider::configure`]. berth's HTTP
    /// readiness checks (`healthcheck { path }`) connect directly to the
    /// containers' IPs, which suits a local engine.
    pub fn new(ctx: ProviderContext) -> Self {
        Self::with_http_probe(ctx, Arc::new(DirectHttpProbe))
    }

    /// Like [`DockerProvider::new`], with the HTTP readiness checks made
    /// through `probe`: for an engine on another host, whose containers'
    /// IPs are reachable only from there (e.g. through an SSH connection).
    pub fn with_http_probe(ctx: ProviderContext, probe: Arc<dyn HttpProbe>) -> Self {
        Self {
            ctx,
            schemas: vec![network::schema(), image::schema(), container::schema()],
            docker: RwLock::new(None),
            auths: RwLock::new(Arc::default()),
            probe,
        }
    }

    /// The connected client, if `configure` succeeded.
    fn client(&self) -> Option<Docker> {
        self.docker.read().ok().and_then(|guard| guard.clone())
    }

    fn docker(&self) -> Result<Docker, ProviderError> {
        self.client().ok_or_else(|| {
            ProviderError::Config("the docker provider is used before it was configured".to_owned())
        })
    }

    fn conn(&self) -> Result<Conn, ProviderError> {
        Ok(Conn {
            docker: self.docker()?,
            auths: self
                .auths
                .read()
                .map(|a| Arc::clone(&a))
                .unwrap_or_default(),
            probe: Arc::clone(&self.probe),
        })
    }
}

fn unknown_type(type_name: &str) -> ProviderError {
    ProviderError::Config(format!(
        "the docker provider has no resource type `{type_name}` \
         (it serves docker_network, docker_image and docker_container)"
    ))
}

#[async_trait]
impl Provider for DockerProvider {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn schemas(&self) -> &[ResourceSchema] {
        &self.schemas
    }

    /// Accepts `host` and `registry_auth { address, username, password }`
    /// blocks (credentials for pulls; GitLab CI's `CI_REGISTRY`,
    /// `CI_REGISTRY_USER` and `CI_REGISTRY_PASSWORD` are used for their
    /// registry when no block names it).
    async fn configure(&self, config: &Attrs) -> Result<(), ProviderError> {
        let host = client::resolve_host(config)?;
        let auths = registry::Auths::from_config(config, |key| std::env::var(key).ok())?;
        let docker = client::connect(&host).await?;
        tracing::debug!(%host, version = ?docker.client_version(), "connected to the Docker engine");
        let poisoned = || ProviderError::Api("the docker client lock is poisoned".to_owned());
        *self.docker.write().map_err(|_| poisoned())? = Some(docker);
        *self.auths.write().map_err(|_| poisoned())? = Arc::new(auths);
        Ok(())
    }

    async fn prepare(&self, type_name: &str, config: &mut Attrs) -> Result<(), ProviderError> {
        match type_name {
            network::TYPE => network::prepare(config),
            image::TYPE => image::prepare(config, &self.ctx.base_dir).await,
            container::TYPE => container::prepare(self.client().as_ref(), config).await,
            other => Err(unknown_type(other)),
        }
    }

    async fn refresh(
        &self,
        type_name: &str,
        owner: &Ownership,
        recorded: &[(String, String)],
    ) -> Result<Vec<Observed>, ProviderError> {
        let docker = self.docker()?;
        match type_name {
            network::TYPE => network::refresh(&docker, owner).await,
            image::TYPE => image::refresh(&docker, owner, recorded).await,
            container::TYPE => container::refresh(&docker, owner).await,
            other => Err(unknown_type(other)),
        }
    }

    async fn create(
        &self,
        request: ApplyRequest<'_>,
        progress: Progress<'_>,
    ) -> Result<Applied, ProviderError> {
        let conn = self.conn()?;
        let base_dir = &self.ctx.base_dir;
        match request.type_name {
            network::TYPE => network::create(&conn.docker, &request).await,
            image::TYPE => {
                image::create(&conn.docker, &conn.auths, &request, base_dir, progress).await
            }
            container::TYPE => container::create(&conn, &request, base_dir, progress).await,
            other => Err(unknown_type(other)),
        }
    }

    async fn update(
        &self,
        request: ApplyRequest<'_>,
        progress: Progress<'_>,
    ) -> Result<Applied, ProviderError> {
        let conn = self.conn()?;
        let base_dir = &self.ctx.base_dir;
        match request.type_name {
            network::TYPE => network::update(&conn.docker, &request).await,
            image::TYPE => image::update(&conn.docker, &request).await,
            container::TYPE => container::update(&conn, &request, base_dir, progress).await,
            other => Err(unknown_type(other)),
        }
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

    async fn replace(
        &self,
        request: ApplyRequest<'_>,
        progress: Progress<'_>,
    ) -> Result<Applied, ProviderError> {
        let conn = self.conn()?;
        match request.type_name {
            container::TYPE => {
                rolling::replace(&conn, &request, &self.ctx.base_dir, progress).await
            }
            other => Err(ProviderError::Config(format!(
                "{other} cannot be replaced in place"
            ))),
        }
    }

    async fn delete(
        &self,
        request: DeleteRequest<'_>,
        progress: Progress<'_>,
    ) -> Result<(), ProviderError> {
        let docker = self.docker()?;
        match request.type_name {
            network::TYPE => network::delete(&docker, &request).await,
            image::TYPE => image::delete(&docker, &request).await,
            container::TYPE => container::delete(&docker, &request, progress).await,
            other => Err(unknown_type(other)),
        }
    }
}
