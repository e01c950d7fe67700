//! Errors of the gitlab provider against the double: GitLab's own 400
//! messages, 429 retried after `Retry-After`, injected 5xx retried where a
//! second attempt cannot act twice, 401 without the token in the
//! text, the job-token hint, unknown projects, and use before configure or
//! without a token.

mod double;

use berth_gitlab::GitLabProvider;
use berth_provider::{Attrs, Provider, ProviderContext, ProviderError};
use double::{
    Double, attrs, create, delete, planned, provider, provider_with_token, refresh, update,
};
use serde_json::json;

fn ctx() -> ProviderContext {
    ProviderContext {
        base_dir: std::env::temp_dir(),
    }
}

#[tokio::test]
async fn a_400_the_client_did_not_foresee_carries_gitlabs_message() {
    let d = Double::start().await;
    let p = provider(&d).await;
    d.limit_vars(1);
    let first = planned(&p, json!({"project": "1", "key": "ONE", "value": "1"})).await;
    create(&p, "gitlab_project_variable.one", &first)
        .await
        .expect("first");
    let second = planned(&p, json!({"project": "1", "key": "TWO", "value": "2"})).await;
    let err = create(&p, "gitlab_project_variable.two", &second)
        .await
        .expect_err("limit");
    let text = err.to_string();
    assert!(
        text.contains("Maximum number of project ci variables (1) exceeded"),
        "{text}"
    );
    assert!(text.contains("400"), "{text}");
}

