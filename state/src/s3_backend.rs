//! State in an S3-compatible object store (AWS S3, MinIO, moto, …), one
//! JSON object per environment, every request signed with SigV4.
//!
//! # Settings
//!
//! | Setting | Default | Meaning |
//! |---|---|---|
//! | `bucket` | required | the bucket (it must exist; [`S3Backend::create_bucket`] makes one) |
//! | `key` | `berth/{env}.json` | the object key; see below |
//! | `region` | `AWS_REGION`, `AWS_DEFAULT_REGION`, else `us-east-1` | signing region |
//! | `endpoint` | `https://s3.<region>.amazonaws.com` | e.g. `http://127.0.0.1:5000` for moto |
//! | `force_path_style` | `true` when `endpoint` is set, else `false` | `endpoint/bucket/key` instead of `bucket.endpoint/key` |
//! | `access_key`, `secret_key`, `session_token` | `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` | credentials; the secret and token are never shown |
//!
//! # Object keys
//!
//! `{env}` in `key` is replaced by the environment name with every byte
//! outside `[A-Za-z0-9._-]` percent-encoded (as the sled store names its
//! directories), so `review/feat-x` stays one path segment:
//! `berth/review%2Ffeat-x.json`. A `key` without `{env}` is laid out like
//! Terraform's S3 workspaces: `env:/<env>/<key>`.
//!
//! # Locking
//!
//! As Terraform 1.10+'s `use_lockfile`: the lock is the object
//! `<state key>.tflock`, holding Terraform's lock info JSON, created with
//! `PutObject` and `If-None-Match: *`, so of two lockers exactly one
//! succeeds and the other gets 412 and then [`StateError::Locked`] with the
//! holder read from the object. Unlock reads the object, checks its `ID` and
//! deletes it. (moto 5.2 honours `If-None-Match: *` on `PutObject`: the
//! second write gets 412; the tests check it.)
//!
//! # Writes
//!
//! Every write puts the whole document (`{"version": 1, "lineage", "serial",
//! "resources", "outputs"}`) with
//! `If-Match: <ETag of the version last read>` (or `If-None-Match: *` for
//! the first), so a concurrent writer makes the write fail rather than be
//! overwritten, then reads the object back and checks serial and lineage
//! before returning. S3 replaces objects atomically: a reader sees the old
//! document or the new one, never half of one.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use reqwest::{Method, StatusCode, Url};

use crate::remote::{self, Change, DocSession, DocStore, Fetched, Prior, TfLockInfo};
use crate::sled_backend::{escape_env, unescape_env};
use crate::{LockInfo, OutputRecord, ResourceRecord, Snapshot, StateBackend, StateError, StateKey};

/// Every setting the `s3` backend accepts.
pub const SETTINGS: &[&str] = &[
    "bucket",
    "key",
    "region",
    "endpoint",
    "force_path_style",
    "access_key",
    "secret_key",
    "session_token",
];

const KIND: &str = "s3";
const DEFAULT_KEY: &str = "berth/{env}.json";
const LOCK_SUFFIX: &str = ".tflock";
/// Tries per request when the store answers 5xx or 429 or the connection
/// fails.
const ATTEMPTS: u32 = 4;

