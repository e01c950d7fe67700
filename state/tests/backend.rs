//! Behaviour of the sled store through the `StateBackend` trait: records
//! survive reopening, serials count writes, locks exclude and name their
//! holder, environments are isolated, secrets never reach the disk, and
//! corrupt records are errors rather than panics.

use std::collections::BTreeMap;
use std::path::Path;

use berth_state::sled_backend::SledBackend;
use berth_state::{Attrs, LockInfo, OutputRecord, ResourceRecord, StateBackend, StateError};
use serde_json::json;

fn record(id: &str, attrs: Attrs) -> ResourceRecord {
    ResourceRecord {
        type_name: "docker_container".to_owned(),
        id: id.to_owned(),
        attrs,
        sensitive: Vec::new(),
        config_hash: format!("cfg-{id}"),
        depends_on: vec!["docker_network.net".to_owned()],
    }
}

fn attrs(pairs: &[(&str, serde_json::Value)]) -> Attrs {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

async fn locked(dir: &Path, env: &str) -> (SledBackend, LockInfo) {
    let backend = SledBackend::open(dir, env).unwrap();
    let info = LockInfo::new("apply", &backend.describe());
    backend.lock(&info).await.unwrap();
    (backend, info)
}

#[tokio::test]
async fn records_and_outputs_round_trip_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let web = record(
        "c0ffee",
        attrs(&[("image", json!("nginx:1.27")), ("ports", json!([80, 443]))]),
    );
    let db = record(
        "d00d",
        attrs(&[("image", json!("postgres:17")), ("env", json!({"A": "1"}))]),
    );
    let outputs: BTreeMap<String, OutputRecord> = [
        (
            "url".to_owned(),
            OutputRecord {
                value: Some(json!("http://web")),
                sensitive: false,
            },
        ),
        (
            "token".to_owned(),
            OutputRecord {
                value: None,
                sensitive: true,
            },
        ),
    ]
    .into_iter()
    .collect();

    let lineage = {
        let (b, info) = locked(dir.path(), "default").await;
        let fresh = b.read().await.unwrap();
        assert_eq!(fresh.serial, 0);
        assert!(fresh.resources.is_empty() && fresh.outputs.is_empty());
        assert_eq!(fresh.lineage.len(), 36);
        b.put_resource("docker_container.web", &web).await.unwrap();
        b.put_resource("docker_container.db", &db).await.unwrap();
        b.put_resource("docker_container.gone", &web).await.unwrap();
        b.remove_resource("docker_container.gone").await.unwrap();
        b.put_outputs(&outputs).await.unwrap();
        b.unlock(&info.id).await.unwrap();
        fresh.lineage
    };

    let (b, info) = locked(dir.path(), "default").await;
    let snap = b.read().await.unwrap();
    assert_eq!(snap.lineage, lineage, "lineage is fixed at creation");
    assert_eq!(snap.serial, 5);
    assert_eq!(snap.resources.len(), 2);
    assert_eq!(snap.resources["docker_container.web"], web);
    assert_eq!(snap.resources["docker_container.db"], db);
    assert_eq!(snap.outputs, outputs);
    b.unlock(&info.id).await.unwrap();
}

#[tokio::test]
async fn every_write_bumps_the_serial() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _) = locked(dir.path(), "default").await;
    let r = record("x", Attrs::new());
    assert_eq!(b.put_resource("a.a", &r).await.unwrap(), 1);
    assert_eq!(b.put_resource("a.a", &r).await.unwrap(), 2);
    assert_eq!(b.put_outputs(&BTreeMap::new()).await.unwrap(), 3);
    assert_eq!(b.remove_resource("a.a").await.unwrap(), 4);
    assert_eq!(b.read().await.unwrap().serial, 4);
}

#[tokio::test]
async fn a_write_before_any_read_still_gets_a_lineage() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _) = locked(dir.path(), "default").await;
    assert_eq!(
        b.put_resource("a.a", &record("x", Attrs::new()))
            .await
            .unwrap(),
        1
    );
    let snap = b.read().await.unwrap();
    assert_eq!(snap.lineage.len(), 36);
    assert_eq!(snap.lineage, b.read().await.unwrap().lineage);
}

#[tokio::test]
async fn nothing_works_without_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let b = SledBackend::open(dir.path(), "default").unwrap();
    assert!(matches!(b.read().await, Err(StateError::NotLocked)));
    assert!(matches!(
        b.put_resource("a.a", &record("x", Attrs::new())).await,
        Err(StateError::NotLocked)
    ));
    assert!(matches!(
        b.remove_resource("a.a").await,
        Err(StateError::NotLocked)
    ));
    assert!(matches!(
        b.put_outputs(&BTreeMap::new()).await,
        Err(StateError::NotLocked)
    ));
    assert!(matches!(b.unlock("nope").await, Err(StateError::NotLocked)));

    let info = LockInfo::new("apply", "x");
    b.lock(&info).await.unwrap();
    b.unlock(&info.id).await.unwrap();
    assert!(matches!(b.read().await, Err(StateError::NotLocked)));
}

