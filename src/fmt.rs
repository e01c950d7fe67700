//! `berth fmt`: canonical formatting of HCL source that keeps every comment.
//!
//! `hcl::format` re-renders a parsed document and drops comments, so this module works on the
//! original text instead, guided by the syntax tree from `hcl-edit` (whose spans and decor
//! point back into that text):
//!
//! * The source is parsed first; invalid input is reported as [`FmtError::Parse`] with the
//!   line and column of the problem.
//! * The output is then rebuilt structure by structure. Block headers are re-assembled from the
//!   identifier and the labels' source text (`ident "a" b {`). Attributes become
//!   `key = <value source>`, with `=` aligned across each run of consecutive single-line
//!   attributes, and trailing comments aligned across consecutive commented attributes of a
//!   run. Comment lines and blank lines between structures come from the decor and are
//!   re-indented; runs of blank lines collapse to one, and blank lines directly after `{`,
//!   before `}` and at either end of the file are dropped.
//! * Attribute values are kept as written, except for the indentation of their continuation
//!   lines, which follows bracket nesting like `terraform fmt` (one level per line that opens
//!   brackets, whatever their number), and `=` alignment of `key = value` lines inside
//!   multi-line objects. A small lexer over the value text tells which lines begin inside a
//!   heredoc, a quoted string or a `/* */` comment: those lines are left untouched (heredoc
//!   lines byte for byte, the others only lose trailing whitespace, and not even that when
//!   the line ends inside a string).
//! * As a safety net the result is parsed again and compared with the input, ignoring
//!   whitespace and comments; a mismatch is reported as an error instead of returning output
//!   that would change the configuration's meaning.
//!
//! Known differences from `terraform fmt`: spacing *inside* expressions (`a+b`, `[1,2]`) is kept
//! as written; trailing comments are aligned only across attributes; a line like `"b"]` stays
//! at the inner level (only *leading* closing brackets dedent a line); blank lines after `{` and
//! before `}` are removed; CRLF line endings become LF (also inside heredocs) and a leading
//! byte order mark is dropped.

use std::ops::Range;

use hcl_edit::parser::parse_body;
use hcl_edit::structure::{Attribute, Block, Body, Structure};
use hcl_edit::{Decorate, Span};

/// Errors from [`format_source`].
#[derive(Debug, thiserror::Error)]
pub enum FmtError {
    /// The input is not valid HCL (or, should the formatter ever misbehave, formatting it would
    /// change its meaning; `line` and `column` are 0 then).
    #[error("{message}")]
    Parse {
        /// One-based line of the error.
        line: usize,
        /// One-based column of the error.
        column: usize,
        /// What went wrong.
        message: String,
    },
}

impl FmtError {
    fn internal(message: &str) -> FmtError {
        FmtError::Parse {
            line: 0,
            column: 0,
            message: format!("internal formatter error: {message}; please report this"),
        }
    }
}

/// Formats HCL source the way `terraform fmt` does: two-space indentation per block level, one
/// space around `=`, `=` aligned within each run of consecutive single-line attributes (a blank
/// line, a comment line or a block ends the run), one space between block labels and before
/// `{`, no trailing whitespace, one newline at end of file, at most one consecutive blank line.
/// Comments (`#`, `//`, `/* */`, including trailing ones) are kept. Formatting formatted output
/// gives the same output (idempotent).
///
/// # Errors
///
/// [`FmtError::Parse`] when `source` is not valid HCL.
pub fn format_source(source: &str) -> Result<String, FmtError> {
    let (source, bom) = match source.strip_prefix('\u{feff}') {
        Some(rest) => (rest, true),
        None => (source, false),
    };
    let source = source.replace("\r\n", "\n");
    let body = parse_body(&source).map_err(|err| {
        let line = err.location().line();
        FmtError::Parse {
            line,
            // Columns count characters of the original text, byte order mark included.
            column: err.location().column() + usize::from(bom && line == 1),
            message: err.message().to_string(),
        }
    })?;
    let formatter = Formatter { src: &source };
    let lines = formatter.body_lines(&body, 0)?;
    let output = render(lines);

    // Safety net: the formatted document must mean exactly what the input meant.
    if let Ok(before) = hcl::parse(&source) {
        match hcl::parse(&output) {
            Ok(after) if after == before => {}
            _ => return Err(FmtError::internal("formatting would change the document")),
        }
    }
    Ok(output)
}

/// One output line.
#[derive(Debug, Clone)]
struct Line {
    text: String,
    /// Part of a heredoc, string or block comment: never re-indented, stripped or collapsed.
    protected: bool,
}

impl Line {
    fn code(text: String) -> Line {
        Line {
            text,
            protected: false,
        }
    }

    fn protected(text: String) -> Line {
        Line {
            text,
            protected: true,
        }
    }

    fn blank() -> Line {
        Line::code(String::new())
    }

    fn is_blank(&self) -> bool {
        !self.protected && self.text.is_empty()
    }
}

