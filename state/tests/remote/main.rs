//! The remote state backends against real components: the HTTP backend
//! against an in-process double of GitLab's Terraform state API, the
//! PostgreSQL backend against a server each test starts from Debian's
//! `postgresql`, and the S3 backend against moto. Nothing is skipped: a
//! missing PostgreSQL or moto fails the tests with a message saying how to
//! install it (`scripts/ensure-test-deps.sh`).
//!
//! `bench` is the backends' benchmark, ignored by default: run it with
//! `scripts/bench-backends.sh`.

mod bench;
mod common;
mod gitlab_fake;
mod http;
mod open;
mod pg;
mod s3;
