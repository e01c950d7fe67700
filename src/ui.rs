//! Console output: results on stdout, progress and errors on stderr, one
//! line at a time so parallel work never interleaves mid-line. With
//! `--json`, progress and diagnostics become one JSON object per line.

use std::io::Write;

/// Where messages go.
#[derive(Clone, Debug, Default)]
pub struct Ui {
    /// Emit JSON lines instead of text.
    pub json: bool,
    /// Show provider progress details (build output, waits).
    pub verbose: bool,
}

impl Ui {
    /// A progress line about the work (stderr).
    pub fn status(&self, line: &str) {
        if self.json {
            self.json_line("progress", line);
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
        let line = serde_json::json!({ "type": kind, "message": message });
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    }
}