/// Joins lines, collapsing runs of blank lines; adds the final newline.
fn render(lines: Vec<Line>) -> String {
    let mut out = String::new();
    let mut previous_blank = true;
    for line in lines {
        let blank = line.is_blank();
        if blank && previous_blank {
            continue;
        }
        previous_blank = blank;
        out.push_str(&line.text);
        out.push('\n');
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    if out == "\n" {
        out.clear();
    }
    out
}

/// Removes unprotected blank lines at both ends.
fn trim_blank_lines(lines: &mut Vec<Line>) {
    while lines.last().is_some_and(Line::is_blank) {
        lines.pop();
    }
    let leading = lines.iter().take_while(|l| l.is_blank()).count();
    lines.drain(..leading);
}

fn indent(depth: usize) -> String {
    "  ".repeat(depth)
}

fn width(text: &str) -> usize {
    text.chars().count()
}

fn pad_to(text: &mut String, target: usize) {
    let fill = target.saturating_sub(width(text));
    text.extend(std::iter::repeat_n(' ', fill));
}

/// Tracks whether a position in comment/whitespace text is inside a `/* */` comment.
fn comment_state_after(text: &str, mut in_comment: bool) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let pair = bytes.get(i..i + 2);
        if in_comment {
            if pair == Some(b"*/") {
                in_comment = false;
                i += 2;
            } else {
                i += 1;
            }
        } else if bytes[i] == b'#' || pair == Some(b"//") {
            break;
        } else if pair == Some(b"/*") {
            in_comment = true;
            i += 2;
        } else {
            i += 1;
        }
    }
    in_comment
}

/// Comment and blank lines from decor text, re-indented to `depth`.
///
/// All segments but the last end with a newline and become lines; the last segment is what
/// precedes the next token on its line (usually indentation) and is returned separately when it
/// holds a comment.
fn decor_lines(text: &str, depth: usize, lines: &mut Vec<Line>) -> Option<String> {
    let mut in_comment = false;
    let mut segments = text.split('\n').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        let started_in_comment = in_comment;
        in_comment = comment_state_after(segment, in_comment);
        if last {
            if started_in_comment {
                // The end of a multi-line comment: keep it as written on a line of its own, so
                // the structure that followed it gets normal indentation.
                lines.push(Line::protected(segment.trim_end().to_string()));
                return None;
            }
            let trimmed = segment.trim();
            return (!trimmed.is_empty()).then(|| trimmed.to_string());
        }
        if started_in_comment {
            lines.push(Line::protected(segment.trim_end().to_string()));
        } else if segment.trim().is_empty() {
            lines.push(Line::blank());
        } else {
            lines.push(Line::code(format!("{}{}", indent(depth), segment.trim())));
        }
    }
    None
}

/// The text of optional decor.
fn raw(decor: Option<&hcl_edit::RawString>) -> &str {
    decor.map_or("", |text| text)
}

/// A comment sitting in whitespace decor on a single line (e.g. between a key and `=`).
fn inline_decor(decor: Option<&hcl_edit::RawString>) -> Option<String> {
    let text = decor?.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// Where a line of an expression starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineStart {
    Code,
    Heredoc,
    Quoted,
    Comment,
}

/// The lexical facts about one line of an expression that formatting needs.
#[derive(Debug, Clone, Copy)]
struct LineScan {
    start: LineStart,
    /// Closing brackets before any other token on the line.
    leading_closers: usize,
    /// Net change in bracket nesting over the line (outside strings and comments).
    net: isize,
    /// Byte offset of the line's first top-level `=`, and the nesting change before it.
    assign: Option<(usize, isize)>,
    /// The line ends inside a quoted string, so its trailing whitespace is content.
    ends_quoted: bool,
}

#[derive(Debug, Clone, Copy)]
enum Ctx {
    /// Inside a quoted string.
    Quoted,
    /// Inside `${ }` or `%{ }` in a quoted string, with the number of open brackets.
    Interp(usize),
}

/// A line-by-line lexer for expression text: strings, heredocs, comments and brackets.
#[derive(Debug, Default)]
struct Lexer {
    stack: Vec<Ctx>,
    /// The marker of the heredoc being read, and whether its first content line is still due.
    heredoc: Option<(String, bool)>,
    in_comment: bool,
}

