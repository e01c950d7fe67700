//! `gitlab_project_variable` create / update / delete through the
//! `Provider` trait against the in-process GitLab double: both variable
//! types, the same key in two scopes, in-place updates with the scope
//! filter, hidden variables, project paths with slashes, and the duplicate
//! a crashed run leaves behind.

mod double;

use double::{Double, Var, assert_no_drift, create, delete, planned, provider, refresh, update};
use serde_json::json;

#[tokio::test]
async fn creates_env_var_and_file_variables() {
    let d = Double::start().await;
    let p = provider(&d).await;

    let env = planned(
        &p,
        json!({"project": "1", "key": "API_URL", "value": "https://api.example"}),
    )
    .await;
    let applied = create(&p, "gitlab_project_variable.api_url", &env)
        .await
        .expect("create env_var");
    assert_eq!(applied.id, "1|API_URL|*");
    assert_eq!(applied.attrs["variable_type"], json!("env_var"));
    assert_eq!(applied.attrs["protected"], json!(false));
    assert_eq!(applied.attrs["masked"], json!(false));
    assert_eq!(applied.attrs["raw"], json!(false));
    assert_eq!(applied.attrs["environment_scope"], json!("*"));
    assert_eq!(applied.attrs["hidden"], json!(false));

    let file = planned(
        &p,
        json!({
            "project": 1,
            "key": "KUBECONFIG",
            "value": "apiVersion: v1\nkind: Config\n",
            "variable_type": "file",
            "protected": true,
            "description": "cluster access",
        }),
    )
    .await;
    let applied_file = create(&p, "gitlab_project_variable.kubeconfig", &file)
        .await
        .expect("create file");
    assert_eq!(applied_file.id, "1|KUBECONFIG|*");

    let stored = d.var(1, "KUBECONFIG", "*").expect("stored");
    assert_eq!(stored.variable_type, "file");
    assert_eq!(stored.value, "apiVersion: v1\nkind: Config\n");
    assert!(stored.protected);
    assert_eq!(stored.description.as_deref(), Some("cluster access"));
    let stored = d.var(1, "API_URL", "*").expect("stored");
    assert_eq!(stored.variable_type, "env_var");
    assert_eq!(stored.value, "https://api.example");
    assert_eq!(d.count("POST /projects/:id/variables"), 2);

    let observed = refresh(
        &p,
        &[
            ("gitlab_project_variable.api_url".into(), applied.id.clone()),
            (
                "gitlab_project_variable.kubeconfig".into(),
                applied_file.id.clone(),
            ),
        ],
    )
    .await
    .expect("refresh");
    assert_eq!(observed.len(), 2);
    assert_no_drift(&applied, &observed[0]);
    assert_no_drift(&applied_file, &observed[1]);
}

#[tokio::test]
async fn the_same_key_in_two_scopes_is_two_variables() {
    let d = Double::start().await;
    let p = provider(&d).await;

    let staging = planned(
        &p,
        json!({"project": "1", "key": "DB_URL", "value": "postgres://staging", "environment_scope": "staging"}),
    )
    .await;
    let production = planned(
        &p,
        json!({"project": "1", "key": "DB_URL", "value": "postgres://prod", "environment_scope": "production"}),
    )
    .await;
    let s = create(&p, "gitlab_project_variable.db_staging", &staging)
        .await
        .expect("staging");
    let pr = create(&p, "gitlab_project_variable.db_production", &production)
        .await
        .expect("production");
    assert_eq!(s.id, "1|DB_URL|staging");
    assert_eq!(pr.id, "1|DB_URL|production");
    assert_eq!(d.vars(1).len(), 2);

    // GitLab itself refuses the key without a scope filter now (409).
    let ambiguous = reqwest::Client::new()
        .get(format!("{}/projects/1/variables/DB_URL", d.base_url))
        .header("PRIVATE-TOKEN", double::TOKEN)
        .send()
        .await
        .expect("get");
    assert_eq!(ambiguous.status().as_u16(), 409);

    // Updating one scope leaves the other alone.
    let mut changed = production.clone();
    changed.insert("value".into(), json!("postgres://prod-2"));
    update(&p, "gitlab_project_variable.db_production", &pr, &changed)
        .await
        .expect("update production");
    assert_eq!(
        d.var(1, "DB_URL", "production").unwrap().value,
        "postgres://prod-2"
    );
    assert_eq!(
        d.var(1, "DB_URL", "staging").unwrap().value,
        "postgres://staging"
    );

    let observed = refresh(
        &p,
        &[
            ("gitlab_project_variable.db_staging".into(), s.id.clone()),
            (
                "gitlab_project_variable.db_production".into(),
                pr.id.clone(),
            ),
        ],
    )
    .await
    .expect("refresh");
    assert_eq!(observed.len(), 2);
    assert_eq!(observed[0].address, "gitlab_project_variable.db_production");
    assert_eq!(observed[0].attrs["environment_scope"], json!("production"));
    assert_eq!(observed[1].attrs["environment_scope"], json!("staging"));

    // Deleting one scope leaves the other alone.
    delete(&p, "gitlab_project_variable.db_staging", &s)
        .await
        .expect("delete staging");
    assert!(d.var(1, "DB_URL", "staging").is_none());
    assert!(d.var(1, "DB_URL", "production").is_some());
}

