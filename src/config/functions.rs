//! The function library available to expressions in berth configuration files.
//!
//! `hcl::eval` ships without any built-in functions, so this module owns every function a
//! configuration may call (`env`, `file`, `format`, `join`, ...). Semantics follow Terraform's
//! functions of the same name; differences are noted on the individual functions.
//!
//! [`register`] declares all functions on an evaluation [`Context`]; [`NAMES`] lists them for
//! "did you mean" hints; [`set_base_dir`] sets the directory `file()` resolves relative paths
//! against.
//!
//! Errors are short, lower-case strings prefixed with the function name, e.g.
//! `file: cannot read "x.txt": No such file or directory`. Functions never panic, whatever their
//! input, and the value of an environment variable never appears in an error message.

use std::cmp::Ordering;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use base64::Engine as _;
use hcl::eval::{Context, FuncArgs, FuncDef, ParamType};
use hcl::{Map, Number, Value};
use sha2::Digest as _;

/// Names of all functions declared by [`register`], sorted alphabetically.
pub const NAMES: &[&str] = &[
    "abs",
    "base64decode",
    "base64encode",
    "coalesce",
    "concat",
    "contains",
    "env",
    "file",
    "format",
    "join",
    "jsondecode",
    "jsonencode",
    "keys",
    "length",
    "lookup",
    "lower",
    "max",
    "merge",
    "min",
    "replace",
    "sha256",
    "split",
    "tonumber",
    "tostring",
    "trimspace",
    "upper",
    "values",
];

/// Largest file `file()` will read.
const FILE_LIMIT: u64 = 4 * 1024 * 1024;

/// Largest width or precision accepted in a `format()` verb, to bound allocations.
const FORMAT_MAX_WIDTH: usize = 4096;

/// Directory relative `file()` paths are resolved against; `None` means the process's current
/// directory.
static BASE_DIR: RwLock<Option<PathBuf>> = RwLock::new(None);

/// Declares every function on `ctx`.
pub fn register(ctx: &mut Context<'_>) {
    for (name, def) in definitions() {
        ctx.declare_func(name, def);
    }
}

/// Sets the directory `file()` resolves relative paths against (process-wide).
pub fn set_base_dir(dir: &Path) {
    let mut guard = BASE_DIR
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *guard = Some(dir.to_path_buf());
}

fn base_dir() -> Option<PathBuf> {
    BASE_DIR
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// The definition of every function, in the order of [`NAMES`].
fn definitions() -> Vec<(&'static str, FuncDef)> {
    use ParamType::{Any, String as Str};
    let any_array = || ParamType::array_of(Any);
    let any_object = || ParamType::object_of(Any);
    vec![
        ("abs", FuncDef::new(abs, [ParamType::Number])),
        ("base64decode", FuncDef::new(base64decode, [Str])),
        ("base64encode", FuncDef::new(base64encode, [Str])),
        (
            "coalesce",
            FuncDef::builder().variadic_param(Any).build(coalesce),
        ),
        (
            "concat",
            FuncDef::builder().variadic_param(any_array()).build(concat),
        ),
        ("contains", FuncDef::new(contains, [any_array(), Any])),
        (
            "env",
            FuncDef::builder().param(Str).variadic_param(Str).build(env),
        ),
        ("file", FuncDef::new(file, [Str])),
        (
            "format",
            FuncDef::builder()
                .param(Str)
                .variadic_param(Any)
                .build(format),
        ),
        (
            "join",
            FuncDef::builder()
                .param(Str)
                .variadic_param(any_array())
                .build(join),
        ),
        ("jsondecode", FuncDef::new(jsondecode, [Str])),
        ("jsonencode", FuncDef::new(jsonencode, [Any])),
        ("keys", FuncDef::new(keys, [any_object()])),
        (
            "length",
            FuncDef::new(
                length,
                [ParamType::one_of([any_array(), any_object(), Str])],
            ),
        ),
        (
            "lookup",
            FuncDef::builder()
                .param(any_object())
                .param(Str)
                .variadic_param(Any)
                .build(lookup),
        ),
        ("lower", FuncDef::new(lower, [Str])),
        (
            "max",
            FuncDef::builder()
                .variadic_param(ParamType::Number)
                .build(max),
        ),
        (
            "merge",
            FuncDef::builder()
                .variadic_param(ParamType::nullable(any_object()))
                .build(merge),
        ),
        (
            "min",
            FuncDef::builder()
                .variadic_param(ParamType::Number)
                .build(min),
        ),
        ("replace", FuncDef::new(replace, [Str, Str, Str])),
        ("sha256", FuncDef::new(sha256, [Str])),
        ("split", FuncDef::new(split, [Str, Str])),
        ("tonumber", FuncDef::new(tonumber, [Any])),
        ("tostring", FuncDef::new(tostring, [Any])),
        ("trimspace", FuncDef::new(trimspace, [Str])),
        ("upper", FuncDef::new(upper, [Str])),
        ("values", FuncDef::new(values, [any_object()])),
    ]
}

// ---------------------------------------------------------------------------------------------
// Argument helpers. Argument types are validated by hcl-rs before a function is called, but the
// helpers still fail gracefully instead of panicking should that ever not hold.

fn arg<'a>(args: &'a FuncArgs, index: usize, func: &str) -> Result<&'a Value, String> {
    args.get(index)
        .ok_or_else(|| format!("{func}: missing argument {}", index + 1))
}

fn str_arg<'a>(args: &'a FuncArgs, index: usize, func: &str) -> Result<&'a str, String> {
    match arg(args, index, func)? {
        Value::String(s) => Ok(s),
        other => Err(format!(
            "{func}: argument {} must be a string, got {}",
            index + 1,
            type_name(other)
        )),
    }
}

fn num_arg(args: &FuncArgs, index: usize, func: &str) -> Result<Number, String> {
    match arg(args, index, func)? {
        Value::Number(n) => Ok(*n),
        other => Err(format!(
            "{func}: argument {} must be a number, got {}",
            index + 1,
            type_name(other)
        )),
    }
}

fn array_arg<'a>(args: &'a FuncArgs, index: usize, func: &str) -> Result<&'a [Value], String> {
    match arg(args, index, func)? {
        Value::Array(a) => Ok(a),
        other => Err(format!(
            "{func}: argument {} must be a list, got {}",
            index + 1,
            type_name(other)
        )),
    }
}