impl Lexer {
    fn scan_line(&mut self, line: &str) -> LineScan {
        let start = if self.heredoc.is_some() {
            LineStart::Heredoc
        } else if self.in_comment {
            LineStart::Comment
        } else if self.stack.is_empty() {
            LineStart::Code
        } else {
            LineStart::Quoted
        };
        let mut scan = LineScan {
            start,
            leading_closers: 0,
            net: 0,
            assign: None,
            ends_quoted: false,
        };
        let mut i = 0;
        if let Some((marker, first_line)) = &mut self.heredoc {
            // Like hcl-edit: after the first content line, the heredoc ends at a line holding
            // optional blanks and the marker (not followed by an identifier character); code
            // may follow on that line. (An empty heredoc, whose marker is the first line, is
            // left as a protected line.)
            let content = line.trim_start_matches([' ', '\t']);
            let after = content.strip_prefix(marker.as_str());
            let ends = !*first_line
                && after.is_some_and(|rest| !rest.chars().next().is_some_and(is_ident_char));
            *first_line = false;
            if !ends {
                return scan;
            }
            i = line.len() - content.len() + marker.len();
            self.heredoc = None;
        }

        let bytes = line.as_bytes();
        let at = |i: usize, s: &[u8]| bytes.get(i..i + s.len()) == Some(s);
        let mut seen_token = i > 0;
        let mut pending_heredoc = None;
        while i < bytes.len() {
            let b = bytes[i];
            if self.in_comment {
                if at(i, b"*/") {
                    self.in_comment = false;
                    i += 2;
                } else {
                    i += 1;
                }
                continue;
            }
            if let Some(Ctx::Quoted) = self.stack.last() {
                if b == b'\\' {
                    i += 2;
                } else if at(i, b"$${") || at(i, b"%%{") {
                    i += 3;
                } else if at(i, b"${") || at(i, b"%{") {
                    self.stack.push(Ctx::Interp(0));
                    i += 2;
                } else {
                    if b == b'"' {
                        self.stack.pop();
                    }
                    i += 1;
                }
                continue;
            }
            let top = self.stack.is_empty();
            match b {
                b'"' => {
                    self.stack.push(Ctx::Quoted);
                    seen_token = true;
                }
                b'#' => break,
                b'/' if at(i, b"//") => break,
                b'/' if at(i, b"/*") => {
                    self.in_comment = true;
                    i += 1;
                }
                b'<' if at(i, b"<<") => {
                    let rest = line.get(i + 2..).unwrap_or_default();
                    let rest = rest.strip_prefix('-').unwrap_or(rest);
                    let marker: String = rest.chars().take_while(|c| is_ident_char(*c)).collect();
                    seen_token = true;
                    if !marker.is_empty() {
                        pending_heredoc = Some((marker, true));
                        break;
                    }
                    i += 1;
                }
                b'(' | b'[' | b'{' => {
                    match self.stack.last_mut() {
                        Some(Ctx::Interp(depth)) => *depth += 1,
                        _ if top => scan.net += 1,
                        _ => {}
                    }
                    seen_token = true;
                }
                b')' | b']' | b'}' => match self.stack.last_mut() {
                    Some(Ctx::Interp(0)) => {
                        self.stack.pop();
                    }
                    Some(Ctx::Interp(depth)) => *depth -= 1,
                    _ => {
                        scan.net -= 1;
                        if !seen_token {
                            scan.leading_closers += 1;
                        }
                    }
                },
                b'=' => {
                    let prev = i.checked_sub(1).and_then(|p| bytes.get(p)).copied();
                    let next = bytes.get(i + 1).copied();
                    let lone = !matches!(prev, Some(b'=' | b'!' | b'<' | b'>'))
                        && !matches!(next, Some(b'=' | b'>'));
                    if top && lone && scan.assign.is_none() {
                        scan.assign = Some((i, scan.net));
                    }
                    seen_token = true;
                }
                _ if b.is_ascii_whitespace() => {}
                _ => seen_token = true,
            }
            i += 1;
        }
        if pending_heredoc.is_some() {
            self.heredoc = pending_heredoc;
        }
        scan.ends_quoted = !self.stack.is_empty();
        scan
    }
}

/// Whether `c` may continue an HCL identifier (and so a heredoc marker).
fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

/// Bracket-nesting indentation levels, `terraform fmt` style: a line that opens brackets adds
/// one level however many it opens; closing them all removes that level again.
#[derive(Debug, Default)]
struct IndentStack(Vec<usize>);

impl IndentStack {
    /// Closes `count` brackets; returns whether the last entry touched survived partially.
    fn close(&mut self, mut count: usize) -> bool {
        while count > 0 {
            let Some(top) = self.0.last_mut() else { break };
            if count >= *top {
                count -= *top;
                self.0.pop();
            } else {
                *top -= count;
                return true;
            }
        }
        false
    }

    /// Applies a line's net bracket change when its start is not re-indented.
    fn apply(&mut self, net: isize) {
        match usize::try_from(net) {
            Ok(0) => {}
            Ok(open) => self.0.push(open),
            Err(_) => {
                self.close(net.unsigned_abs());
            }
        }
    }

    /// Processes a re-indented line and returns its indentation level. Leading closing brackets
    /// dedent the line by every level they touch; brackets the rest of the line opens after
    /// partially closing a level (`}, {`) re-open that same level.
    fn code_line(&mut self, leading_closers: usize, net: isize) -> usize {
        let mut remaining = leading_closers;
        let mut touched = 0;
        for entry in self.0.iter().rev() {
            if remaining == 0 {
                break;
            }
            touched += 1;
            remaining = remaining.saturating_sub(*entry);
        }
        let level = self.0.len() - touched;
        let partial = self.close(leading_closers);
        let rest = net.saturating_add(isize::try_from(leading_closers).unwrap_or(0));
        match usize::try_from(rest) {
            Ok(0) => {}
            Ok(open) => match self.0.last_mut() {
                Some(top) if partial => *top += open,
                _ => self.0.push(open),
            },
            Err(_) => {
                self.close(rest.unsigned_abs());
            }
        }
        level
    }
}

