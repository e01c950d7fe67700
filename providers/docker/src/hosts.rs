//! Where a docker resource lives: the local engine (the provider's `host`
//! if it is a `unix://` or `tcp://` address, else `DOCKER_HOST`, else the
//! local socket), or a host reached over SSH, named by the resource's
//! `host { ... }` block or by the provider's `host = "ssh://user@host:port"`.
//!
//! - [`Settings`]: the provider block's say (default engine, key material
//!   for host blocks that carry none).
//! - [`spec_from_block`]: a `host` block as a [`HostSpec`].
//! - [`Hints`]: what [`Provider::hint`](berth_provider::Provider::hint)
//!   taught about each address: its configured host and the host state
//!   records it on (`host_target`, `host_fingerprint`), so that refresh
//!   lists each type once per host and delete finds objects whose
//!   configuration is gone.
//! - [`StateKnownHosts`]: the trust-on-first-use store over the
//!   fingerprints recorded in state.
//!
//! Every object on an SSH host records two attributes besides its
//! configuration: `host_target` (`user@address:port`) and
//! `host_fingerprint` (the `SHA256:` host key seen). They are not part of
//! the schemas (the engine stores attributes a provider returns that the
//! schema does not name), so local resources do not show them as
//! "(known after apply)".

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_provider::{AttrSchema, AttrType, Attrs, BlockSchema, Nesting, ProviderError, Value};
use berth_ssh::{HostSpec, KnownHostStore, SshError};

use crate::attrs;
use crate::client::DEFAULT_HOST;
use crate::duration::parse_duration;

/// The resource block naming the host.
pub(crate) const BLOCK: &str = "host";
/// The recorded `SHA256:...` fingerprint of the host's key.
pub(crate) const FINGERPRINT: &str = "host_fingerprint";
/// The recorded `user@address:port` the object lives on.
pub(crate) const TARGET: &str = "host_target";

/// The `host { ... }` block every `docker_*` resource accepts. A change
/// anywhere in it replaces the resource (the engine sees the block as one
/// value, and a hashed one once `private_key` is in it).
pub(crate) fn block_schema() -> BlockSchema {
    use AttrType::*;
    BlockSchema {
        name: BLOCK,
        nesting: Nesting::Single,
        force_new: true,
        attributes: vec![
            AttrSchema::required("address", String),
            AttrSchema::optional("port", Number).default("22"),
            AttrSchema::optional("user", String).default("\"root\""),
            // The key's text (env("SSH_KEY"), file("...")), not a path.
            AttrSchema::optional("private_key", String).sensitive(),
            AttrSchema::optional("passphrase", String).sensitive(),
            // A pinned `SHA256:...` fingerprint or known_hosts line(s).
            AttrSchema::optional("host_key", String),
            AttrSchema::optional("known_hosts_file", String),
            // How long to keep retrying while the host does not answer.
            AttrSchema::optional("timeout", String).default("\"5m\""),
        ],
        blocks: vec![],
    }
}

/// Where one resource's objects are.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// The local engine ([`Settings::local_url`]).
    Local,
    /// A host over SSH.
    Ssh(HostSpec),
}

impl Location {
    /// `local`, or the SSH `user@address:port`.
    pub(crate) fn key(&self) -> String {
        match self {
            Location::Local => "local".to_owned(),
            Location::Ssh(spec) => spec.key(),
        }
    }
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local => f.write_str("Local"),
            Location::Ssh(spec) => write!(f, "Ssh({})", spec.key()),
        }
    }
}

