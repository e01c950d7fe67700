//! The HTTP backend against the GitLab double: the common behaviour with
//! GitLab's POST/DELETE locking and with Terraform's LOCK/UNLOCK, the
//! request shapes GitLab needs (`?ID=`, lock info fields, Content-MD5), a
//! conflict naming the holder, force-unlock, auth failures that never show
//! the password, retried 500s, GitLab CI's defaults and a write that another
//! writer overtook.

use std::collections::BTreeMap;

use berth_state::http_backend::{HttpBackend, HttpSettings};
use berth_state::{Attrs, LockInfo, StateBackend, StateError, StateKey, open_backend};

use crate::common::{conformance, record};
use crate::gitlab_fake::FakeGitlab;

const USER: &str = "alice";
const PASSWORD: &str = "glpat-very-secret-token";

fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn gitlab_settings(fake: &FakeGitlab) -> BTreeMap<String, String> {
    settings(&[
        ("address", &fake.state_url("{env}")),
        ("username", USER),
        ("password", PASSWORD),
        ("retry_wait_min", "0.01"),
        ("retry_wait_max", "0.05"),
    ])
}

#[tokio::test]
async fn gitlab_state_round_trip_with_gitlab_requests() {
    let fake = FakeGitlab::start(USER, PASSWORD).await;
    let dir = tempfile::tempdir().unwrap();
    let s = gitlab_settings(&fake);
    conformance(async || {
        open_backend("http", &s, "review/feat-x", dir.path())
            .await
            .unwrap()
    })
    .await;

    // The state name was URL-encoded into one path segment.
    let doc = fake.latest("review/feat-x").expect("state stored");
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["serial"], 7);
    assert_eq!(doc["lineage"].as_str().unwrap().len(), 36);
    assert!(doc["resources"]["docker_container.web"].is_object());

    let seen = fake.seen();
    let state_path = "/api/v4/projects/1/terraform/state/review%2Ffeat-x";
    let writes: Vec<_> = seen
        .iter()
        .filter(|r| {
            r.method == "POST" && r.target.starts_with(state_path) && !r.target.contains("/lock")
        })
        .collect();
    assert!(!writes.is_empty());
    for w in &writes {
        assert!(
            w.target.contains("?ID="),
            "every write names the lock: {w:?}"
        );
        assert!(w.content_md5.is_some(), "{w:?}");
        assert_eq!(w.status, 200, "{w:?}");
    }
    let lock_path = format!("{state_path}/lock");
    assert!(
        seen.iter()
            .any(|r| r.method == "POST" && r.target == lock_path && r.status == 200)
    );
    assert!(
        seen.iter()
            .any(|r| r.method == "DELETE" && r.target == lock_path && r.status == 200)
    );
    assert!(
        fake.project.lock().unwrap().locks.is_empty(),
        "all unlocked"
    );
}

#[tokio::test]
async fn terraform_lock_and_unlock_methods_work_too() {
    let fake = FakeGitlab::start(USER, PASSWORD).await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = gitlab_settings(&fake);
    s.insert("lock_method".into(), "LOCK".into());
    s.insert("unlock_method".into(), "UNLOCK".into());
    s.insert(
        "lock_address".into(),
        format!("{}/lock", fake.state_url("{env}")),
    );
    conformance(async || open_backend("http", &s, "prod", dir.path()).await.unwrap()).await;
    let seen = fake.seen();
    assert!(seen.iter().any(|r| r.method == "LOCK" && r.status == 200));
    assert!(seen.iter().any(|r| r.method == "UNLOCK" && r.status == 200));
    assert!(!seen.iter().any(|r| r.method == "DELETE"));
}

