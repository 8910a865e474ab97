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

    /// A library error on the queue file or topic `path`, naming the path exactly once: an
    /// error that carries a path within `path` already starts with it.
    pub fn queue(path: &Path, e: shmq::Error) -> Self {
        let named = error_path(&e).is_some_and(|p| p.starts_with(path));
        let text = match e {
            shmq::Error::Untrusted { why, .. } => {
                let flags = match why {
                    shmq::Distrust::Owner => " (--trust-owner USER or --trust-group GROUP)",
                    shmq::Distrust::GroupMayWrite => " (--trust-group GROUP)",
                    _ => "",
                };
                format!("{e}{flags}")
            }
            shmq::Error::WrongKind {
                ref path, found, ..
            } => {
                let hint = match found {
                    shmq::PathKind::TopicDirectory => format!(
                        " (this command reads one queue file: give it a partition, such as {})",
                        path.join("partition-0000.q").display()
                    ),
                    shmq::PathKind::QueueFile => {
                        " (a topic is a directory of partitions: `shmq create PATH --partitions N`)"
                            .to_string()
                    }
                    _ => String::new(),
                };
                format!("{e}{hint}")
            }
            shmq::Error::WrongGroupKind { expected, .. } => {
                let hint = match expected {
                    shmq::GroupKind::Plain => {
                        " (it is a work group: read it with `shmq consume --shared GROUP`, see \
                         its records with `shmq pending`)"
                    }
                    shmq::GroupKind::Work => {
                        " (it is a plain consumer group: read it with `shmq consume --group GROUP`)"
                    }
                    _ => "",
                };
                format!("{e}{hint}")
            }
            e => e.to_string(),
        };
        if named {
            CliError {
                text: one_line(&text),
                code: 1,
            }
        } else {
            CliError::new(path.display(), text)
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

/// The first option of `options` (given or not, name) that was given: for the error that
/// names an option the command does not take in this case.
pub fn first_given<const N: usize>(options: [(bool, &'static str); N]) -> Option<&'static str> {
    options
        .into_iter()
        .find_map(|(given, name)| given.then_some(name))
}

/// `.at(path)`: a library result as a [`CliError`] about the queue file or topic `path`
/// ([`CliError::queue`]).
pub trait At<T> {
    /// The result, its error reported about `path`.
    fn at(self, path: &Path) -> Result<T, CliError>;
}

impl<T> At<T> for shmq::Result<T> {
    fn at(self, path: &Path) -> Result<T, CliError> {
        self.map_err(|e| CliError::queue(path, e))
    }
}

/// The file or directory a library error is about, when its text starts with it.
fn error_path(e: &shmq::Error) -> Option<&Path> {
    use shmq::Error as E;
    match e {
        E::Io { path, .. }
        | E::Corrupt { path, .. }
        | E::Exists { path }
        | E::NotFound { path }
        | E::Untrusted { path, .. }
        | E::TopicNotFound { path }
        | E::Symlink { path }
        | E::NoFileName { path }
        | E::NoSuchPartition { path, .. }
        | E::Full { path, .. }
        | E::BatchTooBig { path, .. }
        | E::Timeout { path, .. }
        | E::TooManyMembers { path, .. }
        | E::NotDurable { path, .. }
        | E::Forked { path, .. }
        | E::Poisoned { path, .. }
        | E::Truncated { path }
        | E::Detached { path, .. }
        | E::LeaseExpired { path, .. }
        | E::InboxFull { path, .. }
        | E::KeyBusy { path }
        | E::MarkLost { path }
        | E::UnknownInbox { path }
        | E::WrongGroupKind { path, .. }
        | E::WrongKind { path, .. }
        | E::ProducerIdBusy { path, .. }
        | E::SequenceOutsideWindow { path, .. }
        | E::TooManyProducerIds { path, .. }
        | E::UnknownProducerId { path, .. } => Some(path),
        _ => None,
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
        let e = CliError::queue(&p, shmq::Error::Symlink { path: p.clone() });
        assert_eq!(
            e.to_string(),
            "/tmp/q: is a symbolic link (refused for safety)"
        );
        let t = PathBuf::from("/tmp/t.topic");
        let part = t.join("partition-0001.q");
        let e = CliError::queue(&t, shmq::Error::Truncated { path: part });
        assert_eq!(
            e.to_string(),
            "/tmp/t.topic/partition-0001.q: the queue file was truncated under this process; \
             its records are gone"
        );
        let e = CliError::queue(
            &p,
            shmq::Error::InvalidArgument {
                argument: "group name",
                why: "must be 1 to 64 bytes, got 0".into(),
            },
        );
        assert_eq!(
            e.to_string(),
            "/tmp/q: invalid group name: must be 1 to 64 bytes, got 0"
        );
    }

    #[test]
    fn says_which_command_reads_a_group_of_the_other_kind() {
        let p = PathBuf::from("/tmp/q");
        let wrong = |expected| shmq::Error::WrongGroupKind {
            path: p.clone(),
            group: "g".into(),
            expected,
        };
        assert_eq!(
            CliError::queue(&p, wrong(shmq::GroupKind::Plain)).to_string(),
            "/tmp/q: group \"g\" is not a plain consumer group (it is a work group: read it \
             with `shmq consume --shared GROUP`, see its records with `shmq pending`)"
        );
        assert_eq!(
            CliError::queue(&p, wrong(shmq::GroupKind::Work)).to_string(),
            "/tmp/q: group \"g\" is not a work group (it is a plain consumer group: read it \
             with `shmq consume --group GROUP`)"
        );
    }

    #[test]
    fn stays_on_one_line() {
        assert_eq!(CliError::new("x", "a\nb\n").to_string(), "x: a; b");
    }
}
