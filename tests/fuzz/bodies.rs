//! The bodies of berth's fuzz targets, shared by the cargo-fuzz targets in
//! `fuzz_targets/` (nightly, libFuzzer) and the stable test that replays
//! the committed seeds and every crash found
//! (`tests/it/reliability_input.rs`). Each takes arbitrary bytes and must
//! return (with a value or a clear error), never panic, overflow its stack
//! or run away with memory.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use berth::config::eval::Scope;
use berth::config::validate::SchemaLookup;
use berth::config::vars::VarInputs;
use berth::diag::SourceFile;
use berth::providers::Registry;
use berth_provider::ProviderContext;

/// The configuration loader: parse, validate against the built-in
/// providers' schemas, build the graph, resolve variables, evaluate every
/// local and resource as `berth validate` does, and render the
/// diagnostics; also `berth fmt`.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = berth::fmt::format_source(text);
    let source = Arc::new(SourceFile {
        name: "fuzz.hcl".to_owned(),
        text: text.to_owned(),
    });
    // `file()` resolves against a directory that does not exist.
    let base = PathBuf::from("/nonexistent/berth-fuzz");
    let config = match berth::config::parse::parse(source, base.clone()) {
        Ok(c) => c,
        Err(d) => {
            let _ = d.render();
            return;
        }
    };
    // Built once: the providers' HTTP clients load the system's roots.
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    let registry = REGISTRY.get_or_init(|| Registry::builtin(ProviderContext { base_dir: base }));
    let diags = berth::config::validate::validate(&config, registry);
    let _ = diags.render();
    let graph = match berth::graph::Graph::build(&config) {
        Ok(g) => g,
        Err(d) => {
            let _ = d.render();
            return;
        }
    };
    let _ = graph.to_dot();
    let mut scope = Scope::new("fuzz");
    if let Err(d) = berth::config::vars::resolve(&config, &VarInputs::default(), &mut scope) {
        let _ = d.render();
        return;
    }
    for node in &graph.order {
        if let Some(name) = node.strip_prefix("local.") {
            if let Some(local) = config.locals.iter().find(|l| l.name == name)
                && let Ok(v) = scope.eval(&config, &local.value)
            {
                scope.set_local(name, v, false);
            }
            continue;
        }
        if let Some(resource) = config.resource(node)
            && let Some(schema) = registry.schema(&resource.type_name)
        {
            match scope.eval_body(&config, &resource.body, schema) {
                Ok(desired) => {
                    let _ = berth::plan::provider_checks(&config, resource, registry, &desired)
                        .render();
                }
                Err(d) => {
                    let _ = d.render();
                }
            }
        }
        scope.set_resource(node, None, &[], &Default::default());
    }
}

/// The state decoders: a remote state document, a sled resource record,
/// a lock's holder.
pub fn state(data: &[u8]) {
    if let Ok(snapshot) = berth_state::decode_document(data) {
        // What decodes must encode again.
        let _ = serde_json::to_vec(&snapshot);
    }
    let _ = berth_state::decode_record(data);
    if let Some(lock) = berth_state::decode_lock(data) {
        let _ = lock.is_stale();
    }
}

/// The plan-file decoder of `berth apply FILE` / `berth show FILE`.
pub fn planfile(data: &[u8]) {
    if let Ok(saved) = berth::cli::planfile::decode(data) {
        let _ = saved.text.len();
    }
}
