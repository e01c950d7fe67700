//! The connection to the DigitalOcean API v2: where it is (provider
//! `api_endpoint`, default <https://api.digitalocean.com>), the token
//! (provider `token`, else `DIGITALOCEAN_TOKEN`, else
//! `DIGITALOCEAN_ACCESS_TOKEN`), JSON calls through the shared
//! [`HttpClient`] (which retries 429 and 5xx answers honouring
//! `Retry-After` / `ratelimit-reset`), paged lists that follow
//! `links.pages.next`, waiting for actions, and DigitalOcean's error bodies
//! turned into [`ApiError`]s.
//!
//! The token lives in [`Token`], whose `Debug` prints `[redacted]`; it is
//! only ever put into the `Authorization` header, never into URLs, logs or
//! error messages.

use std::fmt;
use std::time::{Duration, Instant};

use berth_provider::http::{HttpClient, Idempotency, RetryPolicy};
use berth_provider::{Attrs, Progress, ProviderError, Value};
use reqwest::{Method, StatusCode, Url};

/// The public API, used when the provider block names no `api_endpoint`.
pub const DEFAULT_ENDPOINT: &str = "https://api.digitalocean.com";

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest page DigitalOcean serves.
pub(crate) const PER_PAGE: &str = "200";

/// A bound on the pages of one list, in case a server keeps sending `next`.
const MAX_PAGES: usize = 1000;

/// An API token. Its `Debug` and `Display` never show it.
#[derive(Clone)]
pub(crate) struct Token(String);

impl Token {
    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token([redacted])")
    }
}

/// How waits poll: the first pause and the longest one (pauses grow by half
/// each time in between).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollTiming {
    /// The first pause.
    pub first: Duration,
    /// The longest pause.
    pub max: Duration,
}

impl Default for PollTiming {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(2),
            max: Duration::from_secs(10),
        }
    }
}

/// A growing pause between polls.
pub(crate) struct Poller {
    next: Duration,
    max: Duration,
}

impl Poller {
    pub(crate) fn new(timing: PollTiming) -> Self {
        Self {
            next: timing.first,
            max: timing.max.max(timing.first),
        }
    }

    /// Sleeps the next pause, never past `deadline`. Returns `false` when
    /// the deadline has passed.
    pub(crate) async fn pause(&mut self, deadline: Instant) -> bool {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let pause = self.next.min(deadline - now);
        tokio::time::sleep(pause).await;
        self.next = self.next.mul_f64(1.5).min(self.max);
        true
    }
}

/// A failed call: DigitalOcean's own answer, or no answer at all.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// The API answered with an error status.
    #[error("DigitalOcean API: {status} {id}: {message}{}{hint}", request_id.as_deref().map(|r| format!(" (request id {r})")).unwrap_or_default())]
    Status {
        /// The HTTP status code.
        status: u16,
        /// DigitalOcean's error id (`not_found`, `unprocessable_entity`).
        id: String,
        /// DigitalOcean's message.
        message: String,
        /// The request id to quote to DigitalOcean's support.
        request_id: Option<String>,
        /// What berth suggests, e.g. for 401 which token it used.
        hint: String,
    },
    /// The request never got an answer, or the answer made no sense.
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

impl ApiError {
    /// Whether the API said the object does not exist.
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, Self::Status { status: 404, .. })
    }

    /// Whether the API refused the request as unprocessable.
    pub(crate) fn is_unprocessable(&self) -> bool {
        matches!(self, Self::Status { status: 422, .. })
    }

    /// Prefixes the error with what was being done, as a [`ProviderError`].
    pub(crate) fn context(self, doing: impl fmt::Display) -> ProviderError {
        match self {
            Self::Provider(ProviderError::Api(m)) => ProviderError::Api(format!("{doing}: {m}")),
            Self::Provider(other) => other,
            status => ProviderError::Api(format!("{doing}: {status}")),
        }
    }
}

impl From<ApiError> for ProviderError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Provider(p) => p,
            status => ProviderError::Api(status.to_string()),
        }
    }
}

