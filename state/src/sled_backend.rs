//! The default store: one sled database per environment, guarded by a lock
//! file, with every write applied atomically and flushed before it returns.
//!
//! Layout under the state directory:
//!
//! ```text
//! <state_dir>/state.key               the StateKey (outside every database)
//! <state_dir>/envs/<env>/db/          the environment's sled database
//! <state_dir>/envs/<env>/lock.json    the lock, while someone holds it
//! ```
//!
//! `<env>` is the environment name with every byte outside `[A-Za-z0-9._-]`
//! (and a leading `.`) percent-encoded, so `review/feat-x` is the single
//! directory `review%2Ffeat-x`.
//!
//! Records in the database: `meta/lineage` (UTF-8), `meta/serial` (u64,
//! big-endian), `res/<address>` (a JSON [`ResourceRecord`]) and `out` (a JSON
//! map of [`OutputRecord`]s).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::fs_util::{create_exclusive, sync_dir};
use crate::{LockInfo, OutputRecord, ResourceRecord, Snapshot, StateBackend, StateError, StateKey};

const LINEAGE: &[u8] = b"meta/lineage";
const SERIAL: &[u8] = b"meta/serial";
const RES_PREFIX: &str = "res/";
const OUTPUTS: &[u8] = b"out";
const ENVS_DIR: &str = "envs";
const DB_DIR: &str = "db";
const LOCK_FILE: &str = "lock.json";

/// State kept in sled, one database per environment.
///
/// [`open`](Self::open) only loads the key; the database is opened by
/// [`lock`](StateBackend::lock), once the lock file is ours, and closed by
/// [`unlock`](StateBackend::unlock). Dropping a backend that still holds its
/// lock flushes the database and releases the lock.
pub struct SledBackend {
    env: String,
    env_dir: PathBuf,
    key: StateKey,
    held: Mutex<Option<Held>>,
}

/// The open database and the id of the lock that guards it.
struct Held {
    db: sled::Db,
    id: String,
}

impl std::fmt::Debug for SledBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledBackend")
            .field("env", &self.env)
            .field("env_dir", &self.env_dir)
            .finish_non_exhaustive()
    }
}

impl SledBackend {
    /// The store for environment `env` under `state_dir`. Loads (or creates)
    /// the state key; does not open the database.
    pub fn open(state_dir: &Path, env: &str) -> Result<SledBackend, StateError> {
        if env.is_empty() {
            return Err(StateError::Store {
                path: state_dir.display().to_string(),
                message: "the environment name is empty".to_owned(),
            });
        }
        let key = StateKey::load_or_create(state_dir)?;
        Ok(SledBackend {
            env: env.to_owned(),
            env_dir: state_dir.join(ENVS_DIR).join(escape_env(env)),
            key,
            held: Mutex::new(None),
        })
    }

