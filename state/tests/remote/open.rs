//! `open_backend` and `list_envs`: the kinds, unknown kinds and settings
//! named with the valid ones, the local kind through the trait object.

use std::collections::BTreeMap;

use berth_state::{LockInfo, StateError, list_envs, open_backend};

fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn open_err(kind: &str, pairs: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    match open_backend(kind, &settings(pairs), "prod", dir.path()).await {
        Ok(_) => panic!("{kind} {pairs:?} opened"),
        Err(e) => {
            assert!(matches!(e, StateError::Config { .. }), "{e:?}");
            e.to_string()
        }
    }
}

#[tokio::test]
async fn unknown_kinds_and_settings_are_named() {
    let e = open_err("consul", &[]).await;
    assert!(
        e.contains("\"consul\"") && e.contains("`local`, `http`, `pg`, `s3`"),
        "{e}"
    );

    let e = open_err(
        "http",
        &[
            ("address", "http://127.0.0.1:9/x"),
            ("adress", "x"),
            ("lock_adress", "y"),
        ],
    )
    .await;
    assert!(
        e.contains("unknown settings `adress`, `lock_adress`"),
        "{e}"
    );
    assert!(
        e.contains("`lock_address`") && e.contains("`retry_wait_max`"),
        "{e}"
    );

    let e = open_err("pg", &[("conn_str", "host=x"), ("schema", "s")]).await;
    assert!(e.contains("`schema`") && e.contains("`schema_name`"), "{e}");

    let e = open_err("s3", &[("bucket", "b"), ("path_style", "true")]).await;
    assert!(
        e.contains("`path_style`") && e.contains("`force_path_style`"),
        "{e}"
    );

    let e = open_err("local", &[("dir", "/tmp")]).await;
    assert!(e.contains("`dir`") && e.contains("`path`"), "{e}");

    let e = open_err(
        "s3",
        &[
            ("bucket", "b"),
            ("access_key", "a"),
            ("secret_key", "s"),
            ("force_path_style", "maybe"),
        ],
    )
    .await;
    assert!(e.contains("true or false"), "{e}");
}

#[tokio::test]
async fn local_kind_is_the_sled_store() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let s = settings(&[("path", elsewhere.path().to_str().unwrap())]);
    let b = open_backend("local", &s, "prod", dir.path()).await.unwrap();
    let info = LockInfo::new("apply", &b.describe());
    b.lock(&info).await.unwrap();
    assert_eq!(b.put_outputs(&BTreeMap::new()).await.unwrap(), 1);
    b.unlock(&info.id).await.unwrap();
    assert_eq!(list_envs("local", &s, dir.path()).await.unwrap(), ["prod"]);
    assert!(
        list_envs("local", &BTreeMap::new(), dir.path())
            .await
            .unwrap()
            .is_empty()
    );

    let default = open_backend("local", &BTreeMap::new(), "dev", dir.path())
        .await
        .unwrap();
    assert!(default.describe().contains(dir.path().to_str().unwrap()));
    assert!(
        open_backend("local", &BTreeMap::new(), "", dir.path())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn http_cannot_list_states() {
    let dir = tempfile::tempdir().unwrap();
    let e = list_envs("http", &settings(&[("address", "http://x")]), dir.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot list states"), "{e}");
}