/// The provider block's settings.
#[derive(Clone)]
pub(crate) struct Settings {
    /// The local engine's address (`unix://...`, `tcp://...`).
    pub(crate) local_url: String,
    /// Where resources without a `host` block go: `Ok(None)` the local
    /// engine, `Ok(Some(spec))` the provider's SSH host, `Err` why the
    /// default cannot be used (e.g. `DOCKER_HOST=ssh://...` without a key).
    pub(crate) default_ssh: Result<Option<HostSpec>, String>,
    /// The provider's `private_key`, for host blocks that have none.
    private_key: Option<String>,
    /// The provider's `passphrase` (with its `private_key`).
    passphrase: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            local_url: DEFAULT_HOST.to_owned(),
            default_ssh: Ok(None),
            private_key: None,
            passphrase: None,
        }
    }
}

fn is_ssh_url(s: &str) -> bool {
    s.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("ssh://"))
}

fn in_provider(message: impl std::fmt::Display) -> ProviderError {
    ProviderError::Config(format!("provider \"docker\": {message}"))
}

/// `~/x` against `$HOME`, a relative path against `base_dir`.
fn resolve_path(path: &str, base_dir: &Path) -> PathBuf {
    if let Some(rest) = path.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    base_dir.join(path)
}

/// Checks that a local engine address has a scheme the client speaks.
pub(crate) fn check_local_url(url: &str, source: &str) -> Result<(), ProviderError> {
    if url.starts_with("unix://")
        || url.starts_with('/')
        || url.starts_with("tcp://")
        || url.starts_with("http://")
    {
        Ok(())
    } else {
        Err(in_provider(format!(
            "unsupported {source} `{url}` (use unix:///path/to/docker.sock, tcp://HOST:PORT, \
             http://HOST:PORT or ssh://USER@HOST:PORT)"
        )))
    }
}

impl Settings {
    /// Reads the provider block: `host`, `private_key`, `passphrase`,
    /// `host_key`, `known_hosts_file`; `docker_host` is `DOCKER_HOST`.
    /// Never puts a key or passphrase into an error.
    pub(crate) fn from_config(
        config: &Attrs,
        docker_host: Option<String>,
        base_dir: &Path,
    ) -> Result<Self, ProviderError> {
        let text = |key: &str| -> Result<Option<String>, ProviderError> {
            attrs::string(config, key)
                .map_err(|_| in_provider(format!("`{key}` must be a string")))
                .map(|v| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()))
        };
        let host = text("host")?;
        // The key's text is used as given (berth-ssh normalises it).
        let private_key = attrs::string(config, "private_key")
            .map_err(|_| in_provider("`private_key` must be a string"))?
            .filter(|k| !k.trim().is_empty());
        let passphrase = attrs::string(config, "passphrase")
            .map_err(|_| in_provider("`passphrase` must be a string"))?
            .filter(|p| !p.is_empty());
        let host_key = text("host_key")?;
        let known_hosts_file = text("known_hosts_file")?.map(|p| resolve_path(&p, base_dir));
        let docker_host = docker_host
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty());

        let ssh_spec = |url: &str, source: &str| -> Result<HostSpec, ProviderError> {
            let mut spec =
                HostSpec::from_url(url).map_err(|e| in_provider(format!("{source}: {e}")))?;
            spec.private_key = private_key.clone().unwrap_or_default();
            spec.passphrase = passphrase.clone();
            spec.host_key = host_key.clone();
            spec.known_hosts_file = known_hosts_file.clone();
            Ok(spec)
        };

        let mut settings = Settings {
            local_url: DEFAULT_HOST.to_owned(),
            default_ssh: Ok(None),
            private_key: private_key.clone(),
            passphrase: passphrase.clone(),
        };
        if let Some(local) = docker_host.as_deref().filter(|h| !is_ssh_url(h)) {
            settings.local_url = local.to_owned();
        }
        match (host, docker_host) {
            (Some(host), _) if is_ssh_url(&host) => {
                let spec = ssh_spec(&host, "`host`")?;
                if private_key.is_none() {
                    return Err(in_provider(format!(
                        "host = \"{host}\" needs `private_key` (the key's text, e.g. \
                         private_key = env(\"SSH_KEY\") or file(\"~/.ssh/id_ed25519\"))"
                    )));
                }
                settings.default_ssh = Ok(Some(spec));
            }
            (Some(host), _) => {
                check_local_url(&host, "`host`")?;
                settings.local_url = host;
            }
            (None, Some(env)) if is_ssh_url(&env) => {
                settings.default_ssh = match ssh_spec(&env, "DOCKER_HOST") {
                    Ok(spec) if private_key.is_some() => Ok(Some(spec)),
                    Ok(_) => Err(format!(
                        "DOCKER_HOST is {env}, and berth needs the key's text to log in there: \
                         set `private_key` in provider \"docker\" (e.g. private_key = env(\"SSH_KEY\"))"
                    )),
                    Err(e) => Err(e.to_string()),
                };
            }
            (None, _) => {}
        }
        check_local_url(&settings.local_url, "DOCKER_HOST")?;
        Ok(settings)
    }

    /// Where a resource without a `host` block lives.
    pub(crate) fn default_location(&self) -> Result<Location, String> {
        match &self.default_ssh {
            Ok(None) => Ok(Location::Local),
            Ok(Some(spec)) => Ok(Location::Ssh(spec.clone())),
            Err(e) => Err(e.clone()),
        }
    }

    /// Where the resource configured with `config` lives.
    pub(crate) fn location_of(
        &self,
        config: &Attrs,
        base_dir: &Path,
    ) -> Result<Location, ProviderError> {
        match attrs::block(config, BLOCK)? {
            Some(block) => spec_from_block(&block, self, base_dir).map(Location::Ssh),
            None => self.default_location().map_err(ProviderError::Config),
        }
    }
}

