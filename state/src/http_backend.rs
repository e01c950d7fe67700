//! State over Terraform's HTTP backend protocol, so GitLab-managed Terraform
//! state (and any server that speaks the protocol) works as it is.
//!
//! # Protocol
//!
//! | Operation | Request | Outcome |
//! |---|---|---|
//! | read | `GET address` | 200 + body; 204, 404 or an empty body: no state yet |
//! | write | `update_method address?ID=<lock id>` (default `POST`), body = the whole document | 200, 201 or 204 |
//! | lock | `lock_method lock_address`, body = Terraform's lock info JSON | 2xx: acquired; 409/423 + the holder's lock info: [`StateError::Locked`] |
//! | unlock | `unlock_method unlock_address`, body = the same lock info | 2xx; 409: [`StateError::LockMismatch`] |
//! | force-unlock | `unlock_method unlock_address`, body = `{"ID": "<id>"}` | as unlock |
//!
//! The `ID` query parameter is sent only while this process holds a lock on
//! the server (GitLab requires it then). Every request with a body carries
//! `Content-Type: application/json` and `Content-MD5`; a `Content-MD5` on a
//! read is checked. Connection errors, 429 and 5xx (but 501) are retried up to
//! `retry_max` times, waiting `retry_wait_min · 2^n` seconds capped at
//! `retry_wait_max` (Terraform's go-retryablehttp policy).
//!
//! The document written is `{"version": 1, "lineage", "serial", "resources",
//! "outputs"}` (a [`Snapshot`] plus its format version), with a
//! top-level integer `serial` that grows with every write, as GitLab demands.
//! Every write is read back; it counts only once the store returns the new
//! serial and the same lineage.
//!
//! # Settings
//!
//! `address`, `update_method`, `lock_address`, `lock_method`,
//! `unlock_address`, `unlock_method`, `username`, `password`, `retry_max`
//! (default 2), `retry_wait_min` (seconds, default 1), `retry_wait_max`
//! (default 30), `skip_cert_verification` (default false). Each one missing
//! from the backend block is taken from `BERTH_HTTP_<NAME>` (Terraform's
//! `TF_HTTP_*`, renamed), e.g. `BERTH_HTTP_PASSWORD`.
//!
//! `{env}` in `address`, `lock_address` or `unlock_address` is replaced by
//! the URL-encoded environment name, so one block can serve every
//! environment; an address without it is used as it is (one state for every
//! environment, as with Terraform).
//!
//! Differences from Terraform: `unlock_address` defaults to `lock_address`
//! (Terraform would lock and never unlock); as in Terraform, no lock address
//! at all disables locking (a lock is then only recorded in this process).
//!
//! # GitLab
//!
//! With no address configured and GitLab CI's `CI_API_V4_URL` and
//! `CI_PROJECT_ID` set, the address is GitLab's managed state for the
//! environment: `$CI_API_V4_URL/projects/$CI_PROJECT_ID/terraform/state/<env
//! URL-encoded>`, locked with `POST` and unlocked with `DELETE` on
//! `<address>/lock`. The same lock defaults apply to any configured address
//! of that shape (`…/projects/<id>/terraform/state/<name>`). For such a
//! GitLab address with neither `username` nor `password` configured and
//! `CI_JOB_TOKEN` set, berth authenticates as `gitlab-ci-token` with the job
//! token.
//!
//! The password never appears in errors or in `Debug` output.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use md5::{Digest as _, Md5};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};

use crate::remote::{self, Change, DocSession, DocStore, Fetched, Prior, TfLockInfo};
use crate::{LockInfo, OutputRecord, ResourceRecord, Snapshot, StateBackend, StateError, StateKey};

/// Every setting the `http` backend accepts.
pub const SETTINGS: &[&str] = &[
    "address",
    "update_method",
    "lock_address",
    "lock_method",
    "unlock_address",
    "unlock_method",
    "username",
    "password",
    "retry_max",
    "retry_wait_min",
    "retry_wait_max",
    "skip_cert_verification",
];

/// The backend kind, for messages.
const KIND: &str = "http";

/// Prefix of the environment variables that fill missing settings.
pub const ENV_PREFIX: &str = "BERTH_HTTP_";

