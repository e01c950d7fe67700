//! berth's AWS provider: `aws_key_pair`, `aws_security_group`,
//! `aws_instance` and `aws_ecr_repository`, with the Terraform AWS
//! provider's resource and attribute names so that blocks copied from a
//! Terraform configuration validate (a subset of the attributes; each
//! module lists what it supports and where it differs).
//!
//! [`AwsProvider`] implements [`berth_provider::Provider`]:
//!
//! - [`configure`](Provider::configure) reads `provider "aws" { region,
//!   access_key, secret_key, token, profile, endpoints { ec2, ecr } }` and
//!   the `AWS_*` environment (module `settings`). It makes no API call.
//! - requests use EC2's Query protocol and ECR's JSON protocol, signed with
//!   SigV4 by `aws-sigv4` (no AWS SDK), and go through
//!   [`berth_provider::http::HttpClient`], which retries 429 and 5xx
//!   answers honouring `Retry-After`; `RunInstances` is retried only because
//!   it carries a `ClientToken`.
//! - every object berth creates carries the tags `berth:address`,
//!   `berth:env`, `berth:lineage` and `berth:config-hash` from the moment
//!   it exists (module `tags`), so [`refresh`](Provider::refresh) of
//!   instances, security groups and key pairs is one (paged) list call
//!   filtered by them, and an object created but never recorded is found
//!   and adopted instead of created twice. ECR repositories are the
//!   exception (see module `ecr`).
//! - errors carry AWS's code and message: `EC2 API: InvalidAMIID.NotFound:
//!   The image id '[ami-x]' does not exist (request id ...)`. The secret key,
//!   session token and registry passwords never appear in errors, logs or
//!   `Debug` output.
//!
//! Besides the trait, [`AwsProvider::ecr_credentials`] logs in to an ECR
//! registry (for the image push and pull of other providers) and
//! [`is_ecr_registry`] tells such registries apart.
//!
//! What the engine relies on:
//! - `prepare` fills every default and brings set-like values into one
//!   canonical order (tags, security group ids, security group rules);
//!   refresh reports them the same way, so order is never drift.
//! - `Observed.config_hash` is the full hash from the `berth:config-hash`
//!   tag (none for ECR repositories, which are adopted at create time).
//! - instance, security group and key pair refresh ignore `recorded`; ECR
//!   refresh reports only recorded repositories (by name, the id).
//! - deleting an instance waits until it is `terminated`, so a security
//!   group it used can be deleted next.

mod attrs;
mod client;
mod duration;
mod ecr;
mod instance;
mod key_pair;
mod security_group;
mod settings;
mod tags;
mod xml;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use berth_provider::http::RetryPolicy;
use berth_provider::{
    Applied, ApplyRequest, AttrProblem, Attrs, DeleteRequest, Observed, Ownership, Progress,
    Provider, ProviderContext, ProviderError, ResourceSchema,
};

pub use client::PollTiming;
pub use ecr::is_ecr_registry;

use client::Api;

/// The provider for `aws_*` resources.
pub struct AwsProvider {
    ctx: ProviderContext,
    schemas: Vec<ResourceSchema>,
    timing: PollTiming,
    retry_policy: Option<RetryPolicy>,
    page_size: Option<u32>,
    env: Option<BTreeMap<String, String>>,
    api: RwLock<Option<Arc<Api>>>,
}

impl std::fmt::Debug for AwsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsProvider")
            .field("base_dir", &self.ctx.base_dir)
            .field("timing", &self.timing)
            .field("api", &self.api())
            .finish_non_exhaustive()
    }
}

impl AwsProvider {
    /// A provider; it reads its region, credentials and endpoints in
    /// [`Provider::configure`].
    pub fn new(ctx: ProviderContext) -> Self {
        Self {
            ctx,
            schemas: vec![
                key_pair::schema(),
                security_group::schema(),
                instance::schema(),
                ecr::schema(),
            ],
            timing: PollTiming::default(),
            retry_policy: None,
            page_size: None,
            env: None,
            api: RwLock::new(None),
        }
    }

    /// How waits (instance states, a security group in use) poll. The
    /// default starts at 2s and grows to 15s; tests use milliseconds.
    pub fn with_poll_timing(mut self, timing: PollTiming) -> Self {
        self.timing = timing;
        self
    }