/// A `host { ... }` block as a [`HostSpec`]; `private_key` and
/// `passphrase` fall back to the provider's.
pub(crate) fn spec_from_block(
    block: &Attrs,
    settings: &Settings,
    base_dir: &Path,
) -> Result<HostSpec, ProviderError> {
    let config = |m: String| ProviderError::Config(format!("`host`: {m}"));
    let address = attrs::non_empty_string(block, "address")
        .map_err(|_| config("`address` must be a string".into()))?
        .map(|a| {
            a.trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        })
        .filter(|a| !a.is_empty())
        .ok_or_else(|| config("`address` is required".into()))?;
    let port =
        match attrs::int(block, "port").map_err(|_| config("`port` must be a number".into()))? {
            None => berth_ssh::DEFAULT_PORT,
            Some(p) => u16::try_from(p)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| config(format!("`port` must be between 1 and 65535, got {p}")))?,
        };
    let user = attrs::non_empty_string(block, "user")
        .map_err(|_| config("`user` must be a string".into()))?
        .unwrap_or_else(|| berth_ssh::DEFAULT_USER.to_owned());
    let own_key = attrs::string(block, "private_key")
        .map_err(|_| config("`private_key` must be a string".into()))?
        .filter(|k| !k.trim().is_empty());
    let own_passphrase = attrs::string(block, "passphrase")
        .map_err(|_| config("`passphrase` must be a string".into()))?
        .filter(|p| !p.is_empty());
    let (private_key, passphrase) = match own_key {
        Some(key) => (key, own_passphrase),
        None => match &settings.private_key {
            Some(key) => (
                key.clone(),
                own_passphrase.or_else(|| settings.passphrase.clone()),
            ),
            None => {
                return Err(config(format!(
                    "{user}@{address}:{port} has no `private_key`, and provider \"docker\" sets none: \
                     set private_key to the key's text, e.g. private_key = env(\"SSH_KEY\") or \
                     file(\"~/.ssh/id_ed25519\")"
                )));
            }
        },
    };
    let timeout = match attrs::non_empty_string(block, "timeout")
        .map_err(|_| config("`timeout` must be a string".into()))?
    {
        None => berth_ssh::DEFAULT_TIMEOUT,
        Some(t) => Duration::from_nanos(
            u64::try_from(parse_duration(&t).map_err(|e| config(format!("`timeout`: {e}")))?)
                .map_err(|_| config("`timeout` must not be negative".into()))?,
        ),
    };
    let mut spec = HostSpec::new(address, private_key);
    spec.port = port;
    spec.user = user;
    spec.passphrase = passphrase;
    spec.host_key = attrs::non_empty_string(block, "host_key")
        .map_err(|_| config("`host_key` must be a string".into()))?;
    spec.known_hosts_file = attrs::non_empty_string(block, "known_hosts_file")
        .map_err(|_| config("`known_hosts_file` must be a string".into()))?
        .map(|p| resolve_path(&p, base_dir));
    spec.timeout = timeout;
    Ok(spec)
}