fn object_arg<'a>(
    args: &'a FuncArgs,
    index: usize,
    func: &str,
) -> Result<&'a Map<String, Value>, String> {
    match arg(args, index, func)? {
        Value::Object(o) => Ok(o),
        other => Err(format!(
            "{func}: argument {} must be a map, got {}",
            index + 1,
            type_name(other)
        )),
    }
}

fn max_args(args: &FuncArgs, max: usize, func: &str) -> Result<(), String> {
    if args.len() > max {
        Err(format!(
            "{func}: expected at most {max} arguments, got {}",
            args.len()
        ))
    } else {
        Ok(())
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

/// Converts a primitive value to a string the way Terraform's automatic conversion does.
fn primitive_to_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Keys of an object in lexical order (Terraform's map ordering).
fn sorted_entries(map: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

// ---------------------------------------------------------------------------------------------
// Environment and files.

/// `env(name[, default])`: the value of an environment variable, or `default` when it is unset.
fn env(args: FuncArgs) -> Result<Value, String> {
    max_args(&args, 2, "env")?;
    let name = str_arg(&args, 0, "env")?;
    if name.is_empty() || name.contains(['=', '\0']) {
        return Err(format!("env: invalid variable name {name:?}"));
    }
    match std::env::var_os(name) {
        Some(value) => match value.into_string() {
            Ok(value) => Ok(Value::String(value)),
            // Never include the value itself: it may be a secret.
            Err(_) => Err(format!("env: variable {name:?} is not valid UTF-8")),
        },
        None => match args.get(1) {
            Some(default) => Ok(default.clone()),
            None => Err(format!("env: variable {name:?} is not set")),
        },
    }
}

/// Renders an I/O error without the `(os error N)` suffix.
fn io_error_message(err: &std::io::Error) -> String {
    let message = err.to_string();
    match message.find(" (os error ") {
        Some(pos) => message.get(..pos).unwrap_or(&message).to_string(),
        None => message,
    }
}

/// `file(path)`: the UTF-8 contents of a regular file of at most 4 MiB. Relative paths are
/// resolved against the directory set with [`set_base_dir`].
///
/// Anything but a regular file (directories, FIFOs, devices such as `/dev/zero`) is refused up
/// front, and reading goes through `take(limit + 1)` so a file that grows while being read cannot
/// exhaust memory either.
fn file(args: FuncArgs) -> Result<Value, String> {
    read_file(str_arg(&args, 0, "file")?, base_dir().as_deref())
}

/// `file()` with an explicit base directory.
fn read_file(given: &str, base: Option<&Path>) -> Result<Value, String> {
    if given.is_empty() {
        return Err("file: path must not be empty".to_string());
    }
    let path = Path::new(given);
    let resolved = match base {
        Some(base) if path.is_relative() => base.join(path),
        _ => path.to_path_buf(),
    };
    let cannot_read =
        |err: &std::io::Error| format!("file: cannot read {given:?}: {}", io_error_message(err));
    let not_regular = || format!("file: {given:?} is not a regular file");

    let meta = std::fs::metadata(&resolved).map_err(|e| cannot_read(&e))?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    let handle = std::fs::File::open(&resolved).map_err(|e| cannot_read(&e))?;
    // Check the opened handle too, in case the path was swapped in between.
    let meta = handle.metadata().map_err(|e| cannot_read(&e))?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    let too_large = || format!("file: {given:?} is larger than 4 MiB");
    if meta.len() > FILE_LIMIT {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    handle
        .take(FILE_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| cannot_read(&e))?;
    if bytes.len() as u64 > FILE_LIMIT {
        return Err(too_large());
    }
    String::from_utf8(bytes)
        .map(Value::String)
        .map_err(|_| format!("file: {given:?} is not valid UTF-8 text"))
}

// ---------------------------------------------------------------------------------------------
// format()

/// A parsed `%` verb: flags, width, precision and the verb character.
#[derive(Default)]
struct Verb {
    minus: bool,
    plus: bool,
    space: bool,
    zero: bool,
    sharp: bool,
    width: Option<usize>,
    precision: Option<usize>,
}

/// Reads a decimal number from `chars`, bounded by [`FORMAT_MAX_WIDTH`].
fn read_count(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
) -> Result<Option<usize>, String> {
    let mut value: Option<usize> = None;
    while let Some(digit) = chars.peek().and_then(|c| c.to_digit(10)) {
        chars.next();
        let next = value
            .unwrap_or(0)
            .checked_mul(10)
            .and_then(|v| v.checked_add(digit as usize))
            .filter(|v| *v <= FORMAT_MAX_WIDTH)
            .ok_or_else(|| format!("format: width or precision larger than {FORMAT_MAX_WIDTH}"))?;
        value = Some(next);
    }
    Ok(value)
}

/// `format(spec, args...)`: Terraform's `format`, a subset of Go's `fmt` verbs.
///
/// Supported verbs: `%%`, `%v` (`%#v` for JSON), `%s`, `%q`, `%t`, `%d`, `%b`, `%o`, `%x`,
/// `%X`, `%e`, `%E`, `%f`, `%g`, `%G`, with the flags `-+ 0#`, a width, a precision, and
/// explicit argument indexes (`%[2]s`).
fn format(args: FuncArgs) -> Result<Value, String> {
    let spec = str_arg(&args, 0, "format")?;
    let values: Vec<&Value> = args.iter().skip(1).collect();
    let mut out = String::new();
    let mut chars = spec.chars().peekable();
    let mut next_arg = 0usize;
    let mut explicit_index = false;
    let mut max_used = 0usize;

    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'%') {
            chars.next();
            out.push('%');
            continue;
        }
        let mut verb = Verb::default();
        while let Some(&flag) = chars.peek() {
            match flag {
                '-' => verb.minus = true,
                '+' => verb.plus = true,
                ' ' => verb.space = true,
                '0' => verb.zero = true,
                '#' => verb.sharp = true,
                _ => break,
            }
            chars.next();
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            let index = read_count(&mut chars)?;
            if chars.next() != Some(']') {
                return Err("format: invalid argument index".to_string());
            }
            match index {
                Some(i) if i >= 1 => next_arg = i - 1,
                _ => return Err("format: invalid argument index".to_string()),
            }
            explicit_index = true;
        }
        verb.width = read_count(&mut chars)?;
        if chars.peek() == Some(&'.') {
            chars.next();
            verb.precision = Some(read_count(&mut chars)?.unwrap_or(0));
        }
        let Some(verb_char) = chars.next() else {
            return Err("format: unterminated format verb at end of string".to_string());
        };
        let Some(value) = values.get(next_arg) else {
            return Err(format!(
                "format: not enough arguments for \"%{verb_char}\" (argument {} of {})",
                next_arg + 1,
                values.len()
            ));
        };
        next_arg += 1;
        max_used = max_used.max(next_arg);
        let text = format_one(&verb, verb_char, value)?;
        pad(&mut out, &verb, &text, is_numeric_verb(verb_char));
    }

    if !explicit_index && max_used < values.len() {
        return Err(format!(
            "format: too many arguments; only {max_used} used by format string"
        ));
    }
    Ok(Value::String(out))
}

fn is_numeric_verb(verb: char) -> bool {
    matches!(
        verb,
        'd' | 'b' | 'o' | 'x' | 'X' | 'e' | 'E' | 'f' | 'F' | 'g' | 'G'
    )
}

/// Pads `text` to the verb's width: left-justified with `-`, zero-padded after the sign with
/// `0` for numeric verbs, right-justified with spaces otherwise.
fn pad(out: &mut String, verb: &Verb, text: &str, numeric: bool) {
    let len = text.chars().count();
    let fill = verb.width.unwrap_or(0).saturating_sub(len);
    if fill == 0 {
        out.push_str(text);
    } else if verb.minus {
        out.push_str(text);
        out.extend(std::iter::repeat_n(' ', fill));
    } else if verb.zero && numeric {
        let (sign, digits) = match text.chars().next() {
            Some(c @ ('+' | '-' | ' ')) => (Some(c), text.get(1..).unwrap_or_default()),
            _ => (None, text),
        };
        if let Some(sign) = sign {
            out.push(sign);
        }
        out.extend(std::iter::repeat_n('0', fill));
        out.push_str(digits);
    } else {
        out.extend(std::iter::repeat_n(' ', fill));
        out.push_str(text);
    }
}

fn format_one(verb: &Verb, verb_char: char, value: &Value) -> Result<String, String> {
    let unsupported = || {
        format!(
            "format: unsupported value for \"%{verb_char}\": {}",
            type_name(value)
        )
    };
    match verb_char {
        'v' => {
            if verb.sharp {
                return Ok(json_encode(value));
            }
            match value {
                Value::Null => Ok("null".to_string()),
                Value::Number(n) => Ok(sign_prefix(verb, n.to_string())),
                Value::Array(_) | Value::Object(_) => Ok(json_encode(value)),
                Value::String(_) | Value::Bool(_) => {
                    primitive_to_string(value).ok_or_else(unsupported)
                }
            }
        }
        's' => {
            let s = primitive_to_string(value).ok_or_else(unsupported)?;
            Ok(match verb.precision {
                Some(p) => s.chars().take(p).collect(),
                None => s,
            })
        }
        'q' => {
            let s = primitive_to_string(value).ok_or_else(unsupported)?;
            Ok(json_string(&s))
        }
        't' => match value {
            Value::Bool(b) => Ok(b.to_string()),
            Value::String(s) if s == "true" || s == "false" => Ok(s.clone()),
            _ => Err(unsupported()),
        },
        'd' | 'b' | 'o' | 'x' | 'X' => {
            let n = number_for_format(value).ok_or_else(unsupported)?;
            format_integer(verb, verb_char, n)
        }
        'e' | 'E' | 'f' | 'F' | 'g' | 'G' => {
            let n = number_for_format(value).ok_or_else(unsupported)?;
            let f = n.as_f64().ok_or_else(unsupported)?;
            Ok(sign_prefix(verb, format_float(verb, verb_char, f)))
        }
        other => Err(format!("format: unrecognized format verb '{other}'")),
    }
}

/// Numbers, and strings that parse as numbers (Terraform converts them automatically).
fn number_for_format(value: &Value) -> Option<Number> {
    match value {
        Value::Number(n) => Some(*n),
        Value::String(s) => parse_number(s),
        _ => None,
    }
}

/// Adds a `+` or space before non-negative numbers as the flags ask.
fn sign_prefix(verb: &Verb, text: String) -> String {
    if text.starts_with('-') {
        text
    } else if verb.plus {
        format!("+{text}")
    } else if verb.space {
        format!(" {text}")
    } else {
        text
    }
}

fn format_integer(verb: &Verb, verb_char: char, n: Number) -> Result<String, String> {
    let (negative, magnitude) = if let Some(u) = n.as_u64() {
        (false, u)
    } else if let Some(i) = n.as_i64() {
        (i < 0, i.unsigned_abs())
    } else {
        // A float: either not whole, or an integer beyond the 64-bit range.
        let f = n.as_f64().unwrap_or(f64::NAN);
        if verb_char == 'd' && f.is_finite() && f.fract() == 0.0 {
            return Ok(sign_prefix(verb, format!("{f:.0}")));
        }
        return Err(format!(
            "format: value for \"%{verb_char}\" must be a whole number"
        ));
    };
    let digits = match verb_char {
        'b' => format!("{magnitude:b}"),
        'o' if verb.sharp => format!("0{magnitude:o}"),
        'o' => format!("{magnitude:o}"),
        'x' if verb.sharp => format!("0x{magnitude:x}"),
        'x' => format!("{magnitude:x}"),
        'X' if verb.sharp => format!("0X{magnitude:X}"),
        'X' => format!("{magnitude:X}"),
        _ => magnitude.to_string(),
    };
    Ok(if negative {
        format!("-{digits}")
    } else {
        sign_prefix(verb, digits)
    })
}

/// Formats a float like Go's `%e`, `%f` and `%g`.
fn format_float(verb: &Verb, verb_char: char, f: f64) -> String {
    match verb_char {
        'e' | 'E' => {
            let text = go_exponent(&format!("{:.*e}", verb.precision.unwrap_or(6), f));
            if verb_char == 'E' {
                text.to_uppercase()
            } else {
                text
            }
        }
        'f' | 'F' => format!("{:.*}", verb.precision.unwrap_or(6), f),
        _ => {
            let text = format_general(f, verb.precision);
            if verb_char == 'G' {
                text.to_uppercase()
            } else {
                text
            }
        }
    }
}

/// Rewrites Rust's exponent notation (`1.5e3`) to Go's (`1.5e+03`).
fn go_exponent(text: &str) -> String {
    match text.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            if digits.len() < 2 {
                format!("{mantissa}e{sign}0{digits}")
            } else {
                format!("{mantissa}e{sign}{digits}")
            }
        }
        None => text.to_string(),
    }
}

/// Go's `%g`: the shortest representation (or `precision` significant digits), in exponent form
/// for large or small exponents.
fn format_general(f: f64, precision: Option<usize>) -> String {
    let sci = match precision {
        Some(p) => format!("{:.*e}", p.saturating_sub(1), f),
        None => format!("{f:e}"),
    };
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return sci;
    };
    let exp: i64 = exp.parse().unwrap_or(0);
    let digits = mantissa.chars().filter(char::is_ascii_digit).count();
    let limit = match precision {
        Some(p) => i64::try_from(p.max(1)).unwrap_or(i64::MAX),
        None => 6,
    };
    if exp < -4 || exp >= limit {
        let mantissa = if mantissa.contains('.') {
            mantissa.trim_end_matches('0').trim_end_matches('.')
        } else {
            mantissa
        };
        go_exponent(&format!("{mantissa}e{exp}"))
    } else {
        // Significant digits after the decimal point.
        let decimals =
            usize::try_from((i64::try_from(digits).unwrap_or(0) - 1 - exp).max(0)).unwrap_or(0);
        let text = format!("{f:.decimals$}");
        if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            text
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Strings.

/// `join(separator, lists...)`: the elements of the lists joined by `separator`.
fn join(args: FuncArgs) -> Result<Value, String> {
    let sep = str_arg(&args, 0, "join")?;
    if args.len() < 2 {
        return Err("join: at least one list is required".to_string());
    }
    let mut parts = Vec::new();
    for index in 1..args.len() {
        for (pos, elem) in array_arg(&args, index, "join")?.iter().enumerate() {
            match primitive_to_string(elem) {
                Some(s) => parts.push(s),
                None => {
                    return Err(format!(
                        "join: element {pos} must be a string, got {}",
                        type_name(elem)
                    ));
                }
            }
        }
    }
    Ok(Value::String(parts.join(sep)))
}

/// `split(separator, string)`: Go's `strings.Split` (an empty separator splits into characters).
fn split(args: FuncArgs) -> Result<Value, String> {
    let sep = str_arg(&args, 0, "split")?;
    let s = str_arg(&args, 1, "split")?;
    let parts: Vec<Value> = if sep.is_empty() {
        s.chars().map(|c| Value::String(c.to_string())).collect()
    } else {
        s.split(sep).map(|p| Value::String(p.to_string())).collect()
    };
    Ok(Value::Array(parts))
}

fn lower(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::String(str_arg(&args, 0, "lower")?.to_lowercase()))
}

fn upper(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::String(str_arg(&args, 0, "upper")?.to_uppercase()))
}