/// The HTTP backend's settings once defaults, environment variables and
/// GitLab CI's variables are applied.
#[derive(Clone, PartialEq)]
pub struct HttpSettings {
    /// Where the state is read and written.
    pub address: String,
    /// Method that writes the state (`POST`).
    pub update_method: String,
    /// Where locks are taken; `None` disables locking.
    pub lock_address: Option<String>,
    /// Method that takes the lock (`LOCK`; GitLab: `POST`).
    pub lock_method: String,
    /// Where locks are released.
    pub unlock_address: Option<String>,
    /// Method that releases the lock (`UNLOCK`; GitLab: `DELETE`).
    pub unlock_method: String,
    /// Basic-auth user.
    pub username: Option<String>,
    /// Basic-auth password (never shown).
    pub password: Option<String>,
    /// Retries after a connection error, a 429 or a 5xx.
    pub retry_max: u32,
    /// Shortest wait before a retry.
    pub retry_wait_min: Duration,
    /// Longest wait before a retry.
    pub retry_wait_max: Duration,
    /// Accept any TLS certificate.
    pub skip_cert_verification: bool,
}

impl fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSettings")
            .field("address", &redact_url(&self.address))
            .field("update_method", &self.update_method)
            .field(
                "lock_address",
                &self.lock_address.as_deref().map(redact_url),
            )
            .field("lock_method", &self.lock_method)
            .field(
                "unlock_address",
                &self.unlock_address.as_deref().map(redact_url),
            )
            .field("unlock_method", &self.unlock_method)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("retry_max", &self.retry_max)
            .field("retry_wait_min", &self.retry_wait_min)
            .field("retry_wait_max", &self.retry_wait_max)
            .field("skip_cert_verification", &self.skip_cert_verification)
            .finish()
    }
}

impl HttpSettings {
    /// Settings for environment `env` from a backend block's `settings`,
    /// with the missing ones looked up by `var` (`BERTH_HTTP_*`, then GitLab
    /// CI's variables). Pass `|k| std::env::var(k).ok()` for the process
    /// environment.
    pub fn resolve(
        settings: &BTreeMap<String, String>,
        env: &str,
        var: &dyn Fn(&str) -> Option<String>,
    ) -> Result<HttpSettings, StateError> {
        remote::check_settings(KIND, settings, SETTINGS)?;
        let var = |k: &str| var(k).filter(|v| !v.is_empty());
        let get = |name: &str| {
            settings
                .get(name)
                .cloned()
                .or_else(|| var(&format!("{ENV_PREFIX}{}", name.to_ascii_uppercase())))
        };
        let env_enc = remote::url_encode(env, false);
        let subst = |s: String| s.replace("{env}", &env_enc);

        let ci_api = var("CI_API_V4_URL");
        let (address, gitlab) = match get("address") {
            Some(a) => {
                let a = subst(a);
                let gitlab = looks_like_gitlab_state(&a);
                (a, gitlab)
            }
            None => match (&ci_api, var("CI_PROJECT_ID")) {
                (Some(api), Some(project)) => (
                    format!(
                        "{}/projects/{}/terraform/state/{env_enc}",
                        api.trim_end_matches('/'),
                        remote::url_encode(&project, false)
                    ),
                    true,
                ),
                _ => {
                    return Err(config(format!(
                        "no `address`: set it in the backend block or in {ENV_PREFIX}ADDRESS (in GitLab CI, CI_API_V4_URL and CI_PROJECT_ID give a default)"
                    )));
                }
            },
        };
        check_url("address", &address)?;

        let lock_address = match get("lock_address") {
            Some(a) => Some(subst(a)),
            None if gitlab => Some(format!("{address}/lock")),
            None => None,
        };
        let unlock_address = get("unlock_address")
            .map(subst)
            .or_else(|| lock_address.clone());
        for (name, a) in [
            ("lock_address", &lock_address),
            ("unlock_address", &unlock_address),
        ] {
            if let Some(a) = a {
                check_url(name, a)?;
            }
        }
        let method = |name: &str, default: &str| -> Result<String, StateError> {
            let m = get(name).unwrap_or_else(|| default.to_owned());
            Method::from_bytes(m.as_bytes())
                .map_err(|_| config(format!("`{name}` is not an HTTP method: `{m}`")))?;
            Ok(m)
        };
        let update_method = method("update_method", "POST")?;
        let lock_method = method("lock_method", if gitlab { "POST" } else { "LOCK" })?;
        let unlock_method = method("unlock_method", if gitlab { "DELETE" } else { "UNLOCK" })?;

        let mut username = get("username");
        let mut password = get("password");
        if gitlab
            && username.is_none()
            && password.is_none()
            && let Some(token) = var("CI_JOB_TOKEN")
        {
            username = Some("gitlab-ci-token".to_owned());
            password = Some(token);
        }

        let retry_max = match get("retry_max") {
            Some(v) => remote::parse_count(KIND, "retry_max", &v)?,
            None => 2,
        };
        let seconds = |name: &str, default: u64| match get(name) {
            Some(v) => remote::parse_seconds(KIND, name, &v),
            None => Ok(Duration::from_secs(default)),
        };
        let retry_wait_min = seconds("retry_wait_min", 1)?;
        let retry_wait_max = seconds("retry_wait_max", 30)?.max(retry_wait_min);
        let skip_cert_verification = match get("skip_cert_verification") {
            Some(v) => remote::parse_bool(KIND, "skip_cert_verification", &v)?,
            None => false,
        };
        Ok(HttpSettings {
            address,
            update_method,
            lock_address,
            lock_method,
            unlock_address,
            unlock_method,
            username,
            password,
            retry_max,
            retry_wait_min,
            retry_wait_max,
            skip_cert_verification,
        })
    }
}