/// Where the token came from, to name it in a 401 hint.
#[derive(Clone, Copy, Debug)]
enum TokenSource {
    Provider,
    Env(&'static str),
}

/// A configured connection.
#[derive(Debug)]
pub(crate) struct Api {
    http: HttpClient,
    base: Url,
    token: Token,
    token_source: TokenSource,
    pub(crate) timing: PollTiming,
}

fn config_string(config: &Attrs, key: &str) -> Result<Option<String>, ProviderError> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
        Some(_) => Err(ProviderError::Config(format!(
            "provider \"digitalocean\": `{key}` must be a string"
        ))),
    }
}

fn config_number(config: &Attrs, key: &str) -> Result<Option<f64>, ProviderError> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) => s.trim().parse::<f64>().map(Some).map_err(|_| {
            ProviderError::Config(format!(
                "provider \"digitalocean\": `{key}` must be a number"
            ))
        }),
        Some(_) => Err(ProviderError::Config(format!(
            "provider \"digitalocean\": `{key}` must be a number"
        ))),
    }
}

/// The provider block's keys berth reads; Terraform's Spaces keys are
/// accepted and ignored.
const KNOWN_KEYS: &[&str] = &[
    "token",
    "api_endpoint",
    "http_retry_max",
    "http_retry_wait_min",
    "http_retry_wait_max",
    "requests_per_second",
    "spaces_endpoint",
    "spaces_access_id",
    "spaces_secret_key",
];

