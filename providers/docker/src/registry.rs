//! Registry credentials for pulls and pushes: the provider's `registry_auth
//! { address, username, password }` blocks (Terraform's shape), plus GitLab CI's
//! `CI_REGISTRY` / `CI_REGISTRY_USER` / `CI_REGISTRY_PASSWORD` when they are
//! set and no block names that registry. The credentials of the registry an
//! image reference points at go to the engine as `X-Registry-Auth`.
//!
//! A block may also name an `endpoint`: where the registry `address` is
//! actually reached (`host:port`, e.g. the local end of an SSH tunnel, or a
//! local registry standing in for a remote one in tests). Image references
//! keep the address; pushes and the registry API calls of
//! `docker_registry_image` go to the endpoint.
//!
//! Registries no block gives a username or password for may be served by a
//! [`CredentialSource`] the embedding program plugs in
//! ([`crate::DockerProvider::with_credential_source`]): berth's binary plugs
//! in the AWS provider, which logs in to ECR registries with
//! `GetAuthorizationToken`. The docker crate knows only the trait.
//!
//! Passwords are never logged and never put into an error: [`RegistryAuth`]'s
//! and [`Login`]'s `Debug` hide them, and [`Auths::pull_error`] scrubs them
//! from the engine's message before wording its own.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use berth_provider::{Attrs, ProviderError};
#[cfg(test)]
use bollard::auth::DockerCredentials;

use crate::attrs;

/// The canonical name of Docker Hub.
const DOCKER_HUB: &str = "docker.io";

/// A user name and password a [`CredentialSource`] logged in with.
/// `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .field("password", &"(sensitive)")
            .finish()
    }
}

/// Credentials for registries that no `registry_auth` block gives a
/// username or password for: a registry service's own login (ECR's
/// `GetAuthorizationToken`), plugged in by the program that wires the
/// providers together.
///
/// berth asks at every registry call and push; an implementation caches
/// what it obtained and renews it when it expires (the AWS one keeps an
/// ECR login until five minutes before its `expiresAt`).
pub trait CredentialSource: Send + Sync {
    /// Whether this source logs in to `registry` (normalised: lowercase
    /// `host[:port]`, e.g. `123456789012.dkr.ecr.eu-west-1.amazonaws.com`).
    fn serves(&self, registry: &str) -> bool;

    /// The login for `registry`. Errors name the registry; they never hold
    /// the password.
    fn login<'a>(&'a self, registry: &'a str) -> LoginFuture<'a>;
}

/// What [`CredentialSource::login`] returns (`Box::pin(async move { .. })`).
pub type LoginFuture<'a> = Pin<Box<dyn Future<Output = Result<Login, ProviderError>> + Send + 'a>>;

/// One `registry_auth` block.
#[derive(Clone)]
pub(crate) struct RegistryAuth {
    /// The address as configured (sent as `serveraddress`).
    pub address: String,
    /// The address normalised for matching ([`normalize_address`]).
    pub host: String,
    pub username: Option<String>,
    password: Option<String>,
    /// Where the registry is reached, normalised (`127.0.0.1:5000`), when
    /// not at `host`.
    pub endpoint: Option<String>,
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("address", &self.address)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "(sensitive)"))
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl RegistryAuth {
    pub(crate) fn new(address: &str, username: Option<String>, password: Option<String>) -> Self {
        Self {
            address: address.trim().to_owned(),
            host: normalize_address(address),
            username: username.filter(|u| !u.is_empty()),
            password: password.filter(|p| !p.is_empty()),
            endpoint: None,
        }
    }

    /// The username and password of the block, if it has either.
    pub(crate) fn basic(&self) -> Option<(Option<String>, Option<String>)> {
        self.has_credentials()
            .then(|| (self.username.clone(), self.password.clone()))
    }

    #[cfg(test)]
    fn credentials(&self) -> DockerCredentials {
        DockerCredentials {
            username: self.username.clone(),
            password: self.password.clone(),
            serveraddress: Some(self.address.clone()),
            ..Default::default()
        }
    }

    fn has_credentials(&self) -> bool {
        self.username.is_some() || self.password.is_some()
    }
}