#[tokio::test]
async fn second_locker_is_told_who_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let (first, info) = locked(dir.path(), "default").await;

    let second = SledBackend::open(dir.path(), "default").unwrap();
    let err = second.lock(&LockInfo::new("plan", "x")).await.unwrap_err();
    match &err {
        StateError::Locked { holder, stale } => {
            assert_eq!(holder.id, info.id);
            assert_eq!(holder.pid, std::process::id());
            assert_eq!(**holder, info);
            assert!(!stale, "the holder is this live process");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(&info.id) && message.contains("Operation: apply"),
        "{message}"
    );

    // Unlocking with someone else's id is refused and keeps the lock.
    assert!(matches!(
        first.unlock("not-mine").await,
        Err(StateError::LockMismatch { current: Some(c), .. }) if c == info.id
    ));
    first.unlock(&info.id).await.unwrap();
    let next = LockInfo::new("plan", "x");
    second.lock(&next).await.unwrap();
    assert_eq!(second.lock_holder().unwrap(), Some(next));
}

#[tokio::test]
async fn dropping_a_locked_backend_releases_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (b, _) = locked(dir.path(), "default").await;
        b.put_resource("a.a", &record("x", Attrs::new()))
            .await
            .unwrap();
    }
    let (b, _) = locked(dir.path(), "default").await;
    assert_eq!(b.read().await.unwrap().serial, 1);
}

#[tokio::test]
async fn environments_are_isolated_and_listed_by_name() {
    let dir = tempfile::tempdir().unwrap();
    assert!(SledBackend::list_envs(dir.path()).unwrap().is_empty());
    let (prod, _) = locked(dir.path(), "prod").await;
    let (review, _) = locked(dir.path(), "review/feat-x").await;
    prod.put_resource("a.prod", &record("p", Attrs::new()))
        .await
        .unwrap();
    review
        .put_resource("a.review", &record("r", Attrs::new()))
        .await
        .unwrap();
    review
        .put_resource("a.review2", &record("r", Attrs::new()))
        .await
        .unwrap();

    let p = prod.read().await.unwrap();
    let r = review.read().await.unwrap();
    assert_eq!(p.resources.keys().collect::<Vec<_>>(), ["a.prod"]);
    assert_eq!(
        r.resources.keys().collect::<Vec<_>>(),
        ["a.review", "a.review2"]
    );
    assert_eq!((p.serial, r.serial), (1, 2));
    assert_ne!(p.lineage, r.lineage);

    assert_eq!(
        SledBackend::list_envs(dir.path()).unwrap(),
        ["prod", "review/feat-x"]
    );
    assert_eq!(review.env(), "review/feat-x");
    assert_eq!(review.env_dir().parent().unwrap(), dir.path().join("envs"));
    assert!(review.describe().starts_with("sled store at "));
    // Both share the one key, kept beside the databases.
    assert_eq!(prod.key(), review.key());
    assert!(dir.path().join("state.key").is_file());
}

#[tokio::test]
async fn force_unlock_needs_the_current_id() {
    let dir = tempfile::tempdir().unwrap();
    let (holder, info) = locked(dir.path(), "default").await;
    holder
        .put_resource("a.a", &record("x", Attrs::new()))
        .await
        .unwrap();

    let other = SledBackend::open(dir.path(), "default").unwrap();
    match other.force_unlock("wrong").await {
        Err(StateError::LockMismatch { given, current }) => {
            assert_eq!(given, "wrong");
            assert_eq!(current.as_deref(), Some(info.id.as_str()));
        }
        other => panic!("expected LockMismatch, got {other:?}"),
    }
    assert!(
        other.lock(&LockInfo::new("apply", "x")).await.is_err(),
        "still locked"
    );

    // The holder closes its database when its lock is forced away (in
    // berth the holder is a dead process; here it is the same one).
    holder.force_unlock(&info.id).await.unwrap();
    assert!(matches!(
        other.force_unlock(&info.id).await,
        Err(StateError::LockMismatch { current: None, .. })
    ));
    let next = LockInfo::new("apply", "x");
    other.lock(&next).await.unwrap();
    assert_eq!(other.read().await.unwrap().serial, 1);
    drop(holder);
    assert_eq!(
        other.lock_holder().unwrap().map(|h| h.id),
        Some(next.id),
        "drop left the new lock alone"
    );
}

