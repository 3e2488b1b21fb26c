//! The live progress display: a one-line status on a terminal (indicatif), plain log lines to
//! stderr otherwise, nothing with `--quiet`.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// How to show progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A live line on a terminal, log lines otherwise.
    Auto,
    /// Log lines, one per second.
    Lines,
    /// Nothing.
    Quiet,
}

/// The display.
pub struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
}

impl Progress {
    /// Starts a display in `mode`.
    pub fn new(mode: ProgressMode) -> Progress {
        match mode {
            ProgressMode::Quiet => Progress {
                bar: None,
                lines: false,
            },
            ProgressMode::Lines => Progress {
                bar: None,
                lines: true,
            },
            ProgressMode::Auto if std::io::stderr().is_terminal() => {
                let bar = ProgressBar::new_spinner();
                if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
                    bar.set_style(style);
                }
                Progress {
                    bar: Some(bar),
                    lines: false,
                }
            }
            ProgressMode::Auto => Progress {
                bar: None,
                lines: true,
            },
        }
    }

    /// Shows one status line.
    pub fn update(&self, line: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(line.to_string());
            bar.tick();
        } else if self.lines {
            eprintln!("{line}");
        }
    }

    /// Prints a message above the live line (or as a log line).
    pub fn println(&self, line: &str) {
        if let Some(bar) = &self.bar {
            bar.println(line);
        } else if self.lines {
            eprintln!("{line}");
        }
    }

    /// Clears the live line.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
