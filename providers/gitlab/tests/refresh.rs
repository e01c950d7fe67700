//! Refresh of `gitlab_project_variable`: one paged list per project in
//! state (`per_page=100`, following `x-next-page`), mapped to the recorded
//! addresses; gone variables and unknown projects are not observed, and
//! out-of-band changes show as drift.

mod double;

use double::{Double, Var, create, planned, provider, refresh};
use serde_json::json;

#[tokio::test]
async fn one_hundred_fifty_variables_take_two_list_calls() {
    let d = Double::start().await;
    let p = provider(&d).await;
    let mut recorded = Vec::new();
    for i in 0..150 {
        let mut var = Var::new(&format!("VAR_{i:03}"), "v");
        var.protected = i % 2 == 0;
        d.seed(1, var);
        recorded.push((
            format!("gitlab_project_variable.v{i:03}"),
            format!("1|VAR_{i:03}|*"),
        ));
    }
    // Variables berth does not record are not reported.
    d.seed(1, Var::new("NOT_OURS", "x"));

    let observed = refresh(&p, &recorded).await.expect("refresh");
    assert_eq!(
        d.count("GET /projects/:id/variables"),
        2,
        "{:?}",
        d.counts()
    );
    assert_eq!(observed.len(), 150);
    for (i, o) in observed.iter().enumerate() {
        assert_eq!(o.address, format!("gitlab_project_variable.v{i:03}"));
        assert_eq!(o.id, format!("1|VAR_{i:03}|*"));
        assert_eq!(o.attrs["key"], json!(format!("VAR_{i:03}")));
        assert_eq!(o.attrs["protected"], json!(i % 2 == 0));
        assert!(!o.attrs.contains_key("value"));
        assert_eq!(o.config_hash, None);
    }
}

#[tokio::test]
async fn one_list_per_project_and_gone_variables_are_not_observed() {
    let d = Double::start().await;
    let p = provider(&d).await;
    d.seed(1, Var::new("A", "a"));
    d.seed(1, Var::new("B", "b").scoped("production"));
    d.seed(2, Var::new("C", "c"));
    let recorded = vec![
        ("gitlab_project_variable.a".to_owned(), "1|A|*".to_owned()),
        (
            "gitlab_project_variable.b".to_owned(),
            "1|B|production".to_owned(),
        ),
        // Recorded in another scope than the one that exists: gone.
        (
            "gitlab_project_variable.b2".to_owned(),
            "1|B|staging".to_owned(),
        ),
        (
            "gitlab_project_variable.c".to_owned(),
            "group/sub/project|C|*".to_owned(),
        ),
        (
            "gitlab_project_variable.gone".to_owned(),
            "1|GONE|*".to_owned(),
        ),
        // A project GitLab does not know: its variables are gone.
        (
            "gitlab_project_variable.lost".to_owned(),
            "nowhere/project|X|*".to_owned(),
        ),
    ];
    let observed = refresh(&p, &recorded).await.expect("refresh");
    let addresses: Vec<&str> = observed.iter().map(|o| o.address.as_str()).collect();
    assert_eq!(
        addresses,
        vec![
            "gitlab_project_variable.a",
            "gitlab_project_variable.b",
            "gitlab_project_variable.c",
        ]
    );
    assert_eq!(
        d.count("GET /projects/:id/variables"),
        3,
        "{:?}",
        d.counts()
    );
    assert_eq!(d.count("GET /projects/:id/variables/:key"), 0);
}

#[tokio::test]
async fn out_of_band_changes_show_as_drift() {
    let d = Double::start().await;
    let p = provider(&d).await;
    let config = planned(&p, json!({"project": "1", "key": "MODE", "value": "fast"})).await;
    let applied = create(&p, "gitlab_project_variable.mode", &config)
        .await
        .expect("create");
    d.edit(1, "MODE", "*", |v| {
        v.protected = true;
        v.variable_type = "file".into();
    });
    let observed = refresh(
        &p,
        &[("gitlab_project_variable.mode".into(), applied.id.clone())],
    )
    .await
    .expect("refresh");
    assert_eq!(observed[0].attrs["protected"], json!(true));
    assert_eq!(observed[0].attrs["variable_type"], json!("file"));
    assert_ne!(observed[0].attrs["protected"], applied.attrs["protected"]);
}

#[tokio::test]
async fn ids_that_are_not_variable_ids_are_refused() {
    let d = Double::start().await;
    let p = provider(&d).await;
    let err = refresh(
        &p,
        &[("gitlab_project_variable.x".into(), "garbage".into())],
    )
    .await
    .expect_err("bad id");
    assert!(
        err.to_string().contains("project|key|environment_scope"),
        "{err}"
    );
}
