//! Saved plans (`berth plan -out FILE`, `berth apply FILE`): a versioned
//! JSON document holding the plan as shown, what it was planned against
//! (environment, state lineage and serial, a hash of the configuration
//! file) and a fingerprint of every change. Applying re-plans and refuses
//! unless the state is unchanged and the new plan has the same fingerprint,
//! so exactly the saved plan is carried out. No secret is written: values
//! of sensitive variables are not stored, and the fingerprint holds only
//! keyed hashes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::error::Error;
use crate::plan::Plan;
use crate::session::{Session, Target};

const FORMAT: &str = "berth-plan";
const VERSION: u32 = 1;

/// A saved plan as read back.
#[derive(Debug, Serialize, Deserialize)]
pub struct Saved {
    format: String,
    version: u32,
    env: String,
    file: PathBuf,
    lineage: String,
    serial: u64,
    config_sha256: String,
    vars: Vec<String>,
    var_files: Vec<PathBuf>,
    fingerprint: Vec<String>,
    /// The plan as `berth show -json` prints it.
    pub json: serde_json::Value,
    /// The plan as text.
    pub text: String,
}

impl Saved {
    /// The target to apply against: the saved file, environment and inputs.
    pub fn target(&self, given: &Target) -> Target {
        let mut target = given.clone();
        target.file = self.file.clone();
        target.env = self.env.clone();
        target.vars.vars = self.vars.clone();
        target.vars.var_files = self.var_files.clone();
        target
    }

    /// Refuses a stale plan, saying why.
    pub fn check(&self, target: &Target, session: &Session, plan: &Plan) -> Result<(), Error> {
        if session.snapshot.lineage != self.lineage {
            return Err(Error::Refused(format!(
                "the saved plan is stale: it was made for state lineage `{}`, but the state of `{}` now has lineage `{}`",
                self.lineage, target.env, session.snapshot.lineage
            )));
        }
        if session.snapshot.serial != self.serial {
            return Err(Error::Refused(format!(
                "the saved plan is stale: the state changed since it was made (serial {} then, {} now); run `berth plan` again",
                self.serial, session.snapshot.serial
            )));
        }
        if config_hash(&target.file)? != self.config_sha256 {
            return Err(Error::Refused(format!(
                "the saved plan is stale: `{}` changed since it was made; run `berth plan` again",
                target.file.display()
            )));
        }
        if fingerprint(plan) != self.fingerprint {
            return Err(Error::Refused(
                "the saved plan no longer matches what berth would do (the real world or a sensitive input changed); run `berth plan` again".to_owned(),
            ));
        }
        Ok(())
    }
}

fn fingerprint(plan: &Plan) -> Vec<String> {
    plan.changes
        .iter()
        .map(|c| {
            format!(
                "{} {:?} {} {}",
                c.address,
                c.action,
                c.config_hash.as_deref().unwrap_or("-"),
                c.changed.iter().cloned().collect::<Vec<_>>().join(",")
            )
        })
        .collect()
}

fn config_hash(path: &Path) -> Result<String, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(hex::encode(sha2::Sha256::digest(&bytes)))
}

/// Writes the plan to `path` atomically.
pub fn write(
    path: &Path,
    target: &Target,
    session: &Session,
    plan: &Plan,
    text: &str,
    json: &serde_json::Value,
) -> Result<(), Error> {
    let sensitive: Vec<&str> = session
        .loaded
        .config
        .variables
        .iter()
        .filter(|v| v.sensitive)
        .map(|v| v.name.as_str())
        .collect();
    // Values of sensitive variables are never written; they must be given
    // again (e.g. through BERTH_VAR_NAME) and must produce the same plan.
    let vars = target
        .vars
        .vars
        .iter()
        .filter(|v| !sensitive.contains(&v.split('=').next().unwrap_or("")))
        .cloned()
        .collect();
    let saved = Saved {
        format: FORMAT.to_owned(),
        version: VERSION,
        env: plan.env.clone(),
        file: target.file.clone(),
        lineage: plan.lineage.clone(),
        serial: plan.serial,
        config_sha256: config_hash(&target.file)?,
        vars,
        var_files: target.vars.var_files.clone(),
        fingerprint: fingerprint(plan),
        json: json.clone(),
        text: text.to_owned(),
    };
    let io = |e: std::io::Error| Error::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let bytes = serde_json::to_vec_pretty(&saved).map_err(|e| Error::Refused(e.to_string()))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The largest plan file berth reads.
pub const MAX_PLAN_BYTES: u64 = 64 * 1024 * 1024;

/// Reads a saved plan, refusing anything that is not one.
pub fn read(path: &Path) -> Result<Saved, Error> {
    let io = |message: String| Error::Io {
        path: path.display().to_string(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| io(e.to_string()))?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(file, MAX_PLAN_BYTES + 1),
        &mut bytes,
    )
    .map_err(|e| io(e.to_string()))?;
    if bytes.len() as u64 > MAX_PLAN_BYTES {
        return Err(io(format!(
            "not a berth plan file: larger than {} MiB",
            MAX_PLAN_BYTES / 1024 / 1024
        )));
    }
    decode(&bytes).map_err(io)
}

/// Decodes a saved plan's bytes, refusing anything that is not one, with a
/// message saying why.
pub fn decode(bytes: &[u8]) -> Result<Saved, String> {
    let saved: Saved =
        serde_json::from_slice(bytes).map_err(|e| format!("not a berth plan file: {e}"))?;
    if saved.format != FORMAT || saved.version != VERSION {
        return Err(format!(
            "plan file format `{}` version {} is not supported (expected `{FORMAT}` version {VERSION})",
            saved.format, saved.version
        ));
    }
    Ok(saved)
}
