//! [`CliError`]: a failure reported as one line `shmq: <subject>: <cause>`.

use std::fmt;
use std::path::Path;

/// A failure of a subcommand: the text after `shmq: ` and the process exit status.
#[derive(Debug)]
pub struct CliError {
    /// `<subject>: <cause>`, one line.
    text: String,
    /// Exit status (1 unless something more specific applies).
    code: u8,
}

impl CliError {
    /// An error about `subject` (a path, an option or a value).
    pub fn new(subject: impl fmt::Display, cause: impl fmt::Display) -> Self {
        CliError {
            text: one_line(&format!("{subject}: {cause}")),
            code: 1,
        }
    }

    /// A library error on the queue file `path`, naming the path exactly once (some library
    /// errors already start with it).
    pub fn queue(path: &Path, e: shmq::Error) -> Self {
        let shown = path.display().to_string();
        let text = match e {
            shmq::Error::InvalidArgument(m) if m.starts_with(&shown) => m,
            shmq::Error::Untrusted { why, .. } => {
                let flags = match why {
                    shmq::Distrust::Owner => " (--trust-owner USER or --trust-group GROUP)",
                    shmq::Distrust::GroupMayWrite => " (--trust-group GROUP)",
                    shmq::Distrust::OthersMayWrite => "",
                };
                format!("{e}{flags}")
            }
            shmq::Error::WrongKind {
                ref path, found, ..
            } => {
                let hint = match found {
                    "a topic directory" => format!(
                        " (this command reads one queue file: give it a partition, such as {})",
                        path.join("partition-0000.q").display()
                    ),
                    "a queue file" => {
                        " (a topic is a directory of partitions: `shmq create PATH --partitions N`)"
                            .to_string()
                    }
                    _ => String::new(),
                };
                format!("{e}{hint}")
            }
            e => e.to_string(),
        };
        if text.starts_with(&shown) {
            CliError {
                text: one_line(&text),
                code: 1,
            }
        } else {
            CliError::new(shown, text)
        }
    }

    /// An I/O error on `path` while doing `op`.
    pub fn io(path: &Path, op: &str, e: std::io::Error) -> Self {
        CliError::new(path.display(), format_args!("{op}: {e}"))
    }

    /// The same error followed by "; `note`" (what had been done when it happened).
    pub fn with_note(mut self, note: impl fmt::Display) -> Self {
        self.text = one_line(&format!("{}; {note}", self.text));
        self
    }

    /// The same error with a different exit status.
    pub fn with_code(mut self, code: u8) -> Self {
        self.code = code;
        self
    }

    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        self.code
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Joins the lines of `s` with "; " so that a message never spans lines.
fn one_line(s: &str) -> String {
    let parts: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn names_the_path_once() {
        let p = PathBuf::from("/tmp/q");
        let e = CliError::queue(&p, shmq::Error::NotFound { path: p.clone() });
        assert_eq!(e.to_string(), "/tmp/q: no such queue file");
        let e = CliError::queue(&p, shmq::Error::UnknownGroup("g".into()));
        assert_eq!(e.to_string(), "/tmp/q: consumer group \"g\" does not exist");
        let e = CliError::queue(
            &p,
            shmq::Error::InvalidArgument("/tmp/q: not a regular file".into()),
        );
        assert_eq!(e.to_string(), "/tmp/q: not a regular file");
    }

    #[test]
    fn stays_on_one_line() {
        assert_eq!(CliError::new("x", "a\nb\n").to_string(), "x: a; b");
    }
}
