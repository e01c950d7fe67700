//! The Docker engines the provider talks to: the local one, connected on
//! first use (so that a configuration whose resources all live on SSH
//! hosts runs where there is no dockerd), and one per SSH host, over one
//! pooled SSH connection each ([`berth_ssh::Pool`]), with the host key
//! policy's first-use fingerprints kept in [`StateKnownHosts`]. Also the
//! run's cache of plan-time image lookups ([`Engines::image_id`]), so a
//! no-op plan asks each engine about each image reference once, not once
//! per container.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_provider::{Attrs, Progress, ProviderError, Value};
use berth_ssh::{DEFAULT_DOCKER_SOCKET, HostSpec, Pool, SshConnection};
use bollard::Docker;

use crate::client;
use crate::health::{HttpProbe, SshHttpProbe};
use crate::hosts::{self, Location, StateKnownHosts};

/// One engine, ready to use.
#[derive(Clone)]
pub(crate) struct Engine {
    pub(crate) docker: Docker,
    /// berth's HTTP readiness checks, made from the engine's host.
    pub(crate) probe: Arc<dyn HttpProbe>,
    /// For an SSH host: `user@address:port` and the host key's fingerprint.
    pub(crate) ssh: Option<(String, String)>,
}

impl Engine {
    /// Records where the object lives (`host_target`, `host_fingerprint`)
    /// in attributes returned to the engine; nothing for the local engine.
    pub(crate) fn stamp(&self, attrs: &mut Attrs) {
        if let Some((target, fingerprint)) = &self.ssh {
            attrs.insert(hosts::TARGET.to_owned(), Value::from(target.clone()));
            attrs.insert(
                hosts::FINGERPRINT.to_owned(),
                Value::from(fingerprint.clone()),
            );
        }
    }

    /// Names the SSH host in an error from its engine.
    pub(crate) fn name_host(&self, e: ProviderError) -> ProviderError {
        let Some((target, _)) = &self.ssh else {
            return e;
        };
        match e {
            ProviderError::Api(m) if !m.contains(target.as_str()) => {
                ProviderError::Api(format!("on {target}: {m}"))
            }
            ProviderError::Timeout(m) if !m.contains(target.as_str()) => {
                ProviderError::Timeout(format!("on {target}: {m}"))
            }
            other => other,
        }
    }
}

/// An SSH host's connection and Docker client, made once and shared.
type Slot = Arc<tokio::sync::Mutex<Option<(SshConnection, Docker)>>>;

/// Image ids by engine key and image reference, as the engine last
/// answered; dropped (and the generation moved on) whenever the provider
/// has changed something on an engine.
#[derive(Default)]
struct ImageIds {
    generation: u64,
    ids: HashMap<(String, String), Option<String>>,
}

/// Moves the image cache on when dropped: held while the provider changes
/// something on an engine (a build, a pull, a removal).
pub(crate) struct ImagesChanging<'a> {
    images: &'a Mutex<ImageIds>,
}

impl Drop for ImagesChanging<'_> {
    fn drop(&mut self) {
        let mut images = self.images.lock().unwrap_or_else(|e| e.into_inner());
        images.generation += 1;
        images.ids.clear();
    }
}

/// Every engine of one provider (one berth run).
pub(crate) struct Engines {
    local_probe: Arc<dyn HttpProbe>,
    local: tokio::sync::Mutex<Option<Docker>>,
    pub(crate) store: Arc<StateKnownHosts>,
    pool: Pool,
    ssh: Mutex<HashMap<String, Slot>>,
    images: Mutex<ImageIds>,
}

impl Engines {
    /// No connection yet; `local_probe` makes the HTTP checks of the local
    /// engine's containers.
    pub(crate) fn new(local_probe: Arc<dyn HttpProbe>) -> Self {
        let store = Arc::new(StateKnownHosts::default());
        Self {
            local_probe,
            local: tokio::sync::Mutex::new(None),
            pool: Pool::new(store.clone()),
            store,
            ssh: Mutex::new(HashMap::new()),
            images: Mutex::new(ImageIds::default()),
        }
    }

