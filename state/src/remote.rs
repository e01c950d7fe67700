//! What the remote stores ([`http_backend`](crate::http_backend),
//! [`s3_backend`](crate::s3_backend), and in part
//! [`pg_backend`](crate::pg_backend)) share: the JSON document that holds
//! one environment's state, the read-modify-write cycle that verifies every
//! write by reading it back, Terraform's lock info shape, settings checks and
//! percent-encoding.
//!
//! The document is
//!
//! ```json
//! {"version": 1, "lineage": "…", "serial": 7, "resources": {…}, "outputs": {…}}
//! ```
//!
//! `resources` and `outputs` are exactly [`Snapshot`]'s maps, so sensitive
//! values are already keyed hashes. `serial` is a top-level integer, which is
//! what GitLab's Terraform state API requires of every write.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{LockInfo, OutputRecord, ResourceRecord, Snapshot, StateError};

/// The format version this berth writes and reads.
pub(crate) const FORMAT_VERSION: u64 = 1;

/// One environment's state as stored remotely.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Document {
    pub version: u64,
    pub lineage: String,
    pub serial: u64,
    #[serde(default)]
    pub resources: BTreeMap<String, ResourceRecord>,
    #[serde(default)]
    pub outputs: BTreeMap<String, OutputRecord>,
}

impl Document {
    pub(crate) fn from_snapshot(s: &Snapshot) -> Document {
        Document {
            version: FORMAT_VERSION,
            lineage: s.lineage.clone(),
            serial: s.serial,
            resources: s.resources.clone(),
            outputs: s.outputs.clone(),
        }
    }

    pub(crate) fn into_snapshot(self) -> Snapshot {
        Snapshot {
            lineage: self.lineage,
            serial: self.serial,
            resources: self.resources,
            outputs: self.outputs,
        }
    }

    /// The document as compact JSON.
    pub(crate) fn encode(&self, whence: &str) -> Result<Vec<u8>, StateError> {
        serde_json::to_vec(self).map_err(|e| StateError::Store {
            path: whence.to_owned(),
            message: format!("cannot encode the state: {e}"),
        })
    }

    /// Decodes a stored document, refusing other formats with a message that
    /// says what was found instead.
    pub(crate) fn decode(bytes: &[u8], whence: &str) -> Result<Document, StateError> {
        let corrupt = |message: String| StateError::Corrupt {
            key: whence.to_owned(),
            message,
        };
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| corrupt(format!("the stored state is not JSON: {e}")))?;
        let Some(obj) = value.as_object() else {
            return Err(corrupt("the stored state is not a JSON object".to_owned()));
        };
        if obj.contains_key("terraform_version") {
            return Err(corrupt(
                "this is a Terraform state, not berth's; give berth a state name of its own"
                    .to_owned(),
            ));
        }
        match obj.get("version").and_then(serde_json::Value::as_u64) {
            Some(FORMAT_VERSION) => {}
            Some(v) => {
                return Err(corrupt(format!(
                    "the stored state has format version {v}; this berth reads version {FORMAT_VERSION} (upgrade berth)"
                )));
            }
            None => {
                return Err(corrupt(
                    "the stored state has no format `version`; it was not written by berth"
                        .to_owned(),
                ));
            }
        }
        serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))
    }
}