    /// The environments that have state under `state_dir`, sorted.
    pub fn list_envs(state_dir: &Path) -> Result<Vec<String>, StateError> {
        let dir = state_dir.join(ENVS_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(store_err(&dir, format!("cannot list environments: {e}"))),
        };
        let mut envs = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| store_err(&dir, format!("cannot list environments: {e}")))?;
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if let (true, Some(name)) = (is_dir, entry.file_name().to_str().and_then(unescape_env))
            {
                envs.push(name);
            }
        }
        envs.sort();
        Ok(envs)
    }

    /// The environment this store holds.
    pub fn env(&self) -> &str {
        &self.env
    }

    /// The environment's directory (`<state_dir>/envs/<escaped env>`).
    pub fn env_dir(&self) -> &Path {
        &self.env_dir
    }

    /// Who holds this environment's lock right now, if anyone (for
    /// `force-unlock` and status messages; needs no lock).
    pub fn lock_holder(&self) -> Result<Option<LockInfo>, StateError> {
        read_lock_file(&self.lock_path())
    }

    fn lock_path(&self) -> PathBuf {
        self.env_dir.join(LOCK_FILE)
    }

    fn db_path(&self) -> PathBuf {
        self.env_dir.join(DB_DIR)
    }

    fn held(&self) -> Result<MutexGuard<'_, Option<Held>>, StateError> {
        self.held.lock().map_err(|_| {
            store_err(
                &self.env_dir,
                "a thread panicked while using the store".into(),
            )
        })
    }

    fn sled_err(&self, what: &str, e: sled::Error) -> StateError {
        store_err(&self.db_path(), format!("{what}: {e}"))
    }

    /// Removes the lock file if it is the lock `id`.
    fn remove_lock_file(&self, id: &str) -> Result<(), StateError> {
        let path = self.lock_path();
        match read_lock_file(&path)? {
            Some(holder) if holder.id == id => {}
            other => {
                return Err(StateError::LockMismatch {
                    given: id.to_owned(),
                    current: other.map(|h| h.id),
                });
            }
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(store_err(&path, format!("cannot remove the lock: {e}"))),
        }
        sync_dir(&self.env_dir);
        Ok(())
    }

    /// Runs `f` on the open database.
    fn with_db<T>(
        &self,
        f: impl FnOnce(&sled::Db) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let held = self.held()?;
        match held.as_ref() {
            Some(h) => f(&h.db),
            None => Err(StateError::NotLocked),
        }
    }

    /// Applies `batch` together with a bumped serial (and a lineage when the
    /// state has none yet), flushes, and returns the new serial.
    fn write(&self, mut batch: sled::Batch) -> Result<u64, StateError> {
        self.with_db(|db| {
            let serial = read_serial(db, |e| self.sled_err("cannot read", e))?;
            let next = serial.checked_add(1).ok_or_else(|| StateError::Corrupt {
                key: "meta/serial".to_owned(),
                message: "the serial is at its maximum".to_owned(),
            })?;
            if db
                .get(LINEAGE)
                .map_err(|e| self.sled_err("cannot read", e))?
                .is_none()
            {
                batch.insert(LINEAGE, new_lineage().as_bytes());
            }
            batch.insert(SERIAL, &next.to_be_bytes());
            db.apply_batch(batch)
                .map_err(|e| self.sled_err("cannot write", e))?;
            db.flush().map_err(|e| self.sled_err("cannot flush", e))?;
            Ok(next)
        })
    }
}

#[async_trait::async_trait]
impl StateBackend for SledBackend {
    async fn lock(&self, info: &LockInfo) -> Result<(), StateError> {
        let path = self.lock_path();
        std::fs::create_dir_all(&self.env_dir)
            .map_err(|e| store_err(&self.env_dir, format!("cannot create: {e}")))?;
        let mut text = serde_json::to_string_pretty(info)
            .map_err(|e| store_err(&path, format!("cannot encode the lock: {e}")))?;
        text.push('\n');

        // The holder may unlock between our failed create and our read; try
        // again a few times before giving up.
        let mut created = false;
        for _ in 0..3 {
            match create_exclusive(&path, text.as_bytes(), 0o644) {
                Ok(()) => {
                    created = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if let Some(holder) = read_lock_file(&path)? {
                        let stale = holder.is_stale();
                        return Err(StateError::Locked {
                            holder: Box::new(holder),
                            stale,
                        });
                    }
                }
                Err(e) => return Err(store_err(&path, format!("cannot create the lock: {e}"))),
            }
        }
        if !created {
            return Err(store_err(
                &path,
                "the lock keeps appearing and vanishing".to_owned(),
            ));
        }

        // The lock file is ours: open the database (sled takes its own
        // exclusive file lock on it).
        let opened = self.held().and_then(|mut held| {
            // A lock of ours that someone force-unlocked: close its database
            // before opening it again.
            if let Some(old) = held.take() {
                let _ = old.db.flush();
            }
            let db = open_db(&self.db_path())
                .map_err(|e| self.sled_err("cannot open the database", e))?;
            *held = Some(Held {
                db,
                id: info.id.clone(),
            });
            Ok(())
        });
        if opened.is_err() {
            let _ = self.remove_lock_file(&info.id);
        }
        opened
    }

    async fn unlock(&self, id: &str) -> Result<(), StateError> {
        let mut held = self.held()?;
        match held.as_ref() {
            None => return Err(StateError::NotLocked),
            Some(h) if h.id != id => {
                return Err(StateError::LockMismatch {
                    given: id.to_owned(),
                    current: Some(h.id.clone()),
                });
            }
            Some(_) => {}
        }
        let flushed = match held.take() {
            Some(h) => {
                h.db.flush()
                    .map(drop)
                    .map_err(|e| self.sled_err("cannot flush", e))
            }
            None => Ok(()),
        };
        drop(held);
        self.remove_lock_file(id)?;
        flushed
    }

    async fn force_unlock(&self, id: &str) -> Result<(), StateError> {
        // Close our own database first if the lock is ours, so whoever locks
        // next can open it.
        {
            let mut held = self.held()?;
            if held.as_ref().is_some_and(|h| h.id == id)
                && let Some(h) = held.take()
            {
                let _ = h.db.flush();
            }
        }
        self.remove_lock_file(id)
    }