fn trimspace(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::String(
        str_arg(&args, 0, "trimspace")?.trim().to_string(),
    ))
}

/// `replace(string, substring, replacement)`: replaces every occurrence of `substring`.
/// Terraform's `/regex/` form is not supported and is rejected rather than taken literally.
fn replace(args: FuncArgs) -> Result<Value, String> {
    let s = str_arg(&args, 0, "replace")?;
    let from = str_arg(&args, 1, "replace")?;
    let to = str_arg(&args, 2, "replace")?;
    if from.len() >= 2 && from.starts_with('/') && from.ends_with('/') {
        return Err(
            "replace: regular expression patterns (\"/.../\") are not supported".to_string(),
        );
    }
    Ok(Value::String(s.replace(from, to)))
}

fn sha256(args: FuncArgs) -> Result<Value, String> {
    let s = str_arg(&args, 0, "sha256")?;
    Ok(Value::String(hex::encode(sha2::Sha256::digest(
        s.as_bytes(),
    ))))
}

fn base64encode(args: FuncArgs) -> Result<Value, String> {
    let s = str_arg(&args, 0, "base64encode")?;
    Ok(Value::String(
        base64::engine::general_purpose::STANDARD.encode(s.as_bytes()),
    ))
}

fn base64decode(args: FuncArgs) -> Result<Value, String> {
    let s = str_arg(&args, 0, "base64decode")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.as_bytes())
        .map_err(|e| format!("base64decode: invalid base64 data: {e}"))?;
    String::from_utf8(bytes)
        .map(Value::String)
        .map_err(|_| "base64decode: the decoded data is not valid UTF-8".to_string())
}

