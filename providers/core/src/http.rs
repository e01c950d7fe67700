//! The HTTP client every API provider shares: one `reqwest` client with a
//! retry policy that honours rate limits. 429 and 5xx answers and
//! connection failures are retried with full-jitter exponential backoff,
//! sleeping `Retry-After` (seconds or an HTTP date) or `RateLimit-Reset`
//! when the server sends one, within a total time budget. Requests that are
//! not idempotent are retried only on answers that prove the server did not
//! act (429, 503) unless the caller marks them safe (an idempotency token).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::ProviderError;

/// How retries are spaced and bounded.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts after the first.
    pub max_retries: u32,
    /// The first backoff step.
    pub base_delay: Duration,
    /// The largest single sleep.
    pub max_delay: Duration,
    /// The whole budget, sleeps included.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(120),
        }
    }
}

/// Whether a request may be sent again after a failure whose outcome is
/// unknown (a reset connection, a 500).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idempotency {
    /// GET, PUT, DELETE, or a POST carrying an idempotency token.
    Safe,
    /// A POST that would act twice.
    Unsafe,
}

/// A shared client with berth's retry policy.
#[derive(Debug)]
pub struct HttpClient {
    client: reqwest::Client,
    policy: RetryPolicy,
    retries: AtomicU64,
}

impl HttpClient {
    /// A client with the default policy and a request timeout.
    pub fn new(timeout: Duration) -> Result<Self, ProviderError> {
        Self::with_policy(timeout, RetryPolicy::default())
    }

    /// A client with `policy`. `BERTH_HTTP_TIMEOUT` (seconds) replaces
    /// `timeout` when set, e.g. for a slow network or for tests.
    pub fn with_policy(timeout: Duration, policy: RetryPolicy) -> Result<Self, ProviderError> {
        let timeout = timeout_from_env(std::env::var("BERTH_HTTP_TIMEOUT").ok().as_deref())
            .unwrap_or(timeout);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProviderError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            client,
            policy,
            retries: AtomicU64::new(0),
        })
    }

    /// The underlying client, to build requests with.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// How many retries this client has made so far.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Sends the request built by `build` (called again for every attempt),
    /// retrying as the policy allows. Returns the final response, whatever
    /// its status; only transport failures after the last attempt are errors.
    /// `what` names the request in logs and errors (never put secrets in it).
    pub async fn send(
        &self,
        what: &str,
        idempotency: Idempotency,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ProviderError> {
        let started = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            let result = build(&self.client).send().await;
            let wait = match &result {
                Ok(response) => retry_delay_for(response, idempotency),
                Err(e) if e.is_connect() => Some(None),
                Err(e)
                    if (e.is_timeout() || e.is_request()) && idempotency == Idempotency::Safe =>
                {
                    Some(None)
                }
                Err(_) => None,
            };
            let Some(hint) = wait else {
                return result.map_err(|e| transport_error(what, &e));
            };
            if attempt >= self.policy.max_retries {
                return result.map_err(|e| transport_error(what, &e));
            }
            let delay = hint
                .unwrap_or_else(|| backoff(&self.policy, attempt))
                .min(self.policy.max_delay);
            if started.elapsed() + delay > self.policy.max_elapsed {
                return result.map_err(|e| transport_error(what, &e));
            }
            attempt += 1;
            self.retries.fetch_add(1, Ordering::Relaxed);
            let reason = match &result {
                Ok(r) => format!("HTTP {}", r.status().as_u16()),
                Err(e) => transport_error(what, e).to_string(),
            };
            tracing::info!(request = what, attempt, delay_ms = delay.as_millis() as u64, %reason, "retrying");
            tokio::time::sleep(delay).await;
        }
    }
}

/// `BERTH_HTTP_TIMEOUT`'s value: whole or fractional seconds above zero.
fn timeout_from_env(value: Option<&str>) -> Option<Duration> {
    let secs: f64 = value?.trim().parse().ok()?;
    (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs))
}

fn transport_error(what: &str, e: &reqwest::Error) -> ProviderError {
    // reqwest's Display includes the URL; ours never carry secrets in URLs.
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the response was cut short or malformed"
    } else {
        "request failed"
    };
    ProviderError::Unreachable {
        what: what.to_owned(),
        message: format!("{kind}: {e}"),
    }
}