/// An attribute value laid out over lines.
#[derive(Debug)]
struct Value {
    /// The first line, placed after `key = `.
    first: String,
    /// Continuation lines, fully indented.
    rest: Vec<Line>,
    /// Whether the first line leaves no bracket open (it may then join an `=` alignment run).
    first_balanced: bool,
}

/// Lays out expression text whose first line continues a line at `depth`.
fn layout_value(text: &str, depth: usize) -> Value {
    let mut lexer = Lexer::default();
    let mut stack = IndentStack::default();
    let mut raw_lines = text.split('\n');
    let first_raw = raw_lines.next().unwrap_or_default();
    let first_scan = lexer.scan_line(first_raw);
    stack.apply(first_scan.net);

    // Continuation lines, each with the byte offset of its `=` if it may join an alignment run.
    let mut rest: Vec<(Line, Option<usize>)> = Vec::new();
    for raw in raw_lines {
        let scan = lexer.scan_line(raw);
        let line = match scan.start {
            LineStart::Heredoc => {
                stack.apply(scan.net);
                Line::protected(raw.to_string())
            }
            LineStart::Quoted | LineStart::Comment => {
                stack.apply(scan.net);
                Line::protected(trim_end_unless_quoted(raw, &scan).to_string())
            }
            LineStart::Code => {
                let level = stack.code_line(scan.leading_closers, scan.net);
                let content = trim_end_unless_quoted(raw, &scan).trim_start();
                if content.is_empty() {
                    Line::blank()
                } else {
                    Line::code(format!("{}{content}", indent(depth + level)))
                }
            }
        };

        // An object item `key = value` that closes every bracket it opens.
        let offset = raw.len() - raw.trim_start().len();
        let assign = match scan.assign {
            Some((pos, net_before))
                if scan.start == LineStart::Code
                    && scan.leading_closers == 0
                    && scan.net == net_before
                    && pos > offset =>
            {
                let indent_len = line.text.len().checked_sub(raw.trim().len());
                indent_len
                    .map(|indent_len| indent_len + (pos - offset))
                    .filter(|_| !scan.ends_quoted)
            }
            _ => None,
        };
        rest.push((line, assign));
    }
    align_object_items(&mut rest);

    Value {
        first: trim_end_unless_quoted(first_raw, &first_scan).to_string(),
        rest: rest.into_iter().map(|(line, _)| line).collect(),
        first_balanced: first_scan.net == 0,
    }
}

/// Strips trailing whitespace unless the line ends inside a quoted string (where it is content,
/// e.g. in a template directive spanning lines).
fn trim_end_unless_quoted<'a>(raw: &'a str, scan: &LineScan) -> &'a str {
    if scan.ends_quoted {
        raw
    } else {
        raw.trim_end()
    }
}

/// Aligns `=` across runs of consecutive `key = value` lines (byte offset of `=` given).
fn align_object_items(lines: &mut [(Line, Option<usize>)]) {
    let mut start = 0;
    while start < lines.len() {
        let run = lines[start..]
            .iter()
            .take_while(|(_, assign)| assign.is_some())
            .count();
        if run == 0 {
            start += 1;
            continue;
        }
        let items = &mut lines[start..start + run];
        let split = |line: &Line, pos: usize| -> Option<(String, String)> {
            let lead = line.text.get(..pos)?.trim_end().to_string();
            let value = line.text.get(pos + 1..)?.trim_start().to_string();
            Some((lead, value))
        };
        let parts: Vec<Option<(String, String)>> = items
            .iter()
            .map(|(line, assign)| assign.and_then(|pos| split(line, pos)))
            .collect();
        let lead_width = parts
            .iter()
            .flatten()
            .map(|(lead, _)| width(lead))
            .max()
            .unwrap_or(0);
        for ((line, _), part) in items.iter_mut().zip(parts) {
            if let Some((mut lead, value)) = part {
                pad_to(&mut lead, lead_width);
                line.text = if value.is_empty() {
                    format!("{lead} =")
                } else {
                    format!("{lead} = {value}")
                };
            }
        }
        start += run;
    }
}

/// A laid-out attribute, before alignment.
#[derive(Debug)]
struct AttrLayout {
    /// Comment lines and blank lines before the attribute.
    pre: Vec<Line>,
    /// Everything before `=` (key, and any inline comment around it).
    lead: String,
    value: Value,
    /// Trailing comment.
    comment: Option<String>,
}

impl AttrLayout {
    fn single_line(&self) -> bool {
        self.value.rest.is_empty()
    }
}