/// One change to the state, applied by read-modify-write.
pub(crate) enum Change<'a> {
    Put(&'a str, &'a ResourceRecord),
    Remove(&'a str),
    Outputs(&'a BTreeMap<String, OutputRecord>),
    Replace(&'a Snapshot),
}

impl Change<'_> {
    /// `snapshot` with this change applied and the serial bumped.
    pub(crate) fn apply(&self, snapshot: &Snapshot) -> Result<Snapshot, StateError> {
        let mut next = snapshot.clone();
        match self {
            Change::Put(address, record) => {
                next.resources
                    .insert((*address).to_owned(), (*record).clone());
            }
            Change::Remove(address) => {
                next.resources.remove(*address);
            }
            Change::Outputs(outputs) => next.outputs = (*outputs).clone(),
            Change::Replace(whole) => {
                next.lineage = whole.lineage.clone();
                next.resources = whole.resources.clone();
                next.outputs = whole.outputs.clone();
            }
        }
        let base = match self {
            Change::Replace(whole) => snapshot.serial.max(whole.serial),
            _ => snapshot.serial,
        };
        next.serial = base.checked_add(1).ok_or_else(|| StateError::Corrupt {
            key: "serial".to_owned(),
            message: "the serial is at its maximum".to_owned(),
        })?;
        Ok(next)
    }
}

/// What a store returned for a document: the document and, where the store
/// has one, its version tag (an S3 ETag).
pub(crate) struct Fetched {
    pub doc: Document,
    pub tag: Option<String>,
}

/// What a write expects to replace.
#[derive(Clone, Debug)]
pub(crate) enum Prior {
    /// Nothing: the document must not exist yet.
    Absent,
    /// The version with this tag.
    Tag(String),
    /// Whatever is there (the store has no version tags).
    Any,
}

/// A store of one JSON document, as the HTTP and S3 backends see it.
#[async_trait::async_trait]
pub(crate) trait DocStore: Send + Sync {
    /// The stored document, or `None` when there is none yet.
    async fn fetch(&self) -> Result<Option<Fetched>, StateError>;

    /// Writes `bytes` as the document, replacing `prior`; `lock_id` is the id
    /// of the remote lock this process holds, if any.
    async fn store(
        &self,
        bytes: &[u8],
        prior: &Prior,
        lock_id: Option<&str>,
    ) -> Result<(), StateError>;

    /// Where the document lives, for messages.
    fn whence(&self) -> String;
}

/// The lock this process holds through a [`DocSession`] and what it last read.
struct Held {
    info: LockInfo,
    /// Whether the lock is held on the server (the HTTP backend without a
    /// lock address only pretends).
    remote: bool,
    /// The state as last read or written, and its version tag.
    cache: Option<(Snapshot, Prior)>,
}

/// The lock-holding half of a remote backend: remembers the lock and the
/// last document, and runs the verified read-modify-write cycle.
#[derive(Default)]
pub(crate) struct DocSession {
    held: tokio::sync::Mutex<Option<Held>>,
}

impl DocSession {
    /// The id and info of the lock this session holds, if any.
    pub(crate) async fn current(&self) -> Option<LockInfo> {
        self.held.lock().await.as_ref().map(|h| h.info.clone())
    }

    /// Records that the lock `info` is now held (`remote`: on the server).
    pub(crate) async fn begin(&self, info: &LockInfo, remote: bool) {
        *self.held.lock().await = Some(Held {
            info: info.clone(),
            remote,
            cache: None,
        });
    }

    /// Forgets the lock, whatever its id.
    pub(crate) async fn end(&self) {
        *self.held.lock().await = None;
    }

    /// Checks that the lock `id` is the one held, returning whether it is
    /// held on the server and the info it was taken with.
    pub(crate) async fn check(&self, id: &str) -> Result<(LockInfo, bool), StateError> {
        match self.held.lock().await.as_ref() {
            None => Err(StateError::NotLocked),
            Some(h) if h.info.id != id => Err(StateError::LockMismatch {
                given: id.to_owned(),
                current: Some(h.info.id.clone()),
            }),
            Some(h) => Ok((h.info.clone(), h.remote)),
        }
    }

    /// Reads the state (creating it with a fresh lineage at serial 0 when the
    /// store has none, so every later reader sees the same lineage) and keeps
    /// it for the writes that follow.
    pub(crate) async fn read<S: DocStore + ?Sized>(
        &self,
        store: &S,
    ) -> Result<Snapshot, StateError> {
        let mut guard = self.held.lock().await;
        let held = guard.as_mut().ok_or(StateError::NotLocked)?;
        let lock_id = held.remote.then(|| held.info.id.clone());
        let (snapshot, tag) = load_or_create(store, lock_id.as_deref()).await?;
        held.cache = Some((snapshot.clone(), tag));
        Ok(snapshot)
    }

    /// Applies `change` to the cached state, writes the whole document with
    /// the serial bumped, reads it back, and only then returns the new
    /// serial.
    pub(crate) async fn write<S: DocStore + ?Sized>(
        &self,
        store: &S,
        change: Change<'_>,
    ) -> Result<u64, StateError> {
        let mut guard = self.held.lock().await;
        let held = guard.as_mut().ok_or(StateError::NotLocked)?;
        let lock_id = held.remote.then(|| held.info.id.clone());
        let (current, prior) = match held.cache.take() {
            Some(c) => c,
            None => load_or_create(store, lock_id.as_deref()).await?,
        };
        let next = change.apply(&current)?;
        let doc = Document::from_snapshot(&next);
        match write_verified(store, &doc, &prior, lock_id.as_deref()).await {
            Ok(tag) => {
                held.cache = Some((next, tag));
                Ok(doc.serial)
            }
            Err(e) => {
                // The cache is left empty: the next write reads afresh.
                Err(e)
            }
        }
    }
}

/// The stored state, or a new one written at serial 0.
async fn load_or_create<S: DocStore + ?Sized>(
    store: &S,
    lock_id: Option<&str>,
) -> Result<(Snapshot, Prior), StateError> {
    if let Some(f) = store.fetch().await? {
        let tag = f.tag.map_or(Prior::Any, Prior::Tag);
        return Ok((f.doc.into_snapshot(), tag));
    }
    let doc = Document::from_snapshot(&Snapshot {
        lineage: new_lineage(),
        ..Snapshot::default()
    });
    match write_verified(store, &doc, &Prior::Absent, lock_id).await {
        Ok(tag) => Ok((doc.into_snapshot(), tag)),
        Err(e) => {
            // Someone else created it first (only possible without a lock):
            // take theirs.
            match store.fetch().await {
                Ok(Some(f)) => {
                    let tag = f.tag.map_or(Prior::Any, Prior::Tag);
                    Ok((f.doc.into_snapshot(), tag))
                }
                _ => Err(e),
            }
        }
    }
}

/// Writes `doc` and reads it back. A write that failed but whose document is
/// stored all the same (a retried request whose first try got through) counts
/// as done. Returns the new version tag.
async fn write_verified<S: DocStore + ?Sized>(
    store: &S,
    doc: &Document,
    prior: &Prior,
    lock_id: Option<&str>,
) -> Result<Prior, StateError> {
    let bytes = doc.encode(&store.whence())?;
    let written = store.store(&bytes, prior, lock_id).await;
    let back = match store.fetch().await {
        Ok(back) => back,
        Err(e) => {
            return Err(match written {
                Err(w) => w,
                Ok(()) => StateError::Store {
                    path: store.whence(),
                    message: format!(
                        "wrote serial {} but could not read it back to verify it: {e}",
                        doc.serial
                    ),
                },
            });
        }
    };
    match (written, back) {
        (Ok(()), Some(f)) if f.doc.serial == doc.serial && f.doc.lineage == doc.lineage => {
            Ok(f.tag.map_or(Prior::Any, Prior::Tag))
        }
        (Err(_), Some(f)) if f.doc == *doc => Ok(f.tag.map_or(Prior::Any, Prior::Tag)),
        (Err(e), _) => Err(e),
        (Ok(()), found) => Err(StateError::Store {
            path: store.whence(),
            message: match found {
                None => format!(
                    "wrote serial {} but the store then had no state at all; another process may be using this state without the lock",
                    doc.serial
                ),
                Some(f) => format!(
                    "wrote serial {} of lineage {} but the store then held serial {} of lineage {}; another process may be using this state without the lock",
                    doc.serial, doc.lineage, f.doc.serial, f.doc.lineage
                ),
            },
        }),
    }
}

/// A random id shaped like a version-4 UUID.
pub(crate) fn new_lineage() -> String {
    crate::sled_backend::new_lineage()
}

/// Terraform's lock info JSON (Go field names), as the HTTP backend and
/// Terraform's S3 lock file carry it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct TfLockInfo {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Operation")]
    pub operation: String,
    #[serde(rename = "Info")]
    pub info: String,
    #[serde(rename = "Who")]
    pub who: String,
    #[serde(rename = "Version")]
    pub version: String,
    #[serde(rename = "Created")]
    pub created: String,
    #[serde(rename = "Path")]
    pub path: String,
}

