//! The `provider "aws"` block and the environment: region, credentials and
//! endpoints, resolved the way Terraform's AWS provider does (a subset).
//!
//! | What | Where from, first match wins |
//! |---|---|
//! | region | `region`, `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region` in the shared config file |
//! | credentials | `access_key` + `secret_key` (+ `token`); the block's `profile`; `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`); the profile `AWS_PROFILE` (else `default`) of the shared credentials file |
//! | shared credentials file | `shared_credentials_files` (first that exists), `AWS_SHARED_CREDENTIALS_FILE`, `~/.aws/credentials` |
//! | shared config file | `shared_config_files`, `AWS_CONFIG_FILE`, `~/.aws/config` (only `region` is read) |
//! | EC2 endpoint | `endpoints { ec2 }`, `AWS_ENDPOINT_URL_EC2`, `AWS_ENDPOINT_URL`, `https://ec2.<region>.amazonaws.com` |
//! | ECR endpoint | `endpoints { ecr }`, `AWS_ENDPOINT_URL_ECR`, `AWS_ENDPOINT_URL`, `https://api.ecr.<region>.amazonaws.com` |
//!
//! `max_retries` sets the shared HTTP client's retries. Terraform's other
//! settings that only tune the SDK (`skip_*`, `insecure`, `endpoints` of
//! other services, ...) are accepted and ignored; settings that would change
//! what berth creates or which account it talks to and that berth does not
//! implement (`default_tags`, `ignore_tags`, `assume_role`,
//! `assume_role_with_web_identity`) are refused rather than ignored. SSO,
//! IMDS, `credential_process` and web identity are not supported: export
//! the resulting keys into the environment instead.
//!
//! Secrets live in [`Secret`], whose `Debug` and `Display` print
//! `[redacted]`.

use std::fmt;
use std::path::{Path, PathBuf};

use berth_provider::{Attrs, ProviderError};
use reqwest::Url;

use crate::attrs;

/// A secret string (secret access key, session token, registry password).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where the credentials came from, to name them in authentication errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CredentialSource {
    /// `access_key` / `secret_key` of the provider block.
    Provider,
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
    Env,
    /// A profile of a shared credentials file.
    Profile { name: String, file: PathBuf },
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Provider => {
                f.write_str("`access_key`/`secret_key` of the provider \"aws\" block")
            }
            Self::Env => f.write_str("AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"),
            Self::Profile { name, file } => {
                write!(f, "profile `{name}` of {}", file.display())
            }
        }
    }
}

/// An access key pair, with the session token of temporary credentials.
#[derive(Clone, Debug)]
pub(crate) struct Credentials {
    pub(crate) access_key: String,
    pub(crate) secret_key: Secret,
    pub(crate) session_token: Option<Secret>,
    pub(crate) source: CredentialSource,
}

/// Everything the provider block and the environment decide.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) region: String,
    pub(crate) credentials: Credentials,
    pub(crate) ec2: Url,
    pub(crate) ecr: Url,
    /// Whether the ECR endpoint was given (then it serves every region).
    pub(crate) ecr_overridden: bool,
    pub(crate) max_retries: Option<u32>,
}

/// Settings of Terraform's provider block that berth refuses instead of
/// silently ignoring.
const UNSUPPORTED: [&str; 4] = [
    "default_tags",
    "ignore_tags",
    "assume_role",
    "assume_role_with_web_identity",
];

fn config_error(message: impl fmt::Display) -> ProviderError {
    ProviderError::Config(format!("provider \"aws\": {message}"))
}

/// The partition's DNS suffix for `region`.
pub(crate) fn dns_suffix(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    }
}

/// The ARN partition of `region`.
pub(crate) fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

fn valid_region(region: &str) -> bool {
    !region.is_empty()
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The default ECR API endpoint of `region`.
pub(crate) fn default_ecr_endpoint(region: &str) -> Result<Url, ProviderError> {
    parse_endpoint(
        "ecr",
        &format!("https://api.ecr.{region}.{}", dns_suffix(region)),
    )
}

fn parse_endpoint(service: &str, text: &str) -> Result<Url, ProviderError> {
    let url = Url::parse(text.trim())
        .map_err(|e| config_error(format!("the {service} endpoint {text:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(config_error(format!(
            "the {service} endpoint {text:?} must be an http(s) URL"
        )));
    }
    Ok(url)
}

