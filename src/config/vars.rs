//! Input variables: values from `-var NAME=VALUE`, `-var-file FILE`,
//! `BERTH_VAR_NAME` environment variables (Terraform's `TF_VAR_`, renamed)
//! and defaults, in that order of precedence; converted to the declared
//! type and checked by the variables' `validation` blocks.

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_provider::Value;

use super::eval::{PValue, Scope, convert, describe_kind};
use super::{Config, Expr, Variable};
use crate::diag::{Diagnostic, Diagnostics};

/// Where variable values come from, as given on the command line.
#[derive(Clone, Debug, Default)]
pub struct VarInputs {
    /// `-var NAME=VALUE`, in order.
    pub vars: Vec<String>,
    /// `-var-file FILE`, in order.
    pub var_files: Vec<PathBuf>,
}

/// Resolves every declared variable into `scope`.
pub fn resolve(config: &Config, inputs: &VarInputs, scope: &mut Scope) -> Result<(), Diagnostics> {
    let mut diags = Diagnostics::default();
    let mut given: BTreeMap<String, (Value, &'static str)> = BTreeMap::new();

    for v in &config.variables {
        if let Ok(raw) = std::env::var(format!("BERTH_VAR_{}", v.name)) {
            given.insert(v.name.clone(), (Value::String(raw), "environment"));
        }
    }
    for file in &inputs.var_files {
        match read_var_file(file) {
            Ok(values) => {
                for (name, value) in values {
                    if config.variable(&name).is_none() {
                        diags.push(Diagnostic::bare(format!(
                            "`{}` sets undeclared variable `{name}`",
                            file.display()
                        )));
                        continue;
                    }
                    given.insert(name, (value, "file"));
                }
            }
            Err(d) => diags.push(d),
        }
    }
    for raw in &inputs.vars {
        let Some((name, value)) = raw.split_once('=') else {
            diags.push(Diagnostic::bare(format!("`-var {raw}` must be NAME=VALUE")));
            continue;
        };
        if config.variable(name).is_none() {
            diags.push(Diagnostic::bare(format!(
                "`-var` sets undeclared variable `{name}`"
            )));
            continue;
        }
        given.insert(
            name.to_owned(),
            (Value::String(value.to_owned()), "command line"),
        );
    }

    let defaults_scope = Scope::new("");
    for v in &config.variables {
        let value = match given.remove(&v.name) {
            Some((value, _)) => match coerce(&value, v) {
                Ok(value) => value,
                Err(expected) => {
                    diags.push(
                        config
                            .error(
                                v.span.clone(),
                                format!("wrong type for variable `{}`", v.name),
                            )
                            .with_label(format!(
                                "expected {expected}, found {}",
                                describe_kind(&value)
                            )),
                    );
                    continue;
                }
            },
            None => match &v.default {
                Some(expr) => match defaults_scope.eval(config, expr) {
                    Ok(PValue::Known(value)) => value,
                    Ok(PValue::Unknown) => Value::Null,
                    Err(d) => {
                        diags.push(d);
                        continue;
                    }
                },
                None => {
                    diags.push(
                        config
                            .error(v.span.clone(), format!("no value for required variable `{}`", v.name))
                            .with_help(format!(
                                "pass `-var {0}=VALUE`, set `BERTH_VAR_{0}`, or give the variable a default",
                                v.name
                            )),
                    );
                    continue;
                }
            },
        };
        scope.set_var(&v.name, value, v.sensitive);
    }
    for v in &config.variables {
        for validation in &v.validations {
            if let Err(d) = check_validation(
                config,
                scope,
                v,
                &validation.condition,
                &validation.error_message,
            ) {
                diags.push(d);
            }
        }
    }
    if diags.has_errors() {
        Err(diags)
    } else {
        Ok(())
    }
}

fn check_validation(
    config: &Config,
    scope: &Scope,
    v: &Variable,
    condition: &Expr,
    message: &Expr,
) -> Result<(), Diagnostic> {
    match scope.eval(config, condition)? {
        PValue::Known(Value::Bool(true)) | PValue::Unknown => Ok(()),
        PValue::Known(Value::Bool(false)) => {
            let text = match scope.eval(config, message)? {
                PValue::Known(Value::String(s)) => s,
                _ => "validation failed".to_owned(),
            };
            Err(config
                .error(
                    condition.span.clone(),
                    format!("invalid value for variable `{}`", v.name),
                )
                .with_label(text))
        }
        PValue::Known(other) => Err(config
            .error(
                condition.span.clone(),
                "a validation condition must be true or false",
            )
            .with_label(format!("found {}", describe_kind(&other)))),
    }
}

fn coerce(value: &Value, v: &Variable) -> Result<Value, String> {
    use berth_provider::AttrType;
    let ty = v
        .type_name
        .as_deref()
        .unwrap_or("any")
        .replace(char::is_whitespace, "");
    let simple = match ty.as_str() {
        "string" => Some(AttrType::String),
        "number" => Some(AttrType::Number),
        "bool" => Some(AttrType::Bool),
        _ => None,
    };
    if let Some(simple) = simple {
        return convert(value, simple).map_err(|t| t.describe().to_owned());
    }
    match (ty.as_str(), value) {
        ("any", _) => Ok(value.clone()),
        (_, Value::String(raw)) => {
            // Complex values given as text are parsed as HCL expressions.
            let parsed: Result<hcl::Body, _> = hcl::from_str(&format!("v = {raw}\n"));
            let expr = parsed
                .ok()
                .and_then(|b| b.into_attributes().next().map(|a| a.expr))
                .ok_or_else(|| ty.clone())?;
            let ctx = hcl::eval::Context::new();
            let evaluated = hcl::eval::Evaluate::evaluate(&expr, &ctx).map_err(|_| ty.clone())?;
            check_shape(super::eval::from_hcl(&evaluated), &ty)
        }
        _ => check_shape(value.clone(), &ty),
    }
}

fn check_shape(value: Value, ty: &str) -> Result<Value, String> {
    let ok = match &value {
        Value::Array(_) => {
            ty.starts_with("list") || ty.starts_with("set") || ty.starts_with("tuple")
        }
        Value::Object(_) => ty.starts_with("map") || ty.starts_with("object"),
        _ => false,
    };
    if ok { Ok(value) } else { Err(ty.to_owned()) }
}

fn read_var_file(path: &std::path::Path) -> Result<BTreeMap<String, Value>, Diagnostic> {
    // Bounded like the configuration file, so `-var-file /dev/zero` is an
    // error rather than a process that eats all memory.
    let bytes = super::read_bounded(path)
        .map_err(|e| Diagnostic::bare(format!("cannot read var file `{}`: {e}", path.display())))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        Diagnostic::bare(format!(
            "cannot read var file `{}`: it is not valid UTF-8",
            path.display()
        ))
    })?;
    let body: hcl::Body =
        hcl::from_str(&text).map_err(|e| Diagnostic::bare(format!("`{}`: {e}", path.display())))?;
    let ctx = hcl::eval::Context::new();
    let mut out = BTreeMap::new();
    for attr in body.into_attributes() {
        let value = hcl::eval::Evaluate::evaluate(&attr.expr, &ctx).map_err(|e| {
            Diagnostic::bare(format!(
                "`{}`: value of `{}`: {e}",
                path.display(),
                attr.key
            ))
        })?;
        out.insert(attr.key.to_string(), super::eval::from_hcl(&value));
    }
    Ok(out)
}
