//! How a run is shown: itemized changes, a progress bar on a terminal, a summary, JSON.

use hasync::tree::report::{Item, Reporter, Stats};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

/// Prints items as they happen and drives the progress bar.
pub struct Console {
    /// Print every change (else only failures).
    pub itemize: bool,
    /// Failures seen (exit code 1).
    pub failed: u64,
    /// Shown before each item's path (the job's directory, in `hasync sync`).
    pub prefix: String,
    /// Shown before every line (`[b] `: the peer, when several run at once).
    pub tag: String,
    bar: Option<ProgressBar>,
}

impl Console {
    pub fn new(itemize: bool, progress: bool) -> Self {
        let bar = (progress && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} {bytes}/{total_bytes} {bytes_per_sec} {wide_bar} {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b
        });
        Console {
            itemize,
            failed: 0,
            prefix: String::new(),
            tag: String::new(),
            bar,
        }
    }

    fn print(&self, line: String, to_stderr: bool) {
        // Names are escaped where they are formatted; this is the last guard for
        // any text (item codes and errors from the peer) that reaches the terminal.
        let line = hasync::tree::path::escape_controls(&line);
        let line = match self.tag.is_empty() {
            true => line,
            false => match line.strip_prefix("hasync: ") {
                Some(rest) => format!("hasync: {}{rest}", self.tag),
                None => format!("{}{line}", self.tag),
            },
        };
        match (&self.bar, to_stderr) {
            (Some(b), _) => b.println(line),
            (None, true) => eprintln!("{line}"),
            (None, false) => outln!("{line}"),
        }
    }

    fn line(&self, item: &Item) -> String {
        let line = item.line();
        if self.prefix.is_empty() {
            return line;
        }
        // "code path..." -> "code prefix/path..."
        match line.split_once(' ') {
            Some((code, "./")) => format!("{code} {}/", self.prefix),
            Some((code, rest)) => format!("{code} {}/{rest}", self.prefix),
            None => line,
        }
    }

    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Reporter for Console {
    fn item(&mut self, item: &Item) {
        if item.error.is_some() {
            if item.code.starts_with("*warning") {
                self.print(
                    format!("hasync: warning: {}", item.error.as_deref().unwrap_or("")),
                    true,
                );
                return;
            }
            self.failed += 1;
            self.print(format!("hasync: error: {}", self.line(item)), true);
        } else if self.itemize {
            self.print(self.line(item), false);
        }
    }

    fn progress(&mut self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.inc(bytes);
        }
    }

    fn total(&mut self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.set_length(bytes);
        }
    }
}

/// Human-readable byte count.
pub fn human(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// One-line summary of a run, like rsync's closing lines.
pub fn summary(s: &Stats) -> String {
    format!(
        "{} entries, {} transferred ({} literal, {} matched), {} deleted, {} failed; sent {}, received {} in {:.2}s",
        s.files_total,
        s.files_transferred,
        human(s.bytes_literal),
        human(s.bytes_matched),
        s.files_deleted,
        s.files_failed,
        human(s.bytes_sent),
        human(s.bytes_received),
        s.duration_ms as f64 / 1000.0
    )
}