/// A laid-out structure of a body.
#[derive(Debug)]
enum Item {
    Attr(AttrLayout),
    Other(Vec<Line>),
}

struct Formatter<'s> {
    src: &'s str,
}

impl Formatter<'_> {
    fn text(&self, span: Option<Range<usize>>) -> Result<&str, FmtError> {
        span.and_then(|span| self.src.get(span))
            .ok_or_else(|| FmtError::internal("missing source span"))
    }

    /// All lines of a body at `depth`, including its trailing comments.
    fn body_lines(&self, body: &Body, depth: usize) -> Result<Vec<Line>, FmtError> {
        let mut items = Vec::new();
        for structure in body.iter() {
            let mut pre = Vec::new();
            let prefix = raw(structure.decor().prefix());
            let inline = decor_lines(prefix, depth, &mut pre);
            match structure {
                Structure::Attribute(attr) => {
                    let mut layout = self.attribute(attr, depth, inline)?;
                    layout.pre = pre;
                    items.push(Item::Attr(layout));
                }
                Structure::Block(block) => {
                    pre.extend(self.block(block, depth, inline)?);
                    items.push(Item::Other(pre));
                }
            }
        }

        let mut lines = Vec::new();
        emit_items(items, depth, &mut lines);
        let suffix = raw(body.decor().suffix());
        if let Some(last) = decor_lines(suffix, depth, &mut lines) {
            lines.push(Line::code(format!("{}{last}", indent(depth))));
        }
        trim_blank_lines(&mut lines);
        Ok(lines)
    }

    fn attribute(
        &self,
        attr: &Attribute,
        depth: usize,
        inline: Option<String>,
    ) -> Result<AttrLayout, FmtError> {
        let key_span = attr
            .key
            .span()
            .ok_or_else(|| FmtError::internal("missing key span"))?;
        let attr_span = attr
            .span()
            .ok_or_else(|| FmtError::internal("missing attribute span"))?;
        let key_suffix = attr.key.decor().suffix();
        let eq = key_span.end + key_suffix.map_or(0, |s| s.len());
        if self.src.get(eq..=eq) != Some("=") {
            return Err(FmtError::internal("attribute without `=`"));
        }
        let value_text = self.text(Some(eq + 1..attr_span.end))?.trim();

        let mut lead = inline.map(|c| c + " ").unwrap_or_default();
        lead.push_str(attr.key.as_str());
        if let Some(comment) = inline_decor(key_suffix) {
            lead.push(' ');
            lead.push_str(&comment);
        }
        Ok(AttrLayout {
            pre: Vec::new(),
            lead,
            value: layout_value(value_text, depth),
            comment: inline_decor(attr.decor().suffix()),
        })
    }

    fn block(
        &self,
        block: &Block,
        depth: usize,
        inline: Option<String>,
    ) -> Result<Vec<Line>, FmtError> {
        let mut header = indent(depth);
        if let Some(comment) = inline {
            header.push_str(&comment);
            header.push(' ');
        }
        header.push_str(block.ident.as_str());
        if let Some(comment) = inline_decor(block.ident.decor().suffix()) {
            header.push(' ');
            header.push_str(&comment);
        }
        for label in &block.labels {
            header.push(' ');
            header.push_str(self.text(label.span())?);
            if let Some(comment) = inline_decor(label.decor().suffix()) {
                header.push(' ');
                header.push_str(&comment);
            }
        }
        let trailing = inline_decor(block.decor().suffix())
            .map(|c| format!(" {c}"))
            .unwrap_or_default();

        let body = &block.body;
        if body.prefer_oneline() {
            return self.oneline_block(header, body, depth, &trailing);
        }

        header.push_str(" {");
        if let Some(comment) = inline_decor(body.decor().prefix()) {
            header.push(' ');
            header.push_str(&comment);
        }
        let mut lines = vec![Line::code(header)];
        lines.extend(self.body_lines(body, depth + 1)?);
        lines.push(Line::code(format!("{}}}{trailing}", indent(depth))));
        Ok(lines)
    }

    /// A block written on one line: `ident "label" { key = value }` or `ident {}`.
    fn oneline_block(
        &self,
        mut header: String,
        body: &Body,
        depth: usize,
        trailing: &str,
    ) -> Result<Vec<Line>, FmtError> {
        let closing_comment = inline_decor(body.decor().suffix());
        let attr = body.iter().find_map(Structure::as_attribute);
        let Some(attr) = attr else {
            header.push_str(" {");
            if let Some(comment) = closing_comment {
                header.push(' ');
                header.push_str(&comment);
                header.push(' ');
            }
            header.push('}');
            header.push_str(trailing);
            return Ok(vec![Line::code(header)]);
        };
        let layout = self.attribute(attr, depth, inline_decor(attr.decor().prefix()))?;
        header.push_str(" { ");
        header.push_str(&layout.lead);
        header.push_str(" = ");
        header.push_str(&layout.value.first);
        let mut lines = vec![Line::code(header)];
        lines.extend(layout.value.rest);
        let mut close = String::new();
        for comment in [layout.comment, closing_comment].into_iter().flatten() {
            close.push(' ');
            close.push_str(&comment);
        }
        close.push_str(" }");
        close.push_str(trailing);
        if let Some(last) = lines.last_mut() {
            last.text.push_str(&close);
        }
        Ok(lines)
    }
}