#[tokio::test]
async fn a_dead_holder_on_this_host_is_reported_stale() {
    let dir = tempfile::tempdir().unwrap();
    let b = SledBackend::open(dir.path(), "default").unwrap();
    let mut dead = LockInfo::new("apply", "x");
    dead.pid = 999_999_999;
    std::fs::create_dir_all(b.env_dir()).unwrap();
    std::fs::write(
        b.env_dir().join("lock.json"),
        serde_json::to_vec(&dead).unwrap(),
    )
    .unwrap();

    let err = b.lock(&LockInfo::new("plan", "x")).await.unwrap_err();
    match &err {
        StateError::Locked { holder, stale } => {
            assert_eq!(**holder, dead);
            assert!(stale);
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("no longer running"), "{message}");
    assert!(
        message.contains(&format!("berth force-unlock {}", dead.id)),
        "{message}"
    );
    // Stale locks are reported, never removed behind the user's back.
    assert!(b.env_dir().join("lock.json").exists());

    b.force_unlock(&dead.id).await.unwrap();
    b.lock(&LockInfo::new("plan", "x")).await.unwrap();
}

#[tokio::test]
async fn secrets_never_reach_the_disk() {
    const SECRET: &str = "Zebra-Quokka-7f3a91-do-not-store";
    const PLAIN: &str = "Plain-Marker-5d2c88-stored";
    let dir = tempfile::tempdir().unwrap();
    let (b, info) = locked(dir.path(), "default").await;
    let raw = attrs(&[("password", json!(SECRET)), ("name", json!(PLAIN))]);
    let sensitive = vec!["password".to_owned()];
    let mut rec = record("c0ffee", b.key().redact(&raw, &sensitive));
    rec.sensitive = sensitive;
    b.put_resource("docker_container.web", &rec).await.unwrap();
    let stored =
        b.read().await.unwrap().resources["docker_container.web"].attrs["password"].clone();
    assert!(b.key().matches(&json!(SECRET), &stored));
    b.unlock(&info.id).await.unwrap();

    let (mut secret_hits, mut plain_hits) = (0, 0);
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&p).unwrap();
            secret_hits += count(&bytes, SECRET.as_bytes());
            plain_hits += count(&bytes, PLAIN.as_bytes());
        }
    }
    assert_eq!(secret_hits, 0);
    assert!(plain_hits > 0, "the search sees what the store wrote");
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// Writes raw bytes into an environment's database behind the backend's back.
fn poke(dir: &Path, env: &str, key: &[u8], value: &[u8]) {
    // sled's background flusher may still hold the file lock for a moment
    // after the backend that used it was dropped: wait for it, boundedly.
    let path = dir.join("envs").join(env).join("db");
    let mut attempts = 0;
    let db = loop {
        match sled::open(&path) {
            Ok(db) => break db,
            Err(e) if attempts < 100 && e.to_string().contains("could not acquire lock") => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("open {}: {e}", path.display()),
        }
    };
    db.insert(key, value).unwrap();
    db.flush().unwrap();
}

#[tokio::test]
async fn corrupt_records_are_errors_not_panics() {
    let cases: [(&[u8], &[u8]); 6] = [
        (b"res/docker_container.web", b"\xff\x00{not json"),
        (b"res/docker_container.web", b"{\"type_name\": 3}"),
        (b"res/\xff", b"{}"),
        (b"out", b"[1, 2"),
        (b"meta/serial", b"\x01\x02\x03"),
        (b"meta/lineage", b"\xc3\x28"),
    ];
    for (key, value) in cases {
        let dir = tempfile::tempdir().unwrap();
        {
            let (b, info) = locked(dir.path(), "default").await;
            b.put_resource("docker_container.ok", &record("x", Attrs::new()))
                .await
                .unwrap();
            b.unlock(&info.id).await.unwrap();
        }
        poke(dir.path(), "default", key, value);
        let (b, _) = locked(dir.path(), "default").await;
        match b.read().await {
            Err(StateError::Corrupt { key: k, message }) => {
                let want = String::from_utf8_lossy(if key.starts_with(b"res/") {
                    b"res/"
                } else {
                    key
                });
                assert!(k.starts_with(&*want), "key {k:?} for {want:?}");
                assert!(!message.is_empty());
            }
            other => panic!("{key:?}: expected Corrupt, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn corrupt_serial_fails_writes_too() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("envs/default")).unwrap();
    poke(dir.path(), "default", b"meta/serial", b"xx");
    let (b, _) = locked(dir.path(), "default").await;
    assert!(matches!(
        b.put_resource("a.a", &record("x", Attrs::new())).await,
        Err(StateError::Corrupt { key, .. }) if key == "meta/serial"
    ));
}

#[tokio::test]
async fn corrupt_lock_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let b = SledBackend::open(dir.path(), "default").unwrap();
    std::fs::create_dir_all(b.env_dir()).unwrap();
    std::fs::write(b.env_dir().join("lock.json"), b"\x00garbage").unwrap();
    match b.lock(&LockInfo::new("apply", "x")).await {
        Err(StateError::Corrupt { key, .. }) => assert!(key.ends_with("lock.json"), "{key}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn empty_env_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        SledBackend::open(dir.path(), ""),
        Err(StateError::Store { .. })
    ));
}