/// Every registry the provider has credentials for.
#[derive(Clone, Debug, Default)]
pub(crate) struct Auths {
    entries: Vec<RegistryAuth>,
    source: Source,
}

/// The [`CredentialSource`], if one is plugged in.
#[derive(Clone, Default)]
struct Source(Option<Arc<dyn CredentialSource>>);

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Some(CredentialSource)"
        } else {
            "None"
        })
    }
}

/// `registry.example.com:5000`, `https://registry.example.com/v2/` and
/// `REGISTRY.example.com` all name the same registry; Docker Hub has a few
/// names of its own.
pub(crate) fn normalize_address(address: &str) -> String {
    let mut s = address.trim().to_ascii_lowercase();
    for scheme in ["https://", "http://"] {
        if let Some(rest) = s.strip_prefix(scheme) {
            s = rest.to_owned();
        }
    }
    let host = s.split('/').next().unwrap_or_default().to_owned();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" | "docker.io" => {
            DOCKER_HUB.to_owned()
        }
        _ => host,
    }
}

/// The registry an image reference is pulled from: its first path component
/// when that looks like a host (has a `.` or `:`, or is `localhost`),
/// Docker Hub otherwise.
pub(crate) fn registry_of(reference: &str) -> String {
    match reference.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            normalize_address(first)
        }
        _ => DOCKER_HUB.to_owned(),
    }
}

impl Auths {
    /// The `registry_auth` blocks of the provider configuration, plus GitLab
    /// CI's registry variables from `env` when all three are set and no
    /// block names the same registry.
    pub(crate) fn from_config(
        config: &Attrs,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ProviderError> {
        let mut entries: Vec<RegistryAuth> = Vec::new();
        for block in attrs::blocks(config, "registry_auth").map_err(in_provider)? {
            let address = attrs::non_empty_string(&block, "address")
                .map_err(in_provider)?
                .ok_or_else(|| {
                    ProviderError::Config(
                        "provider \"docker\": `registry_auth.address` is required".to_owned(),
                    )
                })?;
            let username = attrs::string(&block, "username").map_err(in_provider)?;
            // The password is read as a string and never echoed: a type
            // error names the attribute only.
            let password = attrs::string(&block, "password").map_err(in_provider)?;
            let mut entry = RegistryAuth::new(&address, username, password);
            entry.endpoint = attrs::non_empty_string(&block, "endpoint")
                .map_err(in_provider)?
                .map(|e| endpoint_of(&entry.host, &e))
                .transpose()?;
            if entries.iter().any(|e| e.host == entry.host) {
                return Err(ProviderError::Config(format!(
                    "provider \"docker\": two `registry_auth` blocks name the registry {}",
                    entry.host
                )));
            }
            entries.push(entry);
        }
        let ci = |key: &str| env(key).filter(|v| !v.trim().is_empty());
        if let (Some(address), Some(user), Some(password)) = (
            ci("CI_REGISTRY"),
            ci("CI_REGISTRY_USER"),
            ci("CI_REGISTRY_PASSWORD"),
        ) {
            let entry = RegistryAuth::new(&address, Some(user), Some(password));
            if !entries.iter().any(|e| e.host == entry.host) {
                tracing::debug!(registry = %entry.host, "using CI_REGISTRY credentials");
                entries.push(entry);
            }
        }
        Ok(Self {
            entries,
            source: Source::default(),
        })
    }

    /// The same credentials, with `source` asked for registries no block
    /// gives a username or password for.
    pub(crate) fn with_source(mut self, source: Option<Arc<dyn CredentialSource>>) -> Self {
        self.source = Source(source);
        self
    }

    /// The block naming `registry` (normalised), if any.
    pub(crate) fn entry(&self, registry: &str) -> Option<&RegistryAuth> {
        self.entries.iter().find(|e| e.host == registry)
    }

    /// Where `registry` (normalised) is reached when a block gives it an
    /// `endpoint`.
    pub(crate) fn endpoint(&self, registry: &str) -> Option<&str> {
        self.entry(registry).and_then(|e| e.endpoint.as_deref())
    }

    /// The plugged-in source, when it serves `registry` (normalised).
    pub(crate) fn source_for(&self, registry: &str) -> Option<&Arc<dyn CredentialSource>> {
        self.source.0.as_ref().filter(|s| s.serves(registry))
    }

    /// The entry for the registry `reference` is pulled from.
    pub(crate) fn for_reference(&self, reference: &str) -> Option<&RegistryAuth> {
        let registry = registry_of(reference);
        self.entries.iter().find(|e| e.host == registry)
    }

    /// The `X-Registry-Auth` credentials a block or GitLab CI's variables
    /// give for pulling `reference`, if any (pulls and pushes ask
    /// [`crate::registry_api::registry_credentials`], which also asks the
    /// credential source).
    #[cfg(test)]
    pub(crate) fn credentials(&self, reference: &str) -> Option<DockerCredentials> {
        self.for_reference(reference)
            .filter(|e| e.has_credentials())
            .map(RegistryAuth::credentials)
    }

    /// Every configured password, to scrub from messages.
    fn secrets(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .filter_map(|e| e.password.as_deref())
            .filter(|p| p.len() >= 3)
    }

    /// `text` with every configured password replaced.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in self.secrets() {
            out = out.replace(secret, "(sensitive value)");
        }
        out
    }

    /// The error for a failed pull of `reference`, from the engine's
    /// message: a registry that refused the credentials (or wants some)
    /// is named, with what to do about it.
    pub(crate) fn pull_error(&self, reference: &str, engine_message: &str) -> ProviderError {
        let message = self.scrub(engine_message.trim());
        let lower = message.to_ascii_lowercase();
        let registry = registry_of(reference);
        let refused = lower.contains("unauthorized")
            || lower.contains("authentication required")
            || lower.contains("incorrect username or password")
            || lower.contains("no basic auth credentials")
            || lower.contains("401");
        let text = match (refused, self.for_reference(reference)) {
            (true, Some(entry)) if entry.has_credentials() => format!(
                "pulling image {reference} failed: the registry {} refused the credentials \
                 for user `{}` (check registry_auth's username and password in \
                 provider \"docker\"): {message}",
                entry.address,
                entry.username.as_deref().unwrap_or("")
            ),
            (true, _) if self.source_for(&registry).is_some() => format!(
                "pulling image {reference} failed: the registry {registry} refused the login \
                 berth obtained for it (for ECR: GetAuthorizationToken with the credentials of \
                 provider \"aws\"; check that they may pull from this repository): {message}"
            ),
            (true, _) => format!(
                "pulling image {reference} failed: the registry {registry} requires \
                 credentials and none are configured for it; add \
                 `registry_auth {{ address = \"{registry}\", username = ..., password = ... }}` \
                 to provider \"docker\" (or set CI_REGISTRY, CI_REGISTRY_USER and \
                 CI_REGISTRY_PASSWORD): {message}"
            ),
            (false, _) => format!("pulling image {reference} failed: {message}"),
        };
        ProviderError::Api(text)
    }
}

