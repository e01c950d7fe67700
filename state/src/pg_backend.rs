//! State in PostgreSQL: one row per environment, guarded by a session-level
//! advisory lock that dies with its connection.
//!
//! # Settings
//!
//! - `conn_str` (or `BERTH_PG_CONN_STR`): a libpq connection string, as
//!   `host=… port=… user=… dbname=…` or `postgresql://user@host:port/db`.
//!   Connections are made without TLS (fine for loopback and private
//!   networks; `sslmode=require` is refused by the client).
//! - `schema_name` (default `berth`).
//!
//! # Layout
//!
//! ```sql
//! CREATE TABLE <schema>.states (name text PRIMARY KEY, data jsonb NOT NULL, serial bigint NOT NULL);
//! CREATE TABLE <schema>.locks  (name text PRIMARY KEY, info jsonb NOT NULL);
//! ```
//!
//! Both are created when missing. `data` is the state document
//! (`{"version": 1, "lineage", "serial", "resources",
//! "outputs"}`); `serial` repeats its serial for the conditional update.
//!
//! # Locking
//!
//! [`lock`](StateBackend::lock) opens a connection of its own and takes
//! `pg_try_advisory_lock(k)`, where `k` is the first 8 bytes of
//! SHA-256(`berth-state\0<schema>\0<env>`) as a big-endian `bigint`. The
//! connection stays open until [`unlock`](StateBackend::unlock): every read
//! and write of the session goes through it, and a process that dies (even
//! SIGKILLed) closes it, which releases the advisory lock on the server.
//!
//! The holder's [`LockInfo`] is kept in the `locks` row, so whoever finds
//! the advisory lock taken gets [`StateError::Locked`] naming the holder. A
//! row whose advisory lock is no longer held is stale: the advisory lock is
//! the truth, so the next `lock()` takes it over without asking, and
//! [`PgBackend::lock_holder`] reports it with `stale: true`.
//! [`force_unlock`](StateBackend::force_unlock) ends the PostgreSQL session
//! that still holds the advisory lock (`pg_terminate_backend`, which needs
//! the same role or `pg_signal_backend`), so the old holder's later writes
//! fail instead of racing, and deletes the row.
//!
//! Session advisory locks need a server session of their own: connect to
//! PostgreSQL directly or through a pooler in session mode (PgBouncer's
//! transaction pooling would hand the lock to whoever gets the session next).
//!
//! # Writes
//!
//! Each write is one transaction:
//! `UPDATE states SET data = $new, serial = $old + 1 WHERE name = $env AND
//! serial = $old`; no row updated means someone else wrote, and the write
//! fails. After the commit the row is read back and its serial and lineage
//! checked before the new serial is returned.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls};

use crate::remote::{self, Change, Document};
use crate::{LockInfo, OutputRecord, ResourceRecord, Snapshot, StateBackend, StateError, StateKey};

/// Every setting the `pg` backend accepts.
pub const SETTINGS: &[&str] = &["conn_str", "schema_name"];

/// The environment variable that supplies a missing `conn_str`.
pub const CONN_STR_ENV: &str = "BERTH_PG_CONN_STR";

const KIND: &str = "pg";

/// Advisory lock taken (for one transaction) while creating the tables, so
/// concurrent first runs do not trip over each other's `CREATE`.
const SETUP_LOCK: i64 = 0x6265_7274_6873_6574; // "berthset"

/// The `pg` backend's settings.
#[derive(Clone, PartialEq)]
pub struct PgSettings {
    /// libpq connection string (may hold a password: never shown).
    pub conn_str: String,
    /// Schema holding the `states` and `locks` tables.
    pub schema_name: String,
}

impl fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgSettings")
            .field("conn_str", &"<redacted>")
            .field("schema_name", &self.schema_name)
            .finish()
    }
}