/// Whether `address` is a GitLab Terraform state URL
/// (`…/projects/<id>/terraform/state/<name>`).
fn looks_like_gitlab_state(address: &str) -> bool {
    let path = address.split(['?', '#']).next().unwrap_or(address);
    let parts: Vec<&str> = path.trim_end_matches('/').rsplit('/').take(5).collect();
    matches!(
        parts.as_slice(),
        [name, "state", "terraform", id, "projects"] if !name.is_empty() && !id.is_empty()
    )
}

fn check_url(name: &str, value: &str) -> Result<(), StateError> {
    match Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
        Ok(_) => Err(config(format!(
            "`{name}` must be an http or https URL, not `{}`",
            redact_url(value)
        ))),
        Err(e) => Err(config(format!(
            "`{name}` is not a URL (`{}`): {e}",
            redact_url(value)
        ))),
    }
}

/// `url` without user info, query or fragment, for messages.
fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "<invalid URL>".to_owned(),
    }
}

fn config(message: String) -> StateError {
    StateError::Config {
        backend: KIND.to_owned(),
        message,
    }
}

/// State behind Terraform's HTTP backend protocol (see the module docs).
pub struct HttpBackend {
    store: HttpStore,
    key: StateKey,
    session: DocSession,
}

/// The HTTP requests, apart from the lock bookkeeping.
struct HttpStore {
    settings: HttpSettings,
    client: reqwest::Client,
    env: String,
}

impl fmt::Debug for HttpBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpBackend")
            .field("env", &self.store.env)
            .field("settings", &self.store.settings)
            .finish_non_exhaustive()
    }
}

/// A server's answer.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl HttpBackend {
    /// The backend for environment `env` from a backend block's settings,
    /// the process environment (`BERTH_HTTP_*`, GitLab CI) and the state key
    /// in `local_dir` (or `BERTH_STATE_KEY`).
    pub fn open(
        settings: &BTreeMap<String, String>,
        env: &str,
        local_dir: &Path,
    ) -> Result<HttpBackend, StateError> {
        let resolved = HttpSettings::resolve(settings, env, &|k| std::env::var(k).ok())?;
        HttpBackend::new(resolved, env, StateKey::load_or_create(local_dir)?)
    }

    /// The backend with settings already resolved.
    pub fn new(
        settings: HttpSettings,
        env: &str,
        key: StateKey,
    ) -> Result<HttpBackend, StateError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .timeout(Duration::from_secs(300))
            .danger_accept_invalid_certs(settings.skip_cert_verification)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                config(format!(
                    "cannot set up the HTTP client: {}",
                    remote::error_chain(&e)
                ))
            })?;
        Ok(HttpBackend {
            store: HttpStore {
                settings,
                client,
                env: env.to_owned(),
            },
            key,
            session: DocSession::default(),
        })
    }

    /// The settings in use.
    pub fn settings(&self) -> &HttpSettings {
        &self.store.settings
    }

    /// Sends an unlock request with `body`; returns the server's answer.
    async fn send_unlock(&self, body: Vec<u8>) -> Result<Option<Answer>, StateError> {
        let s = &self.store.settings;
        let Some(address) = s.unlock_address.as_deref() else {
            return Ok(None);
        };
        let answer = self
            .store
            .send(&s.unlock_method, address, Some(body), "unlock")
            .await?;
        Ok(Some(answer))
    }

    /// Maps an unlock answer to a result.
    fn unlock_result(&self, given: &str, answer: Answer) -> Result<(), StateError> {
        match answer.status {
            s if s.is_success() => Ok(()),
            StatusCode::CONFLICT | StatusCode::LOCKED => Err(StateError::LockMismatch {
                given: given.to_owned(),
                current: TfLockInfo::parse(&answer.body).map(|h| h.id),
            }),
            _ => Err(self.store.status_error("unlock", &answer)),
        }
    }
}

