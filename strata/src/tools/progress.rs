//! Progress of long CLI work on stderr: on a terminal, a bar redrawn in place (done,
//! total, rate, time left); otherwise, for logs and CI, one plain line every few
//! seconds. Standard output stays free for the command's result.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Redraws at most this often on a terminal.
const TTY_EVERY: Duration = Duration::from_millis(100);
/// Prints at most this often to a file or pipe.
const LOG_EVERY: Duration = Duration::from_secs(5);
const WIDTH: usize = 30;

pub struct Progress {
    what: &'static str,
    unit: &'static str,
    total: u64,
    done: u64,
    start: Instant,
    last: Option<Instant>,
    tty: bool,
    quiet: bool,
}

impl Progress {
    /// `total` units of `what` to do (0 when unknown: no bar, no time left).
    pub fn new(what: &'static str, unit: &'static str, total: u64) -> Self {
        Progress {
            what,
            unit,
            total,
            done: 0,
            start: Instant::now(),
            last: None,
            tty: std::io::stderr().is_terminal(),
            quiet: false,
        }
    }

    /// Show nothing (the command's `--quiet`).
    pub fn quiet(mut self, quiet: bool) -> Self {
        self.quiet = quiet;
        self
    }

    /// The total, once it is known (or grows).
    pub fn set_total(&mut self, total: u64) {
        self.total = total;
    }

    /// `done` units are done; redraws when it is time to.
    pub fn set(&mut self, done: u64) {
        self.done = done;
        let every = if self.tty { TTY_EVERY } else { LOG_EVERY };
        // a log gets its first line only once the work has taken a while
        let since = self.last.unwrap_or(self.start);
        let due = (self.tty && self.last.is_none()) || since.elapsed() >= every;
        if due {
            self.draw(false);
        }
    }

    /// The final state, and the terminal's line ended; nothing when nothing was shown
    /// (short work in a log).
    pub fn finish(&mut self) {
        if self.tty || self.last.is_some() {
            self.draw(true);
        }
    }

    fn draw(&mut self, last: bool) {
        self.last = Some(Instant::now());
        if self.quiet {
            return;
        }
        let line = self.line();
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r{line}\x1b[K{}", if last { "\n" } else { "" })
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }

    fn line(&self) -> String {
        let secs = self.start.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            self.done as f64 / secs
        } else {
            0.0
        };
        let mut s = format!("{}: ", self.what);
        if self.total > 0 {
            let frac = (self.done as f64 / self.total as f64).clamp(0.0, 1.0);
            let full = (frac * WIDTH as f64) as usize;
            s.push('[');
            s.push_str(&"=".repeat(full));
            if full < WIDTH {
                s.push('>');
                s.push_str(&" ".repeat(WIDTH - full - 1));
            }
            s.push_str(&format!(
                "] {:>3.0}% {}/{} {}",
                frac * 100.0,
                count(self.done),
                count(self.total),
                self.unit
            ));
        } else {
            s.push_str(&format!("{} {}", count(self.done), self.unit));
        }
        s.push_str(&format!(", {}/s, {secs:.1}s", count(rate as u64)));
        if self.total > self.done && rate > 0.0 {
            let left = (self.total - self.done) as f64 / rate;
            s.push_str(&format!(", {left:.0}s left"));
        }
        s
    }
}

/// 1234567 → "1.2M": short enough to redraw in place.
fn count(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.1}G", n as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_and_counts() {
        let mut p = Progress::new("backfill", "samples", 200_000).quiet(true);
        p.set(50_000);
        let l = p.line();
        assert!(l.starts_with("backfill: [======="), "{l}");
        assert!(l.contains(" 25% 50.0k/200.0k samples"), "{l}");
        let u = Progress::new("bucket", "blocks", 0).line();
        assert!(u.starts_with("bucket: 0 blocks"), "{u}");
        assert_eq!(count(2_700_000), "2.7M");
    }
}