impl PgSettings {
    /// Settings from a backend block, with `conn_str` looked up by `var`
    /// (`BERTH_PG_CONN_STR`) when missing.
    pub fn resolve(
        settings: &BTreeMap<String, String>,
        var: &dyn Fn(&str) -> Option<String>,
    ) -> Result<PgSettings, StateError> {
        remote::check_settings(KIND, settings, SETTINGS)?;
        let conn_str = settings
            .get("conn_str")
            .cloned()
            .or_else(|| var(CONN_STR_ENV).filter(|v| !v.is_empty()))
            .ok_or_else(|| {
                config(format!(
                    "no `conn_str`: set it in the backend block or in {CONN_STR_ENV}"
                ))
            })?;
        let schema_name = settings
            .get("schema_name")
            .cloned()
            .unwrap_or_else(|| "berth".to_owned());
        if schema_name.is_empty() {
            return Err(config("`schema_name` is empty".to_owned()));
        }
        Ok(PgSettings {
            conn_str,
            schema_name,
        })
    }
}

fn config(message: String) -> StateError {
    StateError::Config {
        backend: KIND.to_owned(),
        message,
    }
}

/// State in PostgreSQL (see the module docs).
pub struct PgBackend {
    settings: PgSettings,
    config: Config,
    env: String,
    key: StateKey,
    lock_key: i64,
    describe: String,
    session: tokio::sync::Mutex<Option<Session>>,
}

/// The connection that holds the advisory lock, and what it last read.
struct Session {
    client: Client,
    info: LockInfo,
    cache: Option<Snapshot>,
}

impl fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgBackend")
            .field("env", &self.env)
            .field("where", &self.describe)
            .field("schema_name", &self.settings.schema_name)
            .finish_non_exhaustive()
    }
}

impl PgBackend {
    /// The backend for `env` from a backend block's settings, with
    /// `BERTH_PG_CONN_STR` from the process environment and the state key in
    /// `local_dir` (or `BERTH_STATE_KEY`). Connects only on
    /// [`lock`](StateBackend::lock).
    pub fn open(
        settings: &BTreeMap<String, String>,
        env: &str,
        local_dir: &Path,
    ) -> Result<PgBackend, StateError> {
        let resolved = PgSettings::resolve(settings, &|k| std::env::var(k).ok())?;
        PgBackend::new(resolved, env, StateKey::load_or_create(local_dir)?)
    }

    /// The backend with settings already resolved.
    pub fn new(settings: PgSettings, env: &str, key: StateKey) -> Result<PgBackend, StateError> {
        let config = parse_config(&settings.conn_str)?;
        let describe = format!(
            "postgres state `{env}` in schema `{}` of {}",
            settings.schema_name,
            where_is(&config)
        );
        Ok(PgBackend {
            lock_key: lock_key(&settings.schema_name, env),
            settings,
            config,
            env: env.to_owned(),
            key,
            describe,
            session: tokio::sync::Mutex::new(None),
        })
    }

    /// The environments with a row in the `states` table, sorted.
    pub async fn list_envs(settings: &BTreeMap<String, String>) -> Result<Vec<String>, StateError> {
        let resolved = PgSettings::resolve(settings, &|k| std::env::var(k).ok())?;
        let backend = PgBackend::new(resolved, "-", StateKey::from_bytes([0; 32]))?;
        let client = backend.connect().await?;
        if !backend.tables_exist(&client).await? {
            return Ok(Vec::new());
        }
        let sql = format!("SELECT name FROM {} ORDER BY name", backend.table("states"));
        let rows = client
            .query(&sql, &[])
            .await
            .map_err(|e| backend.pg_err("cannot list environments", &e))?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }

    /// The advisory lock key of this environment.
    pub fn advisory_lock_key(&self) -> i64 {
        self.lock_key
    }

    /// Who holds this environment's lock according to the `locks` table,
    /// and whether that record is stale: its advisory lock is no longer held
    /// (the holder's connection is gone), so the next
    /// [`lock`](StateBackend::lock) takes it over. `None` when there is no
    /// record.
    pub async fn lock_holder(&self) -> Result<Option<(LockInfo, bool)>, StateError> {
        if let Some(s) = self.session.lock().await.as_ref() {
            return Ok(Some((s.info.clone(), false)));
        }
        let client = self.connect().await?;
        if !self.tables_exist(&client).await? {
            return Ok(None);
        }
        let Some(info) = self.lock_row(&client).await? else {
            return Ok(None);
        };
        let stale = self.advisory_holder(&client).await?.is_none();
        Ok(Some((info, stale)))
    }

