//! `validate()` for `gitlab_project_variable`: every GitLab masking rule is
//! reported on `value` without the value, `raw` relaxes the character set,
//! hidden variables must be masked, and keys, types and scopes follow
//! GitLab's rules. No server is involved.

mod double;

use berth_gitlab::GitLabProvider;
use berth_provider::{AttrProblem, Provider, ProviderContext};
use double::{attrs, no_env};
use serde_json::{Value, json};

fn provider() -> GitLabProvider {
    GitLabProvider::with_env(
        ProviderContext {
            base_dir: std::env::temp_dir(),
        },
        no_env,
    )
}

fn problems(config: Value) -> Vec<AttrProblem> {
    provider().validate("gitlab_project_variable", &attrs(config))
}

fn masked(value: &str, extra: Value) -> Vec<AttrProblem> {
    let mut config = json!({"project": "1", "key": "SECRET", "value": value, "masked": true});
    if let (Some(c), Value::Object(e)) = (config.as_object_mut(), extra) {
        c.extend(e);
    }
    problems(config)
}

fn assert_secret_not_leaked(found: &[AttrProblem], secret: &str) {
    for p in found {
        assert!(!p.message.contains(secret), "{}", p.message);
    }
}

#[tokio::test]
async fn a_good_masked_value_passes() {
    assert!(masked("c2VjcmV0LXZhbHVl", json!({})).is_empty());
    assert!(masked("user@host:~/a.b-c_d+e=/", json!({})).is_empty());
    assert!(
        problems(json!({"project": "group/sub/project", "key": "A_1", "value": "any thing"}))
            .is_empty()
    );
}

#[tokio::test]
async fn a_short_masked_value_is_flagged() {
    let found = masked("Sh0rt!", json!({"raw": true}));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].attribute, "value");
    assert!(
        found[0].message.contains("at least 8 characters"),
        "{}",
        found[0].message
    );
    assert_secret_not_leaked(&found, "Sh0rt!");
}

#[tokio::test]
async fn spaces_and_newlines_are_flagged() {
    for secret in ["pass word 123", "line-one\nline-two"] {
        let found = masked(secret, json!({"raw": true}));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].attribute, "value");
        assert!(
            found[0].message.contains("single line without spaces"),
            "{}",
            found[0].message
        );
        assert_secret_not_leaked(&found, secret);
    }
}

#[tokio::test]
async fn characters_outside_the_allowed_set_are_flagged_unless_raw() {
    let secret = "p4ss$w0rd#long";
    let found = masked(secret, json!({}));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].attribute, "value");
    assert!(
        found[0].message.contains("raw = true"),
        "{}",
        found[0].message
    );
    assert_secret_not_leaked(&found, secret);
    // Not even the offending characters are named.
    assert!(!found[0].message.contains('$') && !found[0].message.contains('#'));

    assert!(masked(secret, json!({"raw": true})).is_empty());
}

#[tokio::test]
async fn all_rules_are_reported_at_once() {
    let found = masked("a b$", json!({}));
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found.iter().all(|p| p.attribute == "value"));
}

#[tokio::test]
async fn unmasked_values_are_free() {
    assert!(problems(json!({"project": "1", "key": "K", "value": "x y\n$"})).is_empty());
}

#[tokio::test]
async fn hidden_variables_follow_the_masking_rules_and_must_be_masked() {
    let found = problems(json!({"project": "1", "key": "K", "value": "short", "hidden": true}));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].message.contains("hidden variable"));

    let found = problems(json!({
        "project": "1", "key": "K", "value": "c2VjcmV0LXZhbHVl", "hidden": true, "masked": false
    }));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].attribute, "masked");
}

#[tokio::test]
async fn keys_types_scopes_and_projects_follow_gitlabs_rules() {
    let found = problems(json!({
        "project": "has space",
        "key": "BAD-KEY",
        "value": "v",
        "variable_type": "secret",
        "environment_scope": "a|b",
        "protected": "yes",
    }));
    let mut names: Vec<&str> = found.iter().map(|p| p.attribute.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        vec![
            "environment_scope",
            "key",
            "project",
            "protected",
            "variable_type"
        ],
        "{found:?}"
    );
    let long_key = "K".repeat(256);
    assert_eq!(
        problems(json!({"project": "1", "key": long_key, "value": "v"})).len(),
        1
    );
}