/// The `s3` backend's settings.
#[derive(Clone, PartialEq)]
pub struct S3Settings {
    /// The bucket.
    pub bucket: String,
    /// The key template (`{env}` is replaced).
    pub key: String,
    /// The signing region.
    pub region: String,
    /// The endpoint URL, e.g. `http://127.0.0.1:5000`.
    pub endpoint: String,
    /// Address objects as `endpoint/bucket/key`.
    pub force_path_style: bool,
    /// Access key id.
    pub access_key: String,
    /// Secret access key (never shown).
    pub secret_key: String,
    /// Session token of temporary credentials (never shown).
    pub session_token: Option<String>,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("key", &self.key)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("force_path_style", &self.force_path_style)
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl S3Settings {
    /// Settings from a backend block, with credentials and region looked up
    /// by `var` (`AWS_*`) when missing.
    pub fn resolve(
        settings: &BTreeMap<String, String>,
        var: &dyn Fn(&str) -> Option<String>,
    ) -> Result<S3Settings, StateError> {
        remote::check_settings(KIND, settings, SETTINGS)?;
        let var = |k: &str| var(k).filter(|v| !v.is_empty());
        let bucket = settings
            .get("bucket")
            .cloned()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| config("`bucket` is required".to_owned()))?;
        if bucket.contains('/') {
            return Err(config(format!("`bucket` may not contain `/`: `{bucket}`")));
        }
        let key = settings
            .get("key")
            .cloned()
            .unwrap_or_else(|| DEFAULT_KEY.to_owned());
        if key.is_empty() || key.starts_with('/') {
            return Err(config(format!(
                "`key` must be a relative object key, not `{key}`"
            )));
        }
        let region = settings
            .get("region")
            .cloned()
            .or_else(|| var("AWS_REGION"))
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".to_owned());
        let (endpoint, explicit) = match settings.get("endpoint") {
            Some(e) => (e.trim_end_matches('/').to_owned(), true),
            None => (format!("https://s3.{region}.amazonaws.com"), false),
        };
        match Url::parse(&endpoint) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
            _ => {
                return Err(config(format!(
                    "`endpoint` must be an http or https URL, not `{endpoint}`"
                )));
            }
        }
        let force_path_style = match settings.get("force_path_style") {
            Some(v) => remote::parse_bool(KIND, "force_path_style", v)?,
            None => explicit,
        };
        let access_key = settings
            .get("access_key")
            .cloned()
            .or_else(|| var("AWS_ACCESS_KEY_ID"));
        let secret_key = settings
            .get("secret_key")
            .cloned()
            .or_else(|| var("AWS_SECRET_ACCESS_KEY"));
        let (Some(access_key), Some(secret_key)) = (access_key, secret_key) else {
            return Err(config(
                "no credentials: set `access_key` and `secret_key`, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                    .to_owned(),
            ));
        };
        let session_token = settings
            .get("session_token")
            .cloned()
            .or_else(|| var("AWS_SESSION_TOKEN"));
        Ok(S3Settings {
            bucket,
            key,
            region,
            endpoint,
            force_path_style,
            access_key,
            secret_key,
            session_token,
        })
    }

    /// The state object's key for `env`.
    pub fn object_key(&self, env: &str) -> String {
        let escaped = escape_env(env);
        if self.key.contains("{env}") {
            self.key.replace("{env}", &escaped)
        } else {
            format!("env:/{escaped}/{}", self.key)
        }
    }

    /// The prefix and suffix around the escaped environment name in every
    /// state key.
    fn key_frame(&self) -> (String, String) {
        match self.key.split_once("{env}") {
            Some((prefix, suffix)) => (prefix.to_owned(), suffix.to_owned()),
            None => ("env:/".to_owned(), format!("/{}", self.key)),
        }
    }
}

fn config(message: String) -> StateError {
    StateError::Config {
        backend: KIND.to_owned(),
        message,
    }
}

/// State in an S3-compatible store (see the module docs).
pub struct S3Backend {
    store: S3Store,
    key: StateKey,
    session: DocSession,
}

/// The signed requests, apart from the lock bookkeeping.
struct S3Store {
    settings: S3Settings,
    client: reqwest::Client,
    object_key: String,
    lock_key: String,
}

impl fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Backend")
            .field("object_key", &self.store.object_key)
            .field("settings", &self.store.settings)
            .finish_non_exhaustive()
    }
}

/// A store's answer.
struct Answer {
    status: StatusCode,
    etag: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    /// The `<Code>` of an S3 error document.
    fn code(&self) -> Option<String> {
        xml_values(&String::from_utf8_lossy(&self.body), "Code")
            .into_iter()
            .next()
    }
}

impl S3Backend {
    /// The backend for `env` from a backend block's settings, with `AWS_*`
    /// from the process environment and the state key in `local_dir` (or
    /// `BERTH_STATE_KEY`).
    pub fn open(
        settings: &BTreeMap<String, String>,
        env: &str,
        local_dir: &Path,
    ) -> Result<S3Backend, StateError> {
        let resolved = S3Settings::resolve(settings, &|k| std::env::var(k).ok())?;
        S3Backend::new(resolved, env, StateKey::load_or_create(local_dir)?)
    }

