//! The `provider "gitlab" { base_url, token }` block and its environment
//! fallbacks, resolved into [`Settings`]: the API base URL and the
//! credential to send.
//!
//! Precedence, as in Terraform's gitlab provider plus GitLab CI:
//! - base URL: `base_url`, else `GITLAB_BASE_URL`, else `CI_API_V4_URL`
//!   (set in every CI job), else `https://gitlab.com/api/v4`. A URL without
//!   the `/api/v4` suffix gets it appended;
//! - credential: `token`, else `GITLAB_TOKEN` (both sent as `PRIVATE-TOKEN`),
//!   else `CI_JOB_TOKEN` sent as `JOB-TOKEN`, but only when the base URL is
//!   the job's own `CI_API_V4_URL`. GitLab refuses job tokens on the
//!   variables API on most instances, so errors say so when one was used.
//!
//! Tokens live in [`Secret`], whose `Debug` prints `<redacted>`.

use std::fmt;

use berth_provider::{Attrs, ProviderError, Value};

/// Where berth talks to when nothing else is configured.
pub(crate) const DEFAULT_BASE_URL: &str = "https://gitlab.com/api/v4";

/// A secret string: never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(value: String) -> Self {
        Self(value)
    }

    /// The plain text, for the one place that needs it (the header).
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where a private token came from, to name it in error hints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenSource {
    /// `token` in the provider block.
    Config,
    /// The `GITLAB_TOKEN` environment variable.
    Env,
}

impl TokenSource {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::Config => "`token` in provider \"gitlab\"",
            Self::Env => "GITLAB_TOKEN",
        }
    }
}

/// The credential berth sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Auth {
    /// A personal, project or group access token (`PRIVATE-TOKEN`).
    Private(Secret, TokenSource),
    /// A CI job token (`JOB-TOKEN`).
    Job(Secret),
    /// Nothing was configured; every request fails with a config error.
    Missing,
}

impl Auth {
    /// The secret, if any (to scrub it from messages).
    pub(crate) fn secret(&self) -> Option<&Secret> {
        match self {
            Self::Private(s, _) | Self::Job(s) => Some(s),
            Self::Missing => None,
        }
    }

    /// A short description for `Debug` output and logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Private(_, TokenSource::Config) => "private token (provider block)",
            Self::Private(_, TokenSource::Env) => "private token (GITLAB_TOKEN)",
            Self::Job(_) => "CI job token (CI_JOB_TOKEN)",
            Self::Missing => "none",
        }
    }
}

/// The resolved provider configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Settings {
    /// The API root without a trailing slash, e.g. `https://gitlab.com/api/v4`.
    pub(crate) base_url: String,
    /// The credential.
    pub(crate) auth: Auth,
}

const KNOWN_KEYS: &[&str] = &["base_url", "token"];

/// Reads the provider block, falling back to the environment through `env`
/// (a lookup function, so that tests need not touch the process
/// environment). Empty values count as unset.
pub(crate) fn resolve(
    config: &Attrs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, ProviderError> {
    for key in config.keys() {
        if !KNOWN_KEYS.contains(&key.as_str()) {
            tracing::warn!(attribute = %key, "provider \"gitlab\" ignores this attribute (it knows base_url and token)");
        }
    }
    let env = |name: &str| {
        env(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let ci_url = env("CI_API_V4_URL")
        .map(|u| normalize_base_url(&u, "CI_API_V4_URL"))
        .transpose()?;

    let base_url = match config_string(config, "base_url")? {
        Some(url) => normalize_base_url(&url, "`base_url`")?,
        None => match env("GITLAB_BASE_URL") {
            Some(url) => normalize_base_url(&url, "GITLAB_BASE_URL")?,
            None => ci_url
                .clone()
                .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned()),
        },
    };

    let auth = if let Some(token) = config_string(config, "token")? {
        Auth::Private(Secret::new(token), TokenSource::Config)
    } else if let Some(token) = env("GITLAB_TOKEN") {
        Auth::Private(Secret::new(token), TokenSource::Env)
    } else {
        match env("CI_JOB_TOKEN") {
            Some(token) if ci_url.as_deref() == Some(base_url.as_str()) => {
                Auth::Job(Secret::new(token))
            }
            _ => Auth::Missing,
        }
    };
    Ok(Settings { base_url, auth })
}

fn config_string(config: &Attrs, key: &str) -> Result<Option<String>, ProviderError> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
        Some(_) => Err(ProviderError::Config(format!(
            "provider \"gitlab\": `{key}` must be a string"
        ))),
    }
}

