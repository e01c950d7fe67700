//! A session: one command's view of one environment — the loaded and
//! validated configuration, its graph, the providers, and the locked state.
//! Opening a session takes the state lock; closing it releases the lock.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_provider::{Ownership, ProviderContext};
use berth_state::{LockInfo, Snapshot, StateBackend};

use crate::config::eval::Scope;
use crate::config::vars::VarInputs;
use crate::config::{self, Config};
use crate::diag::{Diagnostic, Diagnostics};
use crate::error::Error;
use crate::graph::Graph;
use crate::providers::Registry;

/// What a command was asked to work on.
#[derive(Clone, Debug)]
pub struct Target {
    /// The configuration file.
    pub file: PathBuf,
    /// The environment name.
    pub env: String,
    /// Variable inputs.
    pub vars: VarInputs,
    /// `--backend-config KEY=VALUE` settings, over the file's `backend` block.
    pub backend_config: Vec<String>,
}

impl Target {
    /// The state directory: `.berth/` beside the file.
    pub fn state_dir(&self) -> PathBuf {
        base_dir(&self.file).join(".berth")
    }
}

fn base_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A loaded, validated configuration with its graph and evaluated inputs.
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Its dependency graph.
    pub graph: Graph,
    /// Providers.
    pub registry: Registry,
    /// Variables resolved; locals and resources are added while planning.
    pub scope: Scope,
    /// Warnings found on the way.
    pub warnings: Vec<Diagnostic>,
}

/// Loads, validates and resolves inputs, reporting every problem at once.
pub fn load(target: &Target) -> Result<Loaded, Diagnostics> {
    let config = config::load(&target.file)?;
    config::functions::set_base_dir(&config.base_dir);
    let registry = Registry::builtin(ProviderContext {
        base_dir: config.base_dir.clone(),
    });
    let mut diags = config::validate::validate(&config, &registry);
    for p in &config.providers {
        if registry.by_name(&p.name).is_none() {
            let names = registry.names();
            let mut d = config.error(p.span.clone(), format!("unknown provider `{}`", p.name));
            d = match crate::diag::closest(&p.name, names.iter().copied()) {
                Some(best) => d.with_help(format!("did you mean `{best}`?")),
                None => d.with_help(format!("available providers: {}", names.join(", "))),
            };
            diags.push(d);
        }
    }
    let graph = match Graph::build(&config) {
        Ok(g) => Some(g),
        Err(d) => {
            diags.extend(d);
            None
        }
    };
    let mut scope = Scope::new(&target.env);
    if let Err(d) = config::vars::resolve(&config, &target.vars, &mut scope) {
        diags.extend(d);
    }
    let (errors, warnings): (Vec<_>, Vec<_>) = diags
        .0
        .into_iter()
        .partition(|d| d.severity == crate::diag::Severity::Error);
    match graph {
        Some(graph) if errors.is_empty() => Ok(Loaded {
            config,
            graph,
            registry,
            scope,
            warnings,
        }),
        _ => Err(Diagnostics(errors.into_iter().chain(warnings).collect())),
    }
}

/// A loaded configuration with the state locked.
pub struct Session {
    /// The configuration and friends.
    pub loaded: Loaded,
    /// The state store.
    pub backend: Arc<dyn StateBackend>,
    /// The state as read when the session opened.
    pub snapshot: Snapshot,
    /// The owner labels of this environment.
    pub owner: Ownership,
    /// The environment.
    pub env: String,
    lock_id: String,
}

impl Session {
    /// Locks the state of `target`'s environment and reads it.
    pub async fn open(target: &Target, loaded: Loaded, operation: &str) -> Result<Self, Error> {
        let choice = backend_choice(target, Some(&loaded.config), &loaded.scope)?;
        let backend = open_backend(target, &choice).await?;
        let info = LockInfo::new(operation, &backend.describe());
        backend.lock(&info).await?;
        let snapshot = match backend.read().await {
            Ok(s) => s,
            Err(e) => {
                let _ = backend.unlock(&info.id).await;
                return Err(e.into());
            }
        };
        let owner = Ownership {
            env: target.env.clone(),
            lineage: snapshot.lineage.clone(),
        };
        Ok(Self {
            loaded,
            backend,
            snapshot,
            owner,
            env: target.env.clone(),
            lock_id: info.id,
        })
    }