    async fn connect(&self) -> Result<Client, StateError> {
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| self.pg_err("cannot connect", &e))?;
        tokio::spawn(async move {
            // Ends when the client is dropped or the server goes away; the
            // client then reports the error on its next query.
            let _ = connection.await;
        });
        Ok(client)
    }

    fn table(&self, name: &str) -> String {
        format!("{}.{name}", quote_ident(&self.settings.schema_name))
    }

    fn pg_err(&self, what: &str, e: &tokio_postgres::Error) -> StateError {
        let mut message = format!("{what}: {}", remote::error_chain(e));
        if let Some(db) = e.as_db_error()
            && !message.contains(db.message())
        {
            message.push_str(&format!(": {}", db.message()));
        }
        if let Some(pw) = self.config.get_password()
            && let Ok(pw) = std::str::from_utf8(pw)
            && !pw.is_empty()
        {
            message = message.replace(pw, "<redacted>");
        }
        StateError::Store {
            path: self.describe.clone(),
            message,
        }
    }

    fn store_err(&self, message: String) -> StateError {
        StateError::Store {
            path: self.describe.clone(),
            message,
        }
    }

    async fn tables_exist(&self, client: &Client) -> Result<bool, StateError> {
        let row = client
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL",
                &[&self.table("states"), &self.table("locks")],
            )
            .await
            .map_err(|e| self.pg_err("cannot look up the tables", &e))?;
        Ok(row.get(0))
    }

    /// Creates the schema and tables when missing.
    async fn ensure_tables(&self, client: &mut Client) -> Result<(), StateError> {
        if self.tables_exist(client).await? {
            return Ok(());
        }
        let err = |e: tokio_postgres::Error| self.pg_err("cannot create the state tables", &e);
        let tx = client.transaction().await.map_err(err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SETUP_LOCK])
            .await
            .map_err(err)?;
        let sql = format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {states} (name text PRIMARY KEY, data jsonb NOT NULL, serial bigint NOT NULL);
             CREATE TABLE IF NOT EXISTS {locks} (name text PRIMARY KEY, info jsonb NOT NULL);",
            schema = quote_ident(&self.settings.schema_name),
            states = self.table("states"),
            locks = self.table("locks"),
        );
        tx.batch_execute(&sql).await.map_err(err)?;
        tx.commit().await.map_err(err)
    }

    /// The `locks` row of this environment.
    async fn lock_row(&self, client: &Client) -> Result<Option<LockInfo>, StateError> {
        let sql = format!("SELECT info FROM {} WHERE name = $1", self.table("locks"));
        let row = client
            .query_opt(&sql, &[&self.env])
            .await
            .map_err(|e| self.pg_err("cannot read the lock record", &e))?;
        row.map(|r| {
            serde_json::from_value::<LockInfo>(r.get(0)).map_err(|e| StateError::Corrupt {
                key: format!("{} row `{}`", self.table("locks"), self.env),
                message: format!(
                    "{e}; the advisory lock decides who holds the state, so the next lock replaces this row"
                ),
            })
        })
        .transpose()
    }

    /// The server pid of the session holding this environment's advisory
    /// lock, if any session does.
    async fn advisory_holder(&self, client: &Client) -> Result<Option<i32>, StateError> {
        let bits = self.lock_key as u64;
        let (hi, lo) = ((bits >> 32) as i64, (bits & 0xffff_ffff) as i64);
        let row = client
            .query_opt(
                "SELECT l.pid FROM pg_locks l
                 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND l.classid::bigint = $1 AND l.objid::bigint = $2
                 LIMIT 1",
                &[&hi, &lo],
            )
            .await
            .map_err(|e| self.pg_err("cannot look up the advisory lock", &e))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Reads this environment's row through `client`, creating it at serial
    /// 0 with a fresh lineage when missing.
    async fn load(&self, client: &Client) -> Result<Snapshot, StateError> {
        let select = format!("SELECT data FROM {} WHERE name = $1", self.table("states"));
        let read = |e| self.pg_err("cannot read the state", &e);
        let mut row = client
            .query_opt(&select, &[&self.env])
            .await
            .map_err(read)?;
        if row.is_none() {
            let doc = Document::from_snapshot(&Snapshot {
                lineage: remote::new_lineage(),
                ..Snapshot::default()
            });
            let data = serde_json::to_value(&doc)
                .map_err(|e| self.store_err(format!("cannot encode the state: {e}")))?;
            let insert = format!(
                "INSERT INTO {} (name, data, serial) VALUES ($1, $2, 0) ON CONFLICT (name) DO NOTHING",
                self.table("states")
            );
            client
                .execute(&insert, &[&self.env, &data])
                .await
                .map_err(|e| self.pg_err("cannot create the state", &e))?;
            row = client
                .query_opt(&select, &[&self.env])
                .await
                .map_err(read)?;
        }
        let Some(row) = row else {
            return Err(self.store_err("the state row vanished right after it was created".into()));
        };
        let value: serde_json::Value = row.get(0);
        let bytes = serde_json::to_vec(&value)
            .map_err(|e| self.store_err(format!("cannot re-encode the state: {e}")))?;
        Ok(Document::decode(
            &bytes,
            &format!("{} row `{}`", self.table("states"), self.env),
        )?
        .into_snapshot())
    }

    async fn write(&self, change: Change<'_>) -> Result<u64, StateError> {
        let mut guard = self.session.lock().await;
        let session = guard.as_mut().ok_or(StateError::NotLocked)?;
        let current = match session.cache.take() {
            Some(c) => c,
            None => self.load(&session.client).await?,
        };
        let next = change.apply(&current)?;
        let old = serial_i64(current.serial)?;
        let new = serial_i64(next.serial)?;
        let data = serde_json::to_value(Document::from_snapshot(&next))
            .map_err(|e| self.store_err(format!("cannot encode the state: {e}")))?;

        let err = |e: tokio_postgres::Error| self.pg_err("cannot write the state", &e);
        let tx = session.client.transaction().await.map_err(err)?;
        let update = format!(
            "UPDATE {} SET data = $2, serial = $3 WHERE name = $1 AND serial = $4",
            self.table("states")
        );
        let updated = tx
            .execute(&update, &[&self.env, &data, &new, &old])
            .await
            .map_err(err)?;
        if updated != 1 {
            drop(tx);
            return Err(self.store_err(format!(
                "the stored state is no longer at serial {old}: another process wrote it; run again to start from the current state"
            )));
        }
        tx.commit().await.map_err(err)?;

        let check = format!(
            "SELECT serial, data->>'lineage' FROM {} WHERE name = $1",
            self.table("states")
        );
        let row = session
            .client
            .query_opt(&check, &[&self.env])
            .await
            .map_err(|e| self.pg_err("wrote the state but cannot read it back", &e))?;
        match row {
            Some(r)
                if r.get::<_, i64>(0) == new
                    && r.get::<_, Option<String>>(1).as_deref() == Some(&next.lineage) =>
            {
                session.cache = Some(next);
                Ok(new as u64)
            }
            other => Err(self.store_err(format!(
                "wrote serial {new} but read back {}; another process may be writing this state",
                other.map_or("no row".to_owned(), |r| format!(
                    "serial {} of lineage {}",
                    r.get::<_, i64>(0),
                    r.get::<_, Option<String>>(1).unwrap_or_default()
                ))
            ))),
        }
    }

    /// Ends the PostgreSQL session `pid` and waits until its advisory lock is
    /// gone.
    async fn terminate(&self, client: &Client, pid: i32) -> Result<(), StateError> {
        let ended: bool = client
            .query_one("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .map_err(|e| {
                self.pg_err(
                    &format!("cannot end the PostgreSQL session (pid {pid}) that holds the lock"),
                    &e,
                )
            })?
            .get(0);
        if !ended {
            return Err(self.store_err(format!(
                "the PostgreSQL session (pid {pid}) that holds the lock could not be ended"
            )));
        }
        for _ in 0..100 {
            if self.advisory_holder(client).await? != Some(pid) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(self.store_err(format!(
            "the PostgreSQL session (pid {pid}) that holds the lock was told to end but still holds it"
        )))
    }
}

