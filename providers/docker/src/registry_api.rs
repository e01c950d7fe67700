//! A small client for the Docker Registry HTTP API v2: what
//! `docker_registry_image` asks a registry directly, without the engine.
//!
//! - `HEAD /v2/<repository>/manifests/<tag>` with the `Accept` types of
//!   Docker v2 and OCI manifests (and their lists / indexes) tells which
//!   digest a tag points at now ([`manifest_digest`]); a 404 means the tag
//!   is gone.
//! - `DELETE /v2/<repository>/manifests/<digest>` removes a manifest
//!   ([`delete_manifest`]); registries refuse deletes by tag (400), and a
//!   404 means it is gone already.
//!
//! Authentication follows the registry's challenge. A request goes out
//! first with what worked for that registry before (if anything); a 401
//! carries `Www-Authenticate`:
//! - `Basic realm=...`: the request is sent again with basic credentials;
//! - `Bearer realm=...,service=...,scope=...` (Docker Hub, GitLab,
//!   distribution's `auth.token`): a token is fetched with
//!   `GET <realm>?service=...&scope=...` (basic credentials when there are
//!   some, anonymous otherwise), read from `token` or `access_token`, cached
//!   per (realm, service, scope, user) until `expires_in` (60 s when absent)
//!   runs out, and the request is sent again with `Authorization: Bearer`.
//!
//! Registries on `127.0.0.0/8`, `::1` and `localhost` are spoken to over
//! plain `http://` (dockerd treats them as insecure registries by default);
//! every other registry over `https://`. Docker Hub's API lives at
//! `registry-1.docker.io`. A registry whose `registry_auth` block names an
//! `endpoint` is spoken to there instead (the same scheme rule applies to
//! the endpoint).
//!
//! Credentials for a registry come from one place,
//! [`registry_credentials`], which the engine pushes use too. Passwords and
//! tokens are never logged or put into an error: [`RegistryCredentials`]
//! and the token cache hide them from `Debug`, and every message taken from
//! a registry is scrubbed of them.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use berth_provider::ProviderError;
use berth_provider::http::{HttpClient, Idempotency};
use bollard::auth::DockerCredentials;
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use crate::registry::{Auths, normalize_address};

/// The manifest media types berth accepts, in the order it prefers them.
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json";

/// Per-request timeout of registry calls (the retry policy bounds the
/// total).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A token's lifetime when the token service does not say.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// A cached token is not used in its last seconds: a request sent with it
/// must still arrive before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(5);

/// The name Docker Hub's references use, and where its API lives.
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

// ---------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------

/// A user name and password for one registry. `Debug` hides the password.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct RegistryCredentials {
    pub(crate) username: Option<String>,
    password: Option<String>,
    /// The registry address as configured, sent to the engine as
    /// `serveraddress`.
    pub(crate) server_address: String,
    /// Whether a [`CredentialSource`](crate::CredentialSource) logged in,
    /// rather than a `registry_auth` block (for the advice in errors).
    pub(crate) from_source: bool,
}

impl fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "(sensitive)"))
            .field("server_address", &self.server_address)
            .field("from_source", &self.from_source)
            .finish()
    }
}

impl RegistryCredentials {
    /// Credentials for `server_address`; empty strings count as absent.
    pub(crate) fn new(
        server_address: &str,
        username: Option<String>,
        password: Option<String>,
    ) -> Self {
        Self {
            username: username.filter(|u| !u.is_empty()),
            password: password.filter(|p| !p.is_empty()),
            server_address: server_address.to_owned(),
            from_source: false,
        }
    }

    /// What to check when the registry refuses these credentials.
    pub(crate) fn advice(&self) -> &'static str {
        if self.from_source {
            "the login came from the registry's own service (for ECR: \
             GetAuthorizationToken with the credentials of provider \"aws\"); check that \
             those credentials may use this repository"
        } else {
            "check registry_auth's username and password in provider \"docker\""
        }
    }

    /// Whether there is anything to log in with.
    pub(crate) fn is_empty(&self) -> bool {
        self.username.is_none() && self.password.is_none()
    }

    /// The user name for messages (`""` when there is none).
    pub(crate) fn user(&self) -> &str {
        self.username.as_deref().unwrap_or("")
    }

    /// The `X-Registry-Auth` credentials for the engine.
    pub(crate) fn docker(&self) -> DockerCredentials {
        DockerCredentials {
            username: self.username.clone(),
            password: self.password.clone(),
            serveraddress: Some(self.server_address.clone()),
            ..Default::default()
        }
    }

    /// `text` with the password replaced.
    pub(crate) fn scrub(&self, text: &str) -> String {
        match self.password.as_deref() {
            Some(p) if p.len() >= 3 => text.replace(p, "(sensitive value)"),
            _ => text.to_owned(),
        }
    }

    fn basic(&self) -> (String, Option<String>) {
        (self.user().to_owned(), self.password.clone())
    }
}