/// Prefix of the `Info` field berth writes; the holder's pid follows.
const INFO_PID: &str = "berth pid ";

impl TfLockInfo {
    pub(crate) fn from_info(info: &LockInfo) -> TfLockInfo {
        TfLockInfo {
            id: info.id.clone(),
            operation: info.operation.clone(),
            info: format!("{INFO_PID}{}", info.pid),
            who: info.who.clone(),
            version: info.version.clone(),
            created: info.created.clone(),
            path: info.path.clone(),
        }
    }

    /// Berth's view of the holder; the pid is 0 when the holder is not berth.
    pub(crate) fn into_info(self) -> LockInfo {
        let pid = self
            .info
            .strip_prefix(INFO_PID)
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0);
        LockInfo {
            id: self.id,
            operation: self.operation,
            who: self.who,
            pid,
            created: self.created,
            version: self.version,
            path: self.path,
        }
    }

    /// The holder decoded from a server's JSON, if it is lock info at all.
    pub(crate) fn parse(bytes: &[u8]) -> Option<LockInfo> {
        let tf: TfLockInfo = serde_json::from_slice(bytes).ok()?;
        (!tf.id.is_empty()).then(|| tf.into_info())
    }
}

/// Fails naming every setting not in `valid`.
pub(crate) fn check_settings(
    kind: &str,
    settings: &BTreeMap<String, String>,
    valid: &[&str],
) -> Result<(), StateError> {
    let unknown: Vec<&str> = settings
        .keys()
        .map(String::as_str)
        .filter(|k| !valid.contains(k))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let list = |names: &[&str]| {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(StateError::Config {
        backend: kind.to_owned(),
        message: format!(
            "unknown setting{} {}; valid settings are {}",
            if unknown.len() == 1 { "" } else { "s" },
            list(&unknown),
            list(valid)
        ),
    })
}

/// A boolean setting.
pub(crate) fn parse_bool(kind: &str, name: &str, value: &str) -> Result<bool, StateError> {
    match value.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(StateError::Config {
            backend: kind.to_owned(),
            message: format!("`{name}` must be true or false, not `{value}`"),
        }),
    }
}