impl HttpStore {
    /// `url` for messages: no user info, query, or password anywhere.
    fn whence_of(&self, url: &str) -> String {
        self.scrub(redact_url(url))
    }

    fn scrub(&self, s: String) -> String {
        match self.settings.password.as_deref() {
            Some(p) if !p.is_empty() => s.replace(p, "<redacted>"),
            _ => s,
        }
    }

    /// An error about `url`, with the password scrubbed from the message.
    fn err(&self, url: &str, message: String) -> StateError {
        StateError::Store {
            path: self.whence_of(url),
            message: self.scrub(message),
        }
    }

    /// The error for an unexpected answer to `what`.
    fn status_error(&self, what: &str, answer: &Answer) -> StateError {
        let status = answer.status;
        let hint = match status {
            StatusCode::UNAUTHORIZED => {
                if self.settings.username.is_none() && self.settings.password.is_none() {
                    " (the server requires authentication: set `username` and `password`, or BERTH_HTTP_USERNAME and BERTH_HTTP_PASSWORD)".to_owned()
                } else {
                    format!(
                        " (the server refused the credentials of user `{}`)",
                        self.settings.username.as_deref().unwrap_or("")
                    )
                }
            }
            StatusCode::FORBIDDEN => " (the credentials lack permission; GitLab needs the Maintainer role to write or lock state)".to_owned(),
            _ => String::new(),
        };
        let body = remote::snippet(&answer.body, 300);
        let body = if body.is_empty() {
            String::new()
        } else {
            format!(": {body}")
        };
        self.err(
            self.url_for(what),
            format!("{what} failed with HTTP {status}{hint}{body}"),
        )
    }

    fn url_for(&self, what: &str) -> &str {
        match what {
            "lock" => self.settings.lock_address.as_deref(),
            "unlock" => self.settings.unlock_address.as_deref(),
            _ => None,
        }
        .unwrap_or(&self.settings.address)
    }

    /// Sends one request, retrying connection errors, 429 and 5xx.
    async fn send(
        &self,
        method: &str,
        url: &str,
        body: Option<Vec<u8>>,
        what: &str,
    ) -> Result<Answer, StateError> {
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| self.err(url, format!("`{method}` is not an HTTP method")))?;
        let s = &self.settings;
        let mut attempt = 0u32;
        loop {
            let mut req = self.client.request(method.clone(), url);
            if s.username.is_some() || s.password.is_some() {
                req = req.basic_auth(s.username.as_deref().unwrap_or(""), s.password.as_deref());
            }
            if let Some(body) = &body {
                let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(body));
                req = req
                    .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                    .header("Content-MD5", md5)
                    .body(body.clone());
            }
            let outcome = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    match resp.bytes().await {
                        Ok(b) => Ok(Answer {
                            status,
                            headers,
                            body: b.to_vec(),
                        }),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            let retry = match &outcome {
                Ok(a) => {
                    a.status == StatusCode::TOO_MANY_REQUESTS
                        || (a.status.is_server_error() && a.status != StatusCode::NOT_IMPLEMENTED)
                }
                Err(_) => true,
            };
            if !retry || attempt >= s.retry_max {
                return match outcome {
                    Ok(a) => Ok(a),
                    Err(e) => {
                        let tries = attempt + 1;
                        Err(self.err(
                            url,
                            format!(
                                "{what} request failed after {tries} attempt{}: {}",
                                if tries == 1 { "" } else { "s" },
                                remote::error_chain(&e.without_url())
                            ),
                        ))
                    }
                };
            }
            tokio::time::sleep(remote::backoff(attempt, s.retry_wait_min, s.retry_wait_max)).await;
            attempt += 1;
        }
    }

    fn write_url(&self, lock_id: Option<&str>) -> String {
        let address = &self.settings.address;
        match lock_id {
            None => address.clone(),
            Some(id) => {
                let sep = if address.contains('?') { '&' } else { '?' };
                format!("{address}{sep}ID={}", remote::url_encode(id, false))
            }
        }
    }
}