/// `Some(Some(d))`: retry after `d`; `Some(None)`: retry with backoff;
/// `None`: do not retry.
fn retry_delay_for(
    response: &reqwest::Response,
    idempotency: Idempotency,
) -> Option<Option<Duration>> {
    let status = response.status().as_u16();
    let retryable = match status {
        429 | 503 => true,
        500 | 502 | 504 => idempotency == Idempotency::Safe,
        _ => false,
    };
    if !retryable {
        return None;
    }
    Some(hint_for(status, response.headers()))
}

/// The wait the server asks for before retrying an answer of `status`:
/// `Retry-After` always, `RateLimit-Reset` only on a 429. DigitalOcean
/// sends `RateLimit-Reset` (the end of the hourly window) on every
/// answer, so reading it on a 500 would sleep the longest backoff instead
/// of retrying soon.
fn hint_for(status: u16, headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    if status == 429 {
        return server_hint(headers);
    }
    let mut only_retry_after = reqwest::header::HeaderMap::new();
    if let Some(v) = headers.get("retry-after") {
        only_retry_after.insert("retry-after", v.clone());
    }
    server_hint(&only_retry_after)
}

/// The wait a server asks for: `Retry-After` (seconds or HTTP date), else
/// `RateLimit-Reset` (seconds, or a Unix time as GitLab sends it).
pub fn server_hint(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(v) = text("retry-after") {
        if let Ok(secs) = v.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(when) = httpdate::parse_http_date(v) {
            return Some(
                when.duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO),
            );
        }
    }
    if let Some(v) = text("ratelimit-reset").and_then(|v| v.parse::<u64>().ok()) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        // Small numbers are a delay, large ones a Unix time.
        return Some(if v > 1_000_000_000 {
            Duration::from_secs(v.saturating_sub(now))
        } else {
            Duration::from_secs(v)
        });
    }
    None
}

/// Full-jitter exponential backoff: a random wait in `0..=base * 2^attempt`.
fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let ceiling = policy
        .base_delay
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(policy.max_delay);
    let millis = ceiling.as_millis().min(u128::from(u64::MAX)) as u64;
    Duration::from_millis(rand::random_range(0..=millis.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates_are_read() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "7".parse().expect("header"));
        assert_eq!(server_hint(&h), Some(Duration::from_secs(7)));
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("header"),
        );
        assert_eq!(
            server_hint(&h),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("ratelimit-reset", "3".parse().expect("header"));
        assert_eq!(server_hint(&h), Some(Duration::from_secs(3)));
    }

    /// Regression (RELIABILITY.md, R2): a 500 from DigitalOcean carries
    /// `RateLimit-Reset` an hour ahead; it must not turn into the longest
    /// sleep.
    #[test]
    fn rate_limit_reset_is_read_on_429_only() {
        let mut h = reqwest::header::HeaderMap::new();
        let in_an_hour = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() + 3600)
            .unwrap_or(0);
        h.insert(
            "ratelimit-reset",
            in_an_hour.to_string().parse().expect("header"),
        );
        assert_eq!(hint_for(500, &h), None, "backoff, not the hour");
        assert_eq!(hint_for(503, &h), None);
        assert!(hint_for(429, &h).is_some_and(|d| d > Duration::from_secs(3000)));
        h.insert("retry-after", "2".parse().expect("header"));
        assert_eq!(hint_for(503, &h), Some(Duration::from_secs(2)));
    }

    #[test]
    fn the_timeout_override_takes_positive_seconds() {
        assert_eq!(timeout_from_env(Some("2")), Some(Duration::from_secs(2)));
        assert_eq!(
            timeout_from_env(Some("0.5")),
            Some(Duration::from_millis(500))
        );
        assert_eq!(timeout_from_env(Some("0")), None);
        assert_eq!(timeout_from_env(Some("soon")), None);
        assert_eq!(timeout_from_env(None), None);
    }

    #[test]
    fn backoff_stays_under_its_ceiling() {
        let policy = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        for attempt in 0..20 {
            assert!(backoff(&policy, attempt) <= Duration::from_secs(1));
        }
    }
}
