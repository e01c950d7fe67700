//! The connection to the local Docker engine (which one is decided in
//! [`crate::hosts::Settings`]: the provider's `host` attribute, else
//! `DOCKER_HOST`, else the local socket), connecting with API version
//! negotiation, and turning bollard's errors into [`ProviderError`]s that
//! carry Docker's own message.

use std::time::Duration;

use berth_provider::ProviderError;
use bollard::errors::Error as DockerError;
use bollard::{API_DEFAULT_VERSION, Docker};

/// The engine's local socket, used when neither the provider's `host` nor
/// `DOCKER_HOST` name another.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Seconds bollard waits for a response's headers. Streams (build, pull,
/// logs) are not bounded by it once they started.
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// Connects to `host`, negotiates the API version down to what the engine
/// speaks, and checks that it answers.
pub(crate) async fn connect(host: &str) -> Result<Docker, ProviderError> {
    let what = format!("the Docker engine at {host}");
    let unreachable = |message: String| ProviderError::Unreachable {
        what: what.clone(),
        message: format!(
            "{message}; is dockerd running? Start it (e.g. `sudo systemctl start docker` \
             or `dockerd &`) or point `host` / DOCKER_HOST at a running engine"
        ),
    };

    let docker = if host.starts_with("unix://") || host.starts_with('/') {
        let path = if host.starts_with('/') {
            format!("unix://{host}")
        } else {
            host.to_owned()
        };
        Docker::connect_with_unix(&path, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
    } else if host.starts_with("tcp://") || host.starts_with("http://") {
        Docker::connect_with_http(host, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
    } else {
        return Err(ProviderError::Config(format!(
            "provider \"docker\": unsupported host `{host}` \
             (use unix:///path/to/docker.sock, tcp://HOST:PORT or http://HOST:PORT)"
        )));
    }
    .map_err(|e| match e {
        DockerError::SocketNotFoundError(path) => {
            unreachable(format!("the socket {path} does not exist"))
        }
        other => unreachable(other.to_string()),
    })?;

    // bollard's default API version is newer than many engines (20.10 speaks
    // 1.41); negotiate down before any other call.
    let docker = docker
        .with_timeout(Duration::from_secs(REQUEST_TIMEOUT_SECS))
        .negotiate_version()
        .await
        .map_err(|e| unreachable(message(&e)))?;
    docker.ping().await.map_err(|e| unreachable(message(&e)))?;
    Ok(docker)
}

/// Docker's own message for an error, without bollard's decoration.
pub(crate) fn message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.trim().to_owned(),
        DockerError::DockerStreamError { error } => error.trim().to_owned(),
        other => other.to_string(),
    }
}

/// Maps a bollard error to [`ProviderError::Api`] with Docker's message.
pub(crate) fn api(e: DockerError) -> ProviderError {
    ProviderError::Api(message(&e))
}

/// Maps a bollard error to [`ProviderError::Api`], prefixed with what was
/// being done.
pub(crate) fn api_ctx(
    context: impl std::fmt::Display,
) -> impl FnOnce(DockerError) -> ProviderError {
    move |e| ProviderError::Api(format!("{context}: {}", message(&e)))
}

/// The HTTP status of a server error, if the engine answered with one.
pub(crate) fn status(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Whether the error is the engine saying "no such object".
pub(crate) fn is_not_found(e: &DockerError) -> bool {
    status(e) == Some(404)
}

/// Whether the error is a conflict (name in use, image in use).
pub(crate) fn is_conflict(e: &DockerError) -> bool {
    status(e) == Some(409)
}

/// The `label=...` filters selecting an owner's objects, plus `extra`
/// `key=value` label filters, as Docker's list filter map.
pub(crate) fn label_filters(
    owner: &berth_provider::Ownership,
    extra: &[String],
) -> std::collections::HashMap<String, Vec<String>> {
    let mut labels = owner.filters();
    labels.extend(extra.iter().cloned());
    std::collections::HashMap::from([("label".to_owned(), labels)])
}
