//! The GitLab REST API v4 client: every request goes through berth's shared
//! [`HttpClient`] (retries, `Retry-After`, `RateLimit-Reset`), carries the
//! credential header marked sensitive, and comes back as an [`Answer`]
//! whose non-success statuses callers interpret. Also: path-segment
//! encoding for `:id` and `:key`, offset pagination by `x-next-page`, and
//! turning GitLab's `{"message": ...}` bodies into readable errors that
//! never contain the token.

use std::time::Duration;

use berth_provider::ProviderError;
use berth_provider::http::{HttpClient, Idempotency};
use reqwest::Method;
use reqwest::header::{ACCEPT, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::config::{Auth, Settings};

/// The largest page GitLab serves.
pub(crate) const PER_PAGE: u32 = 100;

/// A safety stop for pagination loops (10,000 pages of 100).
const MAX_PAGES: u32 = 10_000;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A complete response.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON.
    pub(crate) fn json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
    ) -> Result<T, ProviderError> {
        serde_json::from_str(&self.body).map_err(|e| {
            ProviderError::Api(format!(
                "{what}: GitLab answered {} with a body berth cannot read: {e}",
                self.status
            ))
        })
    }
}

/// A configured connection to one GitLab instance.
pub(crate) struct GitLab {
    http: HttpClient,
    base_url: String,
    auth: Auth,
}

impl std::fmt::Debug for GitLab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitLab")
            .field("base_url", &self.base_url)
            .field("auth", &self.auth.kind())
            .finish_non_exhaustive()
    }
}

impl GitLab {
    pub(crate) fn new(settings: Settings) -> Result<Self, ProviderError> {
        Ok(Self {
            http: HttpClient::new(REQUEST_TIMEOUT)?,
            base_url: settings.base_url,
            auth: settings.auth,
        })
    }

    pub(crate) fn base_url(&self) -> &str {
        &self.base_url
    }

    pub(crate) fn auth(&self) -> &Auth {
        &self.auth
    }

    fn auth_header(&self) -> Result<(HeaderName, HeaderValue), ProviderError> {
        let (name, secret) = match &self.auth {
            Auth::Private(secret, _) => ("private-token", secret),
            Auth::Job(secret) => ("job-token", secret),
            Auth::Missing => {
                return Err(ProviderError::Config(
                    "no GitLab token: set `token` in provider \"gitlab\" or the GITLAB_TOKEN \
                     environment variable (an access token with the `api` scope)"
                        .to_owned(),
                ));
            }
        };
        let mut value = HeaderValue::from_str(secret.expose()).map_err(|_| {
            ProviderError::Config(
                "the GitLab token contains characters that cannot be sent in an HTTP header"
                    .to_owned(),
            )
        })?;
        value.set_sensitive(true);
        Ok((HeaderName::from_static(name), value))
    }