    /// The backend with settings already resolved.
    pub fn new(settings: S3Settings, env: &str, key: StateKey) -> Result<S3Backend, StateError> {
        let object_key = settings.object_key(env);
        let lock_key = format!("{object_key}{LOCK_SUFFIX}");
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .timeout(Duration::from_secs(300))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                config(format!(
                    "cannot set up the HTTP client: {}",
                    remote::error_chain(&e)
                ))
            })?;
        Ok(S3Backend {
            store: S3Store {
                settings,
                client,
                object_key,
                lock_key,
            },
            key,
            session: DocSession::default(),
        })
    }

    /// The state object's key.
    pub fn object_key(&self) -> &str {
        &self.store.object_key
    }

    /// The lock object's key (`<state key>.tflock`).
    pub fn lock_object_key(&self) -> &str {
        &self.store.lock_key
    }

    /// Creates the bucket (in the settings' region); a bucket that already
    /// exists and is ours is fine.
    pub async fn create_bucket(&self) -> Result<(), StateError> {
        self.store.create_bucket().await
    }

    /// Who holds the lock according to the lock object, if there is one.
    pub async fn lock_holder(&self) -> Result<Option<LockInfo>, StateError> {
        self.store.read_lock().await
    }

    /// The environments with a state object in the bucket, sorted.
    pub async fn list_envs(settings: &BTreeMap<String, String>) -> Result<Vec<String>, StateError> {
        let resolved = S3Settings::resolve(settings, &|k| std::env::var(k).ok())?;
        let backend = S3Backend::new(resolved, "-", StateKey::from_bytes([0; 32]))?;
        backend.store.list_envs().await
    }

    async fn remove_lock(&self, id: &str) -> Result<(), StateError> {
        match self.store.read_lock().await? {
            Some(holder) if holder.id == id => {}
            other => {
                return Err(StateError::LockMismatch {
                    given: id.to_owned(),
                    current: other.map(|h| h.id),
                });
            }
        }
        let url = self.store.object_url(&self.store.lock_key, "");
        let answer = self
            .store
            .request(Method::DELETE, &url, Vec::new(), Vec::new(), "unlock")
            .await?;
        if answer.status.is_success() || answer.status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(self.store.status_error("unlock", &answer))
        }
    }
}

impl S3Store {
    /// `s3://bucket/key`, for messages.
    fn whence_of(&self, key: &str) -> String {
        let s = &self.settings;
        format!("s3://{}/{key} at {}", s.bucket, s.endpoint)
    }

    fn err(&self, key: &str, message: String) -> StateError {
        let s = &self.settings;
        let mut message = message.replace(&s.secret_key, "<redacted>");
        if let Some(t) = s.session_token.as_deref().filter(|t| !t.is_empty()) {
            message = message.replace(t, "<redacted>");
        }
        StateError::Store {
            path: self.whence_of(key),
            message,
        }
    }