/// Checks a known `host` block without connecting (for
/// [`Provider::validate`](berth_provider::Provider::validate)): the
/// problems that do not depend on the provider block.
pub(crate) fn validate_block(config: &Attrs) -> Option<String> {
    let block = match attrs::block(config, BLOCK) {
        Ok(Some(block)) => block,
        Ok(None) => return None,
        Err(e) => return Some(e.to_string()),
    };
    // A stand-in key, so that only the block's own values are judged.
    let settings = Settings {
        private_key: Some("(checked at connection time)".to_owned()),
        ..Settings::default()
    };
    spec_from_block(&block, &settings, Path::new("."))
        .err()
        .map(|e| match e {
            ProviderError::Config(m) => m,
            other => other.to_string(),
        })
}

/// `address:port` (the host key store's key) of `user@address:port`.
pub(crate) fn host_port_of(target: &str) -> Option<String> {
    HostSpec::from_url(target).ok().map(|s| s.host_port())
}

/// The trust-on-first-use store: the fingerprints recorded in state (from
/// [`Provider::hint`](berth_provider::Provider::hint)) and those seen for
/// the first time during this run.
#[derive(Debug, Default)]
pub(crate) struct StateKnownHosts {
    map: Mutex<HashMap<String, String>>,
}

impl StateKnownHosts {
    /// Takes a fingerprint recorded in state, unless one is known already
    /// for `host_port`.
    pub(crate) fn remember(&self, host_port: &str, fingerprint: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(host_port.to_owned())
            .or_insert_with(|| fingerprint.to_owned());
    }
}

impl KnownHostStore for StateKnownHosts {
    fn recorded(&self, host: &str) -> Option<String> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
            .cloned()
    }

    fn record(&self, host: &str, fingerprint: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host.to_owned(), fingerprint.to_owned());
    }
}

/// Where state says an object is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// No `host_target`: the local engine.
    Local,
    /// On the SSH host `user@address:port`.
    Target(String),
}

impl Recorded {
    /// From recorded (or observed) attributes.
    pub(crate) fn from_attrs(attrs: &Attrs) -> Self {
        match attrs.get(TARGET) {
            Some(Value::String(t)) if !t.is_empty() => Recorded::Target(t.clone()),
            _ => Recorded::Local,
        }
    }
}

/// What one hint said about an address.
#[derive(Clone)]
struct Hint {
    type_name: String,
    /// `None`: the configuration could not be evaluated (or the resource
    /// is no longer configured). `Some(None)`: no `host` block (or one
    /// whose value is not known yet).
    configured: Option<Option<Attrs>>,
    recorded: Option<Recorded>,
}

/// The SSH host specs that carry a key, by `user@address:port` and by
/// `address:port`.
#[derive(Default)]
struct Candidates {
    by_key: HashMap<String, HostSpec>,
    by_host_port: HashMap<String, HostSpec>,
}

impl Candidates {
    /// A spec for the recorded `user@address:port`: the same login first,
    /// else anyone's login to the same `address:port` (the engine there is
    /// the same).
    fn find(&self, target: &str) -> Option<HostSpec> {
        self.by_key
            .get(target)
            .or_else(|| self.by_host_port.get(&host_port_of(target)?))
            .cloned()
    }
}

