//! The provider registry: which provider serves which resource type, and
//! configuring each provider from its `provider "NAME"` block once, only if
//! the configuration or the state uses one of its types.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_provider::{Provider, ProviderContext, ResourceSchema};

use crate::config::validate::SchemaLookup;

/// Every provider berth knows, by name.
pub struct Registry {
    providers: Vec<Arc<dyn Provider>>,
    by_type: BTreeMap<&'static str, (usize, ResourceSchema)>,
}

impl Registry {
    /// The built-in providers.
    pub fn builtin(ctx: ProviderContext) -> Self {
        Self::new(vec![
            Arc::new(berth_docker::DockerProvider::new(ctx.clone())),
            Arc::new(berth_gitlab::GitLabProvider::new(ctx.clone())),
            Arc::new(berth_digitalocean::DigitalOceanProvider::new(ctx.clone())),
            Arc::new(berth_aws::AwsProvider::new(ctx)),
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