#[async_trait::async_trait]
impl DocStore for HttpStore {
    async fn fetch(&self) -> Result<Option<Fetched>, StateError> {
        let url = &self.settings.address;
        let answer = self.send("GET", url, None, "read").await?;
        match answer.status {
            StatusCode::OK => {}
            StatusCode::NO_CONTENT | StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(self.status_error("read", &answer)),
        }
        if answer.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        if let Some(sent) = answer
            .headers
            .get("Content-MD5")
            .and_then(|v| v.to_str().ok())
        {
            let ours = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&answer.body));
            if sent.trim() != ours {
                return Err(StateError::Corrupt {
                    key: self.whence_of(url),
                    message: format!(
                        "the body does not match its Content-MD5 ({sent}, computed {ours})"
                    ),
                });
            }
        }
        let doc = remote::Document::decode(&answer.body, &self.whence_of(url))?;
        Ok(Some(Fetched { doc, tag: None }))
    }

    async fn store(
        &self,
        bytes: &[u8],
        _prior: &Prior,
        lock_id: Option<&str>,
    ) -> Result<(), StateError> {
        let url = self.write_url(lock_id);
        let answer = self
            .send(
                &self.settings.update_method,
                &url,
                Some(bytes.to_vec()),
                "write",
            )
            .await?;
        match answer.status {
            StatusCode::OK | StatusCode::CREATED | StatusCode::NO_CONTENT => Ok(()),
            _ => Err(self.status_error("write", &answer)),
        }
    }

    fn whence(&self) -> String {
        self.whence_of(&self.settings.address)
    }
}

#[async_trait::async_trait]
impl StateBackend for HttpBackend {
    async fn lock(&self, info: &LockInfo) -> Result<(), StateError> {
        if let Some(current) = self.session.current().await {
            return Err(StateError::Locked {
                holder: Box::new(current),
                stale: false,
            });
        }
        let s = &self.store.settings;
        let Some(address) = s.lock_address.as_deref() else {
            // Locking is disabled, as with Terraform's HTTP backend without a
            // lock address.
            self.session.begin(info, false).await;
            return Ok(());
        };
        let body = serde_json::to_vec(&TfLockInfo::from_info(info)).map_err(|e| {
            self.store
                .err(address, format!("cannot encode the lock: {e}"))
        })?;
        let answer = self
            .store
            .send(&s.lock_method, address, Some(body), "lock")
            .await?;
        match answer.status {
            status if status.is_success() => {
                self.session.begin(info, true).await;
                Ok(())
            }
            StatusCode::CONFLICT | StatusCode::LOCKED => match TfLockInfo::parse(&answer.body) {
                // Our own lock, taken by a retried request whose first try
                // got through.
                Some(holder) if holder.id == info.id => {
                    self.session.begin(info, true).await;
                    Ok(())
                }
                Some(holder) => {
                    let holder = without_echo(holder, info);
                    let stale = holder.is_stale();
                    Err(StateError::Locked {
                        holder: Box::new(holder),
                        stale,
                    })
                }
                None => Err(self.store.err(
                    address,
                    format!(
                        "the state is already locked, but the server's answer is not lock info: {}",
                        remote::snippet(&answer.body, 300)
                    ),
                )),
            },
            _ => Err(self.store.status_error("lock", &answer)),
        }
    }

    async fn unlock(&self, id: &str) -> Result<(), StateError> {
        let (info, remote) = self.session.check(id).await?;
        if !remote {
            self.session.end().await;
            return Ok(());
        }
        let body = serde_json::to_vec(&TfLockInfo::from_info(&info)).map_err(|e| {
            self.store.err(
                self.store.url_for("unlock"),
                format!("cannot encode the lock: {e}"),
            )
        })?;
        let Some(answer) = self.send_unlock(body).await? else {
            self.session.end().await;
            return Ok(());
        };
        let result = self.unlock_result(id, answer);
        if matches!(result, Ok(()) | Err(StateError::LockMismatch { .. })) {
            // Either released, or the lock is no longer ours anyway.
            self.session.end().await;
        }
        result
    }