/// Everything hinted, by address.
#[derive(Default)]
pub(crate) struct Hints {
    by_address: Mutex<BTreeMap<String, Hint>>,
    /// [`Candidates`] of the hints so far (made once, for every refresh
    /// and delete that follows the hints).
    candidates: Mutex<Option<Arc<Candidates>>>,
}

/// One list call of a refresh: where, and for which addresses.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) location: Location,
    /// The addresses whose objects are looked for here.
    pub(crate) addresses: BTreeSet<String>,
    /// Whether state records an object here: if the engine cannot be
    /// reached, the refresh fails. Otherwise (only new resources, on the
    /// local engine) nothing can be missed and the failure is ignored.
    pub(crate) needed: bool,
}

impl Hints {
    /// Takes one hint; a recorded `host_fingerprint` goes into `store`.
    pub(crate) fn add(
        &self,
        type_name: &str,
        address: &str,
        config: Option<&Attrs>,
        recorded: Option<&Attrs>,
        store: &StateKnownHosts,
    ) {
        let recorded_at = recorded.map(Recorded::from_attrs);
        if let (Some(Recorded::Target(target)), Some(Value::String(fp))) =
            (&recorded_at, recorded.and_then(|r| r.get(FINGERPRINT)))
            && let Some(host_port) = host_port_of(target)
            && !fp.is_empty()
        {
            store.remember(&host_port, fp);
        }
        let configured = config.map(|c| match c.get(BLOCK) {
            Some(Value::Object(map)) => {
                Some(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            }
            _ => None,
        });
        *self.candidates.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.by_address
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                address.to_owned(),
                Hint {
                    type_name: type_name.to_owned(),
                    configured,
                    recorded: recorded_at,
                },
            );
    }

