//! The PostgreSQL backend against a real server that each test starts for
//! itself from Debian's `postgresql` (initdb into a temporary directory as
//! user `postgres`, `pg_ctl start` on a free port, `pg_ctl stop` on drop):
//! the common behaviour, the table layout, a lock held by one connection
//! that blocks another with the holder's info, a holder whose connection
//! dies (dropped, or ended with `pg_terminate_backend`) leaving a stale row
//! that the next lock takes over, force-unlock, and a write that lost its
//! conditional update.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_state::pg_backend::PgBackend;
use berth_state::{Attrs, LockInfo, StateBackend, StateError, list_envs, open_backend};
use tokio_postgres::NoTls;

use crate::common::{conformance, record};

/// A PostgreSQL server of this test's own.
pub struct PgServer {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

static INSTALL: Mutex<()> = Mutex::new(());

/// The newest `/usr/lib/postgresql/*/bin` with `initdb`, installing Debian's
/// `postgresql` first when there is none (as root).
fn pg_bin() -> PathBuf {
    let find = || -> Option<PathBuf> {
        let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| {
                let e = e.ok()?;
                let v: u32 = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb").exists().then_some((v, bin))
            })
            .collect();
        dirs.sort();
        dirs.pop().map(|(_, b)| b)
    };
    let _guard = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(bin) = find() {
        return bin;
    }
    let root = nix_uid() == 0;
    assert!(
        root,
        "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb) and this is not root: \
         run `sudo scripts/ensure-test-deps.sh` or `sudo apt-get install -y postgresql`"
    );
    let status = Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "postgresql",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    let status_ok = status.as_ref().is_ok_and(|s| s.success());
    if !status_ok {
        // Maybe the package lists are missing: update once and retry.
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        let again = Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "postgresql",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        assert!(
            again.is_ok_and(|s| s.success()),
            "PostgreSQL is not installed and `apt-get install -y postgresql` failed; \
             run scripts/ensure-test-deps.sh"
        );
    }
    find().expect("apt-get installed postgresql, but no /usr/lib/postgresql/*/bin/initdb exists")
}

fn nix_uid() -> u32 {
    // The owner of /proc/self is this process's uid.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn postgres_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"postgres")).then(|| (f[2].parse().unwrap(), f[3].parse().unwrap()))
        })
        .expect("the postgresql package should have created the user `postgres`")
}

impl PgServer {
    pub fn start() -> PgServer {
        let bin = pg_bin();
        let as_postgres = nix_uid() == 0;
        let dir = tempfile::Builder::new()
            .prefix("berth-pg-")
            .tempdir_in("/tmp")
            .unwrap();
        if as_postgres {
            let (uid, gid) = postgres_ids();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let data = dir.path().join("data");
        let run = |program: &Path, args: &[&str]| -> std::process::Output {
            let mut cmd = if as_postgres {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(program);
                c
            } else {
                Command::new(program)
            };
            cmd.args(args).current_dir(dir.path());
            cmd.output().unwrap()
        };
        let out = run(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // A port picked now may be taken by the time the server binds it:
        // try a few.
        let log = dir.path().join("server.log");
        for _ in 0..5 {
            let port = free_port();
            let opts = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                dir.path().display()
            );
            let out = run(
                &bin.join("pg_ctl"),
                &[
                    "start",
                    "-w",
                    "-t",
                    "60",
                    "-D",
                    data.to_str().unwrap(),
                    "-l",
                    log.to_str().unwrap(),
                    "-o",
                    &opts,
                ],
            );
            if out.status.success() {
                return PgServer {
                    bin,
                    data,
                    port,
                    as_postgres,
                    _dir: dir,
                };
            }
        }
        panic!(
            "pg_ctl start failed; server log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    pub fn conn_str(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    pub fn settings(&self, schema: &str) -> BTreeMap<String, String> {
        [
            ("conn_str".to_owned(), self.conn_str()),
            ("schema_name".to_owned(), schema.to_owned()),
        ]
        .into_iter()
        .collect()
    }

    /// A plain connection, for looking behind the backend's back.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.conn_str(), NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let ctl = self.bin.join("pg_ctl");
        let data = self.data.to_str().unwrap_or_default().to_owned();
        let args = ["stop", "-m", "immediate", "-w", "-D", &data];
        let _ = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&ctl)
                .args(args)
                .output()
        } else {
            Command::new(&ctl).args(args).output()
        };
    }
}

async fn open(server: &PgServer, schema: &str, env: &str, dir: &Path) -> Box<dyn StateBackend> {
    open_backend("pg", &server.settings(schema), env, dir)
        .await
        .unwrap()
}

fn pg(server: &PgServer, env: &str, dir: &Path) -> PgBackend {
    PgBackend::open(&server.settings("berth"), env, dir).unwrap()
}

