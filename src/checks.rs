//! `check "NAME"` blocks: HTTP smoke tests run after every apply and by
//! `berth check` — the seeds' `curl $HOST/api/ping` as part of the deploy.
//! A check GETs `url` until it answers `expect_status` (default 200) with a
//! body containing `contains`, up to `retries` attempts within `timeout`;
//! a failure names the URL, the last status and a body excerpt.

use std::time::{Duration, Instant};

use berth_provider::Value;
use futures_util::future::join_all;

use crate::config::eval::{PValue, Scope};
use crate::config::{Check, Config};
use crate::diag::Diagnostics;

/// One check, evaluated.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckSpec {
    /// The check's name.
    pub name: String,
    /// What to GET.
    pub url: String,
    /// The status that passes.
    pub expect_status: u16,
    /// Text the body must contain.
    pub contains: Option<String>,
    /// The whole budget.
    pub timeout: Duration,
    /// Attempts at most.
    pub retries: u32,
}

/// What a check found.
#[derive(Clone, Debug)]
pub struct CheckResult {
    /// The check.
    pub spec: CheckSpec,
    /// `Ok(attempts)` or `Err(message)`.
    pub outcome: Result<u32, String>,
}

/// Evaluates every check of `config` in `scope`.
pub fn evaluate(config: &Config, scope: &Scope) -> Result<Vec<CheckSpec>, Diagnostics> {
    let mut diags = Diagnostics::default();
    let mut out = Vec::new();
    for check in &config.checks {
        match evaluate_one(config, scope, check) {
            Ok(spec) => out.push(spec),
            Err(d) => diags.extend(d),
        }
    }
    if diags.has_errors() {
        Err(diags)
    } else {
        Ok(out)
    }
}

fn evaluate_one(config: &Config, scope: &Scope, check: &Check) -> Result<CheckSpec, Diagnostics> {
    let mut diags = Diagnostics::default();
    let mut get = |name: &str| -> Option<Value> {
        let attr = check.body.attr(name)?;
        match scope.eval(config, &attr.value) {
            Ok(PValue::Known(v)) => Some(v),
            Ok(PValue::Unknown) => {
                diags.push(config.error(
                    attr.value.span.clone(),
                    format!("`{name}` of check `{}` is not known", check.name),
                ));
                None
            }
            Err(d) => {
                diags.push(d);
                None
            }
        }
    };
    let url = get("url").and_then(|v| v.as_str().map(str::to_owned));
    let expect_status = get("expect_status").and_then(|v| v.as_u64()).unwrap_or(200);
    let contains = get("contains").and_then(|v| v.as_str().map(str::to_owned));
    let timeout = match get("timeout") {
        Some(Value::String(s)) => parse_duration(&s),
        Some(Value::Number(n)) => n.as_u64().map(Duration::from_secs),
        _ => Some(Duration::from_secs(60)),
    };
    let retries = get("retries").and_then(|v| v.as_u64()).unwrap_or(10);
    if diags.has_errors() {
        return Err(diags);
    }
    let span = check.span.clone();
    let Some(url) = url.filter(|u| u.starts_with("http://") || u.starts_with("https://")) else {
        return Err(config
            .error(
                span,
                format!("check `{}` needs an http:// or https:// `url`", check.name),
            )
            .into());
    };
    let Some(timeout) = timeout else {
        return Err(config
            .error(
                span,
                format!("check `{}` has an invalid `timeout`", check.name),
            )
            .with_help("write a duration such as \"30s\" or \"2m\"")
            .into());
    };
    Ok(CheckSpec {
        name: check.name.clone(),
        url,
        expect_status: u16::try_from(expect_status).unwrap_or(200),
        contains,
        timeout,
        retries: u32::try_from(retries.max(1)).unwrap_or(u32::MAX),
    })
}

/// Parses a check's `timeout`: a Go-style duration (`"90s"`, `"1m30s"`), or
/// a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    berth_provider::duration::parse(text).ok()
}

/// Runs every check concurrently.
pub async fn run(specs: Vec<CheckSpec>, progress: &(dyn Fn(&str) + Sync)) -> Vec<CheckResult> {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .user_agent(concat!("berth-check/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            return specs
                .into_iter()
                .map(|spec| CheckResult {
                    spec,
                    outcome: Err(format!("cannot build the HTTP client: {e}")),
                })
                .collect();
        }
    };
    join_all(specs.into_iter().map(|spec| {
        let client = client.clone();
        async move {
            let outcome = run_one(&client, &spec, progress).await;
            CheckResult { spec, outcome }
        }
    }))
    .await
}

async fn run_one(
    client: &reqwest::Client,
    spec: &CheckSpec,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<u32, String> {
    let started = Instant::now();
    let mut last = String::from("no attempt was made");
    let mut delay = Duration::from_millis(250);
    for attempt in 1..=spec.retries {
        let remaining = spec.timeout.saturating_sub(started.elapsed());
        if remaining.is_zero() {
            break;
        }
        let result = client
            .get(&spec.url)
            .timeout(remaining.min(Duration::from_secs(10)))
            .send()
            .await;
        match result {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                let body_ok = spec
                    .contains
                    .as_ref()
                    .is_none_or(|c| body.contains(c.as_str()));
                if status == spec.expect_status && body_ok {
                    return Ok(attempt);
                }
                last = if status != spec.expect_status {
                    format!(
                        "status {status} (expected {}), body: {}",
                        spec.expect_status,
                        excerpt(&body)
                    )
                } else {
                    format!(
                        "status {status}, but the body does not contain {:?}: {}",
                        spec.contains.as_deref().unwrap_or(""),
                        excerpt(&body)
                    )
                };
            }
            Err(e) => {
                last = if e.is_timeout() {
                    "timed out".to_owned()
                } else if e.is_connect() {
                    "connection refused or unreachable".to_owned()
                } else {
                    e.to_string()
                };
            }
        }
        if attempt < spec.retries {
            progress(&format!(
                "check.{}: attempt {attempt} failed ({last}); retrying",
                spec.name
            ));
            let sleep = delay.min(spec.timeout.saturating_sub(started.elapsed()));
            tokio::time::sleep(sleep).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
    Err(format!(
        "GET {} failed after {:.0?}: {last}",
        spec.url,
        started.elapsed()
    ))
}

fn excerpt(body: &str) -> String {
    let trimmed: String = body.trim().chars().take(200).collect();
    if body.trim().chars().count() > 200 {
        format!("{trimmed:?}…")
    } else {
        format!("{trimmed:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration(""), None);
    }
}
