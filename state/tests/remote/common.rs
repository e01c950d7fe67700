//! What every store must do, run against each backend: nothing without the
//! lock, a lineage fixed at creation, one serial per write, records that
//! survive into the next session, and a second locker told who holds the
//! lock.

use std::collections::BTreeMap;

use berth_state::{Attrs, LockInfo, OutputRecord, ResourceRecord, StateBackend, StateError};
use serde_json::json;

pub fn record(id: &str, attrs: Attrs) -> ResourceRecord {
    ResourceRecord {
        type_name: "docker_container".to_owned(),
        id: id.to_owned(),
        attrs,
        sensitive: vec!["password".to_owned()],
        config_hash: format!("cfg-{id}"),
        depends_on: vec!["docker_network.net".to_owned()],
    }
}

pub fn attrs(pairs: &[(&str, serde_json::Value)]) -> Attrs {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

pub fn outputs() -> BTreeMap<String, OutputRecord> {
    [
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
    .collect()
}

/// Runs the common behaviour against fresh backends made by `open` (each
/// call must return a new backend for the same environment).
pub async fn conformance(open: impl AsyncFn() -> Box<dyn StateBackend>) {
    let a = open().await;
    assert!(matches!(a.read().await, Err(StateError::NotLocked)));
    assert!(matches!(
        a.put_resource("x.x", &record("x", Attrs::new())).await,
        Err(StateError::NotLocked)
    ));
    assert!(matches!(a.unlock("nope").await, Err(StateError::NotLocked)));

    let info = LockInfo::new("apply", &a.describe());
    a.lock(&info).await.unwrap();
    let fresh = a.read().await.unwrap();
    assert_eq!(fresh.serial, 0);
    assert!(fresh.resources.is_empty() && fresh.outputs.is_empty());
    assert_eq!(fresh.lineage.len(), 36, "{}", fresh.lineage);
    assert_eq!(a.read().await.unwrap().lineage, fresh.lineage);

    let web = record(
        "c0ffee",
        attrs(&[
            ("image", json!("nginx:1.27")),
            ("ports", json!([80, 443])),
            ("password", json!(a.key().hash(&json!("s3cret")))),
        ]),
    );
    let db = record("d00d", attrs(&[("env", json!({"A": "1"}))]));
    assert_eq!(
        a.put_resource("docker_container.web", &web).await.unwrap(),
        1
    );
    assert_eq!(a.put_resource("docker_container.db", &db).await.unwrap(), 2);
    assert_eq!(
        a.put_resource("docker_container.gone", &db).await.unwrap(),
        3
    );
    assert_eq!(a.remove_resource("docker_container.gone").await.unwrap(), 4);
    assert_eq!(a.put_outputs(&outputs()).await.unwrap(), 5);

    // A second locker is refused and told who holds the lock.
    let b = open().await;
    let err = b.lock(&LockInfo::new("plan", "x")).await.unwrap_err();
    match &err {
        StateError::Locked { holder, stale } => {
            assert_eq!(holder.id, info.id, "{err}");
            assert!(!stale, "the holder is alive: {err}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    assert!(err.to_string().contains(&info.id), "{err}");
    // Locking twice from the same backend is refused too.
    assert!(matches!(
        a.lock(&LockInfo::new("apply", "x")).await,
        Err(StateError::Locked { .. })
    ));

    // Unlocking with another id is refused and keeps the lock.
    assert!(matches!(
        a.unlock("not-mine").await,
        Err(StateError::LockMismatch { current: Some(c), .. }) if c == info.id
    ));
    a.unlock(&info.id).await.unwrap();
    assert!(matches!(a.read().await, Err(StateError::NotLocked)));

    let next = LockInfo::new("apply", &b.describe());
    b.lock(&next).await.unwrap();
    let snap = b.read().await.unwrap();
    assert_eq!(snap.lineage, fresh.lineage, "lineage is fixed at creation");
    assert_eq!(snap.serial, 5);
    assert_eq!(snap.resources.len(), 2);
    assert_eq!(snap.resources["docker_container.web"], web);
    assert_eq!(snap.resources["docker_container.db"], db);
    assert_eq!(snap.outputs, outputs());
    assert_eq!(b.put_outputs(&BTreeMap::new()).await.unwrap(), 6);
    b.unlock(&next.id).await.unwrap();

    // A write with no read before it still starts from the stored state.
    let c = open().await;
    let third = LockInfo::new("apply", "x");
    c.lock(&third).await.unwrap();
    assert_eq!(c.remove_resource("docker_container.db").await.unwrap(), 7);
    let snap = c.read().await.unwrap();
    assert_eq!(snap.serial, 7);
    assert_eq!(snap.lineage, fresh.lineage);
    assert_eq!(snap.resources.len(), 1);
    c.unlock(&third.id).await.unwrap();
}