#[tokio::test]
async fn value_and_protected_are_updated_in_place_with_the_scope_filter() {
    let d = Double::start().await;
    let p = provider(&d).await;
    let config = planned(
        &p,
        json!({"project": "1", "key": "TOKEN", "value": "first-value", "environment_scope": "review/*"}),
    )
    .await;
    let applied = create(&p, "gitlab_project_variable.token", &config)
        .await
        .expect("create");

    let mut changed = config.clone();
    changed.insert("value".into(), json!("second-value"));
    changed.insert("protected".into(), json!(true));
    changed.insert("description".into(), json!("rotated"));
    let updated = update(&p, "gitlab_project_variable.token", &applied, &changed)
        .await
        .expect("update");
    assert_eq!(updated.id, applied.id);
    assert_eq!(updated.attrs["protected"], json!(true));

    let stored = d.var(1, "TOKEN", "review/*").expect("still there");
    assert_eq!(stored.value, "second-value");
    assert!(stored.protected);
    assert_eq!(stored.description.as_deref(), Some("rotated"));
    assert_eq!(d.count("PUT /projects/:id/variables/:key"), 1);
    assert_eq!(d.count("POST /projects/:id/variables"), 1, "no re-creation");
    assert_eq!(d.vars(1).len(), 1);

    // Clearing the description sends it empty.
    let mut cleared = changed.clone();
    cleared.insert("description".into(), json!(""));
    update(&p, "gitlab_project_variable.token", &updated, &cleared)
        .await
        .expect("clear description");
    let observed = refresh(
        &p,
        &[("gitlab_project_variable.token".into(), applied.id.clone())],
    )
    .await
    .expect("refresh");
    assert_eq!(observed[0].attrs["description"], json!(""));
}

#[tokio::test]
async fn delete_removes_the_variable_and_tolerates_it_being_gone() {
    let d = Double::start().await;
    let p = provider(&d).await;
    let config = planned(&p, json!({"project": "1", "key": "GONE", "value": "x"})).await;
    let applied = create(&p, "gitlab_project_variable.gone", &config)
        .await
        .expect("create");
    delete(&p, "gitlab_project_variable.gone", &applied)
        .await
        .expect("delete");
    assert!(d.vars(1).is_empty());
    delete(&p, "gitlab_project_variable.gone", &applied)
        .await
        .expect("deleting again succeeds");
    assert_eq!(d.count("DELETE /projects/:id/variables/:key"), 2);
}

#[tokio::test]
async fn hidden_variables_read_back_null_without_drift() {
    let d = Double::start().await;
    let p = provider(&d).await;
    let config = planned(
        &p,
        json!({"project": "1", "key": "DEPLOY_KEY", "value": "c2VjcmV0LXZhbHVl", "hidden": true, "protected": true}),
    )
    .await;
    assert_eq!(config["masked"], json!(true), "hidden implies masked");
    let applied = create(&p, "gitlab_project_variable.deploy_key", &config)
        .await
        .expect("create hidden");
    let stored = d.var(1, "DEPLOY_KEY", "*").expect("stored");
    assert!(stored.hidden && stored.masked);
    assert_eq!(stored.value, "c2VjcmV0LXZhbHVl");

    let listed: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/projects/1/variables", d.base_url))
        .header("PRIVATE-TOKEN", double::TOKEN)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(listed[0]["value"], serde_json::Value::Null);
    assert_eq!(listed[0]["hidden"], json!(true));

    let observed = refresh(
        &p,
        &[(
            "gitlab_project_variable.deploy_key".into(),
            applied.id.clone(),
        )],
    )
    .await
    .expect("refresh");
    assert_eq!(observed.len(), 1);
    assert_no_drift(&applied, &observed[0]);

    // The value of a hidden variable can still be rewritten in place
    // (berth does not send `masked`, whose change GitLab refuses).
    let mut changed = config.clone();
    changed.insert("value".into(), json!("bmV3LXNlY3JldA=="));
    update(&p, "gitlab_project_variable.deploy_key", &applied, &changed)
        .await
        .expect("update hidden");
    assert_eq!(
        d.var(1, "DEPLOY_KEY", "*").unwrap().value,
        "bmV3LXNlY3JldA=="
    );
}