impl Api {
    /// Connects as the `provider "digitalocean"` block says. Makes no call.
    pub(crate) fn from_config(
        config: &Attrs,
        env: impl Fn(&str) -> Option<String>,
        timing: PollTiming,
        policy: Option<RetryPolicy>,
    ) -> Result<Self, ProviderError> {
        for key in config.keys() {
            if !KNOWN_KEYS.contains(&key.as_str()) {
                tracing::warn!(key = %key, "provider \"digitalocean\": ignoring unknown setting");
            }
        }
        let (token, token_source) = match config_string(config, "token")? {
            Some(t) => (t, TokenSource::Provider),
            None => {
                let from_env = ["DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN"]
                    .into_iter()
                    .find_map(|name| {
                        env(name)
                            .map(|v| v.trim().to_owned())
                            .filter(|v| !v.is_empty())
                            .map(|v| (v, TokenSource::Env(name)))
                    });
                from_env.ok_or_else(|| {
                    ProviderError::Config(
                        "provider \"digitalocean\": no API token; set DIGITALOCEAN_TOKEN \
                         (or DIGITALOCEAN_ACCESS_TOKEN), or `token` in the provider block"
                            .to_owned(),
                    )
                })?
            }
        };
        if token.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(ProviderError::Config(
                "provider \"digitalocean\": the token contains whitespace or control characters"
                    .to_owned(),
            ));
        }
        let endpoint = match config_string(config, "api_endpoint")? {
            Some(e) => e,
            None => env("DIGITALOCEAN_API_URL")
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned()),
        };
        let mut base = Url::parse(endpoint.trim()).map_err(|e| {
            ProviderError::Config(format!(
                "provider \"digitalocean\": `api_endpoint` {endpoint:?} is not a URL: {e}"
            ))
        })?;
        if !matches!(base.scheme(), "https" | "http") || base.cannot_be_a_base() {
            return Err(ProviderError::Config(format!(
                "provider \"digitalocean\": `api_endpoint` {endpoint:?} must be an http(s) URL"
            )));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }

        let mut policy = policy.unwrap_or_default();
        if let Some(n) = config_number(config, "http_retry_max")? {
            policy.max_retries = n.clamp(0.0, 100.0) as u32;
        }
        if let Some(s) = config_number(config, "http_retry_wait_min")? {
            policy.base_delay = Duration::from_secs_f64(s.clamp(0.0, 3600.0));
        }
        if let Some(s) = config_number(config, "http_retry_wait_max")? {
            policy.max_delay = Duration::from_secs_f64(s.clamp(0.0, 3600.0));
        }
        Ok(Self {
            http: HttpClient::with_policy(REQUEST_TIMEOUT, policy)?,
            base,
            token: Token(token),
            token_source,
            timing,
        })
    }

    /// How many retries the HTTP client has made.
    pub(crate) fn retries(&self) -> u64 {
        self.http.retries()
    }

    /// The URL of `segments` under the API base; each segment is
    /// percent-encoded as needed (tag names hold colons).
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn hint(&self, status: u16) -> String {
        if status != 401 {
            return String::new();
        }
        match self.token_source {
            TokenSource::Provider => {
                "; check the `token` of the provider \"digitalocean\" block".to_owned()
            }
            TokenSource::Env(name) => format!("; check the token in {name}"),
        }
    }

    /// Sends one request and returns the JSON body of a successful answer
    /// (`Value::Null` for 204).
    pub(crate) async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Value, ApiError> {
        let idempotency = if method == Method::POST && !acts_once(&url) {
            Idempotency::Unsafe
        } else {
            Idempotency::Safe
        };
        let response = self
            .http
            .send(what, idempotency, |client| {
                let request = client
                    .request(method.clone(), url.clone())
                    .bearer_auth(self.token.expose())
                    .header(reqwest::header::ACCEPT, "application/json");
                match body {
                    Some(b) => request.json(b),
                    None => request,
                }
            })
            .await?;
        let status = response.status();
        if let Some(remaining) = response
            .headers()
            .get("ratelimit-remaining")
            .and_then(|v| v.to_str().ok())
        {
            tracing::trace!(request = what, remaining, "DigitalOcean rate limit");
        }
        let text = response.text().await.map_err(|e| {
            ApiError::Provider(ProviderError::Unreachable {
                what: what.to_owned(),
                message: format!("the response was cut short: {e}"),
            })
        })?;
        if status.is_success() {
            if status == StatusCode::NO_CONTENT || text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text).map_err(|e| {
                ApiError::Provider(ProviderError::Api(format!(
                    "DigitalOcean API: {what}: the answer is not JSON: {e}"
                )))
            });
        }
        Err(self.status_error(status, &text))
    }

    fn status_error(&self, status: StatusCode, text: &str) -> ApiError {
        let body: Option<Value> = serde_json::from_str(text).ok();
        let field = |k: &str| {
            body.as_ref()
                .and_then(|b| b.get(k))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let id = field("id").unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("error")
                .to_ascii_lowercase()
                .replace(' ', "_")
        });
        let message = field("message").unwrap_or_else(|| {
            let t = text.trim();
            if t.is_empty() {
                "no message".to_owned()
            } else {
                t.chars().take(300).collect()
            }
        });
        ApiError::Status {
            status: status.as_u16(),
            id,
            message,
            request_id: field("request_id"),
            hint: self.hint(status.as_u16()),
        }
    }

    /// `GET` of one object.
    pub(crate) async fn get(&self, segments: &[&str], what: &str) -> Result<Value, ApiError> {
        self.call(Method::GET, self.url(segments), None, what).await
    }

    /// Every item under `key` of a paged list, following `links.pages.next`
    /// (absolute URLs, which must stay on the API's origin: the token is
    /// never sent elsewhere).
    pub(crate) async fn list_all(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
        key: &str,
        what: &str,
    ) -> Result<Vec<Value>, ApiError> {
        let mut url = self.url(segments);
        {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
            pairs.append_pair("per_page", PER_PAGE);
        }
        let mut items = Vec::new();
        let mut seen = Vec::new();
        for _ in 0..MAX_PAGES {
            let page = self.call(Method::GET, url.clone(), None, what).await?;
            match page.get(key) {
                Some(Value::Array(list)) => items.extend(list.iter().cloned()),
                Some(Value::Null) | None => {}
                Some(_) => {
                    return Err(ApiError::Provider(ProviderError::Api(format!(
                        "DigitalOcean API: {what}: `{key}` is not a list"
                    ))));
                }
            }
            let next = page
                .pointer("/links/pages/next")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty());
            let Some(next) = next else {
                return Ok(items);
            };
            let next = self.base.join(next).map_err(|e| {
                ApiError::Provider(ProviderError::Api(format!(
                    "DigitalOcean API: {what}: bad next-page link: {e}"
                )))
            })?;
            if next.origin() != self.base.origin() {
                return Err(ApiError::Provider(ProviderError::Api(format!(
                    "DigitalOcean API: {what}: the next-page link points to another host ({}); \
                     not following it with the token",
                    next.origin().ascii_serialization()
                ))));
            }
            seen.push(url);
            if seen.contains(&next) {
                return Err(ApiError::Provider(ProviderError::Api(format!(
                    "DigitalOcean API: {what}: the next-page links go round in a circle"
                ))));
            }
            url = next;
        }
        Err(ApiError::Provider(ProviderError::Api(format!(
            "DigitalOcean API: {what}: more than {MAX_PAGES} pages"
        ))))
    }

    /// Posts a droplet action (`{"type": "rename", ...}`) and waits until it
    /// completes, up to `deadline`.
    pub(crate) async fn droplet_action(
        &self,
        droplet_id: &str,
        body: Value,
        deadline: Instant,
        progress: Progress<'_>,
    ) -> Result<(), ProviderError> {
        let kind = body
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("action")
            .to_owned();
        let what = format!("{kind} of droplet {droplet_id}");
        let answer = self
            .call(
                Method::POST,
                self.url(&["v2", "droplets", droplet_id, "actions"]),
                Some(&body),
                &what,
            )
            .await
            .map_err(|e| e.context(format!("cannot start the {what}")))?;
        let action_id = answer
            .pointer("/action/id")
            .and_then(|v| crate::attrs::json_text(Some(v)))
            .ok_or_else(|| {
                ProviderError::Api(format!(
                    "DigitalOcean API: the {what} was accepted without an action id"
                ))
            })?;
        progress(&format!(
            "{kind} action {action_id} started, waiting for it to complete"
        ));
        let mut status = answer
            .pointer("/action/status")
            .and_then(Value::as_str)
            .unwrap_or("in-progress")
            .to_owned();
        let mut poller = Poller::new(self.timing);
        loop {
            match status.as_str() {
                "completed" => return Ok(()),
                "errored" => {
                    return Err(ProviderError::Api(format!(
                        "DigitalOcean API: the {what} (action {action_id}) errored"
                    )));
                }
                _ => {}
            }
            if !poller.pause(deadline).await {
                return Err(ProviderError::Timeout(format!(
                    "the {what} (action {action_id}) is still {status}"
                )));
            }
            let action = self
                .get(
                    &["v2", "actions", &action_id],
                    &format!("action {action_id}"),
                )
                .await
                .map_err(|e| e.context(format!("cannot read the {what}")))?;
            status = action
                .pointer("/action/status")
                .and_then(Value::as_str)
                .unwrap_or("in-progress")
                .to_owned();
        }
    }
}