    async fn read(&self) -> Result<Snapshot, StateError> {
        self.with_db(|db| {
            let rd = |e| self.sled_err("cannot read", e);
            let lineage = match db.get(LINEAGE).map_err(rd)? {
                Some(v) => String::from_utf8(v.to_vec()).map_err(|e| StateError::Corrupt {
                    key: "meta/lineage".to_owned(),
                    message: e.to_string(),
                })?,
                None => {
                    // A new environment: give it a lineage now, so every
                    // reader from here on sees the same one.
                    let lineage = new_lineage();
                    let mut batch = sled::Batch::default();
                    batch.insert(LINEAGE, lineage.as_bytes());
                    if db.get(SERIAL).map_err(rd)?.is_none() {
                        batch.insert(SERIAL, &0u64.to_be_bytes());
                    }
                    db.apply_batch(batch)
                        .map_err(|e| self.sled_err("cannot write", e))?;
                    db.flush().map_err(|e| self.sled_err("cannot flush", e))?;
                    lineage
                }
            };
            let serial = read_serial(db, rd)?;

            let mut resources = BTreeMap::new();
            for item in db.scan_prefix(RES_PREFIX.as_bytes()) {
                let (k, v) = item.map_err(rd)?;
                let key = String::from_utf8_lossy(&k).into_owned();
                let address = std::str::from_utf8(&k[RES_PREFIX.len()..]).map_err(|e| {
                    StateError::Corrupt {
                        key: key.clone(),
                        message: format!("the address is not UTF-8: {e}"),
                    }
                })?;
                let record: ResourceRecord = decode(&key, &v)?;
                resources.insert(address.to_owned(), record);
            }

            let outputs = match db.get(OUTPUTS).map_err(rd)? {
                Some(v) => decode("out", &v)?,
                None => BTreeMap::new(),
            };
            Ok(Snapshot {
                lineage,
                serial,
                resources,
                outputs,
            })
        })
    }

    async fn put_resource(
        &self,
        address: &str,
        record: &ResourceRecord,
    ) -> Result<u64, StateError> {
        let value = serde_json::to_vec(record)
            .map_err(|e| store_err(&self.db_path(), format!("cannot encode `{address}`: {e}")))?;
        let mut batch = sled::Batch::default();
        batch.insert(format!("{RES_PREFIX}{address}").as_bytes(), value);
        self.write(batch)
    }

    async fn remove_resource(&self, address: &str) -> Result<u64, StateError> {
        let mut batch = sled::Batch::default();
        batch.remove(format!("{RES_PREFIX}{address}").as_bytes());
        self.write(batch)
    }

    async fn put_outputs(
        &self,
        outputs: &BTreeMap<String, OutputRecord>,
    ) -> Result<u64, StateError> {
        let value = serde_json::to_vec(outputs)
            .map_err(|e| store_err(&self.db_path(), format!("cannot encode the outputs: {e}")))?;
        let mut batch = sled::Batch::default();
        batch.insert(OUTPUTS, value);
        self.write(batch)
    }

    async fn replace_all(&self, snapshot: &Snapshot) -> Result<u64, StateError> {
        let path = self.db_path();
        let mut batch = sled::Batch::default();
        let existing: Vec<sled::IVec> = self.with_db(|db| {
            db.scan_prefix(RES_PREFIX.as_bytes())
                .keys()
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| self.sled_err("cannot read", e))
        })?;
        for key in existing {
            batch.remove(key);
        }
        for (address, record) in &snapshot.resources {
            let value = serde_json::to_vec(record)
                .map_err(|e| store_err(&path, format!("cannot encode `{address}`: {e}")))?;
            batch.insert(format!("{RES_PREFIX}{address}").as_bytes(), value);
        }
        let outputs = serde_json::to_vec(&snapshot.outputs)
            .map_err(|e| store_err(&path, format!("cannot encode the outputs: {e}")))?;
        batch.insert(OUTPUTS, outputs);
        batch.insert(LINEAGE, snapshot.lineage.as_bytes());
        // The serial must not go backwards: start from the larger one.
        let current = self.with_db(|db| read_serial(db, |e| self.sled_err("cannot read", e)))?;
        if snapshot.serial > current {
            batch.insert(SERIAL, &snapshot.serial.to_be_bytes());
        }
        // `write` bumps whatever serial the batch leaves by one; apply the
        // serial first when it must move forward.
        if snapshot.serial > current {
            let mut first = sled::Batch::default();
            first.insert(SERIAL, &snapshot.serial.to_be_bytes());
            self.with_db(|db| {
                db.apply_batch(first)
                    .map_err(|e| self.sled_err("cannot write", e))
            })?;
        }
        self.write(batch)
    }

    fn key(&self) -> &StateKey {
        &self.key
    }

    fn describe(&self) -> String {
        format!("sled store at {}", self.env_dir.display())
    }
}