    async fn force_unlock(&self, id: &str) -> Result<(), StateError> {
        if self.store.settings.unlock_address.is_none() {
            return Err(config(
                "locking is disabled (no `lock_address`), so there is no lock to remove".to_owned(),
            ));
        }
        let body = serde_json::to_vec(&serde_json::json!({ "ID": id })).map_err(|e| {
            self.store.err(
                self.store.url_for("unlock"),
                format!("cannot encode the lock: {e}"),
            )
        })?;
        let Some(answer) = self.send_unlock(body).await? else {
            return Ok(());
        };
        self.unlock_result(id, answer)?;
        if self.session.current().await.is_some_and(|c| c.id == id) {
            self.session.end().await;
        }
        Ok(())
    }

    async fn read(&self) -> Result<Snapshot, StateError> {
        self.session.read(&self.store).await
    }

    async fn put_resource(
        &self,
        address: &str,
        record: &ResourceRecord,
    ) -> Result<u64, StateError> {
        self.session
            .write(&self.store, Change::Put(address, record))
            .await
    }

    async fn remove_resource(&self, address: &str) -> Result<u64, StateError> {
        self.session
            .write(&self.store, Change::Remove(address))
            .await
    }

    async fn put_outputs(
        &self,
        outputs: &BTreeMap<String, OutputRecord>,
    ) -> Result<u64, StateError> {
        self.session
            .write(&self.store, Change::Outputs(outputs))
            .await
    }

    async fn replace_all(&self, snapshot: &Snapshot) -> Result<u64, StateError> {
        self.session
            .write(&self.store, Change::Replace(snapshot))
            .await
    }

    fn key(&self) -> &StateKey {
        &self.key
    }

    fn describe(&self) -> String {
        format!("http state at {}", self.store.whence())
    }
}

