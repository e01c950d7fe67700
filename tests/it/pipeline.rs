//! The pipeline template works end to end: each job's `script:` lines of
//! `examples/gitlab-ci/.gitlab-ci.yml` run in order, with the variables
//! GitLab CI would set, against the local Docker engine and the GitLab
//! Terraform-state double: validate → plan (saved plan + MR report) →
//! apply of the saved plan (production) → a review environment → its stop
//! job, which leaves production running.

#[allow(dead_code, clippy::duplicate_mod)]
#[path = "../../state/tests/remote/gitlab_fake.rs"]
mod gitlab_fake;

use std::path::Path;
use std::process::Command;

use crate::common::{DockerCleanup, TestEnv, containers_with, write_demo_context};

const JOB_TOKEN: &str = "pipeline-job-token-42";

/// The `script:` lines and `environment: name` of every job, by job name.
fn jobs(yaml: &str) -> Vec<(String, Vec<String>, Option<String>)> {
    let docs = yaml_rust2::YamlLoader::load_from_str(yaml).expect("the template is valid YAML");
    let root = docs.first().and_then(|d| d.as_hash()).expect("a mapping");
    let mut out = Vec::new();
    for (name, job) in root {
        let (Some(name), Some(job)) = (name.as_str(), job.as_hash()) else {
            continue;
        };
        let Some(script) = job
            .get(&yaml_rust2::Yaml::String("script".into()))
            .and_then(|s| s.as_vec())
        else {
            continue;
        };
        let env = job
            .get(&yaml_rust2::Yaml::String("environment".into()))
            .and_then(|e| e.as_hash())
            .and_then(|e| e.get(&yaml_rust2::Yaml::String("name".into())))
            .and_then(|n| n.as_str())
            .map(str::to_owned);
        out.push((
            name.to_owned(),
            script
                .iter()
                .filter_map(|l| l.as_str().map(str::to_owned))
                .collect(),
            env,
        ));
    }
    out
}

#[test]
fn the_gitlab_ci_template_runs_end_to_end() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let fake = runtime.block_on(gitlab_fake::FakeGitlab::start("gitlab-ci-token", JOB_TOKEN));
    let t = TestEnv::new("pipeline");
    let prefix = t.env.clone();
    // The environments get names unique to this run, so that parallel runs
    // and the cleanup labels never meet anything else.
    let production = format!("production-{}", t.env);
    let slug = format!("feat-{}", t.env);
    let slug = slug.as_str();
    let _prod = DockerCleanup {
        env: production.clone(),
    };
    let _review = DockerCleanup {
        env: format!("review/{slug}"),
    };
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gitlab-ci");
    let yaml = std::fs::read_to_string(example.join(".gitlab-ci.yml"))
        .expect("template")
        .replace("production", &production);
    let hcl = std::fs::read_to_string(example.join("berth.hcl"))
        .expect("berth.hcl")
        .replace("\"production\"", &format!("\"{production}\""));
    std::fs::write(t.path().join("berth.hcl"), hcl).expect("write berth.hcl");
    write_demo_context(&t);
    let berth_dir = Path::new(env!("CARGO_BIN_EXE_berth"))
        .parent()
        .expect("bin dir")
        .to_owned();
    let path = format!(
        "{}:{}",
        berth_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let run_job = |job: &str| {
        let (_, script, env) = jobs(&yaml)
            .into_iter()
            .find(|(n, _, _)| n == job)
            .expect("job");
        for line in script {
            let mut cmd = Command::new("bash");
            cmd.arg("-euc")
                .arg(&line)
                .current_dir(t.path())
                .env("PATH", &path)
                .env("CI", "true")
                .env("GITLAB_CI", "true")
                .env("CI_API_V4_URL", fake.api_url())
                .env("CI_PROJECT_ID", "1")
                .env("CI_JOB_TOKEN", JOB_TOKEN)
                .env("CI_COMMIT_REF_SLUG", slug)
                .env("CI_JOB_NAME", job)
                .env("BERTH_FILE", "berth.hcl")
                .env("BERTH_STATE_KEY", "pipeline-state-key")
                .env("BERTH_VAR_name_prefix", &prefix)
                .env("NO_COLOR", "1")
                .env_remove("BERTH_ENV")
                .stdin(std::process::Stdio::null());
            match &env {
                Some(name) => cmd.env(
                    "CI_ENVIRONMENT_NAME",
                    name.replace("$CI_COMMIT_REF_SLUG", slug),
                ),
                None => cmd.env_remove("CI_ENVIRONMENT_NAME"),
            };
            let out = cmd.output().expect("run job line");
            assert!(
                out.status.success(),
                "job `{job}` failed on `{line}`\n--- stdout ---\n{}\n--- stderr ---\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };

    run_job("validate");
    run_job("plan");
    let report = std::fs::read_to_string(t.path().join("plan.json")).expect("MR report");
    assert_eq!(report.trim(), r#"{"create":2,"delete":0,"update":0}"#);
    run_job("apply");
    assert_eq!(
        containers_with(&format!("berth.env={production}")).len(),
        2,
        "production runs two replicas"
    );
    assert!(
        fake.latest(&production).is_some(),
        "production state is in GitLab"
    );

    run_job("review");
    assert_eq!(
        containers_with(&format!("berth.env=review/{slug}")).len(),
        1
    );
    assert!(
        fake.latest(&format!("review/{slug}")).is_some(),
        "the review state is in GitLab"
    );

    run_job("stop_review");
    assert!(
        containers_with(&format!("berth.env=review/{slug}")).is_empty(),
        "the stop job removed the review environment"
    );
    assert_eq!(
        containers_with(&format!("berth.env={production}")).len(),
        2,
        "production is untouched"
    );

    // Tear production down too, through the same backend.
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["destroy", "--auto-approve", "--env", &production])
        .current_dir(t.path())
        .env("CI_API_V4_URL", fake.api_url())
        .env("CI_PROJECT_ID", "1")
        .env("CI_JOB_TOKEN", JOB_TOKEN)
        .env("BERTH_STATE_KEY", "pipeline-state-key")
        .env("BERTH_VAR_name_prefix", &prefix)
        .output()
        .expect("destroy");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(containers_with(&format!("berth.env={production}")).is_empty());
}
