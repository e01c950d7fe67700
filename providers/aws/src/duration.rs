//! Go-style duration strings (`"10m"`, `"1m30s"`, `"500ms"`, `"1.5h"`) as
//! Terraform's `timeouts { create = "10m" }` blocks use them, and that
//! block's schema and lookup.

use std::time::Duration;

use berth_provider::{AttrSchema, AttrType, Attrs, BlockSchema, Nesting, ProviderError};

use crate::attrs;

/// A `timeouts { ... }` block with the given operations.
pub(crate) fn timeouts_block(operations: &[&'static str]) -> BlockSchema {
    BlockSchema {
        name: "timeouts",
        nesting: Nesting::Single,
        force_new: false,
        attributes: operations
            .iter()
            .map(|op| AttrSchema::optional(op, AttrType::String))
            .collect(),
        blocks: vec![],
    }
}

/// `timeouts.<operation>` of a configuration, or `default`.
pub(crate) fn timeout(
    config: &Attrs,
    operation: &str,
    default: Duration,
) -> Result<Duration, ProviderError> {
    let block = attrs::block(config, "timeouts")?.unwrap_or_default();
    match attrs::non_empty_string(&block, operation)? {
        None => Ok(default),
        Some(s) => parse_duration(&s)
            .map_err(|e| ProviderError::Config(format!("`timeouts.{operation}`: {e}"))),
    }
}

pub(crate) use berth_provider::duration::parse as parse_duration;
