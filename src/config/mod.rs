//! The configuration language: one HCL file in Terraform's shapes, turned
//! into a typed model whose every expression keeps its source span and the
//! references it makes.
//!
//! This module owns parsing ([`parse`]), reference extraction ([`refs`]),
//! validation against provider schemas ([`validate`]), input variables
//! ([`vars`]), expression evaluation with unknown values ([`eval`]) and the
//! function library ([`functions`]). It imports [`crate::diag`] and the
//! provider crate's schema types, nothing of the engine.

pub mod eval;
pub mod functions;
pub mod parse;
pub mod refs;
pub mod validate;
pub mod vars;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::diag::{Diagnostic, Diagnostics, SourceFile};
pub use refs::{Ref, RefTarget};

/// An expression with where it stands and what it refers to.
#[derive(Clone, Debug)]
pub struct Expr {
    /// The expression, ready for evaluation.
    pub expr: hcl::Expression,
    /// Byte span of the expression in the source.
    pub span: Range<usize>,
    /// Every reference the expression makes.
    pub refs: Vec<Ref>,
}

/// A `variable "NAME"` block.
#[derive(Clone, Debug)]
pub struct Variable {
    /// The name.
    pub name: String,
    /// Span of the block's header.
    pub span: Range<usize>,
    /// The declared type, if any (`string`, `number`, `bool`, `list(...)`, ...).
    pub type_name: Option<String>,
    /// The default, if any.
    pub default: Option<Expr>,
    /// The description.
    pub description: Option<String>,
    /// Never shown or stored in plain text.
    pub sensitive: bool,
    /// `validation { condition, error_message }` blocks.
    pub validations: Vec<Validation>,
}

/// A `validation` block of a variable.
#[derive(Clone, Debug)]
pub struct Validation {
    /// Must be true.
    pub condition: Expr,
    /// Shown when it is not.
    pub error_message: Expr,
}

/// One entry of a `locals` block.
#[derive(Clone, Debug)]
pub struct Local {
    /// The name.
    pub name: String,
    /// The value.
    pub value: Expr,
}

/// A `provider "NAME"` block.
#[derive(Clone, Debug)]
pub struct ProviderBlock {
    /// The provider name.
    pub name: String,
    /// Span of the block header.
    pub span: Range<usize>,
    /// The body.
    pub body: Body,
}

/// A body: attributes and nested blocks, in source order.
#[derive(Clone, Debug, Default)]
pub struct Body {
    /// Attributes.
    pub attrs: Vec<Attr>,
    /// Nested blocks.
    pub blocks: Vec<Block>,
}

/// One attribute of a body.
#[derive(Clone, Debug)]
pub struct Attr {
    /// The key.
    pub name: String,
    /// Span of the key.
    pub name_span: Range<usize>,
    /// The value.
    pub value: Expr,
}

/// A nested block.
#[derive(Clone, Debug)]
pub struct Block {
    /// The block type.
    pub name: String,
    /// Span of the block type identifier.
    pub span: Range<usize>,
    /// The labels.
    pub labels: Vec<String>,
    /// The body.
    pub body: Body,
}

impl Body {
    /// The attribute named `name`.
    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.iter().find(|a| a.name == name)
    }

    /// Every reference made anywhere in the body.
    pub fn refs(&self) -> Vec<&Ref> {
        let mut out: Vec<&Ref> = self
            .attrs
            .iter()
            .flat_map(|a| a.value.refs.iter())
            .collect();
        for b in &self.blocks {
            out.extend(b.body.refs());
        }
        out
    }
}

/// `lifecycle { ... }` of a resource.
#[derive(Clone, Debug, Default)]
pub struct Lifecycle {
    /// Refuse any plan that destroys this resource.
    pub prevent_destroy: bool,
    /// Create the replacement before destroying the old object.
    pub create_before_destroy: bool,
    /// Attributes whose changes are ignored.
    pub ignore_changes: Vec<String>,
}

/// A `resource "TYPE" "NAME"` block.
#[derive(Clone, Debug)]
pub struct Resource {
    /// The type, e.g. `docker_container`.
    pub type_name: String,
    /// The name.
    pub name: String,
    /// Span of the block header.
    pub span: Range<usize>,
    /// The resource's own attributes and blocks (meta-arguments removed).
    pub body: Body,
    /// `depends_on` entries: address and span.
    pub depends_on: Vec<(String, Range<usize>)>,
    /// The lifecycle block.
    pub lifecycle: Lifecycle,
}

impl Resource {
    /// `TYPE.NAME`.
    pub fn address(&self) -> String {
        format!("{}.{}", self.type_name, self.name)
    }
}