#[tokio::test]
async fn the_servers_masking_check_has_the_last_word() {
    let d = Double::start().await;
    let p = provider(&d).await;
    // Skip validate(): the server still refuses, and says why.
    let mut config =
        attrs(json!({"project": "1", "key": "PW", "value": "hunter2", "masked": true}));
    p.prepare("gitlab_project_variable", &mut config)
        .await
        .expect("prepare");
    let err = create(&p, "gitlab_project_variable.pw", &config)
        .await
        .expect_err("server refuses");
    let text = err.to_string();
    assert!(text.contains("value is invalid"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(d.vars(1).is_empty());
}

#[tokio::test]
async fn a_429_is_retried_after_retry_after() {
    let d = Double::start().await;
    let p = provider(&d).await;
    d.throttle(1);
    let config = planned(
        &p,
        json!({"project": "1", "key": "RATE", "value": "limited"}),
    )
    .await;
    let applied = create(&p, "gitlab_project_variable.rate", &config)
        .await
        .expect("create after one 429");
    assert_eq!(d.count("POST /projects/:id/variables"), 2);
    assert_eq!(d.vars(1).len(), 1);

    d.throttle(1);
    let observed = refresh(&p, &[("gitlab_project_variable.rate".into(), applied.id)])
        .await
        .expect("refresh after one 429");
    assert_eq!(observed.len(), 1);
    assert_eq!(d.count("GET /projects/:id/variables"), 2);
}

#[tokio::test]
async fn injected_server_errors_are_retried_when_a_retry_cannot_act_twice() {
    let d = Double::start().await;
    let p = provider(&d).await;
    let address = "gitlab_project_variable.flaky";
    let config = planned(
        &p,
        json!({"project": "group/sub/project", "key": "FLAKY", "value": "first"}),
    )
    .await;

    // 503 says the request was not acted on: even a POST is sent again.
    d.fail_next(&[503]);
    let applied = create(&p, address, &config)
        .await
        .expect("create after a 503");
    assert_eq!(d.count("POST /projects/:id/variables"), 2);
    assert_eq!(d.vars(2).len(), 1);

    // GET, PUT and DELETE are retried after 500, 502 and 504 too.
    d.fail_next(&[500, 502]);
    let observed = refresh(&p, &[(address.into(), applied.id.clone())])
        .await
        .expect("refresh after two 5xx");
    assert_eq!(observed.len(), 1);
    assert_eq!(d.count("GET /projects/:id/variables"), 3);

    let mut changed = config.clone();
    changed.insert("value".into(), json!("second"));
    d.fail_next(&[504]);
    let updated = update(&p, address, &applied, &changed)
        .await
        .expect("update after a 504");
    assert_eq!(d.count("PUT /projects/:id/variables/:key"), 2);
    assert_eq!(d.var(2, "FLAKY", "*").expect("FLAKY").value, "second");

    d.fail_next(&[502]);
    delete(&p, address, &updated)
        .await
        .expect("delete after a 502");
    assert!(d.vars(2).is_empty());

    // A POST that may have been acted on (500) is not sent twice: the
    // error carries GitLab's message and the address, and nothing exists.
    let other = planned(
        &p,
        json!({"project": "1", "key": "ONCE", "value": "only-once"}),
    )
    .await;
    let before = d.count("POST /projects/:id/variables");
    d.fail_next(&[500]);
    let e = create(&p, "gitlab_project_variable.once", &other)
        .await
        .expect_err("a 500 on POST is not retried");
    let text = e.to_string();
    assert!(text.contains("500"), "{text}");
    assert_eq!(d.count("POST /projects/:id/variables"), before + 1);
    assert!(d.vars(1).is_empty());
}

#[tokio::test]
async fn a_401_names_the_token_source_but_not_the_token() {
    let d = Double::start().await;
    let wrong = "glpat-WRONG-secret-token-value";
    let p = provider_with_token(&d, wrong).await;
    assert!(!format!("{p:?}").contains(wrong));
    let config = planned(&p, json!({"project": "1", "key": "K", "value": "v"})).await;
    let err = create(&p, "gitlab_project_variable.k", &config)
        .await
        .expect_err("401");
    let text = err.to_string();
    assert!(text.contains("401 Unauthorized"), "{text}");
    assert!(text.contains("`token` in provider \"gitlab\""), "{text}");
    assert!(!text.contains(wrong), "{text}");
    assert!(!format!("{err:?}").contains(wrong));

    let err = refresh(&p, &[("gitlab_project_variable.k".into(), "1|K|*".into())])
        .await
        .expect_err("401 on refresh");
    assert!(!err.to_string().contains(wrong));
    assert_eq!(d.auth_seen()[0], "PRIVATE-TOKEN");
}

#[tokio::test]
async fn a_ci_job_token_is_sent_as_job_token_and_its_refusal_explained() {
    let d = Double::start().await;
    let base = d.base_url.clone();
    let job_token = "job-token-secret-1234";
    let p = GitLabProvider::with_env(ctx(), move |name| match name {
        "CI_API_V4_URL" => Some(base.clone()),
        "CI_JOB_TOKEN" => Some(job_token.to_owned()),
        _ => None,
    });
    p.configure(&Attrs::new()).await.expect("configure");
    let config = planned(&p, json!({"project": "1", "key": "K", "value": "v"})).await;
    let err = create(&p, "gitlab_project_variable.k", &config)
        .await
        .expect_err("job tokens cannot manage variables");
    let text = err.to_string();
    assert!(text.contains("job token may lack permission"), "{text}");
    assert!(text.contains("GITLAB_TOKEN"), "{text}");
    assert!(!text.contains(job_token), "{text}");
    assert_eq!(d.auth_seen(), vec!["JOB-TOKEN".to_owned()]);
}

#[tokio::test]
async fn gitlab_token_from_the_environment_is_used() {
    let d = Double::start().await;
    let p = GitLabProvider::with_env(ctx(), |name| {
        (name == "GITLAB_TOKEN").then(|| double::TOKEN.to_owned())
    });
    p.configure(&attrs(json!({"base_url": d.base_url})))
        .await
        .expect("configure");
    let config = planned(
        &p,
        json!({"project": "1", "key": "ENV_TOKEN", "value": "v"}),
    )
    .await;
    create(&p, "gitlab_project_variable.env_token", &config)
        .await
        .expect("create with GITLAB_TOKEN");
}

#[tokio::test]
async fn an_unknown_project_is_gitlabs_404() {
    let d = Double::start().await;
    let p = provider(&d).await;
    let config = planned(
        &p,
        json!({"project": "nobody/nothing", "key": "K", "value": "v"}),
    )
    .await;
    let err = create(&p, "gitlab_project_variable.k", &config)
        .await
        .expect_err("404");
    let text = err.to_string();
    assert!(text.contains("404 Project Not Found"), "{text}");
    assert!(text.contains("nobody/nothing"), "{text}");
}

#[tokio::test]
async fn use_before_configure_and_without_a_token_are_config_errors() {
    let p = GitLabProvider::with_env(ctx(), double::no_env);
    let err = refresh(&p, &[]).await.expect_err("not configured");
    assert!(matches!(err, ProviderError::Config(_)), "{err:?}");

    let d = Double::start().await;
    p.configure(&attrs(json!({"base_url": d.base_url})))
        .await
        .expect("configure without a token succeeds");
    let config = planned(&p, json!({"project": "1", "key": "K", "value": "v"})).await;
    let err = create(&p, "gitlab_project_variable.k", &config)
        .await
        .expect_err("no token");
    assert!(matches!(err, ProviderError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("GITLAB_TOKEN"), "{err}");
    assert_eq!(d.counts().values().sum::<u64>(), 0, "nothing was sent");
}

#[tokio::test]
async fn bad_base_urls_are_refused_at_configure() {
    let p = GitLabProvider::with_env(ctx(), double::no_env);
    let err = p
        .configure(&attrs(
            json!({"base_url": "ftp://example.invalid", "token": "t"}),
        ))
        .await
        .expect_err("ftp");
    assert!(matches!(err, ProviderError::Config(_)), "{err:?}");
}

#[tokio::test]
async fn unknown_resource_types_are_refused() {
    let d = Double::start().await;
    let p = provider(&d).await;
    let err = p
        .refresh("gitlab_group_variable", &double::owner(), &[])
        .await
        .expect_err("unknown type");
    assert!(err.to_string().contains("gitlab_project_variable"), "{err}");
}