    fn status_error(&self, what: &str, answer: &Answer) -> StateError {
        let text = String::from_utf8_lossy(&answer.body);
        let code = answer.code();
        let message = xml_values(&text, "Message").into_iter().next();
        let detail = match (code.as_deref(), message) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.to_owned(),
            _ => remote::snippet(&answer.body, 300),
        };
        let hint = match code.as_deref() {
            Some("NoSuchBucket") => {
                format!(" (create the bucket `{}` first)", self.settings.bucket)
            }
            Some("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch") => {
                " (check the credentials and the region)".to_owned()
            }
            _ => String::new(),
        };
        self.err(
            &self.object_key,
            format!("{what} failed with HTTP {}: {detail}{hint}", answer.status),
        )
    }

    /// The URL of the bucket (`key` empty) or of an object, with `query`
    /// (already encoded, sorted) appended.
    fn object_url(&self, key: &str, query: &str) -> String {
        let s = &self.settings;
        let path = remote::url_encode(key, true);
        let base = if s.force_path_style {
            format!("{}/{}", s.endpoint, remote::url_encode(&s.bucket, false))
        } else {
            match Url::parse(&s.endpoint) {
                Ok(u) => {
                    let host = u.host_str().unwrap_or_default();
                    let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
                    format!(
                        "{}://{}.{host}{port}{}",
                        u.scheme(),
                        s.bucket,
                        u.path().trim_end_matches('/')
                    )
                }
                Err(_) => s.endpoint.clone(),
            }
        };
        let mut url = format!("{base}/{path}");
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        url
    }

    /// Sends one signed request, retrying connection errors, 429 and 5xx.
    async fn request(
        &self,
        method: Method,
        url: &str,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
        what: &str,
    ) -> Result<Answer, StateError> {
        let mut attempt = 0;
        loop {
            let signed = self.sign(method.as_str(), url, &headers, &body)?;
            let mut req = self.client.request(method.clone(), url).body(body.clone());
            for (name, value) in headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.clone()))
                .chain(signed)
            {
                req = req.header(name, value);
            }
            let outcome = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let etag = resp
                        .headers()
                        .get("ETag")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    resp.bytes().await.map(|b| Answer {
                        status,
                        etag,
                        body: b.to_vec(),
                    })
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
            attempt += 1;
            if !retry || attempt >= ATTEMPTS {
                return outcome.map_err(|e| {
                    self.err(
                        &self.object_key,
                        format!(
                            "{what} request failed after {attempt} attempt{}: {}",
                            if attempt == 1 { "" } else { "s" },
                            remote::error_chain(&e.without_url())
                        ),
                    )
                });
            }
            tokio::time::sleep(remote::backoff(
                attempt - 1,
                Duration::from_millis(200),
                Duration::from_secs(5),
            ))
            .await;
        }
    }

    /// SigV4 headers for a request (S3 flavour: single-encoded path, no
    /// path normalisation, `x-amz-content-sha256`).
    fn sign(
        &self,
        method: &str,
        url: &str,
        headers: &[(&'static str, String)],
        body: &[u8],
    ) -> Result<Vec<(String, String)>, StateError> {
        let s = &self.settings;
        let identity: Identity = Credentials::new(
            s.access_key.clone(),
            s.secret_key.clone(),
            s.session_token.clone(),
            None,
            "berth-s3-backend",
        )
        .into();
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let fail = |what: &str, e: &dyn std::error::Error| {
            self.err(
                &self.object_key,
                format!("cannot sign the request ({what}): {e}"),
            )
        };
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&s.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| fail("parameters", &e))?
            .into();
        let signable = SignableRequest::new(
            method,
            url,
            headers.iter().map(|(n, v)| (*n, v.as_str())),
            SignableBody::Bytes(body),
        )
        .map_err(|e| fail("request", &e))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| fail("signature", &e))?
            .into_parts();
        Ok(instructions
            .headers()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect())
    }

    async fn create_bucket(&self) -> Result<(), StateError> {
        let s = &self.settings;
        let body = if s.region == "us-east-1" {
            Vec::new()
        } else {
            format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                s.region
            )
            .into_bytes()
        };
        let url = self.object_url("", "");
        let answer = self
            .request(Method::PUT, &url, Vec::new(), body, "create bucket")
            .await?;
        if answer.status.is_success() || answer.code().as_deref() == Some("BucketAlreadyOwnedByYou")
        {
            Ok(())
        } else {
            Err(self.status_error("create bucket", &answer))
        }
    }

    /// The object `key`, or `None` when it does not exist.
    async fn get(&self, key: &str, what: &str) -> Result<Option<Answer>, StateError> {
        let url = self.object_url(key, "");
        let answer = self
            .request(Method::GET, &url, Vec::new(), Vec::new(), what)
            .await?;
        match answer.status {
            StatusCode::OK => Ok(Some(answer)),
            StatusCode::NOT_FOUND if answer.code().as_deref() != Some("NoSuchBucket") => Ok(None),
            _ => Err(self.status_error(what, &answer)),
        }
    }

    async fn read_lock(&self) -> Result<Option<LockInfo>, StateError> {
        let Some(answer) = self.get(&self.lock_key, "read the lock").await? else {
            return Ok(None);
        };
        TfLockInfo::parse(&answer.body)
            .map(Some)
            .ok_or_else(|| StateError::Corrupt {
                key: self.whence_of(&self.lock_key),
                message: format!(
                    "the lock object is not lock info ({}); if no berth is using this state, delete it",
                    remote::snippet(&answer.body, 200)
                ),
            })
    }

    /// Creates the lock object unless it exists; `Ok(false)` when it does.
    async fn put_lock(&self, info: &LockInfo) -> Result<bool, StateError> {
        let body = serde_json::to_vec(&TfLockInfo::from_info(info))
            .map_err(|e| self.err(&self.lock_key, format!("cannot encode the lock: {e}")))?;
        let url = self.object_url(&self.lock_key, "");
        let headers = vec![
            ("content-type", "application/json".to_owned()),
            ("if-none-match", "*".to_owned()),
        ];
        let answer = self
            .request(Method::PUT, &url, headers, body, "lock")
            .await?;
        match answer.status {
            s if s.is_success() => Ok(true),
            // 409 is AWS's ConditionalRequestConflict: another conditional
            // write to the same key is in flight.
            StatusCode::PRECONDITION_FAILED | StatusCode::CONFLICT => Ok(false),
            _ => Err(self.status_error("lock", &answer)),
        }
    }

    async fn list_envs(&self) -> Result<Vec<String>, StateError> {
        let (prefix, suffix) = self.settings.key_frame();
        let mut envs = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![
                ("list-type".to_owned(), "2".to_owned()),
                ("prefix".to_owned(), prefix.clone()),
            ];
            if let Some(t) = &token {
                query.push(("continuation-token".to_owned(), t.clone()));
            }
            query.sort();
            let query = query
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}={}",
                        remote::url_encode(k, false),
                        remote::url_encode(v, false)
                    )
                })
                .collect::<Vec<_>>()
                .join("&");
            let url = self.object_url("", &query);
            let answer = self
                .request(Method::GET, &url, Vec::new(), Vec::new(), "list states")
                .await?;
            if !answer.status.is_success() {
                return Err(self.status_error("list states", &answer));
            }
            let text = String::from_utf8_lossy(&answer.body);
            for key in xml_values(&text, "Key") {
                let Some(middle) = key
                    .strip_prefix(&prefix)
                    .and_then(|rest| rest.strip_suffix(&suffix))
                else {
                    continue;
                };
                if key.ends_with(LOCK_SUFFIX) && !suffix.ends_with(LOCK_SUFFIX) {
                    continue;
                }
                if let Some(env) = unescape_env(middle) {
                    envs.push(env);
                }
            }
            let truncated =
                xml_values(&text, "IsTruncated").first().map(String::as_str) == Some("true");
            token = xml_values(&text, "NextContinuationToken")
                .into_iter()
                .next();
            if !truncated || token.is_none() {
                break;
            }
        }
        envs.sort();
        envs.dedup();
        Ok(envs)
    }
}