/// Checks an http(s) URL and makes it end in `/api/v4` without a slash.
/// `origin` names where it came from, for errors.
pub(crate) fn normalize_base_url(raw: &str, origin: &str) -> Result<String, ProviderError> {
    let url = reqwest::Url::parse(raw.trim()).map_err(|e| {
        ProviderError::Config(format!(
            "provider \"gitlab\": {origin} is not a URL ({e}); expected e.g. https://gitlab.example.com/api/v4"
        ))
    })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(ProviderError::Config(format!(
            "provider \"gitlab\": {origin} must be an http or https URL"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ProviderError::Config(format!(
            "provider \"gitlab\": {origin} must not carry credentials; set `token` or GITLAB_TOKEN instead"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ProviderError::Config(format!(
            "provider \"gitlab\": {origin} must not have a query or fragment"
        )));
    }
    let text = url.as_str().trim_end_matches('/').to_owned();
    Ok(if text.ends_with("/api/v4") {
        text
    } else {
        format!("{text}/api/v4")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    fn attrs(v: Value) -> Attrs {
        match v {
            Value::Object(m) => m.into_iter().collect(),
            _ => Attrs::new(),
        }
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn base_urls_are_normalized() {
        assert_eq!(
            normalize_base_url("https://gl.example.com", "x").unwrap(),
            "https://gl.example.com/api/v4"
        );
        assert_eq!(
            normalize_base_url("https://gl.example.com/api/v4/", "x").unwrap(),
            "https://gl.example.com/api/v4"
        );
        assert_eq!(
            normalize_base_url("http://127.0.0.1:8080/gitlab/", "x").unwrap(),
            "http://127.0.0.1:8080/gitlab/api/v4"
        );
        assert!(normalize_base_url("ftp://gl.example.com", "x").is_err());
        assert!(normalize_base_url("gl.example.com", "x").is_err());
        let err = normalize_base_url("https://me:glpat-secret@gl.example.com", "x")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("glpat-secret"), "{err}");
    }

    #[test]
    fn the_block_wins_over_the_environment() {
        let s = resolve(
            &attrs(json!({"base_url": "https://a.example", "token": "t1"})),
            &env_of(&[
                ("GITLAB_TOKEN", "t2"),
                ("GITLAB_BASE_URL", "https://b.example"),
            ]),
        )
        .unwrap();
        assert_eq!(s.base_url, "https://a.example/api/v4");
        assert_eq!(
            s.auth,
            Auth::Private(Secret::new("t1".into()), TokenSource::Config)
        );
    }

    #[test]
    fn environment_fallbacks() {
        let s = resolve(
            &Attrs::new(),
            &env_of(&[
                ("GITLAB_TOKEN", "t2"),
                ("CI_JOB_TOKEN", "job"),
                ("CI_API_V4_URL", "https://ci.example/api/v4"),
            ]),
        )
        .unwrap();
        assert_eq!(s.base_url, "https://ci.example/api/v4");
        assert_eq!(
            s.auth,
            Auth::Private(Secret::new("t2".into()), TokenSource::Env)
        );

        let s = resolve(&Attrs::new(), &env_of(&[])).unwrap();
        assert_eq!(s.base_url, DEFAULT_BASE_URL);
        assert_eq!(s.auth, Auth::Missing);
    }

    #[test]
    fn the_job_token_is_only_sent_to_the_jobs_own_instance() {
        let ci = [
            ("CI_JOB_TOKEN", "job"),
            ("CI_API_V4_URL", "https://ci.example/api/v4"),
        ];
        let s = resolve(&Attrs::new(), &env_of(&ci)).unwrap();
        assert_eq!(s.auth, Auth::Job(Secret::new("job".into())));

        let s = resolve(
            &attrs(json!({"base_url": "https://other.example"})),
            &env_of(&ci),
        )
        .unwrap();
        assert_eq!(s.auth, Auth::Missing);
    }

    #[test]
    fn secrets_do_not_print() {
        let s = resolve(&attrs(json!({"token": "glpat-topsecret"})), &env_of(&[])).unwrap();
        assert!(!format!("{s:?}").contains("topsecret"));
        assert!(resolve(&attrs(json!({"token": 5})), &env_of(&[])).is_err());
    }
}
