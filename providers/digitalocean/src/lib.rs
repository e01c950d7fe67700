//! berth's DigitalOcean provider: `digitalocean_ssh_key`,
//! `digitalocean_droplet` and `digitalocean_firewall` through the
//! DigitalOcean API v2, with the Terraform provider's resource and
//! attribute names so that blocks copied from a Terraform configuration
//! validate.
//!
//! [`DigitalOceanProvider`] implements [`berth_provider::Provider`]:
//!
//! - [`configure`](Provider::configure) reads `provider "digitalocean" {
//!   token, api_endpoint }` (token else `DIGITALOCEAN_TOKEN`, else
//!   `DIGITALOCEAN_ACCESS_TOKEN`; endpoint else `DIGITALOCEAN_API_URL`, else
//!   <https://api.digitalocean.com>); Terraform's `http_retry_max`,
//!   `http_retry_wait_min` and `http_retry_wait_max` tune the shared HTTP
//!   client's retries; the Spaces settings are accepted and ignored. It
//!   makes no API call.
//! - every call goes through [`berth_provider::http::HttpClient`], which
//!   retries 429 and 5xx answers honouring `Retry-After` and
//!   `ratelimit-reset`;
//! - droplets and firewalls carry berth's ownership tags
//!   (module `ownership`), so [`refresh`](Provider::refresh) is
//!   one paged list call per type, and an object created but never recorded
//!   (an interrupted apply) is found again and adopted instead of created
//!   twice. SSH keys cannot be tagged; see the `ssh_key` module.
//! - errors carry DigitalOcean's own answer: `DigitalOcean API: 422
//!   unprocessable_entity: SSH Key is already in use on your account
//!   (request id ...)`. The token never appears in errors, logs or `Debug`
//!   output.
//!
//! There are no berth-only resource attributes: every attribute and block
//! is Terraform's (a subset: `volume_ids`, `backup_policy` and the
//! deprecated `private_networking` of droplets are not supported yet). Where
//! berth replaces a droplet that Terraform would update (turning `ipv6`
//! on), the `droplet` module says so.
//!
//! What the engine relies on:
//! - `prepare` sorts set-like lists (`tags`, `ssh_keys`, `droplet_ids`,
//!   rules and the lists inside them) and writes firewall rules in a
//!   canonical form (`port_range = "all"`, none for ICMP); refresh reports
//!   them the same way, so order never shows as drift.
//! - `Observed.config_hash` is the full hash berth stored in the
//!   `berth-cfg:` tag (`berth-fw-cfg:` on firewalls); SSH keys report none
//!   and are adopted at create time instead.
//! - droplet and firewall refresh ignore `recorded`; SSH key refresh
//!   reports only recorded keys.
//! - a create that times out leaves a tagged droplet that the next plan
//!   finds.

mod attrs;
mod client;
mod droplet;
mod duration;
mod firewall;
mod ownership;
mod ssh_key;

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use berth_provider::http::RetryPolicy;
use berth_provider::{
    Applied, ApplyRequest, AttrProblem, Attrs, DeleteRequest, Observed, Ownership, Progress,
    Provider, ProviderContext, ProviderError, ResourceSchema,
};

pub use client::{DEFAULT_ENDPOINT, PollTiming};

use client::Api;

/// The provider for `digitalocean_*` resources.
pub struct DigitalOceanProvider {
    ctx: ProviderContext,
    schemas: Vec<ResourceSchema>,
    timing: PollTiming,
    retry_policy: Option<RetryPolicy>,
    api: RwLock<Option<Arc<Api>>>,
}

impl std::fmt::Debug for DigitalOceanProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigitalOceanProvider")
            .field("base_dir", &self.ctx.base_dir)
            .field("timing", &self.timing)
            .field("configured", &self.api().is_some())
            .finish_non_exhaustive()
    }
}

impl DigitalOceanProvider {
    /// A provider; it reads its token and endpoint in
    /// [`Provider::configure`].
    pub fn new(ctx: ProviderContext) -> Self {
        Self {
            ctx,
            schemas: vec![ssh_key::schema(), droplet::schema(), firewall::schema()],
            timing: PollTiming::default(),
            retry_policy: None,
            api: RwLock::new(None),
        }
    }

    /// How waits (droplet status, actions, deletion) poll. The default
    /// starts at 2s and grows to 10s; tests use milliseconds.
    pub fn with_poll_timing(mut self, timing: PollTiming) -> Self {
        self.timing = timing;
        self
    }