#[async_trait::async_trait]
impl DocStore for S3Store {
    async fn fetch(&self) -> Result<Option<Fetched>, StateError> {
        let Some(answer) = self.get(&self.object_key, "read").await? else {
            return Ok(None);
        };
        let doc = remote::Document::decode(&answer.body, &self.whence_of(&self.object_key))?;
        Ok(Some(Fetched {
            doc,
            tag: answer.etag,
        }))
    }

    async fn store(
        &self,
        bytes: &[u8],
        prior: &Prior,
        _lock_id: Option<&str>,
    ) -> Result<(), StateError> {
        let url = self.object_url(&self.object_key, "");
        let mut headers = vec![("content-type", "application/json".to_owned())];
        match prior {
            Prior::Absent => headers.push(("if-none-match", "*".to_owned())),
            Prior::Tag(etag) => headers.push(("if-match", etag.clone())),
            Prior::Any => {}
        }
        let answer = self
            .request(Method::PUT, &url, headers, bytes.to_vec(), "write")
            .await?;
        match answer.status {
            s if s.is_success() => Ok(()),
            StatusCode::PRECONDITION_FAILED | StatusCode::CONFLICT => Err(self.err(
                &self.object_key,
                "write refused: the state object changed since berth read it (another process is writing this state without the lock?)".to_owned(),
            )),
            _ => Err(self.status_error("write", &answer)),
        }
    }

    fn whence(&self) -> String {
        self.whence_of(&self.object_key)
    }
}