/// The credentials for the registry `host` (as [`ImageRef::registry`]
/// names it: `registry.example.com:5000`, `docker.io`), for engine pushes
/// (`X-Registry-Auth`) and for this module's HTTP calls alike:
///
/// 1. the username and password of the provider's `registry_auth` block
///    for `host`, else GitLab CI's `CI_REGISTRY` / `CI_REGISTRY_USER` /
///    `CI_REGISTRY_PASSWORD`, matched exactly as for pulls;
/// 2. else the plugged-in [`CredentialSource`](crate::CredentialSource)
///    when it serves `host`: in berth, ECR registries
///    (`<account>.dkr.ecr.<region>.amazonaws.com`) log in as `AWS` with a
///    password from the AWS provider's `GetAuthorizationToken`, which that
///    provider caches and renews when it expires;
/// 3. else none (anonymous).
pub(crate) async fn registry_credentials(
    auths: &Auths,
    host: &str,
) -> Result<Option<RegistryCredentials>, ProviderError> {
    let entry = auths.entry(host);
    if let Some((username, password)) = entry.and_then(|e| e.basic()) {
        let address = entry.map_or(host, |e| e.address.as_str());
        return Ok(Some(RegistryCredentials::new(address, username, password)));
    }
    let Some(source) = auths.source_for(host) else {
        return Ok(None);
    };
    let login = source.login(host).await?;
    tracing::debug!(registry = %host, user = %login.username, "registry login from the credential source");
    let address = entry.map_or(host, |e| e.address.as_str());
    let mut found = RegistryCredentials::new(address, Some(login.username), Some(login.password));
    found.from_source = true;
    Ok(Some(found).filter(|c| !c.is_empty()))
}

/// The `X-Registry-Auth` credentials for pulling `reference`: those of its
/// registry, as for pushes ([`registry_credentials`]), so an ECR image is
/// pulled with the ECR login too. (A `registry_auth.endpoint` is not used
/// for pulls: the engine pulls from the address in the reference.)
pub(crate) async fn pull_credentials(
    auths: &Auths,
    reference: &str,
) -> Result<Option<DockerCredentials>, ProviderError> {
    let registry = crate::registry::registry_of(reference);
    Ok(registry_credentials(auths, &registry)
        .await?
        .map(|c| c.docker()))
}

// ---------------------------------------------------------------------------
// References
// ---------------------------------------------------------------------------

/// A tagged image reference (`registry/repository:tag`), split the way the
/// registry API and the engine need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ImageRef {
    /// The reference without its tag, as written: what the engine pushes.
    pub(crate) name: String,
    /// The registry, normalised as `registry_auth` matching does
    /// (`127.0.0.1:5000`, `registry.gitlab.com`, `docker.io`).
    pub(crate) registry: String,
    /// The repository inside the registry (`group/app`; Docker Hub's
    /// official images get their `library/`).
    pub(crate) repository: String,
    /// The tag (`latest` when the reference has none).
    pub(crate) tag: String,
    /// Where the registry is reached when not at `registry`
    /// (`registry_auth.endpoint`): the API calls go there, and so does the
    /// engine's push ([`ImageRef::push_name`]).
    pub(crate) endpoint: Option<String>,
}

impl ImageRef {
    /// Parses `registry/repository:tag`. A digest (`@sha256:...`) is
    /// refused: a registry image is pushed by tag.
    pub(crate) fn parse(reference: &str) -> Result<Self, String> {
        let reference = reference.trim();
        if reference.is_empty() {
            return Err("the image reference is empty".to_owned());
        }
        if reference.contains('@') {
            return Err(format!(
                "`{reference}` holds a digest; name the image by tag \
                 (registry/repository:tag): the digest is what the push computes"
            ));
        }
        let name_start = reference.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match reference[name_start..].rfind(':') {
            Some(colon) => (
                &reference[..name_start + colon],
                &reference[name_start + colon + 1..],
            ),
            None => (reference, "latest"),
        };
        let valid_tag = !tag.is_empty()
            && tag.len() <= 128
            && !tag.starts_with(['.', '-'])
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid_tag {
            return Err(format!(
                "`{tag}` is not a valid tag (letters, digits, `_`, `.` and `-`, \
                 at most 128, not starting with `.` or `-`)"
            ));
        }
        let (registry, repository) = split_repository(name)?;
        Ok(Self {
            name: name.to_owned(),
            registry,
            repository,
            tag: tag.to_owned(),
            endpoint: None,
        })
    }