    /// The engine at `location`, connecting if needed: the local engine at
    /// `local_url`, or the SSH host (progress of the connection, such as
    /// "waiting for root@10.0.0.5:22 (attempt 2, 1s elapsed): connection
    /// refused" and first-use host keys, goes to `progress`).
    pub(crate) async fn get(
        &self,
        location: &Location,
        local_url: &str,
        progress: Progress<'_>,
    ) -> Result<Engine, ProviderError> {
        match location {
            Location::Local => Ok(Engine {
                docker: self.local(local_url).await?,
                probe: Arc::clone(&self.local_probe),
                ssh: None,
            }),
            Location::Ssh(spec) => {
                let (conn, docker) = self.ssh(spec, progress).await?;
                Ok(Engine {
                    docker,
                    probe: Arc::new(SshHttpProbe::new(conn.clone())),
                    ssh: Some((spec.key(), conn.fingerprint().to_owned())),
                })
            }
        }
    }

    /// The client of `location` if it can be had without waiting: the
    /// local engine (connecting fails fast when there is none), or an SSH
    /// host already connected. For plan-time look-ups that may be skipped.
    pub(crate) async fn ready(&self, location: &Location, local_url: &str) -> Option<Docker> {
        match location {
            Location::Local => self.local(local_url).await.ok(),
            Location::Ssh(spec) => {
                let slot = self
                    .ssh
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&spec.key())
                    .cloned()?;
                let guard = slot.try_lock().ok()?;
                guard
                    .as_ref()
                    .filter(|(conn, _)| !conn.is_closed())
                    .map(|(_, docker)| docker.clone())
            }
        }
    }

    /// The local id of `reference` on the engine `engine_key` (reached as
    /// `docker`), `None` when it has no such image: asked once per engine
    /// and reference until the provider next changes something
    /// ([`Engines::images_changing`]). Failed look-ups are not kept.
    pub(crate) async fn image_id(
        &self,
        engine_key: &str,
        docker: &Docker,
        reference: &str,
    ) -> Result<Option<String>, ProviderError> {
        let key = (engine_key.to_owned(), reference.to_owned());
        let generation = {
            let images = self.images.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(id) = images.ids.get(&key) {
                return Ok(id.clone());
            }
            images.generation
        };
        let id = crate::image::local_id(docker, reference).await?;
        let mut images = self.images.lock().unwrap_or_else(|e| e.into_inner());
        // Something changed while the engine answered: the answer may be
        // stale, so it is used once and not kept.
        if images.generation == generation {
            images.ids.insert(key, id.clone());
        }
        Ok(id)
    }

    /// Forgets the image look-ups when the returned guard is dropped (after
    /// a create, update, replacement or delete: any of them may build,
    /// pull or remove an image).
    pub(crate) fn images_changing(&self) -> ImagesChanging<'_> {
        ImagesChanging {
            images: &self.images,
        }
    }

    async fn local(&self, url: &str) -> Result<Docker, ProviderError> {
        let mut slot = self.local.lock().await;
        if let Some(docker) = slot.as_ref() {
            return Ok(docker.clone());
        }
        let docker = client::connect(url).await?;
        tracing::debug!(host = %url, version = ?docker.client_version(), "connected to the Docker engine");
        *slot = Some(docker.clone());
        Ok(docker)
    }

    async fn ssh(
        &self,
        spec: &HostSpec,
        progress: Progress<'_>,
    ) -> Result<(SshConnection, Docker), ProviderError> {
        let slot = self
            .ssh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(spec.key())
            .or_default()
            .clone();
        // Callers for the same host wait here for the first one's connection.
        let mut guard = slot.lock().await;
        if let Some((conn, docker)) = guard.as_ref()
            && !conn.is_closed()
        {
            return Ok((conn.clone(), docker.clone()));
        }
        let conn = self
            .pool
            .get(spec, progress)
            .await
            .map_err(|e| hosts::ssh_error(spec, e))?;
        let docker = conn
            .docker(DEFAULT_DOCKER_SOCKET)
            .await
            .map_err(|e| hosts::ssh_error(spec, e))?;
        tracing::debug!(host = %spec.key(), version = ?docker.client_version(), "connected to the Docker engine over SSH");
        *guard = Some((conn.clone(), docker.clone()));
        Ok((conn, docker))
    }
}