#[tokio::test]
async fn project_paths_with_slashes_are_url_encoded() {
    let d = Double::start().await;
    let p = provider(&d).await;
    let config = planned(
        &p,
        json!({"project": "group/sub/project", "key": "REGION", "value": "eu-west-1"}),
    )
    .await;
    let applied = create(&p, "gitlab_project_variable.region", &config)
        .await
        .expect("create by path");
    assert_eq!(applied.id, "group/sub/project|REGION|*");
    assert_eq!(
        d.var(2, "REGION", "*").expect("in project 2").value,
        "eu-west-1"
    );
    assert!(
        d.raw_paths()
            .iter()
            .all(|path| path.starts_with("/api/v4/projects/group%2Fsub%2Fproject/")),
        "{:?}",
        d.raw_paths()
    );

    let observed = refresh(
        &p,
        &[("gitlab_project_variable.region".into(), applied.id.clone())],
    )
    .await
    .expect("refresh by path");
    assert_eq!(observed.len(), 1);
    assert_no_drift(&applied, &observed[0]);

    let mut changed = config.clone();
    changed.insert("value".into(), json!("eu-central-1"));
    update(&p, "gitlab_project_variable.region", &applied, &changed)
        .await
        .expect("update by path");
    delete(&p, "gitlab_project_variable.region", &applied)
        .await
        .expect("delete by path");
    assert!(d.vars(2).is_empty());
}

/// Regression (RELIABILITY.md, R1): berth killed after GitLab created the
/// variable and before the state write; the next apply's create meets it.
#[tokio::test]
async fn an_identical_unrecorded_variable_left_by_a_killed_create_is_taken_over() {
    let d = Double::start().await;
    let p = provider(&d).await;
    let left = Var::new("RELEASE", "berth-value");
    d.seed(1, left.clone());
    let config = planned(
        &p,
        json!({"project": "1", "key": "RELEASE", "value": "berth-value"}),
    )
    .await;
    let applied = create(&p, "gitlab_project_variable.release", &config)
        .await
        .expect("the variable berth's own create made is taken over");
    assert_eq!(applied.id, "1|RELEASE|*");
    assert_eq!(d.vars(1), vec![left], "nothing changed in GitLab");

    // One differing in anything (here `protected`) is still refused.
    let mut other = Var::new("OTHER", "berth-value");
    other.protected = true;
    d.seed(1, other);
    let config = planned(
        &p,
        json!({"project": "1", "key": "OTHER", "value": "berth-value"}),
    )
    .await;
    let err = create(&p, "gitlab_project_variable.other", &config)
        .await
        .expect_err("not identical");
    assert!(err.to_string().contains("already exists"), "{err}");
}

#[tokio::test]
async fn an_unrecorded_variable_with_the_same_key_and_scope_is_not_taken_over() {
    let d = Double::start().await;
    let p = provider(&d).await;
    let mut foreign = Var::new("RELEASE", "made-by-hand");
    foreign.protected = true;
    d.seed(1, foreign.clone());

    let config = planned(
        &p,
        json!({"project": "1", "key": "RELEASE", "value": "berth-value"}),
    )
    .await;
    let err = create(&p, "gitlab_project_variable.release", &config)
        .await
        .expect_err("duplicate");
    let text = err.to_string();
    assert!(text.contains("already exists"), "{text}");
    assert!(text.contains("import"), "{text}");
    assert!(text.contains("RELEASE"), "{text}");
    assert!(!text.contains("berth-value"), "{text}");
    assert_eq!(d.var(1, "RELEASE", "*"), Some(foreign), "left untouched");

    // Another scope is another variable.
    let mut scoped = config.clone();
    scoped.insert("environment_scope".into(), json!("production"));
    create(&p, "gitlab_project_variable.release_prod", &scoped)
        .await
        .expect("other scope");
}

#[tokio::test]
async fn a_gitlab_without_hidden_variables_does_not_keep_a_visible_one() {
    let d = Double::start().await;
    d.legacy();
    let p = provider(&d).await;
    let config = planned(
        &p,
        json!({"project": "1", "key": "DEPLOY_KEY", "value": "c2VjcmV0LXZhbHVl", "hidden": true}),
    )
    .await;
    let err = create(&p, "gitlab_project_variable.deploy_key", &config)
        .await
        .expect_err("not hidden");
    let text = err.to_string();
    assert!(text.contains("17.4"), "{text}");
    assert!(text.contains("deleted it again"), "{text}");
    assert!(d.vars(1).is_empty());

    // Without `hidden` in GitLab's answers, refresh says nothing about it.
    let plain = planned(&p, json!({"project": "1", "key": "PLAIN", "value": "v"})).await;
    let applied = create(&p, "gitlab_project_variable.plain", &plain)
        .await
        .expect("create");
    let observed = refresh(
        &p,
        &[("gitlab_project_variable.plain".into(), applied.id.clone())],
    )
    .await
    .expect("refresh");
    assert!(!observed[0].attrs.contains_key("hidden"));
    assert_no_drift(&applied, &observed[0]);
}