    /// The same reference, reached where `auths` says its registry is
    /// (its `registry_auth.endpoint`, if any).
    pub(crate) fn located(mut self, auths: &Auths) -> Self {
        self.endpoint = auths.endpoint(&self.registry).map(str::to_owned);
        self
    }

    /// The name the engine pushes: the reference without its tag, or
    /// `endpoint/repository` when the registry is reached at an endpoint.
    pub(crate) fn push_name(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => format!("{endpoint}/{}", self.repository),
            None => self.name.clone(),
        }
    }

    /// `registry/repository:tag` as written.
    pub(crate) fn tagged(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }

    /// Whether `repo_digest` (an entry of an image's `RepoDigests`, e.g.
    /// `127.0.0.1:5000/group/app@sha256:...`) is of this repository; its
    /// digest if so.
    pub(crate) fn digest_in(&self, repo_digest: &str) -> Option<String> {
        let (name, digest) = repo_digest.rsplit_once('@')?;
        let (registry, repository) = split_repository(name).ok()?;
        (registry == self.registry && repository == self.repository).then(|| digest.to_owned())
    }

    /// The host the API is reached at.
    fn api_host(&self) -> &str {
        if let Some(endpoint) = &self.endpoint {
            endpoint
        } else if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// `http://` or `https://` plus the API host.
    fn base_url(&self) -> String {
        let host = self.api_host();
        let scheme = if is_insecure_host(host) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{host}")
    }

    fn manifest_path(&self, reference: &str) -> String {
        format!("/v2/{}/manifests/{reference}", self.repository)
    }
}

/// The normalised registry and the repository path of a reference without
/// tag or digest.
fn split_repository(name: &str) -> Result<(String, String), String> {
    let (registry, repository) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (normalize_address(first), rest.to_owned())
        }
        _ => (DOCKER_HUB.to_owned(), name.to_owned()),
    };
    let repository = if registry == DOCKER_HUB && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository
    };
    let valid = !repository.is_empty()
        && repository.split('/').all(|part| {
            !part.is_empty()
                && part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                })
        });
    if !valid {
        return Err(format!(
            "`{name}` is not a valid repository name (lowercase letters, digits and \
             `.`, `_`, `-` in `/`-separated parts)"
        ));
    }
    Ok((registry, repository))
}

/// Loopback and `localhost` registries, which dockerd reaches over plain
/// HTTP.
fn is_insecure_host(host: &str) -> bool {
    let bare = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    if bare.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match bare.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback()),
    }
}

// ---------------------------------------------------------------------------
// Challenges and tokens
// ---------------------------------------------------------------------------

/// What a registry's `Www-Authenticate` asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses a `Www-Authenticate` value (RFC 6750 §3: a scheme, then
/// comma-separated `key="value"` pairs, values possibly holding commas).
fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header
        .split_once(char::is_whitespace)
        .unwrap_or((header, ""));
    let params = parse_params(rest);
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.clone())
    };
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            realm: get("realm").filter(|r| !r.is_empty())?,
            service: get("service"),
            scope: get("scope").filter(|s| !s.is_empty()),
        })
    } else {
        None
    }
}

fn parse_params(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.trim().is_empty() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(escaped) = chars.next() {
                                value.push(escaped);
                            }
                        }
                        '"' => break,
                        other => value.push(other),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
                value = value.trim().to_owned();
            }
        }
        out.push((key.trim().to_owned(), value));
    }
}

/// A bearer token and when it stops being used. `Debug` hides the token.
#[derive(Clone)]
struct CachedToken {
    token: String,
    usable_until: Instant,
}

impl fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedToken")
            .field("token", &"(sensitive)")
            .field("usable_until", &self.usable_until)
            .finish()
    }
}

/// (realm, service, scope, user): a token is never shared between users.
type TokenKey = (String, String, String, String);

/// What berth remembers between calls, for the life of the process: the
/// challenge each registry host answered with last (so the next request
/// can carry credentials or a cached token from the start) and the tokens.
#[derive(Debug, Default)]
struct AuthCache {
    challenges: HashMap<String, Challenge>,
    tokens: HashMap<TokenKey, CachedToken>,
}

fn cache() -> &'static Mutex<AuthCache> {
    static CACHE: OnceLock<Mutex<AuthCache>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

fn with_cache<T>(f: impl FnOnce(&mut AuthCache) -> T) -> T {
    let mut guard = cache()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    f(&mut guard)
}