    /// Configures every provider that the configuration or the state uses,
    /// and every provider with a `provider` block.
    pub async fn configure_providers(&self) -> Result<(), Error> {
        let mut used: BTreeSet<&'static str> = BTreeSet::new();
        let types = self
            .loaded
            .config
            .resources
            .iter()
            .map(|r| r.type_name.as_str())
            .chain(
                self.snapshot
                    .resources
                    .values()
                    .map(|r| r.type_name.as_str()),
            );
        for t in types {
            if let Some(p) = self.loaded.registry.provider_for(t) {
                used.insert(p.name());
            }
        }
        // A `provider` block is configured even when none of its types is
        // used: the docker provider logs in to ECR through the AWS one.
        for block in &self.loaded.config.providers {
            if let Some(p) = self.loaded.registry.by_name(&block.name) {
                used.insert(p.name());
            }
        }
        for name in used {
            let Some(provider) = self.loaded.registry.by_name(name) else {
                continue;
            };
            let block = self.loaded.config.providers.iter().find(|p| p.name == name);
            let attrs = match block {
                Some(block) => self
                    .loaded
                    .scope
                    .eval_untyped(&self.loaded.config, &block.body)
                    .map_err(Error::Config)?,
                None => berth_provider::Attrs::new(),
            };
            provider
                .configure(&attrs)
                .await
                .map_err(|e| Error::Provider {
                    address: format!("provider \"{name}\""),
                    source: e,
                })?;
        }
        Ok(())
    }

    /// Releases the lock.
    pub async fn close(self) -> Result<(), Error> {
        self.backend.unlock(&self.lock_id).await?;
        Ok(())
    }
}

/// Which store holds the state, and its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendChoice {
    /// `local`, `http`, `pg` or `s3`.
    pub kind: String,
    /// Settings, as text.
    pub settings: BTreeMap<String, String>,
}

/// The backend of `config` (its `backend` block evaluated in `scope`) with
/// `--backend-config` over it; `local` without a block.
pub fn backend_choice(
    target: &Target,
    config: Option<&Config>,
    scope: &Scope,
) -> Result<BackendChoice, Error> {
    let mut choice = BackendChoice {
        kind: "local".to_owned(),
        settings: BTreeMap::new(),
    };
    if let Some(config) = config
        && let Some(block) = &config.backend
    {
        choice.kind = block.kind.clone();
        let values = scope
            .eval_untyped(config, &block.body)
            .map_err(Error::Config)?;
        for (k, v) in values {
            let text = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            choice.settings.insert(k, text);
        }
    }
    for raw in &target.backend_config {
        let Some((k, v)) = raw.split_once('=') else {
            return Err(Error::Refused(format!(
                "`--backend-config {raw}` must be KEY=VALUE"
            )));
        };
        choice.settings.insert(k.trim().to_owned(), v.to_owned());
    }
    Ok(choice)
}

/// The backend of `target` for commands that do not need the whole
/// configuration (`state`, `output`, `force-unlock`, `env list`): the file's
/// `backend` block if the file exists, else `local`.
pub fn target_backend(target: &Target) -> Result<BackendChoice, Error> {
    if !target.file.exists() {
        return backend_choice(target, None, &Scope::new(&target.env));
    }
    let config = config::load(&target.file)?;
    let mut scope = Scope::new(&target.env);
    if config.backend.is_some() {
        config::vars::resolve(&config, &target.vars, &mut scope)?;
    }
    backend_choice(target, Some(&config), &scope)
}

/// Opens the state store of `target` without locking it.
pub async fn open_backend(
    target: &Target,
    choice: &BackendChoice,
) -> Result<Arc<dyn StateBackend>, Error> {
    if choice.kind != "local" && std::env::var_os("BERTH_STATE_KEY").is_none() {
        eprintln!(
            "Warning: the `{}` backend is shared, but BERTH_STATE_KEY is not set: this machine's own key in {} will hash secrets, so other machines will see every sensitive value as changed. Set BERTH_STATE_KEY (e.g. a masked CI/CD variable).",
            choice.kind,
            target.state_dir().join("state.key").display()
        );
    }
    let backend = berth_state::open_backend(
        &choice.kind,
        &choice.settings,
        &target.env,
        &target.state_dir(),
    )
    .await?;
    Ok(Arc::from(backend))
}
