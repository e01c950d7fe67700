//! The connection to AWS: EC2's Query protocol (form-encoded `POST` of
//! `Action=...&Version=2016-11-15`, XML replies) and ECR's JSON 1.1
//! protocol (`X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.<Op>`),
//! every request signed with SigV4 (`aws-sigv4`, no SDK) and sent through
//! the shared [`HttpClient`], which retries 429 and 5xx answers honouring
//! `Retry-After`. AWS's throttling errors that arrive as HTTP 400
//! (`RequestLimitExceeded`, `ThrottlingException`, ...) are retried here
//! with a growing pause, since the request was refused, not acted on.
//!
//! Errors keep AWS's words: `EC2 API: InvalidAMIID.NotFound: The image id
//! '[ami-x]' does not exist (request id ...)`. The secret key and session
//! token never appear in errors, logs or `Debug` output: they only go into
//! the signer, and any echo of them in an answer is replaced by
//! `[redacted]`.
//!
//! Every HTTP attempt is counted by action (see
//! [`crate::AwsProvider::request_counts`]), so tests can check that a
//! refresh is one paged list call.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials as AwsCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use berth_provider::http::{HttpClient, Idempotency, RetryPolicy};
use berth_provider::{ProviderError, Value};
use reqwest::Url;
use serde::de::DeserializeOwned;

use crate::settings::{CredentialSource, Settings};
use crate::xml;

/// The EC2 API version berth speaks.
pub(crate) const EC2_VERSION: &str = "2016-11-15";

/// ECR's JSON target prefix.
const ECR_TARGET: &str = "AmazonEC2ContainerRegistry_V20150921";

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A bound on the pages of one list, in case a server keeps sending tokens.
const MAX_PAGES: usize = 10_000;

/// Attempts at a request AWS refused as throttled (HTTP 400 codes).
const THROTTLE_ATTEMPTS: u32 = 5;

/// Error codes that mean "slow down", whatever the HTTP status.
const THROTTLE_CODES: [&str; 6] = [
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "RequestThrottled",
    "RequestThrottledException",
];

/// Error codes that mean the credentials (or their region) are wrong.
const AUTH_CODES: [&str; 9] = [
    "AuthFailure",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "InvalidAccessKeyId",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidToken",
    "MissingAuthenticationToken",
];

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
            max: Duration::from_secs(15),
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

/// `1m30s`-style text for messages.
pub(crate) fn human(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs / 60, secs % 60) {
        (0, 0) => format!("{}ms", d.as_millis()),
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

/// Which API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Service {
    Ec2,
    Ecr,
}

impl Service {
    fn signing_name(self) -> &'static str {
        match self {
            Self::Ec2 => "ec2",
            Self::Ecr => "ecr",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Ec2 => "EC2",
            Self::Ecr => "ECR",
        }
    }
}

/// A failed call: AWS's own answer, or no answer at all.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// AWS answered with an error document.
    #[error("{service} API: {code}: {message}{}{hint}", request_id.as_deref().map(|r| format!(" (request id {r})")).unwrap_or_default())]
    Aws {
        /// `EC2` or `ECR`.
        service: &'static str,
        /// The HTTP status.
        status: u16,
        /// AWS's error code, e.g. `InvalidInstanceID.NotFound`.
        code: String,
        /// AWS's message.
        message: String,
        /// The request id to quote to AWS support.
        request_id: Option<String>,
        /// What berth suggests (for authentication errors: which
        /// credentials it used).
        hint: String,
    },
    /// The request never got an answer, or the answer made no sense.
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

impl ApiError {
    /// AWS's error code.
    pub(crate) fn code(&self) -> Option<&str> {
        match self {
            Self::Aws { code, .. } => Some(code),
            Self::Provider(_) => None,
        }
    }

    /// Whether AWS answered with error code `code`.
    pub(crate) fn is(&self, code: &str) -> bool {
        self.code() == Some(code)
    }

    /// Whether the error code ends in `.NotFound` or is one of ECR's
    /// not-found exceptions.
    pub(crate) fn is_not_found(&self) -> bool {
        self.code()
            .is_some_and(|c| c.ends_with(".NotFound") || c.ends_with("NotFoundException"))
    }