fn http() -> Result<&'static HttpClient, ProviderError> {
    static HTTP: OnceLock<HttpClient> = OnceLock::new();
    if let Some(client) = HTTP.get() {
        return Ok(client);
    }
    let client = HttpClient::new(REQUEST_TIMEOUT)?;
    Ok(HTTP.get_or_init(|| client))
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl fmt::Debug for TokenAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenAnswer")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// How an authorised request is made.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Authorization {
    None,
    Basic,
    Bearer(String),
}

/// The registry calls for one image repository, with the credentials for
/// its registry.
pub(crate) struct Session<'a> {
    image: &'a ImageRef,
    credentials: Option<&'a RegistryCredentials>,
}

impl fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("image", &self.image)
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// The outcome of [`delete_manifest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Deleted {
    /// The registry deleted it (202).
    Deleted,
    /// It was not there (404).
    AlreadyGone,
}

/// The digest `reference` (a tag or a digest) of `image` points at, or
/// `None` when the registry does not have it (404).
pub(crate) async fn manifest_digest(
    image: &ImageRef,
    reference: &str,
    credentials: Option<&RegistryCredentials>,
) -> Result<Option<String>, ProviderError> {
    Session { image, credentials }
        .manifest_digest(reference)
        .await
}

/// Deletes the manifest `digest` of `image` (by digest: registries refuse
/// deletes by tag).
pub(crate) async fn delete_manifest(
    image: &ImageRef,
    digest: &str,
    credentials: Option<&RegistryCredentials>,
) -> Result<Deleted, ProviderError> {
    Session { image, credentials }.delete_manifest(digest).await
}