#[tokio::test]
async fn lock_conflict_names_the_holder_and_force_unlock_needs_its_id() {
    let fake = FakeGitlab::start(USER, PASSWORD).await;
    let dir = tempfile::tempdir().unwrap();
    let s = gitlab_settings(&fake);
    let first = open_backend("http", &s, "prod", dir.path()).await.unwrap();
    let info = LockInfo::new("apply", &first.describe());
    first.lock(&info).await.unwrap();

    let second = open_backend("http", &s, "prod", dir.path()).await.unwrap();
    let err = second.lock(&LockInfo::new("plan", "x")).await.unwrap_err();
    let StateError::Locked { holder, stale } = &err else {
        panic!("expected Locked, got {err:?}");
    };
    assert_eq!(holder.id, info.id);
    // GitLab reports the GitLab user that holds the lock.
    assert_eq!(holder.who, USER);
    assert_eq!(holder.created, info.created);
    assert!(!stale);
    let text = err.to_string();
    assert!(text.contains(&info.id) && text.contains(USER), "{text}");

    // force-unlock with the wrong id: 409 from the server, the lock stays.
    let e = second.force_unlock("0123456789abcdef").await.unwrap_err();
    assert!(
        matches!(&e, StateError::LockMismatch { current: Some(c), .. } if *c == info.id),
        "{e:?}"
    );
    assert!(fake.project.lock().unwrap().locks.contains_key("prod"));

    // With the right id it goes, and the first holder's writes now fail
    // (GitLab refuses an `ID` that is not the lock's).
    second.force_unlock(&info.id).await.unwrap();
    let mine = LockInfo::new("apply", "x");
    second.lock(&mine).await.unwrap();
    second.read().await.unwrap();
    let e = first
        .put_resource("a.a", &record("x", Attrs::new()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("500"), "{e}");
    assert_eq!(
        second
            .put_resource("a.a", &record("x", Attrs::new()))
            .await
            .unwrap(),
        1
    );
    second.unlock(&mine.id).await.unwrap();
}

#[tokio::test]
async fn auth_failures_never_show_the_password() {
    let fake = FakeGitlab::start(USER, PASSWORD).await;
    let dir = tempfile::tempdir().unwrap();
    let wrong = "wrong-password-do-not-print";
    let mut s = gitlab_settings(&fake);
    s.insert("password".into(), wrong.into());
    let b = HttpBackend::open(&s, "prod", dir.path()).unwrap();
    let e = b.lock(&LockInfo::new("apply", "x")).await.unwrap_err();
    let text = e.to_string();
    assert!(text.contains("401"), "{text}");
    assert!(text.contains(&format!("user `{USER}`")), "{text}");
    assert!(!text.contains(wrong), "{text}");
    assert!(!format!("{e:?}").contains(wrong));
    assert!(!format!("{b:?}").contains(wrong), "{b:?}");
    assert!(!b.describe().contains(wrong));

    // No credentials at all: the message says how to give them.
    let mut s = gitlab_settings(&fake);
    s.remove("username");
    s.remove("password");
    let b = open_backend("http", &s, "prod", dir.path()).await.unwrap();
    let text = b
        .lock(&LockInfo::new("apply", "x"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("401") && text.contains("BERTH_HTTP_PASSWORD"),
        "{text}"
    );

    // A password that the server echoes back is scrubbed too.
    let b = HttpBackend::new(
        HttpSettings::resolve(
            &settings(&[
                ("address", &format!("http://{}/echo/{PASSWORD}", fake.addr)),
                ("username", USER),
                ("password", PASSWORD),
            ]),
            "prod",
            &|_| None,
        )
        .unwrap(),
        "prod",
        StateKey::from_bytes([1; 32]),
    )
    .unwrap();
    let info = LockInfo::new("apply", "x");
    b.lock(&info).await.unwrap(); // no lock address: locking disabled
    let text = b.read().await.unwrap_err().to_string();
    assert!(text.contains("404"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
}

#[tokio::test]
async fn server_errors_are_retried_then_reported() {
    let fake = FakeGitlab::start(USER, PASSWORD).await;
    let dir = tempfile::tempdir().unwrap();
    let s = gitlab_settings(&fake);
    let b = open_backend("http", &s, "prod", dir.path()).await.unwrap();

    // retry_max is 2: two 500s, then the third try gets through.
    fake.project.lock().unwrap().fail_next = 2;
    let info = LockInfo::new("apply", "x");
    b.lock(&info).await.unwrap();
    let statuses: Vec<u16> = fake.seen().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 500, 200]);

    fake.project.lock().unwrap().fail_next = 1;
    b.read().await.unwrap();
    fake.project.lock().unwrap().fail_next = 2;
    assert_eq!(
        b.put_resource("a.a", &record("x", Attrs::new()))
            .await
            .unwrap(),
        1
    );

    // Three 500s in a row exhaust the retries.
    fake.project.lock().unwrap().fail_next = 3;
    let e = b
        .put_resource("a.b", &record("y", Attrs::new()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("HTTP 500"), "{e}");

    // A server that is not there at all: a connection error, after retries.
    let gone = settings(&[
        ("address", "http://127.0.0.1:9/state"),
        ("lock_address", "http://127.0.0.1:9/state/lock"),
        ("retry_max", "1"),
        ("retry_wait_min", "0.01"),
        ("password", PASSWORD),
    ]);
    let b = open_backend("http", &gone, "prod", dir.path())
        .await
        .unwrap();
    let text = b
        .lock(&LockInfo::new("apply", "x"))
        .await
        .unwrap_err()
        .to_string();
    assert!(text.contains("after 2 attempts"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
}

#[tokio::test]
async fn gitlab_ci_variables_give_the_address_and_credentials() {
    let token = "ci-job-token-123";
    let fake = FakeGitlab::start("gitlab-ci-token", token).await;
    let api = fake.api_url();
    let vars = move |k: &str| match k {
        "CI_API_V4_URL" => Some(api.clone()),
        "CI_PROJECT_ID" => Some("1".to_owned()),
        "CI_JOB_TOKEN" => Some(token.to_owned()),
        _ => None,
    };
    let resolved = HttpSettings::resolve(&BTreeMap::new(), "review/x", &vars).unwrap();
    assert_eq!(resolved.lock_method, "POST");
    assert_eq!(resolved.unlock_method, "DELETE");
    let b = HttpBackend::new(resolved, "review/x", StateKey::from_bytes([2; 32])).unwrap();
    let info = LockInfo::new("apply", &b.describe());
    b.lock(&info).await.unwrap();
    b.read().await.unwrap();
    b.put_resource("a.a", &record("x", Attrs::new()))
        .await
        .unwrap();
    b.unlock(&info.id).await.unwrap();
    assert_eq!(fake.latest("review/x").unwrap()["serial"], 1);
    assert!(!format!("{b:?}").contains(token));
}

#[tokio::test]
async fn a_write_overtaken_by_another_writer_fails_verification() {
    let fake = FakeGitlab::start(USER, PASSWORD).await;
    let dir = tempfile::tempdir().unwrap();
    let s = gitlab_settings(&fake);
    let b = open_backend("http", &s, "prod", dir.path()).await.unwrap();
    let info = LockInfo::new("apply", "x");
    b.lock(&info).await.unwrap();
    let snap = b.read().await.unwrap();
    assert_eq!(
        b.put_resource("a.a", &record("x", Attrs::new()))
            .await
            .unwrap(),
        1
    );

    // Someone stores serial 10 behind berth's back.
    let rogue = serde_json::json!({
        "version": 1, "lineage": snap.lineage, "serial": 10, "resources": {}, "outputs": {}
    });
    fake.project
        .lock()
        .unwrap()
        .states
        .get_mut("prod")
        .unwrap()
        .insert(10, rogue.to_string().into_bytes());

    // GitLab accepts serial 2, but reading back gives serial 10.
    let e = b
        .put_resource("a.b", &record("y", Attrs::new()))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("wrote serial 2") && text.contains("serial 10"),
        "{text}"
    );
    // The next write starts again from what the server holds.
    assert_eq!(
        b.put_resource("a.c", &record("z", Attrs::new()))
            .await
            .unwrap(),
        11
    );
    b.unlock(&info.id).await.unwrap();
}