    fn is_throttle(&self) -> bool {
        self.code().is_some_and(|c| THROTTLE_CODES.contains(&c))
    }

    /// Prefixes the error with what was being done, as a [`ProviderError`].
    pub(crate) fn context(self, doing: impl fmt::Display) -> ProviderError {
        match self {
            Self::Provider(ProviderError::Api(m)) => ProviderError::Api(format!("{doing}: {m}")),
            Self::Provider(other) => other,
            aws => ProviderError::Api(format!("{doing}: {aws}")),
        }
    }
}

impl From<ApiError> for ProviderError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Provider(p) => p,
            aws => ProviderError::Api(aws.to_string()),
        }
    }
}

/// Query parameters of an EC2 call, in order.
#[derive(Clone, Debug, Default)]
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
    filters: usize,
}

impl Params {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Adds `key=value`.
    pub(crate) fn set(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.pairs.push((key.into(), value.into()));
        self
    }

    /// Adds `prefix.1=a&prefix.2=b...`.
    pub(crate) fn list<S: AsRef<str>>(&mut self, prefix: &str, items: &[S]) -> &mut Self {
        for (i, item) in items.iter().enumerate() {
            self.set(format!("{prefix}.{}", i + 1), item.as_ref());
        }
        self
    }

    /// Adds the next `Filter.N.Name=name&Filter.N.Value.M=value...`.
    pub(crate) fn filter<S: AsRef<str>>(&mut self, name: &str, values: &[S]) -> &mut Self {
        self.filters += 1;
        let n = self.filters;
        self.set(format!("Filter.{n}.Name"), name);
        self.list(&format!("Filter.{n}.Value"), values)
    }

    fn encode(&self, action: &str) -> String {
        let mut out = format!("Action={}&Version={EC2_VERSION}", encode(action));
        for (k, v) in &self.pairs {
            out.push('&');
            out.push_str(&encode(k));
            out.push('=');
            out.push_str(&encode(v));
        }
        out
    }

    /// The value of `key`, for tests.
    #[cfg(test)]
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A raw answer.
struct Answer {
    status: u16,
    request_id: Option<String>,
    error_type: Option<String>,
    text: String,
}

/// A page of an EC2 list.
pub(crate) trait Paged {
    /// The `nextToken` of this page, if there is a next one.
    fn next_token(&self) -> Option<String>;
}

/// A configured connection.
pub(crate) struct Api {
    http: HttpClient,
    pub(crate) settings: Settings,
    pub(crate) timing: PollTiming,
    /// `MaxResults` of paged lists; `None` for the largest AWS allows.
    pub(crate) page_size: Option<u32>,
    counts: Mutex<BTreeMap<String, u64>>,
    pub(crate) ecr_tokens: crate::ecr::TokenCache,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api")
            .field("region", &self.settings.region)
            .field("ec2", &self.settings.ec2.as_str())
            .field("ecr", &self.settings.ecr.as_str())
            .field("access_key", &self.settings.credentials.access_key)
            .field("credentials", &self.settings.credentials.source)
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

impl Api {
    pub(crate) fn new(
        settings: Settings,
        timing: PollTiming,
        policy: Option<RetryPolicy>,
        page_size: Option<u32>,
    ) -> Result<Self, ProviderError> {
        let mut policy = policy.unwrap_or_default();
        if let Some(n) = settings.max_retries {
            policy.max_retries = n;
        }
        Ok(Self {
            http: HttpClient::with_policy(REQUEST_TIMEOUT, policy)?,
            settings,
            timing,
            page_size,
            counts: Mutex::new(BTreeMap::new()),
            ecr_tokens: crate::ecr::TokenCache::default(),
        })
    }

    /// The region requests are signed for.
    pub(crate) fn region(&self) -> &str {
        &self.settings.region
    }

    /// How many retries the HTTP client has made.
    pub(crate) fn retries(&self) -> u64 {
        self.http.retries()
    }

    /// HTTP attempts so far, by action.
    pub(crate) fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn count(&self, action: &str) {
        if let Ok(mut c) = self.counts.lock() {
            *c.entry(action.to_owned()).or_default() += 1;
        }
    }