    /// The HTTP retry policy, before the provider block's `max_retries` is
    /// applied on top.
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry_policy = Some(policy);
        self
    }

    /// `MaxResults` of the paged list calls refresh makes (default: the
    /// largest AWS allows, 1000). AWS requires at least 5.
    pub fn with_page_size(mut self, page_size: u32) -> Self {
        self.page_size = Some(page_size.max(1));
        self
    }

    /// Reads `AWS_*` variables from `env` instead of the process
    /// environment (tests; embedding).
    pub fn with_env(mut self, env: BTreeMap<String, String>) -> Self {
        self.env = Some(env);
        self
    }

    /// How many HTTP retries (429, 5xx, connection failures) this provider
    /// has made since it was configured.
    pub fn http_retries(&self) -> u64 {
        self.api().map(|a| a.retries()).unwrap_or(0)
    }

    /// The HTTP requests sent since [`Provider::configure`], by action
    /// (`DescribeInstances`, `GetAuthorizationToken`, ...), retries
    /// included.
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        self.api().map(|a| a.counts()).unwrap_or_default()
    }

    /// The user (`AWS`) and password to log in to the ECR registry
    /// `registry` (`<account>.dkr.ecr.<region>.amazonaws.com`, with or
    /// without scheme and path), from `GetAuthorizationToken`, cached until
    /// shortly before the token expires. The password is a secret: do not
    /// log it.
    pub async fn ecr_credentials(&self, registry: &str) -> Result<(String, String), ProviderError> {
        let api = self.connected()?;
        ecr::credentials(&api, registry).await
    }

    fn api(&self) -> Option<Arc<Api>> {
        self.api.read().ok().and_then(|guard| guard.clone())
    }

    fn connected(&self) -> Result<Arc<Api>, ProviderError> {
        self.api().ok_or_else(|| {
            ProviderError::Config("the aws provider is used before it was configured".to_owned())
        })
    }
}

fn unknown_type(type_name: &str) -> ProviderError {
    ProviderError::Config(format!(
        "the aws provider has no resource type `{type_name}` (it serves {}, {}, {} and {})",
        key_pair::TYPE,
        security_group::TYPE,
        instance::TYPE,
        ecr::TYPE
    ))
}

#[async_trait]
impl Provider for AwsProvider {
    fn name(&self) -> &'static str {
        "aws"
    }

    fn schemas(&self) -> &[ResourceSchema] {
        &self.schemas
    }

    async fn configure(&self, config: &Attrs) -> Result<(), ProviderError> {
        let resolved = match &self.env {
            Some(env) => settings::resolve(config, &|k| env.get(k).cloned()),
            None => settings::resolve(config, &|k| std::env::var(k).ok()),
        }?;
        let api = Api::new(
            resolved,
            self.timing,
            self.retry_policy.clone(),
            self.page_size,
        )?;
        let mut slot = self
            .api
            .write()
            .map_err(|_| ProviderError::Api("the aws client lock is poisoned".to_owned()))?;
        *slot = Some(Arc::new(api));
        Ok(())
    }

    fn validate(&self, type_name: &str, config: &Attrs) -> Vec<AttrProblem> {
        match type_name {
            key_pair::TYPE => key_pair::validate(config),
            security_group::TYPE => security_group::validate(config),
            instance::TYPE => instance::validate(config),
            ecr::TYPE => ecr::validate(config),
            _ => Vec::new(),
        }
    }

    async fn prepare(&self, type_name: &str, config: &mut Attrs) -> Result<(), ProviderError> {
        match type_name {
            key_pair::TYPE => key_pair::prepare(config),
            security_group::TYPE => security_group::prepare(config),
            instance::TYPE => instance::prepare(config),
            ecr::TYPE => ecr::prepare(config),
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
            key_pair::TYPE => key_pair::refresh(&api, owner).await,
            security_group::TYPE => security_group::refresh(&api, owner).await,
            instance::TYPE => instance::refresh(&api, owner).await,
            ecr::TYPE => ecr::refresh(&api, recorded).await,
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
            key_pair::TYPE => key_pair::create(&api, &request, progress).await,
            security_group::TYPE => security_group::create(&api, &request, progress).await,
            instance::TYPE => instance::create(&api, &request, progress).await,
            ecr::TYPE => ecr::create(&api, &request, progress).await,
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
            key_pair::TYPE => key_pair::update(&api, &request, progress).await,
            security_group::TYPE => security_group::update(&api, &request, progress).await,
            instance::TYPE => instance::update(&api, &request, progress).await,
            ecr::TYPE => ecr::update(&api, &request, progress).await,
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
            key_pair::TYPE => key_pair::delete(&api, &request).await,
            security_group::TYPE => security_group::delete(&api, &request, progress).await,
            instance::TYPE => instance::delete(&api, &request, progress).await,
            ecr::TYPE => ecr::delete(&api, &request).await,
            other => Err(unknown_type(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn configure_needs_no_network_and_hides_secrets() {
        let p = AwsProvider::new(ProviderContext {
            base_dir: std::env::temp_dir(),
        })
        .with_env(BTreeMap::new());
        assert!(
            p.refresh(
                "aws_instance",
                &Ownership {
                    env: "e".into(),
                    lineage: "l".into()
                },
                &[]
            )
            .await
            .is_err()
        );
        let config: Attrs = [
            ("region".to_owned(), json!("us-east-1")),
            ("access_key".to_owned(), json!("AKIDX")),
            ("secret_key".to_owned(), json!("very-secret")),
        ]
        .into();
        p.configure(&config).await.unwrap();
        let shown = format!("{p:?}");
        assert!(
            shown.contains("AKIDX") && !shown.contains("very-secret"),
            "{shown}"
        );
        assert_eq!(p.schemas().len(), 4);
        let e = p.prepare("aws_nope", &mut Attrs::new()).await.unwrap_err();
        assert!(e.to_string().contains("aws_instance"), "{e}");
    }
}
