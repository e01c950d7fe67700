//! Shared fixtures for the tests against the real Docker engine: a unique
//! owner per test, a configured provider, a tiny image built from a static
//! busybox, request helpers, and a guard that removes everything the test
//! labelled, even when it fails.

#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use berth_docker::DockerProvider;
use berth_provider::{
    Applied, ApplyRequest, Attrs, DeleteRequest, Observed, Ownership, Provider, ProviderContext,
    ProviderError, hash_attrs,
};
use bollard::Docker;
use serde_json::Value;

/// A label put on objects a test creates outside the provider ("foreign"
/// objects), so that the guard removes them too.
pub const RUN_LABEL: &str = "berth-test.run";

/// Random lowercase hex, unique per call.
pub fn unique_hex() -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.write_u32(std::process::id());
    format!("{:012x}", hasher.finish() & 0xffff_ffff_ffff)
}

/// Attrs from a JSON object literal.
pub fn attrs(value: Value) -> Attrs {
    match value {
        Value::Object(map) => map.into_iter().collect(),
        other => panic!("not an object: {other}"),
    }
}

/// One test's world: its owner, its provider, its temp dir, and the guard
/// that cleans up after it.
pub struct World {
    pub id: String,
    pub owner: Ownership,
    pub provider: DockerProvider,
    pub dir: tempfile::TempDir,
    pub docker: Docker,
    pub progress: Mutex<Vec<String>>,
}

impl World {
    pub async fn new() -> Self {
        let id = unique_hex();
        let dir = tempfile::tempdir().expect("temp dir");
        let provider = DockerProvider::new(ProviderContext {
            base_dir: dir.path().to_path_buf(),
        });
        provider
            .configure(&Attrs::new())
            .await
            .unwrap_or_else(|e| panic!("these tests need a running Docker engine: {e}"));
        let docker = Docker::connect_with_unix_defaults()
            .expect("docker socket")
            .negotiate_version()
            .await
            .expect("docker version");
        Self {
            owner: Ownership {
                env: format!("test-{id}"),
                lineage: format!("lineage-{id}"),
            },
            id,
            provider,
            dir,
            docker,
            progress: Mutex::new(Vec::new()),
        }
    }

    /// A name unique to this test.
    pub fn name(&self, what: &str) -> String {
        format!("berth-test-{}-{what}", self.id)
    }