/// One profile's keys from an INI file (`[name]` or `[profile name]`
/// sections, `key = value` lines, `#` and `;` comments).
fn ini_section(text: &str, profile: &str, config_style: bool) -> Option<Vec<(String, String)>> {
    let mut current: Option<String> = None;
    let mut found = None::<Vec<(String, String)>>;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            let name = if config_style && name != "default" {
                name.strip_prefix("profile ").map(str::trim).unwrap_or(name)
            } else {
                name
            };
            current = Some(name.to_owned());
            if name == profile && found.is_none() {
                found = Some(Vec::new());
            }
            continue;
        }
        if current.as_deref() == Some(profile)
            && let (Some(section), Some((k, v))) = (found.as_mut(), line.split_once('='))
        {
            section.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    found
}

fn lookup(section: &[(String, String)], key: &str) -> Option<String> {
    section
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty())
}

fn home_file(env: &dyn Fn(&str) -> Option<String>, rel: &str) -> Option<PathBuf> {
    env("HOME").map(|h| Path::new(&h).join(rel))
}

/// The files to look in: the block's list, else the variable, else the
/// default under `$HOME`.
fn candidate_files(
    config: &Attrs,
    key: &str,
    var: &str,
    default: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<PathBuf>, ProviderError> {
    if let Some(list) = attrs::string_list(config, key)? {
        return Ok(list.into_iter().map(PathBuf::from).collect());
    }
    if let Some(p) = env(var) {
        return Ok(vec![PathBuf::from(p)]);
    }
    Ok(home_file(env, default).into_iter().collect())
}

fn profile_credentials(
    files: &[PathBuf],
    profile: &str,
    explicit: bool,
) -> Result<Option<Credentials>, ProviderError> {
    for file in files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let Some(section) = ini_section(&text, profile, false) else {
            continue;
        };
        let access = lookup(&section, "aws_access_key_id");
        let secret = lookup(&section, "aws_secret_access_key");
        match (access, secret) {
            (Some(access_key), Some(secret_key)) => {
                return Ok(Some(Credentials {
                    access_key,
                    secret_key: Secret::new(secret_key),
                    session_token: lookup(&section, "aws_session_token").map(Secret::new),
                    source: CredentialSource::Profile {
                        name: profile.to_owned(),
                        file: file.clone(),
                    },
                }));
            }
            _ if explicit => {
                return Err(config_error(format!(
                    "profile `{profile}` in {} has no aws_access_key_id and \
                     aws_secret_access_key (SSO, role and process profiles are not supported; \
                     export the keys as AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead)",
                    file.display()
                )));
            }
            _ => {}
        }
    }
    if explicit {
        return Err(config_error(format!(
            "profile `{profile}` was not found in {}",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(None)
}

fn profile_region(files: &[PathBuf], profile: &str) -> Option<String> {
    files.iter().find_map(|file| {
        let text = std::fs::read_to_string(file).ok()?;
        lookup(&ini_section(&text, profile, true)?, "region")
    })
}

/// The endpoint of `service` from the `endpoints` block (or map), its
/// `AWS_ENDPOINT_URL_<SERVICE>` variable or `AWS_ENDPOINT_URL`.
fn endpoint_override(
    endpoints: &Attrs,
    service: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Url>, ProviderError> {
    let from_block = attrs::non_empty_string(endpoints, service)
        .map_err(|_| config_error(format!("`endpoints.{service}` must be a string")))?;
    let text = from_block
        .or_else(|| {
            env(&format!(
                "AWS_ENDPOINT_URL_{}",
                service.to_ascii_uppercase()
            ))
        })
        .or_else(|| env("AWS_ENDPOINT_URL"));
    text.map(|t| parse_endpoint(service, &t)).transpose()
}

/// Resolves the provider block against the environment read through `env`
/// (empty values count as unset).
pub(crate) fn resolve(
    config: &Attrs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, ProviderError> {
    let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let env: &dyn Fn(&str) -> Option<String> = &env;
    for key in UNSUPPORTED {
        if config.get(key).is_some_and(|v| !v.is_null()) {
            return Err(config_error(format!(
                "`{key}` is not supported by berth's aws provider yet; remove it (set tags on \
                 each resource instead of `default_tags`, and export assumed-role credentials \
                 as AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN)"
            )));
        }
    }
    let string = |key: &str| {
        attrs::non_empty_string(config, key)
            .map_err(|_| config_error(format!("`{key}` must be a string")))
    };

    let block_profile = string("profile")?;
    let profile = block_profile
        .clone()
        .or_else(|| env("AWS_PROFILE"))
        .unwrap_or_else(|| "default".to_owned());
    let credential_files = candidate_files(
        config,
        "shared_credentials_files",
        "AWS_SHARED_CREDENTIALS_FILE",
        ".aws/credentials",
        env,
    )?;
    let config_files = candidate_files(
        config,
        "shared_config_files",
        "AWS_CONFIG_FILE",
        ".aws/config",
        env,
    )?;

    let region = match string("region")?
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .or_else(|| profile_region(&config_files, &profile))
    {
        Some(r) => r.trim().to_owned(),
        None => {
            return Err(config_error(
                "no region: set `region` in the provider \"aws\" block, or AWS_REGION",
            ));
        }
    };
    if !valid_region(&region) {
        return Err(config_error(format!(
            "`region` {region:?} is not a region name like `eu-west-1`"
        )));
    }

    let access_key = string("access_key")?;
    let secret_key = string("secret_key")?;
    let credentials = match (access_key, secret_key) {
        (Some(access_key), Some(secret_key)) => Credentials {
            access_key,
            secret_key: Secret::new(secret_key),
            session_token: string("token")?.map(Secret::new),
            source: CredentialSource::Provider,
        },
        (Some(_), None) | (None, Some(_)) => {
            return Err(config_error(
                "`access_key` and `secret_key` must be set together",
            ));
        }
        (None, None) => {
            let from_block_profile = match &block_profile {
                Some(p) => profile_credentials(&credential_files, p, true)?,
                None => None,
            };
            let from_env = || match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                (Some(access_key), Some(secret_key)) => Some(Credentials {
                    access_key,
                    secret_key: Secret::new(secret_key),
                    session_token: env("AWS_SESSION_TOKEN").map(Secret::new),
                    source: CredentialSource::Env,
                }),
                _ => None,
            };
            match from_block_profile.or_else(from_env) {
                Some(c) => c,
                None => profile_credentials(
                    &credential_files,
                    &profile,
                    env("AWS_PROFILE").is_some(),
                )?
                .ok_or_else(|| {
                    config_error(
                        "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and \
                         AWS_SESSION_TOKEN for temporary credentials), a profile in \
                         ~/.aws/credentials, or `access_key` and `secret_key` in the provider \
                         \"aws\" block",
                    )
                })?,
            }
        }
    };

    let endpoints = attrs::block(config, "endpoints")
        .map_err(|_| config_error("`endpoints` must be a block: endpoints { ec2 = \"...\" }"))?
        .unwrap_or_default();
    for key in endpoints.keys() {
        if !matches!(key.as_str(), "ec2" | "ecr") {
            tracing::debug!(service = %key, "endpoint of a service berth does not use ignored");
        }
    }
    let suffix = dns_suffix(&region);
    let ec2 = match endpoint_override(&endpoints, "ec2", env)? {
        Some(url) => url,
        None => parse_endpoint("ec2", &format!("https://ec2.{region}.{suffix}"))?,
    };
    let ecr_override = endpoint_override(&endpoints, "ecr", env)?;
    let ecr_overridden = ecr_override.is_some();
    let ecr = match ecr_override {
        Some(url) => url,
        None => default_ecr_endpoint(&region)?,
    };
    let max_retries = attrs::integer(config, "max_retries")
        .map_err(|_| config_error("`max_retries` must be a whole number"))?
        .map(|n| n.clamp(0, 100) as u32);
    Ok(Settings {
        region,
        credentials,
        ec2,
        ecr,
        ecr_overridden,
        max_retries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(v: serde_json::Value) -> Attrs {
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn provider_block_wins_and_secrets_are_not_printed() {
        let env = |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some("AKIDENV".to_owned()),
            "AWS_SECRET_ACCESS_KEY" => Some("envsecret".to_owned()),
            "AWS_REGION" => Some("us-east-1".to_owned()),
            _ => None,
        };
        let s = resolve(
            &attrs(json!({
                "region": "eu-west-1",
                "access_key": "AKIDBLOCK",
                "secret_key": "blocksecret",
                "token": "blocktoken",
                "endpoints": [{"ec2": "http://127.0.0.1:5000", "s3": "http://x"}],
            })),
            &env,
        )
        .unwrap();
        assert_eq!(s.region, "eu-west-1");
        assert_eq!(s.credentials.access_key, "AKIDBLOCK");
        assert_eq!(s.credentials.source, CredentialSource::Provider);
        assert_eq!(s.ec2.as_str(), "http://127.0.0.1:5000/");
        assert_eq!(s.ecr.as_str(), "https://api.ecr.eu-west-1.amazonaws.com/");
        assert!(!s.ecr_overridden);
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("blocksecret") && !shown.contains("blocktoken"),
            "{shown}"
        );
    }

    #[test]
    fn environment_is_used_without_a_block() {
        let env = |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some("AKIDENV".to_owned()),
            "AWS_SECRET_ACCESS_KEY" => Some("envsecret".to_owned()),
            "AWS_SESSION_TOKEN" => Some("envtoken".to_owned()),
            "AWS_DEFAULT_REGION" => Some("cn-north-1".to_owned()),
            "AWS_ENDPOINT_URL_ECR" => Some("http://127.0.0.1:9".to_owned()),
            _ => None,
        };
        let s = resolve(&Attrs::new(), &env).unwrap();
        assert_eq!(s.credentials.source, CredentialSource::Env);
        assert_eq!(
            s.credentials.session_token.as_ref().map(Secret::expose),
            Some("envtoken")
        );
        assert_eq!(s.ec2.as_str(), "https://ec2.cn-north-1.amazonaws.com.cn/");
        assert_eq!(s.ecr.as_str(), "http://127.0.0.1:9/");
        assert!(s.ecr_overridden);
    }

    #[test]
    fn shared_credentials_profiles_are_read() {
        let dir = std::env::temp_dir().join(format!(
            "berth-aws-settings-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let creds = dir.join("credentials");
        std::fs::write(
            &creds,
            "[default]\naws_access_key_id = AKIDDEF\naws_secret_access_key = s1\n\n\
             # comment\n[work]\naws_access_key_id=AKIDWORK\naws_secret_access_key=s2\n\
             aws_session_token = t2\n",
        )
        .unwrap();
        let config = dir.join("config");
        std::fs::write(&config, "[profile work]\nregion = ap-south-1\n").unwrap();
        let files = json!([creds.display().to_string()]);
        let cfgs = json!([config.display().to_string()]);
        let s = resolve(
            &attrs(json!({"profile": "work", "shared_credentials_files": files, "shared_config_files": cfgs})),
            &no_env,
        )
        .unwrap();
        assert_eq!(s.credentials.access_key, "AKIDWORK");
        assert_eq!(s.region, "ap-south-1");
        assert!(matches!(
            s.credentials.source,
            CredentialSource::Profile { .. }
        ));
        let s = resolve(
            &attrs(json!({"region": "us-east-1", "shared_credentials_files": files})),
            &no_env,
        )
        .unwrap();
        assert_eq!(s.credentials.access_key, "AKIDDEF");
        let e = resolve(
            &attrs(json!({"region": "us-east-1", "profile": "nope", "shared_credentials_files": files})),
            &no_env,
        )
        .unwrap_err();
        assert!(e.to_string().contains("`nope` was not found"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_and_unsupported_settings_are_errors() {
        let e = resolve(&attrs(json!({"region": "us-east-1"})), &no_env).unwrap_err();
        assert!(e.to_string().contains("AWS_ACCESS_KEY_ID"), "{e}");
        let e = resolve(
            &attrs(json!({"access_key": "a", "secret_key": "b"})),
            &no_env,
        )
        .unwrap_err();
        assert!(e.to_string().contains("no region"), "{e}");
        let e = resolve(
            &attrs(json!({"region": "us-east-1", "access_key": "a", "secret_key": "b", "default_tags": [{"tags": {}}]})),
            &no_env,
        )
        .unwrap_err();
        assert!(e.to_string().contains("default_tags"), "{e}");
        let e = resolve(
            &attrs(json!({"region": "us-east-1", "access_key": "a"})),
            &no_env,
        )
        .unwrap_err();
        assert!(e.to_string().contains("together"), "{e}");
        let e = resolve(
            &attrs(json!({"region": "us-east-1", "access_key": "a", "secret_key": "b", "endpoints": {"ec2": "ftp://x"}})),
            &no_env,
        )
        .unwrap_err();
        assert!(e.to_string().contains("http(s)"), "{e}");
    }
}