/// The holder as the server described it, minus what it only echoed.
///
/// GitLab's 409 carries the holder's `ID`, `Who` and `Created` but echoes
/// the requester's other fields (`Info`, which holds berth's pid, and
/// `Operation`, `Version`): those then describe this process, not the
/// holder, and are reported as unknown rather than passed off as the
/// holder's (the pid would also make a dead holder look alive).
fn without_echo(mut holder: LockInfo, mine: &LockInfo) -> LockInfo {
    if holder.id != mine.id && holder.pid == mine.pid && holder.operation == mine.operation {
        holder.pid = 0;
        holder.operation =
            "unknown (the server keeps only the lock's ID, user and time)".to_owned();
        holder.version = String::new();
    }
    holder
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn terraform_defaults() {
        let s = HttpSettings::resolve(
            &settings(&[
                ("address", "http://h/state/{env}"),
                ("lock_address", "http://h/lock"),
            ]),
            "review/x",
            &vars(&[]),
        )
        .unwrap();
        assert_eq!(s.address, "http://h/state/review%2Fx");
        assert_eq!(s.update_method, "POST");
        assert_eq!(s.lock_method, "LOCK");
        assert_eq!(s.unlock_method, "UNLOCK");
        assert_eq!(s.unlock_address.as_deref(), Some("http://h/lock"));
        assert_eq!(s.retry_max, 2);
        assert_eq!(s.retry_wait_min, Duration::from_secs(1));
        assert_eq!(s.retry_wait_max, Duration::from_secs(30));
        assert_eq!(s.username, None);
        let no_lock =
            HttpSettings::resolve(&settings(&[("address", "http://h/s")]), "e", &vars(&[]))
                .unwrap();
        assert_eq!(no_lock.lock_address, None);
        assert_eq!(no_lock.unlock_address, None);
    }

    #[test]
    fn environment_variables_fill_missing_settings_only() {
        let s = HttpSettings::resolve(
            &settings(&[("username", "alice")]),
            "e",
            &vars(&[
                ("BERTH_HTTP_ADDRESS", "https://state.example/e"),
                ("BERTH_HTTP_USERNAME", "bob"),
                ("BERTH_HTTP_PASSWORD", "pw"),
                ("BERTH_HTTP_RETRY_MAX", "5"),
                ("BERTH_HTTP_RETRY_WAIT_MIN", "0.5"),
            ]),
        )
        .unwrap();
        assert_eq!(s.address, "https://state.example/e");
        assert_eq!(s.username.as_deref(), Some("alice"));
        assert_eq!(s.password.as_deref(), Some("pw"));
        assert_eq!(s.retry_max, 5);
        assert_eq!(s.retry_wait_min, Duration::from_millis(500));
    }

    #[test]
    fn gitlab_ci_defaults() {
        let ci = vars(&[
            ("CI_API_V4_URL", "https://gitlab.example/api/v4"),
            ("CI_PROJECT_ID", "42"),
            ("CI_JOB_TOKEN", "job-token-secret"),
        ]);
        let s = HttpSettings::resolve(&settings(&[]), "review/feat x", &ci).unwrap();
        let address = "https://gitlab.example/api/v4/projects/42/terraform/state/review%2Ffeat%20x";
        assert_eq!(s.address, address);
        assert_eq!(s.lock_address.as_deref(), Some(&*format!("{address}/lock")));
        assert_eq!(s.unlock_address, s.lock_address);
        assert_eq!(s.lock_method, "POST");
        assert_eq!(s.unlock_method, "DELETE");
        assert_eq!(s.username.as_deref(), Some("gitlab-ci-token"));
        assert_eq!(s.password.as_deref(), Some("job-token-secret"));
        let shown = format!("{s:?}");
        assert!(!shown.contains("job-token-secret"), "{shown}");

        // Configured credentials win over the job token.
        let own = HttpSettings::resolve(
            &settings(&[("username", "me"), ("password", "pat")]),
            "e",
            &ci,
        )
        .unwrap();
        assert_eq!(own.username.as_deref(), Some("me"));
        assert_eq!(own.password.as_deref(), Some("pat"));

        // An explicit GitLab state address gets GitLab's lock defaults too.
        let explicit = HttpSettings::resolve(
            &settings(&[(
                "address",
                "https://gl/api/v4/projects/7/terraform/state/{env}",
            )]),
            "prod",
            &vars(&[]),
        )
        .unwrap();
        assert_eq!(
            explicit.lock_address.as_deref(),
            Some("https://gl/api/v4/projects/7/terraform/state/prod/lock")
        );
        assert_eq!(explicit.lock_method, "POST");
        assert_eq!(explicit.username, None, "no job token, no credentials");
    }

    #[test]
    fn bad_settings_are_config_errors() {
        let e = HttpSettings::resolve(&settings(&[]), "e", &vars(&[])).unwrap_err();
        assert!(e.to_string().contains("no `address`"), "{e}");
        let e = HttpSettings::resolve(&settings(&[("address", "ftp://x")]), "e", &vars(&[]))
            .unwrap_err();
        assert!(e.to_string().contains("http or https"), "{e}");
        let e = HttpSettings::resolve(
            &settings(&[("address", "http://x"), ("retry_max", "lots")]),
            "e",
            &vars(&[]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("retry_max"), "{e}");
        let e = HttpSettings::resolve(
            &settings(&[("address", "http://x"), ("lock_method", "NOT A METHOD")]),
            "e",
            &vars(&[]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("lock_method"), "{e}");
    }

    #[test]
    fn a_holder_echoed_back_by_gitlab_is_not_taken_for_the_requester() {
        let mine = LockInfo::new("apply", "state");
        // GitLab's 409: the holder's ID, Who and Created, our other fields.
        let echoed = LockInfo {
            id: "holder-id".to_owned(),
            who: "gitlab-user".to_owned(),
            created: "2026-01-01T00:00:00Z".to_owned(),
            ..mine.clone()
        };
        let holder = without_echo(echoed, &mine);
        assert_eq!(holder.pid, 0);
        assert!(holder.operation.starts_with("unknown"), "{holder:?}");
        assert_eq!(holder.id, "holder-id");
        assert!(!holder.is_stale());
        // A server that stores the holder's own info keeps it.
        let stored = LockInfo {
            id: "holder-id".to_owned(),
            pid: mine.pid.wrapping_add(1),
            ..mine.clone()
        };
        assert_eq!(without_echo(stored.clone(), &mine), stored);
    }

    #[test]
    fn urls_in_messages_lose_their_credentials() {
        assert_eq!(
            redact_url("https://u:secret@h/x?token=secret"),
            "https://h/x"
        );
        assert!(looks_like_gitlab_state(
            "https://g/api/v4/projects/1/terraform/state/p"
        ));
        assert!(!looks_like_gitlab_state("https://g/state/p"));
    }
}