impl Session<'_> {
    async fn manifest_digest(&self, reference: &str) -> Result<Option<String>, ProviderError> {
        let path = self.image.manifest_path(reference);
        let response = self.send(Method::HEAD, &path, "pull").await?;
        match response.status() {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(self.failure("HEAD", &path, response).await),
        }
        if let Some(digest) = header(&response, "docker-content-digest") {
            return Ok(Some(digest));
        }
        // A registry that leaves the header out of HEAD: the digest is the
        // SHA-256 of the manifest as served.
        let response = self.send(Method::GET, &path, "pull").await?;
        match response.status() {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(self.failure("GET", &path, response).await),
        }
        if let Some(digest) = header(&response, "docker-content-digest") {
            return Ok(Some(digest));
        }
        let body = response.bytes().await.map_err(|e| {
            ProviderError::Api(format!(
                "reading the manifest {}:{reference} from the registry {} failed: {e}",
                self.image.repository, self.image.registry
            ))
        })?;
        use sha2::Digest;
        Ok(Some(format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(&body))
        )))
    }

    async fn delete_manifest(&self, digest: &str) -> Result<Deleted, ProviderError> {
        if !digest.starts_with("sha256:") {
            return Err(ProviderError::Api(format!(
                "cannot delete {}: `{digest}` is not a digest",
                self.image.name
            )));
        }
        let path = self.image.manifest_path(digest);
        let response = self.send(Method::DELETE, &path, "delete").await?;
        match response.status() {
            s if s.is_success() => Ok(Deleted::Deleted),
            StatusCode::NOT_FOUND => Ok(Deleted::AlreadyGone),
            StatusCode::METHOD_NOT_ALLOWED => {
                let detail = self.error_text(response).await;
                Err(ProviderError::Api(format!(
                    "the registry {} does not allow deleting manifests \
                     (distribution needs `storage.delete.enabled: true`; \
                     or set keep_remotely = true): {detail}",
                    self.image.registry
                )))
            }
            _ => Err(self.failure("DELETE", &path, response).await),
        }
    }

    /// Sends `method path` with whatever authorisation the registry asks
    /// for. `action` is the repository action the request needs (`pull`,
    /// `delete`), used to find a cached token before any challenge.
    async fn send(
        &self,
        method: Method,
        path: &str,
        action: &str,
    ) -> Result<reqwest::Response, ProviderError> {
        let host = self.image.api_host().to_owned();
        let known = with_cache(|c| c.challenges.get(&host).cloned());
        let first = match &known {
            Some(Challenge::Basic) if self.credentials.is_some() => Authorization::Basic,
            Some(Challenge::Bearer { realm, service, .. }) => {
                let scope = format!("repository:{}:{action}", self.image.repository);
                match self.cached_token(realm, service.as_deref(), Some(&scope)) {
                    Some(token) => Authorization::Bearer(token),
                    None => Authorization::None,
                }
            }
            _ => Authorization::None,
        };
        let response = self.send_once(&method, path, &first).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let Some(challenge) = response
            .headers()
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(parse_challenge)
        else {
            return Ok(response);
        };
        with_cache(|c| {
            c.challenges.insert(host.clone(), challenge.clone());
            // A token that was refused is not used again.
            if let Authorization::Bearer(refused) = &first {
                c.tokens.retain(|_, t| t.token != *refused);
            }
        });
        let retry = match &challenge {
            Challenge::Basic => {
                if self.credentials.is_none() {
                    return Err(self.no_credentials(&method, path));
                }
                Authorization::Basic
            }
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => Authorization::Bearer(
                self.token(realm, service.as_deref(), scope.as_deref())
                    .await?,
            ),
        };
        if retry == first {
            // The same authorisation was just refused.
            return Err(self.refused(&method, path));
        }
        let response = self.send_once(&method, path, &retry).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            if let Authorization::Bearer(refused) = &retry {
                with_cache(|c| c.tokens.retain(|_, t| t.token != *refused));
            }
            return Err(if self.credentials.is_some() {
                self.refused(&method, path)
            } else {
                self.no_credentials(&method, path)
            });
        }
        Ok(response)
    }

    async fn send_once(
        &self,
        method: &Method,
        path: &str,
        authorization: &Authorization,
    ) -> Result<reqwest::Response, ProviderError> {
        let url = format!("{}{path}", self.image.base_url());
        let what = format!("the registry {} ({method} {path})", self.image.registry);
        tracing::debug!(registry = %self.image.registry, %method, %path, "registry request");
        http()?
            .send(&what, Idempotency::Safe, |client| {
                let mut request = client
                    .request(method.clone(), &url)
                    .header(reqwest::header::ACCEPT, MANIFEST_ACCEPT);
                match authorization {
                    Authorization::None => {}
                    Authorization::Basic => {
                        if let Some(c) = self.credentials {
                            let (user, password) = c.basic();
                            request = request.basic_auth(user, password);
                        }
                    }
                    Authorization::Bearer(token) => request = request.bearer_auth(token),
                }
                request
            })
            .await
    }

    fn token_key(&self, realm: &str, service: Option<&str>, scope: Option<&str>) -> TokenKey {
        (
            realm.to_owned(),
            service.unwrap_or_default().to_owned(),
            scope.unwrap_or_default().to_owned(),
            self.credentials
                .map(|c| c.user().to_owned())
                .unwrap_or_default(),
        )
    }

    fn cached_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
    ) -> Option<String> {
        let key = self.token_key(realm, service, scope);
        let now = Instant::now();
        with_cache(|c| {
            c.tokens.retain(|_, t| t.usable_until > now);
            c.tokens.get(&key).map(|t| t.token.clone())
        })
    }

    /// A token for (realm, service, scope): cached, or fetched from the
    /// realm with basic credentials (anonymous without).
    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
    ) -> Result<String, ProviderError> {
        if let Some(token) = self.cached_token(realm, service, scope) {
            return Ok(token);
        }
        let registry = &self.image.registry;
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(service) = service {
            query.push(("service", service));
        }
        for s in scope.unwrap_or_default().split_whitespace() {
            query.push(("scope", s));
        }
        let what = format!("the token service of the registry {registry} ({realm})");
        let response = http()?
            .send(&what, Idempotency::Safe, |client| {
                let mut request = client.get(realm).query(&query);
                if let Some(c) = self.credentials {
                    let (user, password) = c.basic();
                    request = request.basic_auth(user, password);
                }
                request
            })
            .await?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(match self.credentials {
                Some(c) => ProviderError::Api(format!(
                    "the registry {registry} refused the credentials for user `{}`: its token \
                     service {realm} answered HTTP {} ({})",
                    c.user(),
                    status.as_u16(),
                    c.advice()
                )),
                None => ProviderError::Api(format!(
                    "the registry {registry} requires credentials and none are configured for \
                     it (its token service {realm} answered HTTP {}); add `registry_auth {{ \
                     address = \"{registry}\", username = ..., password = ... }}` to provider \
                     \"docker\" (or set CI_REGISTRY, CI_REGISTRY_USER and CI_REGISTRY_PASSWORD)",
                    status.as_u16()
                )),
            });
        }
        if !status.is_success() {
            let detail = self.error_text(response).await;
            return Err(ProviderError::Api(format!(
                "the token service {realm} of the registry {registry} answered HTTP {}: {detail}",
                status.as_u16()
            )));
        }
        let body = response.bytes().await.map_err(|e| {
            ProviderError::Api(format!(
                "reading the answer of the token service {realm} of the registry {registry} \
                 failed: {e}"
            ))
        })?;
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| {
            ProviderError::Api(format!(
                "the token service {realm} of the registry {registry} sent no JSON token: {e}"
            ))
        })?;
        let token = answer
            .token
            .filter(|t| !t.is_empty())
            .or(answer.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| {
                ProviderError::Api(format!(
                    "the token service {realm} of the registry {registry} sent neither \
                     `token` nor `access_token`"
                ))
            })?;
        let lifetime = answer
            .expires_in
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        let key = self.token_key(realm, service, scope);
        let cached = CachedToken {
            token: token.clone(),
            usable_until: Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN),
        };
        with_cache(|c| c.tokens.insert(key, cached));
        Ok(token)
    }

    fn refused(&self, method: &Method, path: &str) -> ProviderError {
        let user = self.credentials.map(|c| c.user()).unwrap_or_default();
        let advice = self
            .credentials
            .map(RegistryCredentials::advice)
            .unwrap_or_default();
        ProviderError::Api(format!(
            "the registry {} refused the credentials for user `{user}` ({method} {path} \
             answered HTTP 401; wrong credentials, or the user may not access {}); {advice}",
            self.image.registry, self.image.repository
        ))
    }

    fn no_credentials(&self, method: &Method, path: &str) -> ProviderError {
        let registry = &self.image.registry;
        ProviderError::Api(format!(
            "the registry {registry} requires credentials and none are configured for it \
             ({method} {path} answered HTTP 401); add `registry_auth {{ address = \
             \"{registry}\", username = ..., password = ... }}` to provider \"docker\" (or set \
             CI_REGISTRY, CI_REGISTRY_USER and CI_REGISTRY_PASSWORD)"
        ))
    }

    async fn failure(
        &self,
        method: &str,
        path: &str,
        response: reqwest::Response,
    ) -> ProviderError {
        let status = response.status().as_u16();
        let detail = self.error_text(response).await;
        let registry = &self.image.registry;
        let what = if status == 403 {
            format!(
                "the registry {registry} denied {method} {path} for user `{}`",
                self.credentials.map(|c| c.user()).unwrap_or_default()
            )
        } else {
            format!("the registry {registry} answered {method} {path} with HTTP {status}")
        };
        if detail.is_empty() {
            ProviderError::Api(what)
        } else {
            ProviderError::Api(format!("{what}: {detail}"))
        }
    }

    /// The registry's own words for an error (`{"errors": [{code, message}]}`),
    /// scrubbed of the password, or a short piece of the body.
    async fn error_text(&self, response: reqwest::Response) -> String {
        let body = response.text().await.unwrap_or_default();
        let text = registry_errors(&body).unwrap_or_else(|| {
            let trimmed = body.trim();
            trimmed.chars().take(300).collect()
        });
        match self.credentials {
            Some(c) => c.scrub(&text),
            None => text,
        }
    }
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// `CODE: message; CODE: message` from a registry's error body.
fn registry_errors(body: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let errors: Errors = serde_json::from_str(body).ok()?;
    let parts: Vec<String> = errors
        .errors
        .into_iter()
        .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
            (false, false) => format!("{}: {}", e.code, e.message),
            (false, true) => e.code,
            _ => e.message,
        })
        .filter(|s| !s.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{CredentialSource, Login};
    use berth_provider::Attrs;
    use serde_json::json;

    #[test]
    fn references_split_for_the_api() {
        let r = ImageRef::parse("127.0.0.1:5000/berth-it/app:v1").unwrap();
        assert_eq!(r.name, "127.0.0.1:5000/berth-it/app");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "berth-it/app");
        assert_eq!(r.tag, "v1");
        assert_eq!(r.base_url(), "http://127.0.0.1:5000");
        assert_eq!(r.tagged(), "127.0.0.1:5000/berth-it/app:v1");

        let r = ImageRef::parse("registry.gitlab.com/group/project/app").unwrap();
        assert_eq!(r.tag, "latest");
        assert_eq!(r.repository, "group/project/app");
        assert_eq!(r.base_url(), "https://registry.gitlab.com");

        let r = ImageRef::parse("nginx:1.27").unwrap();
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/nginx");
        assert_eq!(r.base_url(), "https://registry-1.docker.io");

        let r = ImageRef::parse("localhost:5000/app:2").unwrap();
        assert_eq!(r.base_url(), "http://localhost:5000");
        let r = ImageRef::parse("[::1]:5000/app:2").unwrap();
        assert_eq!(r.base_url(), "http://[::1]:5000");
        let r = ImageRef::parse("127.5.6.7/app").unwrap();
        assert_eq!(r.base_url(), "http://127.5.6.7");
        let r =
            ImageRef::parse("123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app:v3").unwrap();
        assert_eq!(
            r.base_url(),
            "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com"
        );

        assert!(ImageRef::parse("app@sha256:abc").is_err());
        assert!(ImageRef::parse("Reg.io/App:v1").is_err());
        assert!(ImageRef::parse("reg.io/app:").is_err());
        assert!(ImageRef::parse("reg.io/app:-x").is_err());
        assert!(ImageRef::parse("").is_err());
    }

    #[test]
    fn repo_digests_are_matched_by_repository() {
        let r = ImageRef::parse("127.0.0.1:5000/berth-it/app:v1").unwrap();
        assert_eq!(
            r.digest_in("127.0.0.1:5000/berth-it/app@sha256:abc")
                .as_deref(),
            Some("sha256:abc")
        );
        assert_eq!(
            r.digest_in("127.0.0.1:5000/berth-it/other@sha256:abc"),
            None
        );
        assert_eq!(r.digest_in("127.0.0.1:5001/berth-it/app@sha256:abc"), None);
        let hub = ImageRef::parse("docker.io/library/nginx:1").unwrap();
        assert_eq!(
            hub.digest_in("nginx@sha256:def").as_deref(),
            Some("sha256:def")
        );
    }

    #[test]
    fn challenges_are_parsed() {
        assert_eq!(
            parse_challenge(r#"Basic realm="test-registry""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:samalba/my-app:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://gitlab.com/jwt/auth", service=container_registry"#
            ),
            Some(Challenge::Bearer {
                realm: "https://gitlab.com/jwt/auth".into(),
                service: Some("container_registry".into()),
                scope: None,
            })
        );
        assert_eq!(
            parse_challenge(r#"Bearer realm="a\"b",scope="x""#),
            Some(Challenge::Bearer {
                realm: "a\"b".into(),
                service: None,
                scope: Some("x".into()),
            })
        );
        assert_eq!(parse_challenge("Bearer service=\"x\""), None);
        assert_eq!(parse_challenge("Negotiate abc"), None);
    }

    #[test]
    fn registry_error_bodies_are_read() {
        assert_eq!(
            registry_errors(
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#
            )
            .as_deref(),
            Some("UNAUTHORIZED: authentication required")
        );
        assert_eq!(registry_errors("not json"), None);
        assert_eq!(registry_errors(r#"{"errors":[]}"#), None);
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = RegistryCredentials::new("reg.io", Some("u".into()), Some("s3cr3t-pw".into()));
        assert!(!format!("{c:?}").contains("s3cr3t-pw"));
        assert_eq!(c.scrub("bad s3cr3t-pw here"), "bad (sensitive value) here");
        let t = CachedToken {
            token: "tok-abcdef".into(),
            usable_until: Instant::now(),
        };
        assert!(!format!("{t:?}").contains("tok-abcdef"));
        let session = Session {
            image: &ImageRef::parse("reg.io/app:v1").unwrap(),
            credentials: Some(&c),
        };
        assert!(!format!("{session:?}").contains("s3cr3t-pw"));
    }

    #[tokio::test]
    async fn credentials_come_from_registry_auth_and_ci_variables() {
        let config: Attrs = match json!({"registry_auth": [
            {"address": "http://127.0.0.1:5000", "username": "u", "password": "pw-1"},
            {"address": "anon.example.com"}
        ]}) {
            serde_json::Value::Object(m) => m.into_iter().collect(),
            _ => unreachable!(),
        };
        let auths = Auths::from_config(&config, |k| match k {
            "CI_REGISTRY" => Some("registry.gitlab.com".into()),
            "CI_REGISTRY_USER" => Some("gitlab-ci-token".into()),
            "CI_REGISTRY_PASSWORD" => Some("job-token".into()),
            _ => None,
        })
        .unwrap();
        let c = registry_credentials(&auths, "127.0.0.1:5000")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c.user(), "u");
        assert_eq!(c.server_address, "http://127.0.0.1:5000");
        assert_eq!(c.docker().password.as_deref(), Some("pw-1"));
        let c = registry_credentials(&auths, "registry.gitlab.com")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c.user(), "gitlab-ci-token");
        assert!(
            registry_credentials(&auths, "anon.example.com")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            registry_credentials(&auths, "docker.io")
                .await
                .unwrap()
                .is_none()
        );
    }

    /// A source that serves `*.dkr.ecr.*` hosts and counts its logins.
    struct FakeEcr(std::sync::atomic::AtomicUsize);

    impl CredentialSource for FakeEcr {
        fn serves(&self, registry: &str) -> bool {
            registry.contains(".dkr.ecr.")
        }

        fn login<'a>(&'a self, registry: &'a str) -> crate::registry::LoginFuture<'a> {
            Box::pin(async move {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if registry.starts_with("000000000000.") {
                    return Err(ProviderError::Api(format!(
                        "cannot get a login for {registry}"
                    )));
                }
                Ok(Login {
                    username: "AWS".into(),
                    password: format!("token-for-{registry}"),
                })
            })
        }
    }

    fn attrs_of(v: serde_json::Value) -> Attrs {
        match v {
            serde_json::Value::Object(m) => m.into_iter().collect(),
            _ => unreachable!(),
        }
    }

    const ECR: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";

    #[tokio::test]
    async fn a_credential_source_serves_registries_no_block_gives_credentials_for() {
        let source = std::sync::Arc::new(FakeEcr(Default::default()));
        let config = attrs_of(json!({"registry_auth": [
            {"address": "999999999999.dkr.ecr.us-east-1.amazonaws.com", "username": "AWS", "password": "explicit-pw"},
            {"address": format!("https://{ECR}"), "endpoint": "http://127.0.0.1:5000/"}
        ]}));
        let auths = Auths::from_config(&config, |_| None)
            .unwrap()
            .with_source(Some(source.clone()));

        // A block with a password wins; the source is not asked.
        let c = registry_credentials(&auths, "999999999999.dkr.ecr.us-east-1.amazonaws.com")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c.docker().password.as_deref(), Some("explicit-pw"));
        assert!(c.advice().contains("registry_auth"), "{}", c.advice());
        assert_eq!(source.0.load(std::sync::atomic::Ordering::SeqCst), 0);

        // A block without credentials (here: only an endpoint): the source
        // logs in, with the block's address as `serveraddress`.
        let c = registry_credentials(&auths, ECR).await.unwrap().unwrap();
        assert_eq!(c.user(), "AWS");
        assert_eq!(
            c.docker().password.as_deref(),
            Some(format!("token-for-{ECR}").as_str())
        );
        assert_eq!(c.server_address, format!("https://{ECR}"));
        assert!(
            c.advice().contains("GetAuthorizationToken"),
            "{}",
            c.advice()
        );
        assert!(!format!("{c:?}").contains("token-for"));
        // No block at all: the source still serves its registries...
        let other = "210987654321.dkr.ecr.us-east-2.amazonaws.com";
        let c = registry_credentials(&auths, other).await.unwrap().unwrap();
        assert_eq!(c.server_address, other);
        // ... and it is asked at every use (it caches itself).
        assert_eq!(source.0.load(std::sync::atomic::Ordering::SeqCst), 2);
        // ...but not others.
        assert!(
            registry_credentials(&auths, "registry.gitlab.com")
                .await
                .unwrap()
                .is_none()
        );
        // Its errors come through.
        let e = registry_credentials(&auths, "000000000000.dkr.ecr.us-east-1.amazonaws.com")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("cannot get a login"), "{e}");
        // Without a source, an ECR registry is anonymous.
        let bare = Auths::from_config(&config, |_| None).unwrap();
        assert!(registry_credentials(&bare, ECR).await.unwrap().is_none());
    }

    #[test]
    fn an_endpoint_relocates_api_calls_and_pushes_but_not_the_name() {
        let config =
            attrs_of(json!({"registry_auth": {"address": ECR, "endpoint": "127.0.0.1:5000"}}));
        let auths = Auths::from_config(&config, |_| None).unwrap();
        let image = ImageRef::parse(&format!("{ECR}/team/app:v3"))
            .unwrap()
            .located(&auths);
        assert_eq!(image.base_url(), "http://127.0.0.1:5000");
        assert_eq!(image.push_name(), "127.0.0.1:5000/team/app");
        assert_eq!(image.tagged(), format!("{ECR}/team/app:v3"));
        assert_eq!(image.registry, ECR);
        let elsewhere = ImageRef::parse("reg.io/app:v1").unwrap().located(&auths);
        assert_eq!(elsewhere.base_url(), "https://reg.io");
        assert_eq!(elsewhere.push_name(), "reg.io/app");
        for bad in ["127.0.0.1:5000/v2", "user@host", " "] {
            let config = attrs_of(json!({"registry_auth": {"address": ECR, "endpoint": bad}}));
            let e = Auths::from_config(&config, |_| None).unwrap_err();
            assert!(
                e.to_string().contains("registry_auth.endpoint"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn loopback_hosts_are_insecure() {
        assert!(is_insecure_host("127.0.0.1:5000"));
        assert!(is_insecure_host("localhost"));
        assert!(is_insecure_host("[::1]:5000"));
        assert!(!is_insecure_host("10.0.0.1:5000"));
        assert!(!is_insecure_host("registry.example.com"));
    }
}