    /// The HTTP retry policy, before the provider block's `http_retry_*`
    /// settings are applied on top.
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry_policy = Some(policy);
        self
    }

    /// How many HTTP retries (429, 5xx, connection failures) this provider
    /// has made since it was configured.
    pub fn http_retries(&self) -> u64 {
        self.api().map(|a| a.retries()).unwrap_or(0)
    }

    fn api(&self) -> Option<Arc<Api>> {
        self.api.read().ok().and_then(|guard| guard.clone())
    }

    fn connected(&self) -> Result<Arc<Api>, ProviderError> {
        self.api().ok_or_else(|| {
            ProviderError::Config(
                "the digitalocean provider is used before it was configured".to_owned(),
            )
        })
    }
}

fn unknown_type(type_name: &str) -> ProviderError {
    ProviderError::Config(format!(
        "the digitalocean provider has no resource type `{type_name}` (it serves {}, {} and {})",
        ssh_key::TYPE,
        droplet::TYPE,
        firewall::TYPE
    ))
}

#[async_trait]
impl Provider for DigitalOceanProvider {
    fn name(&self) -> &'static str {
        "digitalocean"
    }

    fn schemas(&self) -> &[ResourceSchema] {
        &self.schemas
    }

    async fn configure(&self, config: &Attrs) -> Result<(), ProviderError> {
        let api = Api::from_config(
            config,
            |name| std::env::var(name).ok(),
            self.timing,
            self.retry_policy.clone(),
        )?;
        let mut slot = self.api.write().map_err(|_| {
            ProviderError::Api("the digitalocean client lock is poisoned".to_owned())
        })?;
        *slot = Some(Arc::new(api));
        Ok(())
    }

    fn validate(&self, type_name: &str, config: &Attrs) -> Vec<AttrProblem> {
        match type_name {
            ssh_key::TYPE => ssh_key::validate(config),
            droplet::TYPE => droplet::validate(config),
            firewall::TYPE => firewall::validate(config),
            _ => Vec::new(),
        }
    }

    async fn prepare(&self, type_name: &str, config: &mut Attrs) -> Result<(), ProviderError> {
        match type_name {
            ssh_key::TYPE => ssh_key::prepare(config),
            droplet::TYPE => droplet::prepare(config),
            firewall::TYPE => firewall::prepare(config),
            other => Err(unknown_type(other)),
        }
    }

    async fn refresh(
        &self,
        type_name: &str,
        owner: &Ownership,
        recorded: &[(String, String)],
    ) -> Result<Vec<Observed>, ProviderError> {
        let api = self.connected()?;
        match type_name {
            ssh_key::TYPE => ssh_key::refresh(&api, recorded).await,
            droplet::TYPE => droplet::refresh(&api, owner).await,
            firewall::TYPE => firewall::refresh(&api, owner).await,
            other => Err(unknown_type(other)),
        }
    }

    async fn create(
        &self,
        request: ApplyRequest<'_>,
        progress: Progress<'_>,
    ) -> Result<Applied, ProviderError> {
        let api = self.connected()?;
        match request.type_name {
            ssh_key::TYPE => ssh_key::create(&api, &request, progress).await,
            droplet::TYPE => droplet::create(&api, &request, progress).await,
            firewall::TYPE => firewall::create(&api, &request).await,
            other => Err(unknown_type(other)),
        }
    }

    async fn update(
        &self,
        request: ApplyRequest<'_>,
        progress: Progress<'_>,
    ) -> Result<Applied, ProviderError> {
        let api = self.connected()?;
        match request.type_name {
            ssh_key::TYPE => ssh_key::update(&api, &request).await,
            droplet::TYPE => droplet::update(&api, &request, progress).await,
            firewall::TYPE => firewall::update(&api, &request).await,
            other => Err(unknown_type(other)),
        }
    }

    async fn delete(
        &self,
        request: DeleteRequest<'_>,
        progress: Progress<'_>,
    ) -> Result<(), ProviderError> {
        let api = self.connected()?;
        match request.type_name {
            ssh_key::TYPE => ssh_key::delete(&api, &request).await,
            droplet::TYPE => droplet::delete(&api, &request, progress).await,
            firewall::TYPE => firewall::delete(&api, &request).await,
            other => Err(unknown_type(other)),
        }
    }
}