// ---------------------------------------------------------------------------------------------
// JSON.

/// A JSON string literal.
fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

/// Encodes a value as compact JSON, with object keys in lexical order like Terraform.
fn json_encode(value: &Value) -> String {
    let mut out = String::new();
    write_json(&mut out, value);
    out
}

fn write_json(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => out.push_str(&json_string(s)),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in sorted_entries(map).into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&json_string(key));
                out.push(':');
                write_json(out, item);
            }
            out.push('}');
        }
    }
}

/// `jsonencode(value)`: compact JSON with object keys sorted like Terraform's. Unlike
/// Terraform, `<`, `>` and `&` are not escaped as `\u003c` etc.
fn jsonencode(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::String(json_encode(arg(&args, 0, "jsonencode")?)))
}

fn from_json(value: serde_json::Value) -> Result<Value, String> {
    Ok(match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => {
            let number = if let Some(u) = n.as_u64() {
                Number::from(u)
            } else if let Some(i) = n.as_i64() {
                Number::from(i)
            } else {
                n.as_f64()
                    .and_then(Number::from_f64)
                    .ok_or_else(|| "jsondecode: number out of range".to_string())?
            };
            Value::Number(number)
        }
        serde_json::Value::String(s) => Value::String(s),
        serde_json::Value::Array(items) => {
            Value::Array(items.into_iter().map(from_json).collect::<Result<_, _>>()?)
        }
        serde_json::Value::Object(map) => {
            let mut object = Map::new();
            for (key, item) in map {
                object.insert(key, from_json(item)?);
            }
            Value::Object(object)
        }
    })
}