/// Tag endpoints (`/v2/tags`), used to tag and untag droplets in place and
/// to create the tags a firewall refers to (which must exist).
impl Api {
    /// Creates `tag` if it does not exist yet. DigitalOcean answers 201 for
    /// an existing tag too; a refusal is logged and left to the call that
    /// uses the tag to report.
    pub(crate) async fn ensure_tag(&self, tag: &str) -> Result<(), ProviderError> {
        match self
            .call(
                Method::POST,
                self.url(&["v2", "tags"]),
                Some(&serde_json::json!({ "name": tag })),
                &format!("create tag {tag}"),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(
                e @ ApiError::Status {
                    status: 409 | 422, ..
                },
            ) => {
                tracing::debug!(tag, "tag not created: {e}");
                Ok(())
            }
            Err(e) => Err(e.context(format!("cannot create tag {tag}"))),
        }
    }

    /// Tags (`add`) or untags (`!add`) one droplet.
    pub(crate) async fn tag_droplet(
        &self,
        tag: &str,
        droplet_id: &str,
        add: bool,
    ) -> Result<(), ProviderError> {
        let body = serde_json::json!({
            "resources": [{ "resource_id": droplet_id, "resource_type": "droplet" }]
        });
        let (method, doing) = if add {
            (Method::POST, "tag")
        } else {
            (Method::DELETE, "untag")
        };
        match self
            .call(
                method,
                self.url(&["v2", "tags", tag, "resources"]),
                Some(&body),
                &format!("{doing} droplet {droplet_id}"),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if !add && e.is_not_found() => Ok(()),
            Err(e) => Err(e.context(format!("cannot {doing} droplet {droplet_id} with {tag}"))),
        }
    }
}