    /// Forgets what was derived with the previous [`Settings`] (call when
    /// they change).
    pub(crate) fn settings_changed(&self) {
        *self.candidates.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn snapshot(&self) -> BTreeMap<String, Hint> {
        self.by_address
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every SSH host spec known with its key: from hinted configurations
    /// and the provider's default.
    fn candidates(&self, settings: &Settings, base_dir: &Path) -> Arc<Candidates> {
        let mut cache = self.candidates.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(candidates) = cache.as_ref() {
            return Arc::clone(candidates);
        }
        let hints = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Candidates::default();
        let configured = hints
            .values()
            .filter_map(|h| h.configured.as_ref()?.as_ref())
            .filter_map(|block| spec_from_block(block, settings, base_dir).ok());
        let default = settings.default_ssh.as_ref().ok().and_then(Option::as_ref);
        for spec in configured.chain(default.cloned()) {
            out.by_host_port
                .entry(spec.host_port())
                .or_insert_with(|| spec.clone());
            out.by_key.entry(spec.key()).or_insert(spec);
        }
        let out = Arc::new(out);
        *cache = Some(Arc::clone(&out));
        out
    }

    /// Where the object recorded at `recorded` is, or why it cannot be
    /// reached.
    pub(crate) fn resolve(
        &self,
        address: &str,
        recorded: &Recorded,
        settings: &Settings,
        base_dir: &Path,
    ) -> Result<Location, ProviderError> {
        match recorded {
            Recorded::Local => Ok(Location::Local),
            Recorded::Target(target) => self
                .candidates(settings, base_dir)
                .find(target)
                .map(Location::Ssh)
                .ok_or_else(|| unreachable_host(address, target)),
        }
    }

    /// The list calls a refresh of `type_name` makes: one per engine,
    /// each with the addresses looked for there. An address with a record
    /// is looked for where state says it is; one without, where it is
    /// configured. `None` when nothing of the type was hinted (then the
    /// default engine is listed, as without hints).
    pub(crate) fn groups(
        &self,
        type_name: &str,
        settings: &Settings,
        base_dir: &Path,
    ) -> Result<Option<Vec<Group>>, ProviderError> {
        let candidates = self.candidates(settings, base_dir);
        let hints = self.snapshot();
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        let mut any = false;
        let mut problems = Vec::new();
        for (address, hint) in hints.iter().filter(|(_, h)| h.type_name == type_name) {
            any = true;
            let (location, needed) = match (&hint.recorded, &hint.configured) {
                (Some(Recorded::Local), _) => (Location::Local, true),
                (Some(Recorded::Target(target)), configured) => {
                    match candidates.find(target) {
                        Some(spec) => (Location::Ssh(spec), true),
                        None => {
                            // The resource's own host block, if it cannot
                            // be used, says best why.
                            let own = configured
                                .as_ref()
                                .and_then(Option::as_ref)
                                .and_then(|b| spec_from_block(b, settings, base_dir).err());
                            problems.push(match own {
                                Some(ProviderError::Config(m)) => format!("{address}: {m}"),
                                Some(e) => format!("{address}: {e}"),
                                None => unreachable_message(address, target),
                            });
                            continue;
                        }
                    }
                }
                (None, Some(Some(block))) => match spec_from_block(block, settings, base_dir) {
                    Ok(spec) => (Location::Ssh(spec), true),
                    // Nothing recorded: the create will report it.
                    Err(_) => continue,
                },
                (None, Some(None)) => match settings.default_location() {
                    Ok(Location::Local) => (Location::Local, false),
                    Ok(location) => (location, true),
                    Err(_) => continue,
                },
                (None, None) => continue,
            };
            let group = groups.entry(location.key()).or_insert_with(|| Group {
                location,
                addresses: BTreeSet::new(),
                needed: false,
            });
            group.addresses.insert(address.clone());
            group.needed |= needed;
        }
        if !problems.is_empty() {
            return Err(ProviderError::Api(problems.join("\n")));
        }
        Ok(any.then(|| groups.into_values().collect()))
    }
}

/// The error for an object on a host no private key is known for.
pub(crate) fn unreachable_host(address: &str, target: &str) -> ProviderError {
    ProviderError::Api(unreachable_message(address, target))
}

fn unreachable_message(address: &str, target: &str) -> String {
    format!(
        "{address} lives on {target} (recorded in state), but no private key is known for that \
         host: no resource in the configuration has a `host` block for it any more. Keep the \
         resource (or at least its `host` block) in the configuration until it is destroyed, \
         or set the provider's default host: provider \"docker\" {{ host = \"ssh://{target}\", \
         private_key = ... }}. berth does not report objects it cannot look at as gone."
    )
}

/// An SSH error as a provider error; every one names the host.
pub(crate) fn ssh_error(spec: &HostSpec, e: SshError) -> ProviderError {
    match e {
        SshError::Spec { .. } => ProviderError::Config(e.to_string()),
        SshError::Key { .. } => ProviderError::Config(format!("{}: {e}", spec.key())),
        SshError::Unreachable { .. } => ProviderError::Unreachable {
            what: format!("{} over SSH", spec.key()),
            message: e.to_string(),
        },
        other => ProviderError::Api(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(v: Value) -> Attrs {
        match v {
            Value::Object(map) => map.into_iter().collect(),
            _ => unreachable!(),
        }
    }

    const KEY: &str =
        "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret\n-----END OPENSSH PRIVATE KEY-----\n";

    #[test]
    fn host_blocks_become_specs() {
        let settings = Settings::default();
        let block = attrs(json!({
            "address": "10.0.0.5", "port": 2222, "user": "deploy", "private_key": KEY,
            "host_key": "SHA256:abc", "known_hosts_file": "kh", "timeout": "1m30s"
        }));
        let spec = spec_from_block(&block, &settings, Path::new("/base")).unwrap();
        assert_eq!(spec.key(), "deploy@10.0.0.5:2222");
        assert_eq!(spec.timeout, Duration::from_secs(90));
        assert_eq!(spec.known_hosts_file, Some(PathBuf::from("/base/kh")));
        assert_eq!(spec.host_key.as_deref(), Some("SHA256:abc"));

        let spec = spec_from_block(
            &attrs(json!({"address": "h", "private_key": KEY})),
            &settings,
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(spec.key(), "root@h:22");
        assert_eq!(spec.timeout, berth_ssh::DEFAULT_TIMEOUT);
    }

    #[test]
    fn bad_host_blocks_never_show_the_key() {
        let settings = Settings::default();
        for (block, needle) in [
            (json!({"address": "h"}), "no `private_key`"),
            (
                json!({"address": "h", "private_key": KEY, "port": 70000}),
                "`port`",
            ),
            (
                json!({"address": "h", "private_key": KEY, "timeout": "soon"}),
                "`timeout`",
            ),
            (json!({"address": "", "private_key": KEY}), "`address`"),
        ] {
            let e = spec_from_block(&attrs(block), &settings, Path::new("/"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{e}");
            assert!(!e.contains("secret"), "{e}");
        }
        assert!(validate_block(&attrs(json!({"host": {"address": "h"}}))).is_none());
        assert!(
            validate_block(&attrs(json!({"host": {"address": "h", "port": 0}})))
                .unwrap()
                .contains("`port`")
        );
    }

    #[test]
    fn the_provider_key_serves_host_blocks_without_one() {
        let settings = Settings::from_config(
            &attrs(json!({"private_key": KEY, "passphrase": "pw"})),
            None,
            Path::new("/"),
        )
        .unwrap();
        let spec =
            spec_from_block(&attrs(json!({"address": "h"})), &settings, Path::new("/")).unwrap();
        assert_eq!(spec.private_key, KEY);
        assert_eq!(spec.passphrase.as_deref(), Some("pw"));
        assert_eq!(settings.default_location(), Ok(Location::Local));
    }

    #[test]
    fn provider_hosts() {
        let s = Settings::from_config(
            &attrs(
                json!({"host": "ssh://deploy@h:2200", "private_key": KEY, "host_key": "SHA256:x"}),
            ),
            Some("unix:///other.sock".into()),
            Path::new("/"),
        )
        .unwrap();
        match s.default_location().unwrap() {
            Location::Ssh(spec) => {
                assert_eq!(spec.key(), "deploy@h:2200");
                assert_eq!(spec.host_key.as_deref(), Some("SHA256:x"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.local_url, "unix:///other.sock");

        let e = Settings::from_config(&attrs(json!({"host": "ssh://h"})), None, Path::new("/"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("private_key"), "{e}");

        let s = Settings::from_config(&attrs(json!({})), Some("ssh://h".into()), Path::new("/"))
            .unwrap();
        assert!(s.default_location().unwrap_err().contains("DOCKER_HOST"));
        assert_eq!(s.local_url, DEFAULT_HOST);

        let s = Settings::from_config(
            &attrs(json!({"host": "tcp://1.2.3.4:2375"})),
            Some("unix:///x.sock".into()),
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(s.local_url, "tcp://1.2.3.4:2375");
        assert!(
            Settings::from_config(&attrs(json!({"host": "ftp://x"})), None, Path::new("/"))
                .is_err()
        );
        assert!(Settings::from_config(&attrs(json!({"host": 3})), None, Path::new("/")).is_err());
    }

    fn host(address: &str, port: u16) -> Value {
        json!({"address": address, "port": port, "user": "root", "private_key": KEY})
    }

    fn recorded_on(target: &str) -> Attrs {
        attrs(json!({"host": "hmac-sha256:00", TARGET: target, FINGERPRINT: "SHA256:old"}))
    }

    #[test]
    fn refresh_groups_by_host() {
        let store = StateKnownHosts::default();
        let hints = Hints::default();
        let t = "docker_container";
        // Configured and recorded on A.
        hints.add(
            t,
            "docker_container.a",
            Some(&attrs(json!({"host": host("10.0.0.1", 22)}))),
            Some(&recorded_on("root@10.0.0.1:22")),
            &store,
        );
        // New, configured on B.
        hints.add(
            t,
            "docker_container.b",
            Some(&attrs(json!({"host": host("10.0.0.2", 22)}))),
            None,
            &store,
        );
        // Removed from the file, recorded on A: found through a's block.
        hints.add(
            t,
            "docker_container.gone",
            None,
            Some(&recorded_on("root@10.0.0.1:22")),
            &store,
        );
        // Local, recorded.
        hints.add(
            t,
            "docker_container.l",
            Some(&Attrs::new()),
            Some(&Attrs::new()),
            &store,
        );
        // Another type.
        hints.add(
            "docker_network",
            "docker_network.n",
            Some(&Attrs::new()),
            None,
            &store,
        );

        let groups = hints
            .groups(t, &Settings::default(), Path::new("/"))
            .unwrap()
            .unwrap();
        let summary: Vec<(String, Vec<&str>, bool)> = groups
            .iter()
            .map(|g| {
                (
                    g.location.key(),
                    g.addresses.iter().map(String::as_str).collect(),
                    g.needed,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("local".to_owned(), vec!["docker_container.l"], true),
                (
                    "root@10.0.0.1:22".to_owned(),
                    vec!["docker_container.a", "docker_container.gone"],
                    true
                ),
                (
                    "root@10.0.0.2:22".to_owned(),
                    vec!["docker_container.b"],
                    true
                ),
            ]
        );
        assert_eq!(store.recorded("10.0.0.1:22").as_deref(), Some("SHA256:old"));

        // Only new local resources: the local engine is not needed.
        let groups = hints
            .groups("docker_network", &Settings::default(), Path::new("/"))
            .unwrap()
            .unwrap();
        assert!(!groups[0].needed);
        assert!(
            hints
                .groups("docker_image", &Settings::default(), Path::new("/"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_recorded_host_nobody_has_a_key_for_is_an_error() {
        let store = StateKnownHosts::default();
        let hints = Hints::default();
        hints.add(
            "docker_container",
            "docker_container.old",
            None,
            Some(&recorded_on("root@10.9.9.9:22")),
            &store,
        );
        let e = hints
            .groups("docker_container", &Settings::default(), Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("docker_container.old"), "{e}");
        assert!(e.contains("root@10.9.9.9:22"), "{e}");
        assert!(e.contains("host"), "{e}");

        // The provider's default host has the key.
        hints.settings_changed();
        let settings = Settings::from_config(
            &attrs(json!({"host": "ssh://root@10.9.9.9", "private_key": KEY})),
            None,
            Path::new("/"),
        )
        .unwrap();
        let groups = hints
            .groups("docker_container", &settings, Path::new("/"))
            .unwrap()
            .unwrap();
        assert_eq!(groups[0].location.key(), "root@10.9.9.9:22");
        assert_eq!(
            hints
                .resolve(
                    "docker_container.old",
                    &Recorded::Target("root@10.9.9.9:22".into()),
                    &settings,
                    Path::new("/")
                )
                .unwrap()
                .key(),
            "root@10.9.9.9:22"
        );
    }

    #[test]
    fn first_use_keys_are_recorded_and_state_does_not_overwrite_them() {
        let store = StateKnownHosts::default();
        store.record("h:22", "SHA256:new");
        store.remember("h:22", "SHA256:old");
        assert_eq!(store.recorded("h:22").as_deref(), Some("SHA256:new"));
        store.remember("g:22", "SHA256:g");
        assert_eq!(store.recorded("g:22").as_deref(), Some("SHA256:g"));
    }
}