    pub fn progress_lines(&self) -> Vec<String> {
        self.progress.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn report(&self, line: &str) {
        if let Ok(mut lines) = self.progress.lock() {
            lines.push(line.to_owned());
        }
    }

    pub async fn prepare(&self, type_name: &str, mut config: Attrs) -> Attrs {
        self.provider
            .prepare(type_name, &mut config)
            .await
            .expect("prepare");
        config
    }

    pub async fn create(&self, address: &str, config: &Attrs) -> Result<Applied, ProviderError> {
        let type_name = address.split('.').next().unwrap_or_default();
        let hash = hash_attrs(config);
        let report = |line: &str| self.report(line);
        self.provider
            .create(
                ApplyRequest {
                    type_name,
                    address,
                    config,
                    prior: None,
                    prior_id: None,
                    config_hash: &hash,
                    owner: &self.owner,
                },
                &report,
            )
            .await
    }

    pub async fn update(
        &self,
        address: &str,
        config: &Attrs,
        prior: &Applied,
    ) -> Result<Applied, ProviderError> {
        let type_name = address.split('.').next().unwrap_or_default();
        let hash = hash_attrs(config);
        let report = |line: &str| self.report(line);
        self.provider
            .update(
                ApplyRequest {
                    type_name,
                    address,
                    config,
                    prior: Some(&prior.attrs),
                    prior_id: Some(&prior.id),
                    config_hash: &hash,
                    owner: &self.owner,
                },
                &report,
            )
            .await
    }

    /// A rolling replacement of `prior` by `config` (`Provider::replace`).
    pub async fn replace(
        &self,
        address: &str,
        config: &Attrs,
        prior: &Applied,
    ) -> Result<Applied, ProviderError> {
        let type_name = address.split('.').next().unwrap_or_default();
        let hash = hash_attrs(config);
        let report = |line: &str| self.report(line);
        self.provider
            .replace(
                ApplyRequest {
                    type_name,
                    address,
                    config,
                    prior: Some(&prior.attrs),
                    prior_id: Some(&prior.id),
                    config_hash: &hash,
                    owner: &self.owner,
                },
                &report,
            )
            .await
    }

    pub async fn delete(&self, address: &str, state: &Applied) -> Result<(), ProviderError> {
        let type_name = address.split('.').next().unwrap_or_default();
        let report = |line: &str| self.report(line);
        self.provider
            .delete(
                DeleteRequest {
                    type_name,
                    address,
                    id: &state.id,
                    attrs: &state.attrs,
                    owner: &self.owner,
                },
                &report,
            )
            .await
    }

    pub async fn refresh(&self, type_name: &str) -> Vec<Observed> {
        self.provider
            .refresh(type_name, &self.owner, &[])
            .await
            .expect("refresh")
    }

    /// Writes a build context with a static busybox that serves HTTP on
    /// port 5000 by default, and returns its directory (relative to the
    /// provider's base dir: `app`).
    pub fn write_busybox_context(&self) -> PathBuf {
        let context = self.dir.path().join("app");
        std::fs::create_dir_all(&context).expect("context dir");
        std::fs::copy(static_busybox(), context.join("busybox")).expect("copy busybox");
        std::fs::write(
            context.join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\n\
             CMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"5000\"]\n",
        )
        .expect("Dockerfile");
        context
    }

    /// Builds the busybox image through the provider; returns its state.
    pub async fn build_busybox_image(&self) -> Applied {
        self.write_busybox_context();
        let config = self
            .prepare(
                "docker_image",
                attrs(serde_json::json!({
                    "name": format!("{}:latest", self.name("img")),
                    "build": {"context": "app"},
                })),
            )
            .await;
        self.create("docker_image.app", &config)
            .await
            .expect("building the busybox image")
    }

    /// Containers carrying this test's lineage label.
    pub async fn labelled_containers(&self) -> Vec<bollard::models::ContainerSummary> {
        let filters = std::collections::HashMap::from([(
            "label".to_owned(),
            vec![format!("berth.lineage={}", self.owner.lineage)],
        )]);
        self.docker
            .list_containers(Some(
                bollard::query_parameters::ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .expect("list containers")
    }
}

fn docker_cli(args: &[&str]) -> String {
    Command::new("docker")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

impl Drop for World {
    fn drop(&mut self) {
        let filters = [
            format!("label=berth.lineage={}", self.owner.lineage),
            format!("label={RUN_LABEL}={}", self.id),
        ];
        for filter in &filters {
            let ids = docker_cli(&["ps", "-aq", "--filter", filter]);
            for id in ids.split_whitespace() {
                docker_cli(&["rm", "-f", "-v", id]);
            }
        }
        for filter in &filters {
            let ids = docker_cli(&["network", "ls", "-q", "--filter", filter]);
            for id in ids.split_whitespace() {
                docker_cli(&["network", "rm", id]);
            }
        }
        for filter in &filters {
            let ids = docker_cli(&["images", "-aq", "--filter", filter]);
            for id in ids.split_whitespace() {
                docker_cli(&["rmi", "-f", id]);
            }
        }
    }
}

/// A statically linked busybox (`apt-get install busybox-static`).
pub fn static_busybox() -> &'static Path {
    for candidate in ["/bin/busybox", "/usr/bin/busybox"] {
        let path = Path::new(candidate);
        if let Ok(bytes) = std::fs::read(path)
            && is_static_elf(&bytes)
        {
            return path;
        }
    }
    panic!("these tests need a statically linked busybox: apt-get install -y busybox-static");
}

/// Whether an ELF64 little-endian binary has no program interpreter.
fn is_static_elf(bytes: &[u8]) -> bool {
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    if bytes.get(..5) != Some(b"\x7fELF\x02") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    const PT_INTERP: u32 = 3;
    (0..usize::from(phnum)).all(|i| {
        let offset = phoff as usize + i * usize::from(phentsize);
        u32_at(offset).is_some_and(|t| t != PT_INTERP)
    })
}