/// Emits laid-out structures, aligning `=` and trailing comments within runs of attributes.
fn emit_items(items: Vec<Item>, depth: usize, lines: &mut Vec<Line>) {
    let mut items = items.into_iter().peekable();
    while let Some(item) = items.next() {
        let attr = match item {
            Item::Other(other) => {
                lines.extend(other);
                continue;
            }
            Item::Attr(attr) => attr,
        };
        if !attr.value.first_balanced {
            lines.extend(attr.pre.iter().cloned());
            emit_attr(attr, None, depth, lines);
            continue;
        }
        // A run: attributes on consecutive lines whose first line is balanced; an attribute
        // spanning several lines ends the run.
        let mut run = vec![attr];
        while run.last().is_some_and(AttrLayout::single_line) {
            let next = items.next_if(|item| {
                matches!(item, Item::Attr(next) if next.pre.is_empty() && next.value.first_balanced)
            });
            match next {
                Some(Item::Attr(next)) => run.push(next),
                Some(Item::Other(other)) => {
                    // Not produced by the condition above; kept so nothing can be lost.
                    emit_run(std::mem::take(&mut run), depth, lines);
                    lines.extend(other);
                }
                None => break,
            }
        }
        emit_run(run, depth, lines);
    }
}

fn emit_run(run: Vec<AttrLayout>, depth: usize, lines: &mut Vec<Line>) {
    let lead_width = run.iter().map(|a| width(&a.lead)).max().unwrap_or(0);
    // Trailing comments of consecutive single-line attributes line up too.
    let code_width = |a: &AttrLayout| lead_width + 3 + width(&a.value.first);
    let mut comment_columns = vec![None; run.len()];
    let mut i = 0;
    while i < run.len() {
        let len = run[i..]
            .iter()
            .take_while(|a| a.comment.is_some() && a.single_line())
            .count();
        if len == 0 {
            i += 1;
            continue;
        }
        let column = run[i..i + len].iter().map(code_width).max().unwrap_or(0) + 1;
        for slot in &mut comment_columns[i..i + len] {
            *slot = Some(column);
        }
        i += len;
    }
    for (attr, column) in run.into_iter().zip(comment_columns) {
        lines.extend(attr.pre.iter().cloned());
        emit_attr(attr, Some((lead_width, column)), depth, lines);
    }
}