    /// Sends one request (retried by the shared client as its policy
    /// allows) and reads the whole answer. `path` starts with `/` and is
    /// already encoded; `what` names the request in errors (no secrets).
    pub(crate) async fn send(
        &self,
        what: &str,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Answer, ProviderError> {
        let (name, value) = self.auth_header()?;
        let url = format!("{}{path}", self.base_url);
        let idempotency = if method == Method::POST {
            Idempotency::Unsafe
        } else {
            Idempotency::Safe
        };
        tracing::debug!(request = what, %method, %path, "GitLab request");
        let response = self
            .http
            .send(what, idempotency, |client| {
                let mut builder = client
                    .request(method.clone(), &url)
                    .header(name.clone(), value.clone())
                    .header(ACCEPT, "application/json");
                if !query.is_empty() {
                    builder = builder.query(query);
                }
                if let Some(body) = body {
                    builder = builder.json(body);
                }
                builder
            })
            .await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .text()
            .await
            .map_err(|e| ProviderError::Unreachable {
                what: what.to_owned(),
                message: format!("the response was cut short: {e}"),
            })?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// Every item of a paginated list: `per_page=100`, following
    /// `x-next-page` until it is empty. A non-success answer on any page is
    /// returned as `Ok(Err(answer))` for the caller to judge.
    pub(crate) async fn list_all(
        &self,
        what: &str,
        path: &str,
    ) -> Result<Result<Vec<Value>, Answer>, ProviderError> {
        let per_page = PER_PAGE.to_string();
        let mut page: u32 = 1;
        let mut items = Vec::new();
        loop {
            let page_text = page.to_string();
            let answer = self
                .send(
                    what,
                    Method::GET,
                    path,
                    &[("per_page", &per_page), ("page", &page_text)],
                    None,
                )
                .await?;
            if !answer.is_success() {
                return Ok(Err(answer));
            }
            let batch: Vec<Value> = answer.json(what)?;
            items.extend(batch);
            let next = answer
                .headers
                .get("x-next-page")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .and_then(|v| v.parse::<u32>().ok());
            match next {
                Some(n) if n > page && n <= MAX_PAGES => page = n,
                _ => return Ok(Ok(items)),
            }
        }
    }

    /// A readable error for a non-success answer: what failed, GitLab's
    /// status and message, and a hint for auth failures. The token is
    /// scrubbed from the text in case a proxy ever echoes it.
    pub(crate) fn error(&self, what: &str, answer: &Answer) -> ProviderError {
        let status = answer.status;
        let reason = reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let mut text = match gitlab_message(&answer.body) {
            Some(said) if said.starts_with(&status.to_string()) => {
                format!("{what}: GitLab answered {said}")
            }
            Some(said) => format!("{what}: GitLab answered {status} {reason}: {said}"),
            None => format!("{what}: GitLab answered {status} {reason}"),
        };
        if let Some(hint) = self.hint(status, &answer.body) {
            text.push_str(" (");
            text.push_str(&hint);
            text.push(')');
        }
        ProviderError::Api(self.scrub(text))
    }

    fn hint(&self, status: u16, body: &str) -> Option<String> {
        let job = "berth authenticated with the CI job token (CI_JOB_TOKEN) because GITLAB_TOKEN \
                   is not set, and a job token may lack permission: GitLab does not accept job \
                   tokens on the CI/CD variables API on most instances; set GITLAB_TOKEN to an \
                   access token with the `api` scope and the Maintainer role";
        match (status, &self.auth) {
            (401 | 403, Auth::Job(_)) => Some(job.to_owned()),
            (401, Auth::Private(_, source)) => Some(format!(
                "the token from {} was refused: it may be wrong, expired or revoked",
                source.describe()
            )),
            (403, Auth::Private(_, source)) => Some(format!(
                "managing CI/CD variables needs the Maintainer role on the project and a token \
                 with the `api` scope; check the token from {}",
                source.describe()
            )),
            (404, _) if body.contains("Project") => Some(
                "check `project`: a numeric id or the full path such as group/sub/project; \
                 GitLab also answers 404 when the token cannot see the project"
                    .to_owned(),
            ),
            (429, _) => Some(
                "GitLab's rate limit was still exceeded after berth's retries; try again later"
                    .to_owned(),
            ),
            _ => None,
        }
    }

    /// Removes the token from `text`, should it ever appear.
    pub(crate) fn scrub(&self, text: String) -> String {
        match self.auth.secret() {
            Some(secret) if secret.expose().len() >= 4 && text.contains(secret.expose()) => {
                text.replace(secret.expose(), "[redacted]")
            }
            _ => text,
        }
    }
}

/// Percent-encodes one path segment (a project path such as
/// `group/sub/project` becomes `group%2Fsub%2Fproject`). Only RFC 3986
/// unreserved characters stay as they are.
pub(crate) fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// GitLab's error text from a response body: `{"message": "..."}`,
/// `{"message": {"field": ["...", ...]}}` (validation errors; `base` ones
/// without a field name), `{"error": "..."}` (Grape parameter errors and
/// OAuth), or a short plain-text body such as a 429's `Retry later`.
pub(crate) fn gitlab_message(body: &str) -> Option<String> {
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return None;
    }
    let Ok(json) = serde_json::from_str::<Value>(trimmed) else {
        let short: String = trimmed.chars().take(200).collect();
        return Some(short.split_whitespace().collect::<Vec<_>>().join(" "));
    };
    if let Some(message) = json.get("message") {
        match message {
            Value::String(s) => return Some(s.clone()),
            Value::Object(fields) => {
                let mut parts = Vec::new();
                for (field, messages) in fields {
                    let texts: Vec<String> = match messages {
                        Value::Array(items) => items.iter().map(plain).collect(),
                        other => vec![plain(other)],
                    };
                    for text in texts {
                        if field == "base" {
                            parts.push(text);
                        } else {
                            parts.push(format!("{field} {text}"));
                        }
                    }
                }
                if !parts.is_empty() {
                    return Some(parts.join("; "));
                }
            }
            Value::Array(items) => {
                return Some(items.iter().map(plain).collect::<Vec<_>>().join("; "));
            }
            _ => {}
        }
    }
    if let Some(error) = json.get("error") {
        let mut text = plain(error);
        if let Some(description) = json.get("error_description") {
            text = format!("{text}: {}", plain(description));
        }
        return Some(text);
    }
    None
}

fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether a 400 body says the key+scope pair already exists
/// (`{"message":{"key":["(KEY) has already been taken"]}}`).
pub(crate) fn is_already_taken(body: &str) -> bool {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|json| json.get("message").and_then(|m| m.get("key")).cloned())
        .map(|key| key.to_string().contains("has already been taken"))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("group/sub/project"), "group%2Fsub%2Fproject");
        assert_eq!(encode_segment("42"), "42");
        assert_eq!(encode_segment("MY_KEY"), "MY_KEY");
        assert_eq!(encode_segment("a b"), "a%20b");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }

    #[test]
    fn messages_are_read_in_every_format() {
        assert_eq!(
            gitlab_message(r#"{"message":"404 Project Not Found"}"#).as_deref(),
            Some("404 Project Not Found")
        );
        assert_eq!(
            gitlab_message(r#"{"message":{"value":["is invalid"]}}"#).as_deref(),
            Some("value is invalid")
        );
        assert_eq!(
            gitlab_message(
                r#"{"message":{"base":["Maximum number of project ci variables (1) exceeded"]}}"#
            )
            .as_deref(),
            Some("Maximum number of project ci variables (1) exceeded")
        );
        assert_eq!(
            gitlab_message(r#"{"error":"value is missing"}"#).as_deref(),
            Some("value is missing")
        );
        assert_eq!(
            gitlab_message("Retry later\n").as_deref(),
            Some("Retry later")
        );
        assert_eq!(gitlab_message("  "), None);
    }

    #[test]
    fn duplicates_are_recognized() {
        assert!(is_already_taken(
            r#"{"message":{"key":["(MY_KEY) has already been taken"]}}"#
        ));
        assert!(!is_already_taken(r#"{"message":{"value":["is invalid"]}}"#));
        assert!(!is_already_taken("not json"));
    }
}
