//! The provider registry: which provider serves which resource type, and
//! configuring each provider from its `provider "NAME"` block once, only if
//! the configuration or the state uses one of its types.
//!
//! It also wires providers that need each other without their crates
//! depending on each other: the docker provider logs in to ECR registries
//! through [`EcrLogin`], a [`berth_docker::CredentialSource`] backed by the
//! AWS provider's `GetAuthorizationToken`.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_aws::AwsProvider;
use berth_docker::{CredentialSource, Login, LoginFuture};
use berth_provider::{Provider, ProviderContext, ProviderError, ResourceSchema};

use crate::config::validate::SchemaLookup;

/// Every provider berth knows, by name.
pub struct Registry {
    providers: Vec<Arc<dyn Provider>>,
    by_type: BTreeMap<&'static str, (usize, ResourceSchema)>,
}

impl Registry {
    /// The built-in providers.
    pub fn builtin(ctx: ProviderContext) -> Self {
        let aws = Arc::new(AwsProvider::new(ctx.clone()));
        let ecr = Arc::new(EcrLogin(Arc::clone(&aws)));
        Self::new(vec![
            Arc::new(berth_docker::DockerProvider::new(ctx.clone()).with_credential_source(ecr)),
            Arc::new(berth_gitlab::GitLabProvider::new(ctx.clone())),
            Arc::new(berth_digitalocean::DigitalOceanProvider::new(ctx)),
            aws,
        ])
    }

    /// A registry of `providers`.
    pub fn new(providers: Vec<Arc<dyn Provider>>) -> Self {
        let mut by_type = BTreeMap::new();
        for (i, p) in providers.iter().enumerate() {
            for s in p.schemas() {
                by_type.insert(s.type_name, (i, s.clone()));
            }
        }
        Self { providers, by_type }
    }

    /// The provider serving `type_name`.
    pub fn provider_for(&self, type_name: &str) -> Option<&Arc<dyn Provider>> {
        self.by_type
            .get(type_name)
            .and_then(|(i, _)| self.providers.get(*i))
    }

    /// The provider called `name`.
    pub fn by_name(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.providers.iter().find(|p| p.name() == name)
    }

    /// Names of every provider.
    pub fn names(&self) -> Vec<&'static str> {
        self.providers.iter().map(|p| p.name()).collect()
    }
}

impl SchemaLookup for Registry {
    fn schema(&self, type_name: &str) -> Option<&ResourceSchema> {
        self.by_type.get(type_name).map(|(_, s)| s)
    }

    fn type_names(&self) -> Vec<&'static str> {
        self.by_type.keys().copied().collect()
    }
}

/// ECR registry logins for the docker provider: user `AWS` and the password
/// of `GetAuthorizationToken`, asked of the AWS provider (with its region,
/// credentials and `endpoints { ecr }`), which caches a login until shortly
/// before it expires and then fetches a new one.
pub struct EcrLogin(pub Arc<AwsProvider>);

impl CredentialSource for EcrLogin {
    fn serves(&self, registry: &str) -> bool {
        berth_aws::is_ecr_registry(registry)
    }

    fn login<'a>(&'a self, registry: &'a str) -> LoginFuture<'a> {
        Box::pin(async move {
            let (username, password) =
                self.0
                    .ecr_credentials(registry)
                    .await
                    .map_err(|e| match e {
                        // The AWS provider is configured only when the
                        // configuration has a `provider "aws"` block or
                        // the configuration or the state uses an aws_* type.
                        ProviderError::Config(m) if m.contains("before it was configured") => {
                            ProviderError::Config(format!(
                                "{registry} is an ECR registry: its login comes from the aws \
                                 provider, which is not configured because the configuration \
                                 has no provider \"aws\" block and no aws_* resource; add \
                                 one, or a registry_auth block for it with username \"AWS\" \
                                 and the password of `aws ecr get-login-password` ({m})"
                            ))
                        }
                        other => other,
                    })?;
            Ok(Login { username, password })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ecr_logins_are_asked_of_the_aws_provider() {
        let aws = Arc::new(AwsProvider::new(ProviderContext {
            base_dir: std::env::temp_dir(),
        }));
        let source = EcrLogin(Arc::clone(&aws));
        assert!(source.serves("123456789012.dkr.ecr.eu-west-1.amazonaws.com"));
        assert!(!source.serves("registry.gitlab.com"));
        assert!(!source.serves("127.0.0.1:5000"));
        // Not configured (no aws_* resource in use): the error says what to
        // do instead.
        let e = source
            .login("123456789012.dkr.ecr.eu-west-1.amazonaws.com")
            .await
            .expect_err("the aws provider is not configured");
        let text = e.to_string();
        assert!(
            text.contains("is an ECR registry") && text.contains("registry_auth"),
            "{text}"
        );

        // The registry wires the docker provider to this source: both are
        // there, and the docker provider serves the registry image type.
        let registry = Registry::builtin(ProviderContext {
            base_dir: std::env::temp_dir(),
        });
        assert!(registry.by_name("aws").is_some());
        assert_eq!(
            registry
                .provider_for("docker_registry_image")
                .map(|p| p.name()),
            Some("docker")
        );
    }
}