/// `jsondecode(string)`: the value a JSON document describes (nesting is limited to 128 levels).
fn jsondecode(args: FuncArgs) -> Result<Value, String> {
    let s = str_arg(&args, 0, "jsondecode")?;
    let parsed: serde_json::Value =
        serde_json::from_str(s).map_err(|e| format!("jsondecode: invalid JSON: {e}"))?;
    from_json(parsed)
}

// ---------------------------------------------------------------------------------------------
// Collections.

/// `lookup(map, key[, default])`.
fn lookup(args: FuncArgs) -> Result<Value, String> {
    max_args(&args, 3, "lookup")?;
    let map = object_arg(&args, 0, "lookup")?;
    let key = str_arg(&args, 1, "lookup")?;
    match (map.get(key), args.get(2)) {
        (Some(value), _) => Ok(value.clone()),
        (None, Some(default)) => Ok(default.clone()),
        (None, None) => Err(format!("lookup: key {key:?} not found")),
    }
}

/// `merge(maps...)`: later maps win; `null` arguments are skipped.
fn merge(args: FuncArgs) -> Result<Value, String> {
    let mut merged = Map::new();
    for (index, value) in args.iter().enumerate() {
        match value {
            Value::Null => {}
            Value::Object(map) => {
                for (key, item) in map {
                    merged.insert(key.clone(), item.clone());
                }
            }
            other => {
                return Err(format!(
                    "merge: argument {} must be a map, got {}",
                    index + 1,
                    type_name(other)
                ));
            }
        }
    }
    Ok(Value::Object(merged))
}

fn concat(args: FuncArgs) -> Result<Value, String> {
    let mut items = Vec::new();
    for index in 0..args.len() {
        items.extend(array_arg(&args, index, "concat")?.iter().cloned());
    }
    Ok(Value::Array(items))
}

/// `length(list | map | string)`; strings count Unicode scalar values.
fn length(args: FuncArgs) -> Result<Value, String> {
    let len = match arg(&args, 0, "length")? {
        Value::Array(a) => a.len(),
        Value::Object(o) => o.len(),
        Value::String(s) => s.chars().count(),
        other => {
            return Err(format!(
                "length: argument must be a list, map or string, got {}",
                type_name(other)
            ));
        }
    };
    Ok(Value::Number(Number::from(len)))
}

fn contains(args: FuncArgs) -> Result<Value, String> {
    let list = array_arg(&args, 0, "contains")?;
    let needle = arg(&args, 1, "contains")?;
    Ok(Value::Bool(list.contains(needle)))
}

/// `keys(map)`: the keys in lexical order.
fn keys(args: FuncArgs) -> Result<Value, String> {
    let map = object_arg(&args, 0, "keys")?;
    Ok(Value::Array(
        sorted_entries(map)
            .into_iter()
            .map(|(k, _)| Value::String(k.clone()))
            .collect(),
    ))
}

/// `values(map)`: the values in the lexical order of their keys.
fn values(args: FuncArgs) -> Result<Value, String> {
    let map = object_arg(&args, 0, "values")?;
    Ok(Value::Array(
        sorted_entries(map)
            .into_iter()
            .map(|(_, v)| v.clone())
            .collect(),
    ))
}

/// `coalesce(args...)`: the first argument that is neither null nor an empty string.
fn coalesce(args: FuncArgs) -> Result<Value, String> {
    args.iter()
        .find(|v| !matches!(v, Value::Null) && !matches!(v, Value::String(s) if s.is_empty()))
        .cloned()
        .ok_or_else(|| "coalesce: no non-null, non-empty-string arguments".to_string())
}

// ---------------------------------------------------------------------------------------------
// Conversions.

/// Parses a decimal number the way Terraform's string-to-number conversion does.
fn parse_number(s: &str) -> Option<Number> {
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
    {
        return None;
    }
    if let Ok(u) = s.parse::<u64>() {
        return Some(Number::from(u));
    }
    if let Ok(i) = s.parse::<i64>() {
        return Some(Number::from(i));
    }
    s.parse::<f64>().ok().and_then(Number::from_f64)
}

/// `tostring(value)`: strings, numbers and booleans; `null` stays `null`.
fn tostring(args: FuncArgs) -> Result<Value, String> {
    let value = arg(&args, 0, "tostring")?;
    if value.is_null() {
        return Ok(Value::Null);
    }
    primitive_to_string(value)
        .map(Value::String)
        .ok_or_else(|| format!("tostring: cannot convert {} to string", type_name(value)))
}