    /// Replaces the secret and token in `text` (AWS sometimes echoes what
    /// it was sent).
    fn redact(&self, text: &str) -> String {
        let creds = &self.settings.credentials;
        let mut out = text.replace(creds.secret_key.expose(), "[redacted]");
        if let Some(t) = creds
            .session_token
            .as_ref()
            .filter(|t| !t.expose().is_empty())
        {
            out = out.replace(t.expose(), "[redacted]");
        }
        out
    }

    /// SigV4 headers for one request.
    fn sign(
        &self,
        service: Service,
        region: &str,
        url: &str,
        headers: &[(&'static str, String)],
        body: &[u8],
    ) -> Result<Vec<(String, String)>, ProviderError> {
        let creds = &self.settings.credentials;
        let identity: Identity = AwsCredentials::new(
            creds.access_key.clone(),
            creds.secret_key.expose().to_owned(),
            creds.session_token.as_ref().map(|t| t.expose().to_owned()),
            None,
            "berth-aws",
        )
        .into();
        let fail = |what: &str, e: &dyn std::error::Error| {
            ProviderError::Config(format!("cannot sign the request ({what}): {e}"))
        };
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name(service.signing_name())
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| fail("parameters", &e))?
            .into();
        let signable = SignableRequest::new(
            "POST",
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

    /// Sends one signed `POST`, re-signing for every attempt.
    #[allow(clippy::too_many_arguments)]
    async fn post(
        &self,
        service: Service,
        region: &str,
        url: &Url,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
        action: &str,
        idempotency: Idempotency,
    ) -> Result<Answer, ApiError> {
        let what = format!("{} {action}", service.label());
        // Signed once up front so that a signing problem is an error, and
        // again per attempt so that retries carry a fresh date.
        let first = self.sign(service, region, url.as_str(), &headers, &body)?;
        let response = self
            .http
            .send(&what, idempotency, |client| {
                self.count(action);
                let signed = self
                    .sign(service, region, url.as_str(), &headers, &body)
                    .unwrap_or_else(|_| first.clone());
                let mut request = client.post(url.clone()).body(body.clone());
                for (name, value) in headers.iter().map(|(n, v)| ((*n).to_owned(), v.clone())) {
                    request = request.header(name, value);
                }
                for (name, value) in &signed {
                    request = request.header(name.as_str(), value.as_str());
                }
                request
            })
            .await?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let request_id = header("x-amzn-requestid").or_else(|| header("x-amz-request-id"));
        let error_type = header("x-amzn-errortype");
        let text = response.text().await.map_err(|e| {
            ApiError::Provider(ProviderError::Unreachable {
                what: what.clone(),
                message: format!("the response was cut short: {e}"),
            })
        })?;
        Ok(Answer {
            status,
            request_id,
            error_type,
            text,
        })
    }

    /// The error an unsuccessful answer describes.
    fn answer_error(&self, service: Service, answer: &Answer) -> ApiError {
        let text = answer.text.trim();
        let (code, message, request_id) = if text.starts_with('{') {
            let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            let field = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
            let code = field("__type")
                .or_else(|| answer.error_type.clone())
                .map(|c| {
                    let c = c.rsplit('#').next().unwrap_or(&c).to_owned();
                    c.split(':').next().unwrap_or(&c).to_owned()
                });
            (code, field("message").or_else(|| field("Message")), None)
        } else {
            let f = xml::error_fields(text);
            (f.code, f.message, f.request_id)
        };
        let code = code.unwrap_or_else(|| format!("HTTP {}", answer.status));
        let message = message.unwrap_or_else(|| {
            if text.is_empty() {
                "no message".to_owned()
            } else {
                text.chars().take(300).collect()
            }
        });
        let request_id = request_id
            .or_else(|| answer.request_id.clone())
            .filter(|r| !r.is_empty());
        let hint = if AUTH_CODES.contains(&code.as_str()) {
            let source: &CredentialSource = &self.settings.credentials.source;
            format!(
                "; check the credentials (access key {} from {source}) and the region ({})",
                self.settings.credentials.access_key, self.settings.region
            )
        } else if code == "UnauthorizedOperation" || code == "AccessDeniedException" {
            format!(
                "; the credentials (access key {}) lack permission for this",
                self.settings.credentials.access_key
            )
        } else {
            String::new()
        };
        ApiError::Aws {
            service: service.label(),
            status: answer.status,
            code,
            message: self.redact(&message),
            request_id,
            hint,
        }
    }

    /// Retries `call` while AWS answers with a throttling code.
    async fn unthrottled<T, F, Fut>(&self, mut call: F) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let mut pause = Duration::from_millis(500);
        let mut attempt = 1;
        loop {
            match call().await {
                Err(e) if e.is_throttle() && attempt < THROTTLE_ATTEMPTS => {
                    tracing::info!(
                        attempt,
                        delay_ms = pause.as_millis() as u64,
                        "AWS throttled the request; retrying: {e}"
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// One EC2 call; the XML text of a successful answer.
    pub(crate) async fn ec2_text(
        &self,
        action: &str,
        params: &Params,
        idempotency: Idempotency,
    ) -> Result<String, ApiError> {
        let body = params.encode(action).into_bytes();
        let headers = vec![(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8".to_owned(),
        )];
        let url = self.settings.ec2.clone();
        self.unthrottled(|| async {
            let answer = self
                .post(
                    Service::Ec2,
                    self.region(),
                    &url,
                    headers.clone(),
                    body.clone(),
                    action,
                    idempotency,
                )
                .await?;
            if (200..300).contains(&answer.status) {
                Ok(answer.text)
            } else {
                Err(self.answer_error(Service::Ec2, &answer))
            }
        })
        .await
    }

    /// One EC2 call, its answer parsed into `T`.
    pub(crate) async fn ec2<T: DeserializeOwned>(
        &self,
        action: &str,
        params: &Params,
        idempotency: Idempotency,
    ) -> Result<T, ApiError> {
        let text = self.ec2_text(action, params, idempotency).await?;
        xml::parse(&text).map_err(|e| {
            ApiError::Provider(ProviderError::Api(format!(
                "EC2 API: the answer to {action} is not what berth expects: {e}"
            )))
        })
    }

    /// Every page of a paged EC2 list (`MaxResults`, then `NextToken` until
    /// there is none).
    pub(crate) async fn ec2_pages<T: DeserializeOwned + Paged>(
        &self,
        action: &str,
        params: &Params,
        max_results: u32,
    ) -> Result<Vec<T>, ApiError> {
        let mut pages = Vec::new();
        let mut token: Option<String> = None;
        let mut seen = Vec::new();
        for _ in 0..MAX_PAGES {
            let mut p = params.clone();
            p.set(
                "MaxResults",
                self.page_size.unwrap_or(max_results).to_string(),
            );
            if let Some(t) = &token {
                p.set("NextToken", t.as_str());
            }
            let page: T = self.ec2(action, &p, Idempotency::Safe).await?;
            let next = page.next_token().filter(|t| !t.is_empty());
            pages.push(page);
            match next {
                None => return Ok(pages),
                Some(next) if seen.contains(&next) => {
                    return Err(ApiError::Provider(ProviderError::Api(format!(
                        "EC2 API: {action}: the next-page tokens go round in a circle"
                    ))));
                }
                Some(next) => {
                    seen.push(next.clone());
                    token = Some(next);
                }
            }
        }
        Err(ApiError::Provider(ProviderError::Api(format!(
            "EC2 API: {action}: more than {MAX_PAGES} pages"
        ))))
    }

    /// One ECR call against the configured endpoint and region.
    pub(crate) async fn ecr(
        &self,
        operation: &str,
        body: &Value,
        idempotency: Idempotency,
    ) -> Result<Value, ApiError> {
        let url = self.settings.ecr.clone();
        let region = self.settings.region.clone();
        self.ecr_at(&url, &region, operation, body, idempotency)
            .await
    }

    /// One ECR call against `url`, signed for `region`.
    pub(crate) async fn ecr_at(
        &self,
        url: &Url,
        region: &str,
        operation: &str,
        body: &Value,
        idempotency: Idempotency,
    ) -> Result<Value, ApiError> {
        let bytes = serde_json::to_vec(body).map_err(|e| {
            ApiError::Provider(ProviderError::Api(format!(
                "cannot encode the ECR {operation} request: {e}"
            )))
        })?;
        let headers = vec![
            ("content-type", "application/x-amz-json-1.1".to_owned()),
            ("x-amz-target", format!("{ECR_TARGET}.{operation}")),
        ];
        self.unthrottled(|| async {
            let answer = self
                .post(
                    Service::Ecr,
                    region,
                    url,
                    headers.clone(),
                    bytes.clone(),
                    operation,
                    idempotency,
                )
                .await?;
            if !(200..300).contains(&answer.status) {
                return Err(self.answer_error(Service::Ecr, &answer));
            }
            if answer.text.trim().is_empty() {
                return Ok(Value::Null);
            }
            serde_json::from_str(&answer.text).map_err(|e| {
                ApiError::Provider(ProviderError::Api(format!(
                    "ECR API: the answer to {operation} is not JSON: {e}"
                )))
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{Credentials, Secret};

    fn api() -> Api {
        let settings = Settings {
            region: "us-east-1".into(),
            credentials: Credentials {
                access_key: "AKIDTEST".into(),
                secret_key: Secret::new("s3cr3t-key"),
                session_token: Some(Secret::new("t0ken")),
                source: CredentialSource::Env,
            },
            ec2: Url::parse("http://127.0.0.1:9/").unwrap(),
            ecr: Url::parse("http://127.0.0.1:9/").unwrap(),
            ecr_overridden: true,
            max_retries: None,
        };
        Api::new(settings, PollTiming::default(), None, None).unwrap()
    }

    #[test]
    fn params_encode_filters_and_lists() {
        let mut p = Params::new();
        p.filter("tag:berth:env", &["prod eu"])
            .filter("instance-state-name", &["pending", "running"])
            .list("InstanceId", &["i-1"]);
        assert_eq!(
            p.encode("DescribeInstances"),
            "Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=tag%3Aberth%3Aenv&\
             Filter.1.Value.1=prod%20eu&Filter.2.Name=instance-state-name&Filter.2.Value.1=pending&\
             Filter.2.Value.2=running&InstanceId.1=i-1"
        );
    }

    #[test]
    fn errors_keep_code_message_and_request_id_and_hide_secrets() {
        let a = api();
        let e = a.answer_error(
            Service::Ec2,
            &Answer {
                status: 400,
                request_id: None,
                error_type: None,
                text: "<Response><Errors><Error><Code>InvalidAMIID.NotFound</Code><Message>The image id '[ami-x]' does not exist</Message></Error></Errors><RequestID>req-1</RequestID></Response>".into(),
            },
        );
        assert_eq!(
            e.to_string(),
            "EC2 API: InvalidAMIID.NotFound: The image id '[ami-x]' does not exist (request id req-1)"
        );
        assert!(e.is_not_found());
        let e = a.answer_error(
            Service::Ecr,
            &Answer {
                status: 400,
                request_id: Some("req-2".into()),
                error_type: None,
                text: r#"{"__type":"com.amazonaws#UnrecognizedClientException","message":"bad s3cr3t-key t0ken"}"#.into(),
            },
        );
        let shown = e.to_string();
        assert!(shown.starts_with("ECR API: UnrecognizedClientException: bad [redacted] [redacted] (request id req-2); check the credentials (access key AKIDTEST from AWS_ACCESS_KEY_ID"), "{shown}");
        assert!(!format!("{a:?}").contains("s3cr3t"));
        let e = a.answer_error(
            Service::Ec2,
            &Answer {
                status: 503,
                request_id: None,
                error_type: None,
                text: String::new(),
            },
        );
        assert_eq!(e.to_string(), "EC2 API: HTTP 503: no message");
    }

    #[test]
    fn signing_names_the_service_in_the_scope() {
        let a = api();
        let headers = a
            .sign(
                Service::Ecr,
                "eu-west-1",
                "http://127.0.0.1:9/",
                &[("content-type", "application/x-amz-json-1.1".to_owned())],
                b"{}",
            )
            .unwrap();
        let auth = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| v.clone())
            .unwrap();
        assert!(auth.contains("/eu-west-1/ecr/aws4_request"), "{auth}");
        assert!(!auth.contains("s3cr3t"));
        assert!(
            headers
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case("x-amz-security-token") && v == "t0ken")
        );
    }
}