/// A `registry_auth.endpoint`, normalised: `host[:port]` (a scheme or a
/// trailing `/` is dropped; a path is refused).
fn endpoint_of(registry: &str, text: &str) -> Result<String, ProviderError> {
    let trimmed = text.trim();
    let bare = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .unwrap_or(trimmed)
        .trim_end_matches('/');
    let valid = !bare.is_empty()
        && !bare.contains(['/', '@', '?', '#'])
        && !bare.chars().any(char::is_whitespace);
    if !valid {
        return Err(ProviderError::Config(format!(
            "provider \"docker\": `registry_auth.endpoint` of {registry} must be a \
             host[:port] (e.g. 127.0.0.1:5000), not {text:?}"
        )));
    }
    Ok(bare.to_ascii_lowercase())
}

fn in_provider(e: ProviderError) -> ProviderError {
    match e {
        ProviderError::Config(m) => ProviderError::Config(format!("provider \"docker\": {m}")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(v: serde_json::Value) -> Attrs {
        match v {
            serde_json::Value::Object(map) => map.into_iter().collect(),
            _ => unreachable!(),
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn references_map_to_registries() {
        assert_eq!(registry_of("nginx:1.27-alpine"), "docker.io");
        assert_eq!(registry_of("library/nginx"), "docker.io");
        assert_eq!(registry_of("127.0.0.1:5000/demo/app:v1"), "127.0.0.1:5000");
        assert_eq!(
            registry_of("registry.gitlab.com/group/project/app@sha256:abc"),
            "registry.gitlab.com"
        );
        assert_eq!(registry_of("localhost/app"), "localhost");
        assert_eq!(
            normalize_address("https://index.docker.io/v1/"),
            "docker.io"
        );
        assert_eq!(
            normalize_address("HTTPS://Registry.Example.com:5000/v2/"),
            "registry.example.com:5000"
        );
    }

    #[test]
    fn blocks_and_ci_variables() {
        let auths = Auths::from_config(
            &config(json!({"registry_auth": [
                {"address": "https://127.0.0.1:5000", "username": "u", "password": "p4ss"}
            ]})),
            |k| match k {
                "CI_REGISTRY" => Some("registry.gitlab.com".into()),
                "CI_REGISTRY_USER" => Some("gitlab-ci-token".into()),
                "CI_REGISTRY_PASSWORD" => Some("job-token".into()),
                _ => None,
            },
        )
        .unwrap();
        let c = auths.credentials("127.0.0.1:5000/demo/app:v1").unwrap();
        assert_eq!(c.username.as_deref(), Some("u"));
        assert_eq!(c.password.as_deref(), Some("p4ss"));
        assert_eq!(c.serveraddress.as_deref(), Some("https://127.0.0.1:5000"));
        let c = auths.credentials("registry.gitlab.com/g/p:1").unwrap();
        assert_eq!(c.username.as_deref(), Some("gitlab-ci-token"));
        assert!(auths.credentials("nginx:latest").is_none());
    }

    #[test]
    fn a_block_wins_over_ci_variables() {
        let auths = Auths::from_config(
            &config(json!({"registry_auth": {"address": "registry.gitlab.com", "username": "me", "password": "pw1"}})),
            |k| match k {
                "CI_REGISTRY" => Some("registry.gitlab.com".into()),
                "CI_REGISTRY_USER" => Some("gitlab-ci-token".into()),
                "CI_REGISTRY_PASSWORD" => Some("job-token".into()),
                _ => None,
            },
        )
        .unwrap();
        let c = auths.credentials("registry.gitlab.com/g/p").unwrap();
        assert_eq!(c.username.as_deref(), Some("me"));
    }

    #[test]
    fn bad_blocks_are_config_errors() {
        assert!(
            Auths::from_config(
                &config(json!({"registry_auth": [{"username": "u"}]})),
                no_env
            )
            .is_err()
        );
        assert!(
            Auths::from_config(
                &config(
                    json!({"registry_auth": [{"address": "a.io"}, {"address": "https://a.io/"}]})
                ),
                no_env
            )
            .is_err()
        );
        // An address alone is accepted (anonymous).
        let auths = Auths::from_config(
            &config(json!({"registry_auth": [{"address": "a.io"}]})),
            no_env,
        )
        .unwrap();
        assert!(auths.credentials("a.io/x").is_none());
    }

    #[test]
    fn refused_credentials_name_the_registry_not_the_password() {
        let auths = Auths::from_config(
            &config(json!({"registry_auth": [{"address": "127.0.0.1:5000", "username": "u", "password": "hunter2-secret"}]})),
            no_env,
        )
        .unwrap();
        let e = auths
            .pull_error(
                "127.0.0.1:5000/demo/app:v1",
                "Head \"http://127.0.0.1:5000/v2/demo/app/manifests/v1\": unauthorized: authentication required hunter2-secret",
            )
            .to_string();
        assert!(e.contains("refused the credentials"), "{e}");
        assert!(e.contains("127.0.0.1:5000"), "{e}");
        assert!(e.contains("`u`"), "{e}");
        assert!(!e.contains("hunter2-secret"), "{e}");
        assert!(!format!("{auths:?}").contains("hunter2-secret"));

        let e = Auths::default()
            .pull_error("127.0.0.1:5000/demo/app:v1", "no basic auth credentials")
            .to_string();
        assert!(e.contains("requires credentials"), "{e}");
        let e = Auths::default()
            .pull_error("app:v1", "manifest unknown")
            .to_string();
        assert_eq!(e, "pulling image app:v1 failed: manifest unknown");
    }
}