/// `tonumber(value)`: numbers and numeric strings; `null` stays `null`.
fn tonumber(args: FuncArgs) -> Result<Value, String> {
    match arg(&args, 0, "tonumber")? {
        Value::Null => Ok(Value::Null),
        Value::Number(n) => Ok(Value::Number(*n)),
        Value::String(s) => parse_number(s)
            .map(Value::Number)
            .ok_or_else(|| format!("tonumber: cannot convert {} to number", json_string(s))),
        other => Err(format!(
            "tonumber: cannot convert {} to number",
            type_name(other)
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Numbers.

fn extreme(args: &FuncArgs, func: &str, wanted: Ordering) -> Result<Value, String> {
    if args.is_empty() {
        return Err(format!("{func}: at least one number is required"));
    }
    let mut best = num_arg(args, 0, func)?;
    for index in 1..args.len() {
        let n = num_arg(args, index, func)?;
        if n.partial_cmp(&best) == Some(wanted) {
            best = n;
        }
    }
    Ok(Value::Number(best))
}

fn max(args: FuncArgs) -> Result<Value, String> {
    extreme(&args, "max", Ordering::Greater)
}

fn min(args: FuncArgs) -> Result<Value, String> {
    extreme(&args, "min", Ordering::Less)
}

fn abs(args: FuncArgs) -> Result<Value, String> {
    let n = num_arg(&args, 0, "abs")?;
    // Negation of a `Number` never overflows: integers that do not fit become floats.
    Ok(Value::Number(if n < Number::from(0) { -n } else { n }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hcl::eval::Evaluate as _;

    fn ctx() -> Context<'static> {
        let mut ctx = Context::new();
        register(&mut ctx);
        ctx
    }

    fn eval(expr: &str) -> Result<Value, String> {
        let parsed: hcl::Expression = expr.parse().map_err(|e| format!("parse: {e}"))?;
        parsed.evaluate(&ctx()).map_err(|e| e.to_string())
    }

    #[track_caller]
    fn ok(expr: &str) -> Value {
        match eval(expr) {
            Ok(v) => v,
            Err(e) => panic!("{expr}: unexpected error: {e}"),
        }
    }

    #[track_caller]
    fn ok_str(expr: &str) -> String {
        match ok(expr) {
            Value::String(s) => s,
            other => panic!("{expr}: expected a string, got {other:?}"),
        }
    }

    #[track_caller]
    fn err(expr: &str) -> String {
        match eval(expr) {
            Ok(v) => panic!("{expr}: expected an error, got {v:?}"),
            Err(e) => e,
        }
    }

    #[track_caller]
    fn err_has(expr: &str, needle: &str) {
        let e = err(expr);
        assert!(e.contains(needle), "{expr}: error {e:?} lacks {needle:?}");
    }

    fn hcl(expr: &str) -> Value {
        ok(expr)
    }

    #[test]
    fn names_match_definitions() {
        let defined: Vec<&str> = definitions().into_iter().map(|(n, _)| n).collect();
        assert_eq!(defined, NAMES);
        let mut sorted = NAMES.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, NAMES);
    }

    #[test]
    fn env_reads_variable_and_default() {
        // Only read the environment: mutating it while other tests run is unsound.
        let name = "BERTH_FUNCTIONS_TEST_ENV";
        let home = std::env::var("PATH").unwrap_or_default();
        assert_eq!(ok_str("env(\"PATH\")"), home);
        assert_eq!(
            ok_str(&format!("env(\"{name}_MISSING\", \"dflt\")")),
            "dflt"
        );
        assert_eq!(
            ok(&format!("env(\"{name}_MISSING\", \"\")")),
            Value::from("")
        );
    }

    #[test]
    fn env_errors() {
        let e = err("env(\"BERTH_FUNCTIONS_TEST_UNSET\")");
        assert!(
            e.contains("env: variable \"BERTH_FUNCTIONS_TEST_UNSET\" is not set"),
            "{e}"
        );
        err_has("env(\"\")", "env: invalid variable name");
        err_has("env(\"A=B\")", "env: invalid variable name");
        err_has("env(\"A\", \"b\", \"c\")", "expected at most 2 arguments");
        err_has("env(1)", "expected argument at position 0");
    }

    #[test]
    fn env_error_never_contains_value() {
        let path = std::env::var("PATH").unwrap_or_default();
        // Too many arguments: the error must not echo the variable's value.
        let e = err("env(\"PATH\", \"a\", \"b\")");
        assert!(path.is_empty() || !e.contains(&path));
    }

    #[test]
    fn file_reads_relative_to_base_dir() {
        // `set_base_dir` is process-wide and other tests may rely on it, so these tests pass
        // the base directory explicitly or use absolute paths.
        let dir = std::env::temp_dir().join(format!("berth-fn-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create dir");
        std::fs::write(dir.join("hello.txt"), "héllo\n").expect("write");
        std::fs::write(dir.join("bad.bin"), [0xff, 0xfe, 0x00]).expect("write");
        let big = vec![b'a'; (FILE_LIMIT + 1) as usize];
        std::fs::write(dir.join("big.txt"), big).expect("write");
        let exact = vec![b'a'; FILE_LIMIT as usize];
        std::fs::write(dir.join("exact.txt"), exact).expect("write");
        let base = Some(dir.as_path());
        let read = |path: &str| read_file(path, base);

        assert_eq!(read("hello.txt"), Ok(Value::from("héllo\n")));
        let abs = dir.join("hello.txt").display().to_string();
        assert_eq!(ok_str(&format!("file({abs:?})")), "héllo\n");
        assert_eq!(read(&abs), Ok(Value::from("héllo\n")));
        assert!(matches!(read("exact.txt"), Ok(Value::String(s)) if s.len() == 4 << 20));
        assert_eq!(
            read("missing.txt"),
            Err("file: cannot read \"missing.txt\": No such file or directory".to_string())
        );
        let missing = dir.join("missing.txt").display().to_string();
        err_has(&format!("file({missing:?})"), "No such file or directory");
        assert_eq!(
            read("bad.bin"),
            Err("file: \"bad.bin\" is not valid UTF-8 text".to_string())
        );
        assert_eq!(
            read("big.txt"),
            Err("file: \"big.txt\" is larger than 4 MiB".to_string())
        );
        assert_eq!(
            read("."),
            Err("file: \".\" is not a regular file".to_string())
        );
        err_has("file(\"\")", "file: path must not be empty");
        err_has("file(1)", "expected argument at position 0");
        if Path::new("/dev/zero").exists() {
            err_has("file(\"/dev/zero\")", "is not a regular file");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn format_verbs() {
        assert_eq!(ok_str("format(\"hello %s\", \"world\")"), "hello world");
        assert_eq!(ok_str("format(\"%d items\", 3)"), "3 items");
        assert_eq!(ok_str("format(\"%d\", -42)"), "-42");
        assert_eq!(ok_str("format(\"%d\", \"7\")"), "7");
        assert_eq!(
            ok_str("format(\"%v|%v|%v\", \"a\", 1.5, true)"),
            "a|1.5|true"
        );
        assert_eq!(ok_str("format(\"%v\", [1, \"a\"])"), "[1,\"a\"]");
        assert_eq!(ok_str("format(\"%#v\", \"a\")"), "\"a\"");
        assert_eq!(ok_str("format(\"%v\", null)"), "null");
        assert_eq!(ok_str("format(\"%q\", \"a\\\"b\")"), "\"a\\\"b\"");
        assert_eq!(ok_str("format(\"100%%\")"), "100%");
        assert_eq!(ok_str("format(\"%t\", false)"), "false");
        assert_eq!(
            ok_str("format(\"%5d|%-5d|%05d\", 42, 42, -42)"),
            "   42|42   |-0042"
        );
        assert_eq!(ok_str("format(\"%+d\", 5)"), "+5");
        assert_eq!(
            ok_str("format(\"%x %X %o %b\", 255, 255, 8, 5)"),
            "ff FF 10 101"
        );
        assert_eq!(ok_str("format(\"%#x\", 255)"), "0xff");
        assert_eq!(ok_str("format(\"%.2f\", 3.14159)"), "3.14");
        assert_eq!(ok_str("format(\"%f\", 1)"), "1.000000");
        assert_eq!(ok_str("format(\"%e\", 1500)"), "1.500000e+03");
        assert_eq!(ok_str("format(\"%.1E\", 0.00015)"), "1.5E-04");
        assert_eq!(ok_str("format(\"%g\", 1.5)"), "1.5");
        assert_eq!(ok_str("format(\"%g\", 0.00001)"), "1e-05");
        assert_eq!(ok_str("format(\"%g\", 100)"), "100");
        assert_eq!(ok_str("format(\"%g\", 1000000)"), "1e+06");
        assert_eq!(ok_str("format(\"%.3g\", 3.14159)"), "3.14");
        assert_eq!(ok_str("format(\"%G\", 0.000012)"), "1.2E-05");
        assert_eq!(ok_str("format(\"%.3s\", \"héllo\")"), "hél");
        assert_eq!(
            ok_str("format(\"%6s|%-6s|\", \"ab\", \"ab\")"),
            "    ab|ab    |"
        );
        assert_eq!(ok_str("format(\"%[2]s %[1]s\", \"a\", \"b\")"), "b a");
        assert_eq!(ok_str("format(\"%s\", 12)"), "12");
        assert_eq!(ok_str("format(\"ünï %s\", \"cödé\")"), "ünï cödé");
        assert_eq!(
            ok_str("format(\"%d\", 18446744073709551615)"),
            "18446744073709551615"
        );
    }

    #[test]
    fn format_errors() {
        err_has("format(\"%s %s\", \"a\")", "format: not enough arguments");
        err_has("format(\"%s\", \"a\", \"b\")", "format: too many arguments");
        err_has("format(\"%s\")", "format: not enough arguments");
        err_has("format(\"abc %\")", "format: unterminated format verb");
        err_has("format(\"%y\", 1)", "format: unrecognized format verb 'y'");
        err_has("format(\"%d\", 1.5)", "must be a whole number");
        err_has("format(\"%d\", \"x\")", "unsupported value for \"%d\"");
        err_has("format(\"%s\", [1])", "unsupported value for \"%s\"");
        err_has("format(\"%s\", null)", "unsupported value for \"%s\"");
        err_has("format(\"%t\", 1)", "unsupported value for \"%t\"");
        err_has(
            "format(\"%99999999999999999999999d\", 1)",
            "width or precision",
        );
        err_has("format(\"%5000d\", 1)", "width or precision");
        err_has("format(\"%[0]s\", 1)", "invalid argument index");
        err_has("format(\"%[1s\", 1)", "invalid argument index");
        err_has("format(\"%[3]s\", 1)", "not enough arguments");
        err_has("format(1)", "expected argument at position 0");
    }

    #[test]
    fn join_and_split() {
        assert_eq!(ok_str("join(\", \", [\"a\", \"b\", \"c\"])"), "a, b, c");
        assert_eq!(
            ok_str("join(\"-\", [\"a\"], [\"b\", 1, true])"),
            "a-b-1-true"
        );
        assert_eq!(ok_str("join(\",\", [])"), "");
        err_has("join(\",\")", "join: at least one list is required");
        err_has(
            "join(\",\", [null])",
            "join: element 0 must be a string, got null",
        );
        err_has(
            "join(\",\", [[1]])",
            "join: element 0 must be a string, got list",
        );
        err_has("join(\",\", \"a\")", "expected variadic argument");

        assert_eq!(
            hcl("split(\",\", \"a,b,,c\")"),
            hcl("[\"a\", \"b\", \"\", \"c\"]")
        );
        assert_eq!(hcl("split(\",\", \"\")"), hcl("[\"\"]"));
        assert_eq!(hcl("split(\"\", \"añ\")"), hcl("[\"a\", \"ñ\"]"));
        err_has("split(\",\", 1)", "expected argument at position 1");
    }

    #[test]
    fn lookup_merge_concat() {
        assert_eq!(ok("lookup({ a = 1 }, \"a\")"), Value::from(1));
        assert_eq!(ok("lookup({ a = 1 }, \"b\", 2)"), Value::from(2));
        err_has("lookup({ a = 1 }, \"b\")", "lookup: key \"b\" not found");
        err_has(
            "lookup({}, \"b\", 1, 2)",
            "lookup: expected at most 3 arguments",
        );
        err_has("lookup([1], \"b\")", "expected argument at position 0");

        assert_eq!(
            hcl("merge({ a = 1, b = 1 }, null, { b = 2, c = 3 })"),
            hcl("{ a = 1, b = 2, c = 3 }")
        );
        assert_eq!(hcl("merge()"), hcl("{}"));
        err_has("merge({}, [1])", "expected variadic argument");

        assert_eq!(hcl("concat([1], [], [2, \"a\"])"), hcl("[1, 2, \"a\"]"));
        assert_eq!(hcl("concat()"), hcl("[]"));
        err_has("concat([1], 2)", "expected variadic argument");
    }

    #[test]
    fn length_and_case() {
        assert_eq!(ok("length([1, 2, 3])"), Value::from(3));
        assert_eq!(ok("length({ a = 1 })"), Value::from(1));
        assert_eq!(ok("length(\"héllo\")"), Value::from(5));
        assert_eq!(ok("length(\"\")"), Value::from(0));
        err_has("length(1)", "expected argument at position 0");

        assert_eq!(ok_str("lower(\"HÉllo\")"), "héllo");
        assert_eq!(ok_str("upper(\"héllo\")"), "HÉLLO");
        assert_eq!(ok_str("trimspace(\"  a b \\n\\t\")"), "a b");
        err_has("lower(1)", "expected argument at position 0");
        err_has("upper(true)", "expected argument at position 0");
        err_has("trimspace(null)", "expected argument at position 0");
    }

    #[test]
    fn replace_substrings() {
        assert_eq!(ok_str("replace(\"a-b-c\", \"-\", \"+\")"), "a+b+c");
        assert_eq!(ok_str("replace(\"aaa\", \"aa\", \"b\")"), "ba");
        assert_eq!(ok_str("replace(\"/path/\", \"/\", \"\\\\\")"), "\\path\\");
        assert_eq!(ok_str("replace(\"abc\", \"x\", \"y\")"), "abc");
        err_has(
            "replace(\"abc\", \"/b/\", \"y\")",
            "replace: regular expression",
        );
        err_has("replace(\"abc\", \"b\")", "expected 3 positional arguments");
    }

    #[test]
    fn hashing_and_base64() {
        assert_eq!(
            ok_str("sha256(\"hello\")"),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(ok_str("base64encode(\"héllo\")"), "aMOpbGxv");
        assert_eq!(ok_str("base64decode(\"aMOpbGxv\")"), "héllo");
        assert_eq!(ok_str("base64decode(\"\")"), "");
        err_has("base64decode(\"!!!\")", "base64decode: invalid base64 data");
        err_has(
            "base64decode(\"/w==\")",
            "base64decode: the decoded data is not valid UTF-8",
        );
        err_has("sha256(1)", "expected argument at position 0");
        err_has("base64encode([])", "expected argument at position 0");
    }

    #[test]
    fn json_round_trip() {
        assert_eq!(
            ok_str("jsonencode({ b = [1, 2.5, true, null], a = \"x\\\"y\" })"),
            r#"{"a":"x\"y","b":[1,2.5,true,null]}"#
        );
        assert_eq!(ok_str("jsonencode(\"<&>\")"), "\"<&>\"");
        assert_eq!(
            hcl("jsondecode(\"{\\\"a\\\": [1, -2, 1.5, \\\"s\\\", null, false]}\")"),
            hcl("{ a = [1, -2, 1.5, \"s\", null, false] }")
        );
        assert_eq!(
            ok("jsondecode(\"18446744073709551615\")"),
            Value::Number(Number::from(u64::MAX))
        );
        err_has("jsondecode(\"{\")", "jsondecode: invalid JSON");
        err_has("jsondecode(\"1e999\")", "jsondecode: invalid JSON");
        let deep = format!("jsondecode(\"{}\")", "[".repeat(10_000));
        err_has(&deep, "jsondecode: invalid JSON");
        err_has("jsondecode(1)", "expected argument at position 0");
    }

    #[test]
    fn coalesce_picks_first_non_empty() {
        assert_eq!(ok_str("coalesce(null, \"\", \"a\", \"b\")"), "a");
        assert_eq!(ok("coalesce(null, 1)"), Value::from(1));
        err_has(
            "coalesce(null, \"\")",
            "coalesce: no non-null, non-empty-string arguments",
        );
        err_has("coalesce()", "coalesce: no non-null");
    }

    #[test]
    fn conversions() {
        assert_eq!(ok_str("tostring(\"a\")"), "a");
        assert_eq!(ok_str("tostring(12)"), "12");
        assert_eq!(ok_str("tostring(1.5)"), "1.5");
        assert_eq!(ok_str("tostring(true)"), "true");
        assert_eq!(ok("tostring(null)"), Value::Null);
        err_has("tostring([1])", "tostring: cannot convert list to string");
        err_has("tostring({})", "tostring: cannot convert map to string");

        assert_eq!(ok("tonumber(\"42\")"), Value::from(42));
        assert_eq!(ok("tonumber(\"-42\")"), Value::from(-42));
        assert_eq!(ok("tonumber(\"1.5\")"), hcl("1.5"));
        assert_eq!(ok("tonumber(\"1e3\")"), Value::from(1000));
        assert_eq!(ok("tonumber(7)"), Value::from(7));
        assert_eq!(ok("tonumber(null)"), Value::Null);
        err_has(
            "tonumber(\"abc\")",
            "tonumber: cannot convert \"abc\" to number",
        );
        err_has("tonumber(\"\")", "tonumber: cannot convert");
        err_has("tonumber(\"inf\")", "tonumber: cannot convert");
        err_has("tonumber(\"1e999\")", "tonumber: cannot convert");
        err_has("tonumber(true)", "tonumber: cannot convert bool to number");
    }

    #[test]
    fn contains_keys_values() {
        assert_eq!(ok("contains([1, \"a\"], \"a\")"), Value::Bool(true));
        assert_eq!(ok("contains([1, \"a\"], 2)"), Value::Bool(false));
        assert_eq!(ok("contains([1], 1.0)"), Value::Bool(true));
        err_has(
            "contains(\"abc\", \"a\")",
            "expected argument at position 0",
        );

        assert_eq!(hcl("keys({ b = 1, a = 2 })"), hcl("[\"a\", \"b\"]"));
        assert_eq!(hcl("values({ b = 1, a = 2 })"), hcl("[2, 1]"));
        assert_eq!(hcl("keys({})"), hcl("[]"));
        err_has("keys([1])", "expected argument at position 0");
        err_has("values(\"a\")", "expected argument at position 0");
    }

    #[test]
    fn numbers() {
        assert_eq!(ok("max(1, 5, 3)"), Value::from(5));
        assert_eq!(ok("min(1, -5, 3.5)"), Value::from(-5));
        assert_eq!(ok("max(1.5, 1)"), hcl("1.5"));
        err_has("max()", "max: at least one number is required");
        err_has("min()", "min: at least one number is required");
        err_has("max(1, \"2\")", "expected variadic argument");

        assert_eq!(ok("abs(-3)"), Value::from(3));
        assert_eq!(ok("abs(3)"), Value::from(3));
        assert_eq!(ok("abs(-1.5)"), hcl("1.5"));
        assert_eq!(ok("abs(0)"), Value::from(0));
        assert_eq!(
            ok("abs(-9223372036854775808)"),
            Value::Number(Number::from(9_223_372_036_854_775_808u64))
        );
        err_has("abs(\"1\")", "expected argument at position 0");
    }

    #[test]
    fn odd_argument_shapes_never_panic() {
        let inputs = [
            vec![],
            vec![Value::Null],
            vec![
                Value::from(1),
                Value::from(2),
                Value::from(3),
                Value::from(4),
            ],
            vec![Value::from("x"), Value::Array(vec![Value::Null])],
            vec![Value::Object(Map::new()), Value::Bool(true)],
        ];
        for (name, def) in definitions() {
            for input in &inputs {
                let mut ctx = Context::new();
                ctx.declare_func(name, def.clone());
                let args: Vec<String> = input.iter().map(|v| v.to_string()).collect();
                let expr = format!("{name}({})", args.join(", "));
                let parsed: hcl::Expression = match expr.parse() {
                    Ok(p) => p,
                    Err(_) => continue,
                };
                let _ = parsed.evaluate(&ctx);
            }
        }
    }
}