/// An `output "NAME"` block.
#[derive(Clone, Debug)]
pub struct Output {
    /// The name.
    pub name: String,
    /// Span of the block header.
    pub span: Range<usize>,
    /// The value.
    pub value: Expr,
    /// The description.
    pub description: Option<String>,
    /// Never shown or stored in plain text.
    pub sensitive: bool,
}

/// A `check "NAME"` block: an HTTP check run after apply.
#[derive(Clone, Debug)]
pub struct Check {
    /// The name.
    pub name: String,
    /// Span of the block header.
    pub span: Range<usize>,
    /// The body (`url`, `expect_status`, `contains`, `timeout`, `retries`).
    pub body: Body,
}

/// A `backend "KIND" { ... }` block (also accepted inside `terraform { }`).
#[derive(Clone, Debug)]
pub struct BackendBlock {
    /// `local`, `http`, `pg` or `s3`.
    pub kind: String,
    /// Span of the block header.
    pub span: Range<usize>,
    /// The settings.
    pub body: Body,
}

/// A whole configuration file.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file.
    pub source: Arc<SourceFile>,
    /// The directory relative paths are resolved against.
    pub base_dir: PathBuf,
    /// Variables.
    pub variables: Vec<Variable>,
    /// Locals.
    pub locals: Vec<Local>,
    /// Provider blocks.
    pub providers: Vec<ProviderBlock>,
    /// Resources, in source order.
    pub resources: Vec<Resource>,
    /// Outputs.
    pub outputs: Vec<Output>,
    /// Checks.
    pub checks: Vec<Check>,
    /// Where state lives, if not in `.berth/`.
    pub backend: Option<BackendBlock>,
    /// `type.name` → position in `resources`, built on the first lookup.
    resource_index: std::sync::OnceLock<ResourceIndex>,
}

/// [`Config::resource`]'s index and how many resources it covers.
#[derive(Clone, Debug, Default)]
struct ResourceIndex {
    at: std::collections::HashMap<String, usize>,
    len: usize,
}

impl Config {
    /// The resource at `address`.
    ///
    /// Looked up in an index built once: a scan per lookup made `berth
    /// validate` and `plan` quadratic in the number of resources (38 s to
    /// validate 20,000).
    pub fn resource(&self, address: &str) -> Option<&Resource> {
        let (type_name, name) = address.split_once('.')?;
        let matches = |r: &&Resource| r.type_name == type_name && r.name == name;
        let index = self.resource_index.get_or_init(|| {
            let mut at = std::collections::HashMap::with_capacity(self.resources.len());
            for (i, r) in self.resources.iter().enumerate() {
                // The first of duplicates, as a scan would find.
                at.entry(r.address()).or_insert(i);
            }
            ResourceIndex {
                at,
                len: self.resources.len(),
            }
        });
        match index.at.get(address).and_then(|&i| self.resources.get(i)) {
            Some(r) if matches(&r) => Some(r),
            // Resources were added after the index was built: scan.
            _ if index.len != self.resources.len() => self.resources.iter().find(matches),
            _ => None,
        }
    }

    /// The variable named `name`.
    pub fn variable(&self, name: &str) -> Option<&Variable> {
        self.variables.iter().find(|v| v.name == name)
    }

    /// An error at `span` of this file.
    pub fn error(&self, span: Range<usize>, summary: impl Into<String>) -> Diagnostic {
        Diagnostic::error(&self.source, span, summary)
    }
}

/// The largest configuration file berth reads.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Reads and parses the file at `path`.
pub fn load(path: &Path) -> Result<Config, Diagnostics> {
    let name = path.display().to_string();
    let bytes =
        read_bounded(path).map_err(|e| Diagnostic::bare(format!("cannot read `{name}`: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let prefix = String::from_utf8_lossy(&e.as_bytes()[..valid]);
        let line = prefix.matches('\n').count() + 1;
        let col = prefix
            .rsplit('\n')
            .next()
            .map(|l| l.chars().count() + 1)
            .unwrap_or(1);
        Diagnostic::bare(format!("{name}:{line}:{col}: the file is not valid UTF-8"))
    })?;
    let base_dir = path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."))
        .to_path_buf();
    parse::parse(Arc::new(SourceFile { name, text }), base_dir)
}

/// The file at `path`, refused when larger than [`MAX_FILE_BYTES`] (read
/// through `take`, so a device such as `/dev/zero` ends too).
pub(crate) fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "the file is larger than {} MiB",
            MAX_FILE_BYTES / 1024 / 1024
        )));
    }
    Ok(bytes)
}