/// Whether a `POST` to `url` acts once however often it is sent, so that
/// it may be retried after a 500 or a lost answer: creating a tag (an
/// existing one answers 201 too) and tagging resources (tagging twice is
/// tagging once).
fn acts_once(url: &Url) -> bool {
    let path = url.path().trim_end_matches('/');
    path.ends_with("/v2/tags") || (path.contains("/v2/tags/") && path.ends_with("/resources"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env_none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn token_is_never_printed() {
        let config = Attrs::from([("token".to_owned(), json!("dop_v1_secret"))]);
        let api = Api::from_config(&config, env_none, PollTiming::default(), None).unwrap();
        let shown = format!("{api:?}");
        assert!(!shown.contains("dop_v1_secret"), "{shown}");
    }

    #[test]
    fn token_comes_from_env_in_order() {
        let env = |name: &str| match name {
            "DIGITALOCEAN_ACCESS_TOKEN" => Some("b".to_owned()),
            _ => None,
        };
        let api = Api::from_config(&Attrs::new(), env, PollTiming::default(), None).unwrap();
        assert_eq!(api.token.expose(), "b");
        assert_eq!(api.base.as_str(), "https://api.digitalocean.com/");
        let err = Api::from_config(&Attrs::new(), env_none, PollTiming::default(), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("DIGITALOCEAN_TOKEN"), "{err}");
    }

    /// Regression (RELIABILITY.md, R2): a 500 on tagging a droplet failed
    /// the apply although a retry cannot act twice.
    #[test]
    fn tag_calls_are_retried_and_creates_are_not() {
        let url = |p: &str| Url::parse(&format!("http://127.0.0.1:9/base{p}")).unwrap();
        assert!(acts_once(&url("/v2/tags")));
        assert!(acts_once(&url("/v2/tags/berth-env:prod/resources")));
        assert!(!acts_once(&url("/v2/droplets")));
        assert!(!acts_once(&url("/v2/droplets/1/actions")));
        assert!(!acts_once(&url("/v2/firewalls")));
    }

    #[test]
    fn urls_encode_segments() {
        let config = Attrs::from([
            ("token".to_owned(), json!("t")),
            ("api_endpoint".to_owned(), json!("http://127.0.0.1:9/base")),
        ]);
        let api = Api::from_config(&config, env_none, PollTiming::default(), None).unwrap();
        assert_eq!(
            api.url(&["v2", "tags", "berth-env:prod", "resources"])
                .as_str(),
            "http://127.0.0.1:9/base/v2/tags/berth-env:prod/resources"
        );
        assert_eq!(
            api.url(&["v2", "tags", "a/b"]).as_str(),
            "http://127.0.0.1:9/base/v2/tags/a%2Fb"
        );
    }

    #[test]
    fn errors_name_digitalocean_message_and_request_id() {
        let config = Attrs::from([("token".to_owned(), json!("t"))]);
        let api = Api::from_config(&config, env_none, PollTiming::default(), None).unwrap();
        let e = api.status_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            r#"{"id":"unprocessable_entity","message":"SSH Key is already in use on your account","request_id":"r-1"}"#,
        );
        assert_eq!(
            e.to_string(),
            "DigitalOcean API: 422 unprocessable_entity: SSH Key is already in use on your \
             account (request id r-1)"
        );
        let e = api.status_error(StatusCode::UNAUTHORIZED, "");
        assert!(e.to_string().contains("401 unauthorized"), "{e}");
        assert!(e.to_string().contains("provider \"digitalocean\""), "{e}");
    }
}
