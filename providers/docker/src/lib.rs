//! The docker provider: `docker_network`, `docker_image` and
//! `docker_container` through the Docker Engine API (bollard).
//!
//! [`DockerProvider`] implements [`berth_provider::Provider`]; it connects in
//! [`configure`](berth_provider::Provider::configure) (provider attribute
//! `host`, else `DOCKER_HOST`, else the local socket) and dispatches each
//! call to the module owning the resource type. Everything it creates
//! carries the owner labels, so [`refresh`](berth_provider::Provider::refresh)
//! is one label-filtered list call per type.

mod attrs;
mod client;
mod container;
mod context;
mod duration;
mod image;
mod network;

use std::sync::RwLock;

use async_trait::async_trait;
use berth_provider::{
    Applied, ApplyRequest, Attrs, DeleteRequest, Observed, Ownership, Progress, Provider,
    ProviderContext, ProviderError, ResourceSchema,
};
use bollard::Docker;

pub use client::DEFAULT_HOST;
pub use container::REPLICA_LABEL;

/// The provider for `docker_*` resources.
pub struct DockerProvider {
    ctx: ProviderContext,
    schemas: Vec<ResourceSchema>,
    docker: RwLock<Option<Docker>>,
}

impl DockerProvider {
    /// A provider that resolves relative paths against `ctx.base_dir`. It
    /// does not connect until [`Provider::configure`].
    pub fn new(ctx: ProviderContext) -> Self {
        Self {
            ctx,
            schemas: vec![network::schema(), image::schema(), container::schema()],
            docker: RwLock::new(None),
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

    /// Accepts `host`; other keys (e.g. `registry_auth`) are ignored for now.
    async fn configure(&self, config: &Attrs) -> Result<(), ProviderError> {
        let host = client::resolve_host(config)?;
        let docker = client::connect(&host).await?;
        tracing::debug!(%host, version = ?docker.client_version(), "connected to the Docker engine");
        let mut slot = self
            .docker
            .write()
            .map_err(|_| ProviderError::Api("the docker client lock is poisoned".to_owned()))?;
        *slot = Some(docker);
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
        let docker = self.docker()?;
        let base_dir = &self.ctx.base_dir;
        match request.type_name {
            network::TYPE => network::create(&docker, &request).await,
            image::TYPE => image::create(&docker, &request, base_dir, progress).await,
            container::TYPE => container::create(&docker, &request, base_dir, progress).await,
            other => Err(unknown_type(other)),
        }
    }

    async fn update(
        &self,
        request: ApplyRequest<'_>,
        progress: Progress<'_>,
    ) -> Result<Applied, ProviderError> {
        let docker = self.docker()?;
        let base_dir = &self.ctx.base_dir;
        match request.type_name {
            network::TYPE => network::update(&docker, &request).await,
            image::TYPE => image::update(&docker, &request).await,
            container::TYPE => container::update(&docker, &request, base_dir, progress).await,
            other => Err(unknown_type(other)),
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