#[async_trait::async_trait]
impl StateBackend for PgBackend {
    async fn lock(&self, info: &LockInfo) -> Result<(), StateError> {
        let mut guard = self.session.lock().await;
        if let Some(s) = guard.as_ref() {
            // Advisory locks are re-entrant within a session: refuse here.
            return Err(StateError::Locked {
                holder: Box::new(s.info.clone()),
                stale: false,
            });
        }
        let mut client = self.connect().await?;
        self.ensure_tables(&mut client).await?;
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&self.lock_key])
            .await
            .map_err(|e| self.pg_err("cannot take the advisory lock", &e))?
            .get(0);
        if !got {
            // The holder writes its row right after taking the advisory
            // lock; give it a moment.
            for _ in 0..10 {
                if let Some(holder) = self.lock_row(&client).await? {
                    return Err(StateError::Locked {
                        holder: Box::new(holder),
                        stale: false,
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let pid = self.advisory_holder(&client).await?.unwrap_or(0);
            return Err(StateError::Locked {
                holder: Box::new(LockInfo {
                    id: String::new(),
                    operation: "unknown (no lock record)".to_owned(),
                    who: format!("PostgreSQL session pid {pid}"),
                    pid: 0,
                    created: String::new(),
                    version: String::new(),
                    path: self.describe.clone(),
                }),
                stale: false,
            });
        }
        // Ours now. A row left by a holder whose connection is gone is
        // stale; replace it.
        let value = serde_json::to_value(info)
            .map_err(|e| self.store_err(format!("cannot encode the lock: {e}")))?;
        let upsert = format!(
            "INSERT INTO {} (name, info) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET info = EXCLUDED.info",
            self.table("locks")
        );
        client
            .execute(&upsert, &[&self.env, &value])
            .await
            .map_err(|e| self.pg_err("cannot record the lock", &e))?;
        *guard = Some(Session {
            client,
            info: info.clone(),
            cache: None,
        });
        Ok(())
    }

    async fn unlock(&self, id: &str) -> Result<(), StateError> {
        let mut guard = self.session.lock().await;
        match guard.as_ref() {
            None => return Err(StateError::NotLocked),
            Some(s) if s.info.id != id => {
                return Err(StateError::LockMismatch {
                    given: id.to_owned(),
                    current: Some(s.info.id.clone()),
                });
            }
            Some(_) => {}
        }
        let Some(session) = guard.take() else {
            return Err(StateError::NotLocked);
        };
        if session.client.is_closed() {
            // The connection is gone, and the advisory lock went with it.
            return Ok(());
        }
        let delete = format!(
            "DELETE FROM {} WHERE name = $1 AND info->>'id' = $2",
            self.table("locks")
        );
        session
            .client
            .execute(&delete, &[&self.env, &id])
            .await
            .map_err(|e| self.pg_err("cannot delete the lock record", &e))?;
        session
            .client
            .execute("SELECT pg_advisory_unlock($1)", &[&self.lock_key])
            .await
            .map_err(|e| self.pg_err("cannot release the advisory lock", &e))?;
        // Dropping the client closes the connection.
        Ok(())
    }

    async fn force_unlock(&self, id: &str) -> Result<(), StateError> {
        let own = self
            .session
            .lock()
            .await
            .as_ref()
            .is_some_and(|s| s.info.id == id);
        if own {
            return self.unlock(id).await;
        }
        let client = self.connect().await?;
        let row = if self.tables_exist(&client).await? {
            self.lock_row(&client).await?
        } else {
            None
        };
        match row {
            Some(holder) if holder.id == id => {}
            other => {
                return Err(StateError::LockMismatch {
                    given: id.to_owned(),
                    current: other.map(|h| h.id),
                });
            }
        }
        if let Some(pid) = self.advisory_holder(&client).await? {
            self.terminate(&client, pid).await?;
        }
        let delete = format!(
            "DELETE FROM {} WHERE name = $1 AND info->>'id' = $2",
            self.table("locks")
        );
        client
            .execute(&delete, &[&self.env, &id])
            .await
            .map_err(|e| self.pg_err("cannot delete the lock record", &e))?;
        Ok(())
    }

    async fn read(&self) -> Result<Snapshot, StateError> {
        let mut guard = self.session.lock().await;
        let session = guard.as_mut().ok_or(StateError::NotLocked)?;
        let snapshot = self.load(&session.client).await?;
        session.cache = Some(snapshot.clone());
        Ok(snapshot)
    }

    async fn put_resource(
        &self,
        address: &str,
        record: &ResourceRecord,
    ) -> Result<u64, StateError> {
        self.write(Change::Put(address, record)).await
    }

    async fn remove_resource(&self, address: &str) -> Result<u64, StateError> {
        self.write(Change::Remove(address)).await
    }

    async fn put_outputs(
        &self,
        outputs: &BTreeMap<String, OutputRecord>,
    ) -> Result<u64, StateError> {
        self.write(Change::Outputs(outputs)).await
    }

    async fn replace_all(&self, snapshot: &Snapshot) -> Result<u64, StateError> {
        self.write(Change::Replace(snapshot)).await
    }

    fn key(&self) -> &StateKey {
        &self.key
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

fn parse_config(conn_str: &str) -> Result<Config, StateError> {
    let mut config = Config::from_str(conn_str).map_err(|e| {
        // The parser's message never repeats the string (which may hold a
        // password).
        config_err(format!("`conn_str` is not a valid connection string: {e}"))
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(30));
    }
    if config.get_application_name().is_none() {
        config.application_name("berth");
    }
    Ok(config)
}

fn config_err(message: String) -> StateError {
    config(message)
}

/// `database `db` at host:port` for messages, without user or password.
fn where_is(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = config
                .get_ports()
                .get(i)
                .or_else(|| config.get_ports().first())
                .copied()
                .unwrap_or(5432);
            match h {
                Host::Tcp(name) => format!("{name}:{port}"),
                #[cfg(unix)]
                Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect();
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    let at = if hosts.is_empty() {
        "localhost".to_owned()
    } else {
        hosts.join(",")
    };
    format!("database `{db}` at {at}")
}

/// The advisory lock key of `env` in `schema`.
fn lock_key(schema: &str, env: &str) -> i64 {
    let digest = Sha256::digest(format!("berth-state\0{schema}\0{env}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn serial_i64(serial: u64) -> Result<i64, StateError> {
    i64::try_from(serial).map_err(|_| StateError::Corrupt {
        key: "serial".to_owned(),
        message: format!("serial {serial} does not fit PostgreSQL's bigint"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_need_a_conn_str_and_hide_it() {
        let none = BTreeMap::new();
        let e = PgSettings::resolve(&none, &|_| None).unwrap_err();
        assert!(e.to_string().contains("BERTH_PG_CONN_STR"), "{e}");
        let s = PgSettings::resolve(&none, &|k| {
            (k == CONN_STR_ENV).then(|| "host=h password=hunter2".to_owned())
        })
        .unwrap();
        assert_eq!(s.schema_name, "berth");
        assert!(!format!("{s:?}").contains("hunter2"));
        let b = PgBackend::new(s, "prod", StateKey::from_bytes([0; 32])).unwrap();
        assert!(!b.describe().contains("hunter2"), "{}", b.describe());
        assert!(b.describe().contains("h:5432"), "{}", b.describe());
        assert!(!format!("{b:?}").contains("hunter2"));
    }

    #[test]
    fn lock_keys_differ_by_schema_and_env() {
        assert_eq!(lock_key("berth", "prod"), lock_key("berth", "prod"));
        assert_ne!(lock_key("berth", "prod"), lock_key("berth", "staging"));
        assert_ne!(lock_key("berth", "prod"), lock_key("other", "prod"));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("berth"), "\"berth\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }
}