#[async_trait::async_trait]
impl StateBackend for S3Backend {
    async fn lock(&self, info: &LockInfo) -> Result<(), StateError> {
        if let Some(current) = self.session.current().await {
            return Err(StateError::Locked {
                holder: Box::new(current),
                stale: false,
            });
        }
        // The holder may unlock between our refused write and our read: try
        // again a few times.
        for _ in 0..3 {
            if self.store.put_lock(info).await? {
                self.session.begin(info, true).await;
                return Ok(());
            }
            match self.store.read_lock().await? {
                // Our own lock, from a retried request whose first try got
                // through.
                Some(holder) if holder.id == info.id => {
                    self.session.begin(info, true).await;
                    return Ok(());
                }
                Some(holder) => {
                    let stale = holder.is_stale();
                    return Err(StateError::Locked {
                        holder: Box::new(holder),
                        stale,
                    });
                }
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        Err(self.store.err(
            &self.store.lock_key,
            "the lock object keeps appearing and vanishing".to_owned(),
        ))
    }

    async fn unlock(&self, id: &str) -> Result<(), StateError> {
        self.session.check(id).await?;
        let result = self.remove_lock(id).await;
        if matches!(result, Ok(()) | Err(StateError::LockMismatch { .. })) {
            // Either released, or the lock is no longer ours anyway.
            self.session.end().await;
        }
        result
    }

    async fn force_unlock(&self, id: &str) -> Result<(), StateError> {
        self.remove_lock(id).await?;
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
        format!("s3 state at {}", self.store.whence())
    }
}

/// The text of every `<tag>…</tag>` in `xml`, entities decoded. Enough for
/// S3's flat answers (error documents, `ListObjectsV2`).
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else {
            break;
        };
        out.push(xml_unescape(&after[..end]));
        rest = &after[end + close.len()..];
    }
    out
}

fn xml_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp..];
        let Some(semi) = after.find(';') else {
            out.push_str(after);
            return out;
        };
        let entity = &after[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e => e
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| e.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &after[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn creds(k: &str) -> Option<String> {
        match k {
            "AWS_ACCESS_KEY_ID" => Some("AKID".to_owned()),
            "AWS_SECRET_ACCESS_KEY" => Some("very-secret".to_owned()),
            _ => None,
        }
    }

    #[test]
    fn defaults_and_key_layouts() {
        let s = S3Settings::resolve(&settings(&[("bucket", "b")]), &creds).unwrap();
        assert_eq!(s.region, "us-east-1");
        assert_eq!(s.endpoint, "https://s3.us-east-1.amazonaws.com");
        assert!(!s.force_path_style);
        assert_eq!(s.object_key("review/feat-x"), "berth/review%2Ffeat-x.json");
        assert!(!format!("{s:?}").contains("very-secret"));

        let tf = S3Settings::resolve(
            &settings(&[
                ("bucket", "b"),
                ("key", "app/state.json"),
                ("endpoint", "http://127.0.0.1:9/"),
            ]),
            &creds,
        )
        .unwrap();
        assert!(tf.force_path_style);
        assert_eq!(tf.endpoint, "http://127.0.0.1:9");
        assert_eq!(tf.object_key("prod"), "env:/prod/app/state.json");
        assert_eq!(
            tf.key_frame(),
            ("env:/".to_owned(), "/app/state.json".to_owned())
        );
    }

    #[test]
    fn urls_are_encoded_once_in_both_styles() {
        let mut s = S3Settings::resolve(
            &settings(&[("bucket", "b"), ("endpoint", "http://127.0.0.1:9")]),
            &creds,
        )
        .unwrap();
        let b = S3Backend::new(s.clone(), "a b", StateKey::from_bytes([0; 32])).unwrap();
        assert_eq!(
            b.store.object_url(b.object_key(), ""),
            "http://127.0.0.1:9/b/berth/a%2520b.json"
        );
        s.force_path_style = false;
        let b = S3Backend::new(s, "x", StateKey::from_bytes([0; 32])).unwrap();
        assert_eq!(
            b.store.object_url(b.lock_object_key(), ""),
            "http://b.127.0.0.1:9/berth/x.json.tflock"
        );
    }

    #[test]
    fn missing_credentials_and_bucket_are_config_errors() {
        let e = S3Settings::resolve(&settings(&[("bucket", "b")]), &|_| None).unwrap_err();
        assert!(e.to_string().contains("AWS_ACCESS_KEY_ID"), "{e}");
        let e = S3Settings::resolve(&settings(&[]), &creds).unwrap_err();
        assert!(e.to_string().contains("`bucket`"), "{e}");
    }

    #[test]
    fn xml_values_decode_entities() {
        let xml = "<R><Key>a&amp;b</Key><Key>c&#x41;&lt;</Key><IsTruncated>false</IsTruncated></R>";
        assert_eq!(xml_values(xml, "Key"), ["a&b", "cA<"]);
        assert_eq!(xml_values(xml, "IsTruncated"), ["false"]);
        assert!(xml_values(xml, "Nope").is_empty());
        assert_eq!(xml_unescape("a & b &bogus; c"), "a & b &bogus; c");
    }
}
