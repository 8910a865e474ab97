//! Live progress of the demo: one bar for the producer and one per group (indicatif), or a
//! plain status line per second when there is no terminal or `--no-progress` was given.

use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar};

use crate::bar::style;

use crate::fmt::count;

/// The queue's state at one moment, as the parent samples it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The queue's tail offset: events published (claimed) so far.
    pub tail: u64,
    /// Each group's committed offset, in the demo's group order.
    pub committed: Vec<u64>,
}

/// How progress is shown.
enum Mode {
    /// Progress bars on stderr.
    Bars {
        /// Owns the drawing of all bars.
        _multi: MultiProgress,
        /// The order service's bar.
        producer: ProgressBar,
        /// One bar per group.
        groups: Vec<ProgressBar>,
    },
    /// A status line on stdout every [`PLAIN_EVERY`].
    Plain {
        /// Group names for the status line.
        names: Vec<String>,
        /// When the next line is due.
        next: Instant,
        /// What the last line showed.
        shown: Option<Snapshot>,
    },
}

/// Interval between plain status lines.
const PLAIN_EVERY: Duration = Duration::from_secs(1);

/// The progress display.
pub struct Progress {
    /// Bars or lines.
    mode: Mode,
    /// Events the producer will publish.
    total: u64,
    /// When the demo started.
    start: Instant,
}

impl Progress {
    /// Starts showing progress of `total` events through groups with these labels
    /// (`(name, what it does)`); bars if `bars`, else plain lines.
    pub fn new(total: u64, groups: &[(&str, &str)], bars: bool) -> Self {
        let mode = if bars {
            let multi = MultiProgress::new();
            let add = |prefix: String, colour: &str| {
                let bar = multi.add(ProgressBar::new(total));
                bar.set_style(style(colour));
                bar.set_prefix(prefix);
                bar
            };
            let producer = add("order service".into(), "green/black");
            producer.set_message("published");
            let groups = groups
                .iter()
                .map(|(name, what)| {
                    let colour = if what.contains("slow") {
                        "yellow/black"
                    } else {
                        "cyan/black"
                    };
                    add(format!("{name} ({what})"), colour)
                })
                .collect();
            Mode::Bars {
                _multi: multi,
                producer,
                groups,
            }
        } else {
            Mode::Plain {
                names: groups.iter().map(|(n, _)| n.to_string()).collect(),
                next: Instant::now() + PLAIN_EVERY,
                shown: None,
            }
        };
        Progress {
            mode,
            total,
            start: Instant::now(),
        }
    }

    /// Shows `s`.
    pub fn update(&mut self, s: &Snapshot) {
        match &mut self.mode {
            Mode::Bars {
                producer, groups, ..
            } => {
                producer.set_position(s.tail);
                for (bar, &c) in groups.iter().zip(&s.committed) {
                    bar.set_position(c);
                    bar.set_message(format!("lag {}", count(s.tail.saturating_sub(c))));
                }
            }
            Mode::Plain { names, next, shown } => {
                if Instant::now() >= *next {
                    *next += PLAIN_EVERY;
                    outln!("{}", line(self.start.elapsed(), self.total, names, s));
                    *shown = Some(s.clone());
                }
            }
        }
    }

    /// Shows the final state and stops drawing.
    pub fn finish(&mut self, s: &Snapshot) {
        match &mut self.mode {
            Mode::Bars { .. } => {
                self.update(s);
                if let Mode::Bars {
                    producer, groups, ..
                } = &self.mode
                {
                    producer.finish();
                    groups.iter().for_each(ProgressBar::finish);
                }
            }
            Mode::Plain { names, shown, .. } => {
                if shown.as_ref() != Some(s) {
                    outln!("{}", line(self.start.elapsed(), self.total, names, s));
                }
            }
        }
    }

    /// Removes the bars (before an error message).
    pub fn abandon(&mut self) {
        if let Mode::Bars {
            producer, groups, ..
        } = &self.mode
        {
            producer.abandon();
            groups.iter().for_each(ProgressBar::abandon);
        }
    }
}

/// One plain status line: elapsed time, events published, and each group's committed count.
fn line(elapsed: Duration, total: u64, names: &[String], s: &Snapshot) -> String {
    let mut text = format!(
        "{:>6.1} s  published {}/{}",
        elapsed.as_secs_f64(),
        count(s.tail),
        count(total)
    );
    for (name, &c) in names.iter().zip(&s.committed) {
        text.push_str(&format!(
            "  | {name} {} (lag {})",
            count(c),
            count(s.tail.saturating_sub(c))
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_line_shows_every_group() {
        let s = Snapshot {
            tail: 1500,
            committed: vec![1500, 200],
        };
        let names = vec!["coupons".to_string(), "sms".to_string()];
        assert_eq!(
            line(Duration::from_millis(2500), 2000, &names, &s),
            "   2.5 s  published 1,500/2,000  | coupons 1,500 (lag 0)  | sms 200 (lag 1,300)"
        );
    }
}