/// A number-of-seconds setting (fractions allowed).
pub(crate) fn parse_seconds(kind: &str, name: &str, value: &str) -> Result<Duration, StateError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| StateError::Config {
            backend: kind.to_owned(),
            message: format!("`{name}` must be a number of seconds, not `{value}`"),
        })
}

/// A count setting.
pub(crate) fn parse_count(kind: &str, name: &str, value: &str) -> Result<u32, StateError> {
    value.trim().parse().map_err(|_| StateError::Config {
        backend: kind.to_owned(),
        message: format!("`{name}` must be a whole number, not `{value}`"),
    })
}

/// `s` percent-encoded for a URL: every byte but the unreserved ones
/// (`A-Z a-z 0-9 - . _ ~`), and `/` when `keep_slash`, becomes `%XX`. This is
/// also exactly SigV4's `UriEncode`.
pub(crate) fn url_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Backoff before retry number `attempt` (0-based): `min · 2^attempt`,
/// capped at `max` (go-retryablehttp's default, which Terraform uses).
pub(crate) fn backoff(attempt: u32, min: Duration, max: Duration) -> Duration {
    let factor = 2u32.saturating_pow(attempt.min(20));
    min.saturating_mul(factor).min(max)
}

/// An error and its sources, joined with `: `.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

/// At most `max` characters of a server's answer, for messages.
pub(crate) fn snippet(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_round_trips_and_refuses_other_formats() {
        let snap = Snapshot {
            lineage: "l".into(),
            serial: 3,
            ..Snapshot::default()
        };
        let doc = Document::from_snapshot(&snap);
        let bytes = doc.encode("x").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["serial"], 3);
        assert_eq!(Document::decode(&bytes, "x").unwrap().into_snapshot(), snap);

        let tf = br#"{"version":4,"terraform_version":"1.9.0","serial":1,"lineage":"x"}"#;
        let e = Document::decode(tf, "x").unwrap_err().to_string();
        assert!(e.contains("Terraform state"), "{e}");
        let newer = br#"{"version":2,"serial":1,"lineage":"x"}"#;
        let e = Document::decode(newer, "x").unwrap_err().to_string();
        assert!(e.contains("format version 2"), "{e}");
        let e = Document::decode(b"[]", "x").unwrap_err().to_string();
        assert!(e.contains("not a JSON object"), "{e}");
    }

    #[test]
    fn tf_lock_info_keeps_the_pid_in_info() {
        let info = LockInfo::new("apply", "somewhere");
        let tf = TfLockInfo::from_info(&info);
        let json = serde_json::to_value(&tf).unwrap();
        for field in [
            "ID",
            "Operation",
            "Info",
            "Who",
            "Version",
            "Created",
            "Path",
        ] {
            assert!(json.get(field).is_some(), "{field}");
        }
        let back = TfLockInfo::parse(&serde_json::to_vec(&json).unwrap()).unwrap();
        assert_eq!(back, info);
        assert!(TfLockInfo::parse(b"{}").is_none());
        assert!(TfLockInfo::parse(b"nope").is_none());
        let foreign = TfLockInfo::parse(br#"{"ID":"x","Who":"root"}"#).unwrap();
        assert_eq!(foreign.pid, 0);
    }

    #[test]
    fn url_encoding_is_sigv4s() {
        assert_eq!(url_encode("a b/c%~", true), "a%20b/c%25~");
        assert_eq!(url_encode("review/x", false), "review%2Fx");
        assert_eq!(url_encode("ü", false), "%C3%BC");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = Duration::from_secs;
        assert_eq!(backoff(0, s(1), s(30)), s(1));
        assert_eq!(backoff(3, s(1), s(30)), s(8));
        assert_eq!(backoff(10, s(1), s(30)), s(30));
        assert_eq!(backoff(u32::MAX, s(1), s(30)), s(30));
    }

    #[test]
    fn unknown_settings_are_named_with_the_valid_ones() {
        let settings: BTreeMap<String, String> = [("adress".to_owned(), "x".to_owned())]
            .into_iter()
            .collect();
        let e = check_settings("http", &settings, &["address", "username"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`adress`"), "{e}");
        assert!(e.contains("`address`, `username`"), "{e}");
    }
}
