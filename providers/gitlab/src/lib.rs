//! The gitlab provider: `gitlab_project_variable` (project CI/CD variables)
//! through the GitLab REST API v4.
//!
//! [`GitLabProvider`] implements [`berth_provider::Provider`]. Its
//! configuration is `provider "gitlab" { base_url, token }`, with
//! `GITLAB_BASE_URL`/`CI_API_V4_URL` and `GITLAB_TOKEN`/`CI_JOB_TOKEN` as
//! fallbacks (see the `config` module). Every request goes through berth's
//! shared HTTP client, which retries 429s after `Retry-After`. GitLab
//! variables carry no labels, so refresh works from the ids state recorded:
//! one paged list call per project.

mod attrs;
mod client;
mod config;
mod masking;
mod variable;

use std::fmt;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use berth_provider::{
    Applied, ApplyRequest, AttrProblem, Attrs, DeleteRequest, Observed, Ownership, Progress,
    Provider, ProviderContext, ProviderError, ResourceSchema,
};

use crate::client::GitLab;

/// Looks up an environment variable.
type EnvLookup = dyn Fn(&str) -> Option<String> + Send + Sync;

/// The provider for `gitlab_*` resources.
pub struct GitLabProvider {
    schemas: Vec<ResourceSchema>,
    env: Box<EnvLookup>,
    client: RwLock<Option<Arc<GitLab>>>,
}

impl GitLabProvider {
    /// A provider that reads its environment fallbacks from the process
    /// environment. It does not talk to GitLab until it is used. GitLab
    /// resources reference no local files, so `ctx` is not needed.
    pub fn new(ctx: ProviderContext) -> Self {
        Self::with_env(ctx, |name| std::env::var(name).ok())
    }

    /// Like [`GitLabProvider::new`], but reads `GITLAB_TOKEN`,
    /// `GITLAB_BASE_URL`, `CI_API_V4_URL` and `CI_JOB_TOKEN` through `env`
    /// instead of the process environment (for embedding and tests).
    pub fn with_env(
        ctx: ProviderContext,
        env: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        let _ = ctx;
        Self {
            schemas: vec![variable::schema()],
            env: Box::new(env),
            client: RwLock::new(None),
        }
    }

    fn gitlab(&self) -> Result<Arc<GitLab>, ProviderError> {
        self.client
            .read()
            .ok()
            .and_then(|guard| guard.clone())
            .ok_or_else(|| {
                ProviderError::Config(
                    "the gitlab provider is used before it was configured".to_owned(),
                )
            })
    }
}

impl fmt::Debug for GitLabProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let client = self.client.read().ok().and_then(|guard| guard.clone());
        let mut out = f.debug_struct("GitLabProvider");
        match client {
            Some(gl) => out
                .field("base_url", &gl.base_url())
                .field("auth", &gl.auth().kind()),
            None => out.field("configured", &false),
        };
        out.finish_non_exhaustive()
    }
}

fn unknown_type(type_name: &str) -> ProviderError {
    ProviderError::Config(format!(
        "the gitlab provider has no resource type `{type_name}` (it serves {})",
        variable::TYPE
    ))
}

#[async_trait]
impl Provider for GitLabProvider {
    fn name(&self) -> &'static str {
        "gitlab"
    }

    fn schemas(&self) -> &[ResourceSchema] {
        &self.schemas
    }

    /// Accepts `base_url` and `token`. Succeeds without a token (a
    /// configuration that uses no gitlab resource must not fail); the first
    /// request then reports that the token is missing.
    async fn configure(&self, config: &Attrs) -> Result<(), ProviderError> {
        let settings = config::resolve(config, &*self.env)?;
        let gitlab = GitLab::new(settings)?;
        tracing::debug!(
            base_url = gitlab.base_url(),
            auth = gitlab.auth().kind(),
            "gitlab provider configured"
        );
        let mut slot = self
            .client
            .write()
            .map_err(|_| ProviderError::Api("the gitlab client lock is poisoned".to_owned()))?;
        *slot = Some(Arc::new(gitlab));
        Ok(())
    }

    fn validate(&self, type_name: &str, config: &Attrs) -> Vec<AttrProblem> {
        match type_name {
            variable::TYPE => variable::validate(config),
            _ => Vec::new(),
        }
    }

    async fn prepare(&self, type_name: &str, config: &mut Attrs) -> Result<(), ProviderError> {
        match type_name {
            variable::TYPE => variable::prepare(config),
            other => Err(unknown_type(other)),
        }
    }

    async fn refresh(
        &self,
        type_name: &str,
        _owner: &Ownership,
        recorded: &[(String, String)],
    ) -> Result<Vec<Observed>, ProviderError> {
        match type_name {
            variable::TYPE => variable::refresh(&*self.gitlab()?, recorded).await,
            other => Err(unknown_type(other)),
        }
    }

    async fn create(
        &self,
        request: ApplyRequest<'_>,
        _progress: Progress<'_>,
    ) -> Result<Applied, ProviderError> {
        match request.type_name {
            variable::TYPE => variable::create(&*self.gitlab()?, &request).await,
            other => Err(unknown_type(other)),
        }
    }

    async fn update(
        &self,
        request: ApplyRequest<'_>,
        _progress: Progress<'_>,
    ) -> Result<Applied, ProviderError> {
        match request.type_name {
            variable::TYPE => variable::update(&*self.gitlab()?, &request).await,
            other => Err(unknown_type(other)),
        }
    }

    async fn delete(
        &self,
        request: DeleteRequest<'_>,
        _progress: Progress<'_>,
    ) -> Result<(), ProviderError> {
        match request.type_name {
            variable::TYPE => variable::delete(&*self.gitlab()?, &request).await,
            other => Err(unknown_type(other)),
        }
    }
}
