//! `shmq group list|create|reset|delete`: the consumer groups of a queue, for operators.
//!
//! `reset` is the answer to a poisoned or stale backlog (skip it with `--to latest`, replay
//! from an offset or a time); `delete` removes a dead group that holds producers back. Both
//! refuse a group that a live member holds: stop the member first.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use shmq::{Queue, SeekTo, Start, Subscribe};

use crate::error::CliError;
use crate::fmt::count;
use crate::info;
use crate::time::parse_time;

/// Arguments of `shmq group`.
#[derive(Args)]
pub struct GroupArgs {
    /// What to do with the groups.
    #[command(subcommand)]
    action: Action,
}

/// The `group` subcommands.
#[derive(Subcommand)]
enum Action {
    /// List the groups: committed offset, lag in messages and bytes, gating, holder.
    List {
        /// The queue file.
        path: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create a group (before its first member starts, so that it misses nothing).
    Create {
        /// The queue file.
        path: PathBuf,
        /// The group's name (1 to 64 bytes).
        group: String,
        /// Make it non-gating: it never holds producers back and may be overrun.
        #[arg(long)]
        non_gating: bool,
        /// Start at the next message published instead of the oldest one in the ring.
        #[arg(long)]
        latest: bool,
    },
    /// Move a group's committed offset: the next member resumes there.
    Reset {
        /// The queue file.
        path: PathBuf,
        /// The group.
        group: String,
        /// earliest, latest, an offset, or a time: RFC 3339 (2026-12-01T07:00:00Z) or
        /// now-DURATION (now-15m).
        #[arg(long, value_parser = parse_target, value_name = "WHERE")]
        to: SeekTo,
    },
    /// Delete a group that no live member holds (e.g. a dead gating group holding producers
    /// back).
    Delete {
        /// The queue file.
        path: PathBuf,
        /// The group.
        group: String,
    },
}

/// Parses `--to`: `earliest`, `latest`, an offset or a time.
fn parse_target(s: &str) -> Result<SeekTo, String> {
    match s {
        "earliest" => Ok(SeekTo::Earliest),
        "latest" => Ok(SeekTo::Latest),
        _ => match s.parse() {
            Ok(offset) => Ok(SeekTo::Offset(offset)),
            Err(_) => parse_time(s).map(SeekTo::Time).map_err(|e| {
                format!("expected earliest, latest, an offset or a time; as a time: {e}")
            }),
        },
    }
}

/// Runs a `group` subcommand.
pub fn run(args: &GroupArgs) -> Result<(), CliError> {
    match &args.action {
        Action::List { path, json } => {
            let queue = open(path)?;
            let groups = info::groups(&queue);
            let text = if *json {
                info::to_json(path, &groups)?
            } else if groups.is_empty() {
                "no consumer groups".to_string()
            } else {
                info::group_table(&groups)
            };
            info::print(&text)
        }
        Action::Create {
            path,
            group,
            non_gating,
            latest,
        } => {
            let queue = open(path)?;
            if queue.groups().iter().any(|g| &g.name == group) {
                return Err(CliError::new(
                    path.display(),
                    format_args!("consumer group {group:?} already exists"),
                ));
            }
            let options = Subscribe {
                gating: !non_gating,
                start: if *latest {
                    Start::Latest
                } else {
                    Start::Earliest
                },
            };
            let member = queue
                .subscribe(group, &options)
                .map_err(|e| CliError::queue(path, e))?;
            let committed = member.committed();
            drop(member);
            outln!(
                "created {} group {group:?} in {} at offset {}",
                if *non_gating { "non-gating" } else { "gating" },
                path.display(),
                count(committed)
            );
            Ok(())
        }
        Action::Reset { path, group, to } => {
            let queue = open(path)?;
            let before = committed_of(&queue, path, group)?;
            let after = queue
                .reset_group(group, *to)
                .map_err(|e| CliError::queue(path, e))?;
            let lag = queue.tail_offset().saturating_sub(after);
            outln!(
                "reset group {group:?} in {}: committed offset {} -> {} (lag {})",
                path.display(),
                count(before),
                count(after),
                count(lag)
            );
            Ok(())
        }
        Action::Delete { path, group } => {
            let queue = open(path)?;
            let committed = committed_of(&queue, path, group)?;
            queue
                .delete_group(group)
                .map_err(|e| CliError::queue(path, e))?;
            outln!(
                "deleted group {group:?} from {} (it had committed up to offset {})",
                path.display(),
                count(committed)
            );
            Ok(())
        }
    }
}

/// Opens the queue file.
fn open(path: &Path) -> Result<Queue, CliError> {
    Queue::open(path).map_err(|e| CliError::queue(path, e))
}

/// The committed offset of `group`, or the unknown-group error.
fn committed_of(queue: &Queue, path: &Path, group: &str) -> Result<u64, CliError> {
    queue
        .groups()
        .into_iter()
        .find(|g| g.name == group)
        .map(|g| g.committed)
        .ok_or_else(|| CliError::queue(path, shmq::Error::UnknownGroup(group.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!(parse_target("earliest"), Ok(SeekTo::Earliest));
        assert_eq!(parse_target("latest"), Ok(SeekTo::Latest));
        assert_eq!(parse_target("17"), Ok(SeekTo::Offset(17)));
        assert_eq!(
            parse_target("1970-01-01T00:00:02Z"),
            Ok(SeekTo::Time(2_000_000_000))
        );
        assert!(parse_target("-3")
            .unwrap_err()
            .contains("expected earliest"));
    }
}