/// Emits one attribute; `align` holds the lead width and the trailing comment column.
fn emit_attr(
    attr: AttrLayout,
    align: Option<(usize, Option<usize>)>,
    depth: usize,
    lines: &mut Vec<Line>,
) {
    let mut first = attr.lead;
    if let Some((lead_width, _)) = align {
        pad_to(&mut first, lead_width);
    }
    first.push_str(" = ");
    first.push_str(&attr.value.first);
    let mut all = vec![Line::code(format!("{}{first}", indent(depth)))];
    all.extend(attr.value.rest);
    if let (Some(comment), Some(last)) = (attr.comment, all.last_mut()) {
        match align.and_then(|(_, column)| column) {
            Some(column) => {
                pad_to(&mut last.text, depth * 2 + column);
            }
            None => last.text.push(' '),
        }
        last.text.push_str(&comment);
    }
    lines.extend(all);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn fmt(input: &str) -> String {
        match format_source(input) {
            Ok(out) => {
                let again = format_source(&out).unwrap_or_else(|e| panic!("reformat: {e}"));
                assert_eq!(again, out, "formatting is not idempotent for:\n{input}");
                out
            }
            Err(e) => panic!("format failed: {e:?}"),
        }
    }

    #[track_caller]
    fn check(input: &str, expected: &str) {
        let out = fmt(input);
        assert_eq!(
            out, expected,
            "\n--- got ---\n{out}\n--- expected ---\n{expected}"
        );
    }

    #[test]
    fn aligns_attributes() {
        check(
            "a = 1\nlong_name=2\nbb    =   \"x\"\n",
            "a         = 1\nlong_name = 2\nbb        = \"x\"\n",
        );
    }

    #[test]
    fn blank_line_and_comment_end_alignment_run() {
        check(
            "a = 1\nbbb = 2\n\ncccc = 3\nd = 4\n# note\neeeee = 5\nf = 6\n",
            "a   = 1\nbbb = 2\n\ncccc = 3\nd    = 4\n# note\neeeee = 5\nf     = 6\n",
        );
    }

    #[test]
    fn nested_blocks() {
        check(
            "resource   \"docker_container\"    web{\nimage=\"nginx\"\n    ports {\n internal = 80\nexternal=8080\n}\n}\n",
            "resource \"docker_container\" web {\n  image = \"nginx\"\n  ports {\n    internal = 80\n    external = 8080\n  }\n}\n",
        );
    }

    #[test]
    fn block_ends_alignment_run() {
        check(
            "x {\na = 1\ninner {}\nlonger = 2\nb = 3\n}\n",
            "x {\n  a = 1\n  inner {}\n  longer = 2\n  b      = 3\n}\n",
        );
    }

    #[test]
    fn keeps_comments() {
        check(
            "# leading hash\n// leading slashes\n/* block */\nhost \"a\" {   # after brace\n     # inside\n  addr = \"10.0.0.1\" # trailing\n  port = 22 // other trailing\n    /* before close */\n}  # after close\n# end of file\n",
            "# leading hash\n// leading slashes\n/* block */\nhost \"a\" { # after brace\n  # inside\n  addr = \"10.0.0.1\" # trailing\n  port = 22         // other trailing\n  /* before close */\n} # after close\n# end of file\n",
        );
    }

    #[test]
    fn multi_line_block_comment_kept_verbatim() {
        check(
            "x {\n      /* first\n   keep   this\n      */\n  a = 1\n}\n",
            "x {\n  /* first\n   keep   this\n      */\n  a = 1\n}\n",
        );
    }

    #[test]
    fn multi_line_comment_before_structure_on_same_line() {
        check(
            "x {\n  /* a\n     b */ y = 1\n  zz = 2\n}\n",
            "x {\n  /* a\n     b */\n  y  = 1\n  zz = 2\n}\n",
        );
    }

    #[test]
    fn inline_comments_kept() {
        check(
            "a /* k */ = /* v */ 1\nb \"l\" /* c */ {\n}\n",
            "a /* k */ = /* v */ 1\nb \"l\" /* c */ {\n}\n",
        );
    }

    #[test]
    fn heredoc_untouched() {
        let input = "x {\n      script = <<EOT\n  keep   this  \n\n\n\tand this\nEOT\n   other = 1\n  text = <<-EOT\n      indented\n    EOT\n}\n";
        let expected = "x {\n  script = <<EOT\n  keep   this  \n\n\n\tand this\nEOT\n  other = 1\n  text  = <<-EOT\n      indented\n    EOT\n}\n";
        check(input, expected);
    }

    #[test]
    fn code_after_heredoc_marker() {
        check(
            "x {\na = jsonencode(<<EOT\n  { \"k\": [ }\nEOT\n)\nb = [<<EOT\nin [\n  EOT\n, 1]\nc = 1\n}\n",
            "x {\n  a = jsonencode(<<EOT\n  { \"k\": [ }\nEOT\n  )\n  b = [<<EOT\nin [\n  EOT\n    , 1]\n  c = 1\n}\n",
        );
        check(
            "a = [<<EOT\nx\nEOT\n  ]\nbb = 2\n",
            "a = [<<EOT\nx\nEOT\n]\nbb = 2\n",
        );
        check(
            "a = [<<EOT\nx\n  EOT]\nb = {\n c = 1\n }\n",
            "a = [<<EOT\nx\n  EOT]\nb = {\n  c = 1\n}\n",
        );
        // The first content line never ends a heredoc, even when it starts with the marker.
        check(
            "x {\na = <<-EOT\n   EOT more {\n  EOT\nb = [\n1]\n}\n",
            "x {\n  a = <<-EOT\n   EOT more {\n  EOT\n  b = [\n    1]\n}\n",
        );
    }

    #[test]
    fn whitespace_inside_multi_line_templates_kept() {
        check(
            "a {\n    t = \"%{ for x in [1, 2] \n}${x}%{ endfor }\"  \n}\n",
            "a {\n  t = \"%{ for x in [1, 2] \n}${x}%{ endfor }\"\n}\n",
        );
    }

    #[test]
    fn multi_line_list() {
        check(
            "x {\nports = [\n80,\n      443, # https\n]\nsingle = 1\n}\n",
            "x {\n  ports = [\n    80,\n    443, # https\n  ]\n  single = 1\n}\n",
        );
    }

    #[test]
    fn nested_collections() {
        check(
            "tags = {\nName = \"web\"\n  Environment = \"prod\"\n nested = {\n a = [\n1,\n ]\n}\n}\n",
            "tags = {\n  Name        = \"web\"\n  Environment = \"prod\"\n  nested = {\n    a = [\n      1,\n    ]\n  }\n}\n",
        );
    }

    #[test]
    fn several_brackets_on_one_line_indent_once() {
        check(
            "a = merge(local.base, {\nb = 1\n})\nc = [{\nx = 1\n}, {\nx = 2\n}]\nd = foo(a, [\n1,\n  ], b)\n",
            "a = merge(local.base, {\n  b = 1\n})\nc = [{\n  x = 1\n}, {\n  x = 2\n}]\nd = foo(a, [\n  1,\n], b)\n",
        );
    }

    #[test]
    fn multi_line_attribute_ends_run() {
        check(
            "a = 1\nlist = [\n1\n]\nbbbbbb = 2\nc = 3\n",
            "a = 1\nlist = [\n  1\n]\nbbbbbb = 2\nc      = 3\n",
        );
    }

    #[test]
    fn strings_with_brackets_and_comment_markers() {
        check(
            "a = \"[{ # not a comment\"\nbb = \"${foo(\"}\")}\"\nc = [\n\"]\",\n]\n",
            "a  = \"[{ # not a comment\"\nbb = \"${foo(\"}\")}\"\nc = [\n  \"]\",\n]\n",
        );
    }

    #[test]
    fn blank_lines_collapse_and_trim() {
        check(
            "\n\n\na = 1\n\n\n\nb = 2\nx {\n\n\n  c = 3\n\n\n}\n\n\n",
            "a = 1\n\nb = 2\nx {\n  c = 3\n}\n",
        );
    }

    #[test]
    fn trailing_whitespace_and_final_newline() {
        check(
            "a = 1   \t\nb {   \n  c = 2  \n}  ",
            "a = 1\nb {\n  c = 2\n}\n",
        );
    }

    #[test]
    fn oneline_blocks() {
        check(
            "a   \"x\"   {   }\nb {   c   =   1   }\nd {}\n",
            "a \"x\" {}\nb { c = 1 }\nd {}\n",
        );
    }

    #[test]
    fn crlf_becomes_lf() {
        check(
            "a = 1\r\nb {\r\n  c = 2\r\n}\r\n",
            "a = 1\nb {\n  c = 2\n}\n",
        );
    }

    #[test]
    fn empty_and_comment_only_inputs() {
        check("", "");
        check("\n\n  \n", "");
        check("# only a comment", "# only a comment\n");
        check("\u{feff}a   = 1\n", "a = 1\n");
    }

    #[test]
    fn unicode_keys_and_values() {
        check(
            "ä = \"ü\"\nlonger = \"日本\" # ç\nb = 1 # x\n",
            "ä      = \"ü\"\nlonger = \"日本\" # ç\nb      = 1    # x\n",
        );
    }

    #[test]
    fn conditional_and_for_expressions() {
        check(
            "a = [for s in var.list : upper(s) if s != \"\"]\nbb = var.x == 1 ? \"a\" : \"b\"\nm = {\n for k, v in var.m : k => v\n}\n",
            "a  = [for s in var.list : upper(s) if s != \"\"]\nbb = var.x == 1 ? \"a\" : \"b\"\nm = {\n  for k, v in var.m : k => v\n}\n",
        );
    }

    #[test]
    fn idempotent_over_fixtures() {
        let inputs = [
            "a = 1\nlong_name=2\n",
            "resource \"a\" \"b\" {\n  x = [\n    1,\n  ]\n  y = <<EOT\nhi\nEOT\n}\n",
            "x {\n  a = {\n    b = \"c\" # c\n    dd = [\n      1, 2,\n    ]\n  }\n}\n",
            "/* a\n   b */ x = 1\n",
            "a = [ # open\n  1, /* mid\n  */ 2,\n]\n",
            "locals {\n  s = \"${var.a}-${var.b}\"\n  t = \"%{if var.c}yes%{else}no%{endif}\"\n}\n",
        ];
        for input in inputs {
            let once = fmt(input);
            assert_eq!(fmt(&once), once);
        }
    }

    #[test]
    fn fixture_files_are_idempotent() {
        // Each `tests/fixtures/fmt/NAME.hcl` formats to `NAME.hcl.expected`.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fmt");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        let mut checked = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("hcl") {
                continue;
            }
            let input = std::fs::read_to_string(&path).expect("read fixture");
            let expected = std::fs::read_to_string(path.with_extension("hcl.expected"))
                .expect("every fixture has a .hcl.expected file");
            assert_eq!(fmt(&input), expected, "{}", path.display());
            assert_eq!(fmt(&expected), expected, "{}", path.display());
            checked += 1;
        }
        assert!(checked > 0, "no fixtures in {}", dir.display());
    }

    #[test]
    fn invalid_input_reports_position() {
        let err = format_source("a = 1\nb = = 2\n").expect_err("must fail");
        let FmtError::Parse {
            line,
            column,
            message,
        } = err;
        assert_eq!(line, 2);
        assert!(column >= 4, "column {column}");
        assert!(!message.is_empty());

        let err = format_source("block {\n  a = 1\n").expect_err("must fail");
        let FmtError::Parse { line, .. } = err;
        assert!(line >= 2);

        let err = format_source("\u{feff}a = = 1\n").expect_err("must fail");
        let FmtError::Parse { line, column, .. } = err;
        assert_eq!((line, column), (1, 6));

        let err = format_source("a = 1\na = 2\n").expect_err("duplicate attribute");
        let FmtError::Parse { line, .. } = err;
        assert_eq!(line, 2);
    }
}