/// Waits until `holder` reports the lock record as stale.
async fn wait_stale(b: &PgBackend, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match b.lock_holder().await.unwrap() {
            Some((info, true)) if info.id == id => return,
            Some((info, false)) if info.id == id => {}
            other => panic!("expected the record of {id}, got {other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "the advisory lock was never released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn pg_round_trip_serials_and_listing() {
    let server = PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    assert!(
        list_envs("pg", &server.settings("berth"), dir.path())
            .await
            .unwrap()
            .is_empty()
    );
    conformance(async || open(&server, "berth", "review/feat-x", dir.path()).await).await;

    // Another schema is another namespace.
    conformance(async || open(&server, "Other \"Schema\"", "prod", dir.path()).await).await;
    let b = open(&server, "berth", "prod", dir.path()).await;
    let info = LockInfo::new("apply", "x");
    b.lock(&info).await.unwrap();
    assert_eq!(b.read().await.unwrap().serial, 0, "prod in `berth` is new");
    b.unlock(&info.id).await.unwrap();

    assert_eq!(
        list_envs("pg", &server.settings("berth"), dir.path())
            .await
            .unwrap(),
        ["prod", "review/feat-x"]
    );

    // One row per environment; the serial column follows the document.
    let client = server.client().await;
    let row = client
        .query_one(
            "SELECT serial, data->>'serial', data->>'version' FROM berth.states WHERE name = $1",
            &[&"review/feat-x"],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 7);
    assert_eq!(row.get::<_, String>(1), "7");
    assert_eq!(row.get::<_, String>(2), "1");
    let locks: i64 = client
        .query_one("SELECT count(*) FROM berth.locks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(locks, 0, "unlock removes the lock record");
}

#[tokio::test]
async fn pg_lock_dies_with_its_connection() {
    let server = PgServer::start();
    let dir = tempfile::tempdir().unwrap();

    // One connection holds the lock; a second locker is told who.
    let first = pg(&server, "prod", dir.path());
    let info = LockInfo::new("apply", &first.describe());
    first.lock(&info).await.unwrap();
    first.read().await.unwrap();
    first
        .put_resource("a.a", &record("x", Attrs::new()))
        .await
        .unwrap();

    let second = pg(&server, "prod", dir.path());
    match second.lock(&LockInfo::new("plan", "x")).await.unwrap_err() {
        StateError::Locked { holder, stale } => {
            assert_eq!(*holder, info);
            assert!(!stale);
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    assert_eq!(
        second.lock_holder().await.unwrap(),
        Some((info.clone(), false))
    );

    // The holder goes away without unlocking (as a killed process would):
    // its connection closes, the advisory lock goes with it, and the row
    // left behind is reported stale.
    drop(first);
    wait_stale(&second, &info.id).await;

    // The advisory lock is the truth: the next lock takes over.
    let mine = LockInfo::new("apply", &second.describe());
    second.lock(&mine).await.unwrap();
    assert_eq!(
        second.lock_holder().await.unwrap(),
        Some((mine.clone(), false))
    );
    assert_eq!(second.read().await.unwrap().serial, 1);

    // Ending the holder's server session from outside frees the lock too,
    // and the holder's next write fails instead of going through unlocked.
    let client = server.client().await;
    let pid: i32 = client
        .query_one(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let ended: bool = client
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(ended);
    let third = pg(&server, "prod", dir.path());
    wait_stale(&third, &mine.id).await;
    assert!(
        second
            .put_resource("a.b", &record("y", Attrs::new()))
            .await
            .is_err(),
        "a write on a dead connection must fail"
    );
    let last = LockInfo::new("apply", "x");
    third.lock(&last).await.unwrap();
    assert_eq!(
        third
            .put_resource("a.b", &record("y", Attrs::new()))
            .await
            .unwrap(),
        2
    );
    // Unlocking a session whose connection died is not an error: the lock
    // is gone already.
    second.unlock(&mine.id).await.unwrap();
    third.unlock(&last.id).await.unwrap();
    assert_eq!(third.lock_holder().await.unwrap(), None);
}

#[tokio::test]
async fn pg_force_unlock_ends_the_holders_session_and_writes_are_conditional() {
    let server = PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    let first = pg(&server, "prod", dir.path());
    let info = LockInfo::new("apply", "x");
    first.lock(&info).await.unwrap();
    first.read().await.unwrap();

    let second = pg(&server, "prod", dir.path());
    assert!(matches!(
        second.force_unlock("not-the-id").await,
        Err(StateError::LockMismatch { current: Some(c), .. }) if c == info.id
    ));
    second.force_unlock(&info.id).await.unwrap();
    assert_eq!(second.lock_holder().await.unwrap(), None);
    assert!(
        first
            .put_resource("a.a", &record("x", Attrs::new()))
            .await
            .is_err(),
        "the force-unlocked holder cannot write any more"
    );

    let mine = LockInfo::new("apply", "x");
    second.lock(&mine).await.unwrap();
    second.read().await.unwrap();
    assert_eq!(
        second
            .put_resource("a.a", &record("x", Attrs::new()))
            .await
            .unwrap(),
        1
    );

    // A serial changed behind the backend's back: the conditional update
    // matches no row and the write fails.
    let client = server.client().await;
    client
        .execute(
            "UPDATE berth.states SET serial = serial + 5 WHERE name = 'prod'",
            &[],
        )
        .await
        .unwrap();
    let e = second
        .put_resource("a.b", &record("y", Attrs::new()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no longer at serial 1"), "{e}");
    second.unlock(&mine.id).await.unwrap();

    // Settings errors name the problem.
    let bad: BTreeMap<String, String> = [(
        "conn_str".to_owned(),
        "host=127.0.0.1 port=notaport".to_owned(),
    )]
    .into_iter()
    .collect();
    let Err(e) = open_backend("pg", &bad, "prod", dir.path()).await else {
        panic!("a bad conn_str was accepted");
    };
    assert!(e.to_string().contains("conn_str"), "{e}");
}