impl Drop for SledBackend {
    fn drop(&mut self) {
        let held = match self.held.get_mut() {
            Ok(held) => held.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(h) = held {
            let _ = h.db.flush();
            drop(h.db);
            let _ = self.remove_lock_file(&h.id);
        }
    }
}

fn store_err(path: &Path, message: String) -> StateError {
    StateError::Store {
        path: path.display().to_string(),
        message,
    }
}

/// Opens the sled database at `path`. berth's lock file already makes the
/// holder exclusive, so sled's own file lock being busy means a handle
/// this process just dropped: sled's flusher thread lets go of it a moment
/// later. Waits for that, for at most two seconds.
fn open_db(path: &Path) -> sled::Result<sled::Db> {
    let mut waited = std::time::Duration::ZERO;
    loop {
        match sled::Config::new().path(path).open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && waited < std::time::Duration::from_secs(2) =>
            {
                let step = std::time::Duration::from_millis(20);
                std::thread::sleep(step);
                waited += step;
            }
            other => return other,
        }
    }
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    key: &str,
    bytes: &[u8],
) -> Result<T, StateError> {
    serde_json::from_slice(bytes).map_err(|e| StateError::Corrupt {
        key: key.to_owned(),
        message: e.to_string(),
    })
}

fn read_serial(db: &sled::Db, rd: impl Fn(sled::Error) -> StateError) -> Result<u64, StateError> {
    match db.get(SERIAL).map_err(rd)? {
        None => Ok(0),
        Some(v) => <[u8; 8]>::try_from(v.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| StateError::Corrupt {
                key: "meta/serial".to_owned(),
                message: format!("expected 8 bytes, found {}", v.len()),
            }),
    }
}

/// The lock file's holder, or `None` when there is no lock file.
fn read_lock_file(path: &Path) -> Result<Option<LockInfo>, StateError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                key: path.display().to_string(),
                message: format!(
                    "{e}; if no berth process is using this state, delete the file by hand"
                ),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(store_err(path, format!("cannot read the lock: {e}"))),
    }
}

/// A random id shaped like a version-4 UUID.
pub(crate) fn new_lineage() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// An environment name as one safe directory name: bytes outside
/// `[A-Za-z0-9._-]`, and a leading `.`, become `%XX`.
pub(crate) fn escape_env(env: &str) -> String {
    let mut out = String::with_capacity(env.len());
    for (i, b) in env.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0);
        if plain {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`escape_env`]; `None` for names it would not produce.
pub(crate) fn unescape_env(dir: &str) -> Option<String> {
    let bytes = dir.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = dir.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let name = String::from_utf8(out).ok()?;
    (!name.is_empty() && escape_env(&name) == dir).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_escape_reversibly_to_one_safe_component() {
        for name in [
            "default",
            "review/feat-x",
            "a b",
            ".",
            "..",
            ".hidden",
            "x.y",
            "ünï",
            "%41",
            "a\\b",
        ] {
            let dir = escape_env(name);
            assert!(!dir.contains('/') && !dir.contains('\\'), "{dir}");
            assert!(dir != "." && dir != ".." && !dir.starts_with('.'), "{dir}");
            assert_eq!(unescape_env(&dir).as_deref(), Some(name), "{dir}");
        }
        assert_eq!(escape_env("review/feat-x"), "review%2Ffeat-x");
        assert_eq!(unescape_env("review%2ffeat-x"), None, "not canonical");
        assert_eq!(unescape_env("bad%"), None);
        assert_eq!(unescape_env("bad%zz"), None);
        assert_eq!(unescape_env("a b"), None);
        assert_eq!(unescape_env(""), None);
    }

    #[test]
    fn lineage_looks_like_a_uuid() {
        let l = new_lineage();
        assert_eq!(l.len(), 36);
        assert_eq!(l.as_bytes()[14], b'4');
        assert!(matches!(l.as_bytes()[19], b'8' | b'9' | b'a' | b'b'));
        assert_ne!(l, new_lineage());
    }
}
