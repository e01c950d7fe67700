//! Console output: results on stdout, progress and errors on stderr, one
//! line at a time so parallel work never interleaves mid-line. On a
//! terminal each running step gets an indicatif line with its elapsed time;
//! without one (CI logs) a plain line when each step starts and ends and a
//! "Still creating... [10s elapsed]" line every ten seconds, no ANSI codes.
//! With `--json`, progress and diagnostics become JSON lines on stdout.

use std::io::{IsTerminal, Write};
use std::time::Duration;

/// Where messages go.
#[derive(Clone, Debug, Default)]
pub struct Ui {
    /// Emit JSON lines instead of text.
    pub json: bool,
    /// Show provider progress details (build output, waits).
    pub verbose: bool,
    bars: Option<indicatif::MultiProgress>,
}

/// A running step's progress line; removed when dropped.
pub struct Step {
    bar: Option<indicatif::ProgressBar>,
}

impl Drop for Step {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Ui {
    /// A UI for a command; progress bars only on a terminal, without
    /// `--json`, `NO_COLOR` or `CI`.
    pub fn new(json: bool, verbose: bool) -> Self {
        let fancy = !json
            && std::io::stderr().is_terminal()
            && std::env::var_os("NO_COLOR").is_none()
            && std::env::var_os("CI").is_none();
        Self {
            json,
            verbose,
            bars: fancy.then(indicatif::MultiProgress::new),
        }
    }

    /// Whether running steps have live lines (so no ticker is needed).
    pub fn live(&self) -> bool {
        self.bars.is_some()
    }

    /// Starts a live line for a running step (`address: Creating...`).
    pub fn step(&self, line: &str) -> Step {
        let Some(bars) = &self.bars else {
            return Step { bar: None };
        };
        let bar = bars.add(indicatif::ProgressBar::new_spinner());
        if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
            bar.set_style(style);
        }
        bar.set_message(line.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        Step { bar: Some(bar) }
    }

    /// A progress line about the work (stderr).
    pub fn status(&self, line: &str) {
        if self.json {
            self.json_line("progress", line);
        } else if let Some(bars) = &self.bars {
            let _ = bars.println(line);
        } else {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{line}");
        }
    }

    /// A provider's detail line for `address`, shown with `-v`.
    pub fn detail(&self, address: &str, line: &str) {
        if self.verbose {
            self.status(&format!("{address}: {line}"));
        }
    }

    /// An error line (stderr).
    pub fn error(&self, line: &str) {
        if self.json {
            self.json_line("error", line);
        } else if let Some(bars) = &self.bars {
            let _ = bars.println(format!("Error: {line}"));
        } else {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "Error: {line}");
        }
    }

    /// A result for stdout.
    pub fn result(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    fn json_line(&self, kind: &str, message: &str) {
        let level = if kind == "error" { "error" } else { "info" };
        let line = serde_json::json!({ "@level": level, "@message": message, "type": kind });
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    }
}
