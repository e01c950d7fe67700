//! Console output: results on stdout, progress and errors on stderr, one
//! line at a time so parallel work never interleaves mid-line. On a
//! terminal each running step gets an indicatif line with its elapsed time;
//! without one (CI logs) a plain line when each step starts and ends and a
//! "Still creating... [10s elapsed]" line every ten seconds, no ANSI codes.
//! With `--json`, progress and diagnostics become JSON lines on stdout.
//!
//! Providers' own progress lines ("waiting for root@10.0.0.5:22 (attempt
//! 3, 7s elapsed): connection refused", "status new, waiting for active",
//! build output) are all printed with `-v`. Without it they are shown the
//! way Terraform shows a long step, and never flood a CI log: on a
//! terminal, the newest one is shown on the step's live line; otherwise, a
//! resource's first line is printed at once, then at most one line every
//! ten seconds. A line held back in between is shown with the next "Still
//! creating..." line if no newer one replaced it.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The least time between two provider lines of one resource printed
/// without `-v` in plain output.
const DETAIL_INTERVAL: Duration = Duration::from_secs(10);

/// Where messages go.
#[derive(Clone, Debug, Default)]
pub struct Ui {
    /// Emit JSON lines instead of text.
    pub json: bool,
    /// Show every provider progress line (build output, waits) at once.
    pub verbose: bool,
    bars: Option<indicatif::MultiProgress>,
    /// Per resource address: its live line and what was shown of its
    /// provider lines.
    details: Arc<Mutex<HashMap<String, Detail>>>,
}

/// One resource's provider lines, without `-v`.
#[derive(Debug, Default)]
struct Detail {
    /// The step's live line (terminal only).
    bar: Option<indicatif::ProgressBar>,
    /// When a provider line was last printed.
    shown: Option<Instant>,
    /// The newest line not printed yet.
    held: Option<String>,
}

impl Detail {
    /// A new provider line at `now`: the line to print now, if any (else
    /// it is held, replacing an older held one).
    fn offer(&mut self, now: Instant, line: &str) -> Option<String> {
        if self
            .shown
            .is_some_and(|t| now.saturating_duration_since(t) < DETAIL_INTERVAL)
        {
            self.held = Some(line.to_owned());
            return None;
        }
        self.shown = Some(now);
        self.held = None;
        Some(line.to_owned())
    }

    /// The held line, to print now at `now`.
    fn take_held(&mut self, now: Instant) -> Option<String> {
        let held = self.held.take()?;
        self.shown = Some(now);
        Some(held)
    }
}

/// A running step's progress line; removed when dropped.
pub struct Step {
    bar: Option<indicatif::ProgressBar>,
    address: String,
    details: Arc<Mutex<HashMap<String, Detail>>>,
}

impl Drop for Step {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.details
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.address);
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
            details: Arc::default(),
        }
    }

    /// Whether running steps have live lines (so no ticker is needed).
    pub fn live(&self) -> bool {
        self.bars.is_some()
    }

    /// Starts the step `title` (`Creating...`) of `address`: a live line
    /// on a terminal, and the bookkeeping of its provider lines.
    pub fn step(&self, address: &str, title: &str) -> Step {
        let bar = self.bars.as_ref().map(|bars| {
            let bar = bars.add(indicatif::ProgressBar::new_spinner());
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {wide_msg}")
            {
                bar.set_style(style);
            }
            bar.set_prefix(format!("{address}: {title}"));
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        self.details
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                address.to_owned(),
                Detail {
                    bar: bar.clone(),
                    ..Detail::default()
                },
            );
        Step {
            bar,
            address: address.to_owned(),
            details: Arc::clone(&self.details),
        }
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

    /// A provider's progress line for `address`: printed at once with
    /// `-v`; otherwise on the step's live line, or printed unless one was
    /// printed less than ten seconds ago (then held for [`Ui::still`]).
    pub fn detail(&self, address: &str, line: &str) {
        if self.verbose {
            self.status(&format!("{address}: {line}"));
            return;
        }
        let shown = {
            let mut details = self.details.lock().unwrap_or_else(|e| e.into_inner());
            let detail = details.entry(address.to_owned()).or_default();
            if let Some(bar) = &detail.bar {
                bar.set_message(line.to_owned());
                return;
            }
            detail.offer(Instant::now(), line)
        };
        if let Some(line) = shown {
            self.status(&format!("{address}: {line}"));
        }
    }

    /// Terraform's "Still creating... [20s elapsed]" for `address` (plain
    /// output), with the newest provider line held back since the last
    /// one printed.
    pub fn still(&self, address: &str, verb: &str, elapsed: Duration) {
        let held = self
            .details
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(address)
            .and_then(|d| d.take_held(Instant::now()));
        let still = format!(
            "{address}: Still {verb}... [{}s elapsed]",
            elapsed.as_secs()
        );
        match held {
            Some(line) => self.status(&format!("{still}: {line}")),
            None => self.status(&still),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_lines_are_printed_at_most_every_ten_seconds() {
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut d = Detail::default();
        // The first line at once.
        assert_eq!(d.offer(at(0), "attempt 1").as_deref(), Some("attempt 1"));
        // The next ones within ten seconds are held, the newest kept.
        assert_eq!(d.offer(at(1), "attempt 2"), None);
        assert_eq!(d.offer(at(3), "attempt 3"), None);
        // The ticker shows the newest held line, once.
        assert_eq!(d.take_held(at(10)).as_deref(), Some("attempt 3"));
        assert_eq!(d.take_held(at(10)), None);
        // Which counts as a printed line.
        assert_eq!(d.offer(at(15), "attempt 4"), None);
        assert_eq!(d.offer(at(20), "attempt 5").as_deref(), Some("attempt 5"));
        assert_eq!(d.held, None);
    }
}
