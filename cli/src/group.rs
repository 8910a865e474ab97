//! `shmq group list|create|reset|delete`: the consumer groups of a queue, for operators.
//!
//! `reset` is the answer to a poisoned or stale backlog (skip it with `--to latest`, replay
//! from an offset or a time); `delete` removes a dead group that holds producers back. Both
//! refuse a group that a live member holds: stop the member first. On a topic, each acts on
//! the group in every partition (a reset to an offset needs `--partition`).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use shmq::{Queue, SeekTo, Start, Subscribe, Topic};

use crate::error::{At, CliError};
use crate::fmt::count;
use crate::info;
use crate::time::parse_time;
use crate::trust::TrustArgs;

/// Arguments of `shmq group`.
#[derive(Args)]
pub struct GroupArgs {
    /// What to do with the groups.
    #[command(subcommand)]
    action: Action,
    /// Whom to trust with a file another user made.
    #[command(flatten)]
    trust: TrustArgs,
}

/// The `group` subcommands.
#[derive(Subcommand)]
enum Action {
    /// List the groups: committed offset, lag in messages and bytes, gating, holder.
    List {
        /// The queue file or topic directory.
        path: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create a group (before its first member starts, so that it misses nothing).
    Create {
        /// The queue file or topic directory.
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
    /// Move a group's committed offset: the next member resumes there. Prints, per group and
    /// partition, the committed offset before and after and the lag that makes.
    #[command(group(clap::ArgGroup::new("target").required(true).args(["to", "to_offset", "shift_by"])))]
    Reset {
        /// The queue file or topic directory.
        path: PathBuf,
        /// The group (or --all-groups).
        #[arg(required_unless_present = "all_groups", conflicts_with = "all_groups")]
        group: Option<String>,
        /// Reset every group of the queue or topic.
        #[arg(long)]
        all_groups: bool,
        /// Topics: reset the group in this partition only (required with an offset).
        #[arg(long)]
        partition: Option<u32>,
        /// earliest, latest, an offset, or a time: RFC 3339 (2026-12-01T07:00:00Z) or
        /// now-DURATION (now-15m).
        #[arg(long, value_parser = parse_target, value_name = "WHERE")]
        to: Option<SeekTo>,
        /// An offset (the same as --to OFFSET).
        #[arg(long, value_name = "OFFSET")]
        to_offset: Option<u64>,
        /// Move the committed offset by N messages: -N reads N messages again, +N skips N.
        /// Clamped to the messages still in the ring.
        #[arg(long, value_name = "N", allow_hyphen_values = true)]
        shift_by: Option<i64>,
        /// Print what the reset would do and change nothing.
        #[arg(long, conflicts_with = "execute")]
        dry_run: bool,
        /// Reset (what happens without --dry-run; accepted so scripts can spell it out).
        #[arg(long)]
        execute: bool,
    },
    /// Show one group: per partition its committed offset, lag and holder, and for a topic
    /// its members.
    Describe {
        /// The queue file or topic directory.
        path: PathBuf,
        /// The group.
        group: String,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Delete a group that no live member holds (e.g. a dead gating group holding producers
    /// back).
    Delete {
        /// The queue file or topic directory.
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
            let groups: Vec<info::Group> = open(path, &args.trust)?
                .iter()
                .flat_map(|(p, q)| info::groups(q, *p))
                .collect();
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
            let queues = open(path, &args.trust)?;
            if queues.iter().any(|(_, q)| committed_of(q, group).is_some()) {
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
                session_timeout: None,
            };
            for (partition, queue) in &queues {
                let member = queue.subscribe(group, &options).at(queue.path())?;
                outln!(
                    "created {} group {group:?} in {} at offset {}",
                    if *non_gating { "non-gating" } else { "gating" },
                    place(path, *partition),
                    count(member.committed())
                );
            }
            Ok(())
        }
        Action::Reset {
            path,
            group,
            all_groups: _,
            partition,
            to,
            to_offset,
            shift_by,
            dry_run,
            execute: _,
        } => {
            let target = match (to, to_offset, shift_by) {
                (Some(to), _, _) => Target::To(*to),
                (_, Some(x), _) => Target::To(SeekTo::Offset(*x)),
                (_, _, Some(n)) => Target::Shift(*n),
                // clap requires one of the three.
                (None, None, None) => {
                    return Err(CliError::new(
                        "--to",
                        "give --to, --to-offset or --shift-by",
                    ))
                }
            };
            let queues = chosen(path, open(path, &args.trust)?, *partition)?;
            if queues.len() > 1 && matches!(target, Target::To(SeekTo::Offset(_))) {
                return Err(CliError::new(
                    "--to",
                    format_args!(
                        "{} is a topic: an offset names a record of one partition (add --partition)",
                        path.display()
                    ),
                ));
            }
            let groups = match group {
                Some(g) => vec![g.clone()],
                None => all_groups(path, &queues)?,
            };
            // Plan everything first, so that a missing or held group or an offset out of range
            // changes nothing.
            let mut plans = Vec::new();
            for group in &groups {
                let before = existing(path, &queues, group)?;
                for ((partition, queue), before) in queues.iter().zip(before) {
                    let after = target.offset(queue, before).at(queue.path())?;
                    plans.push((group, *partition, queue, before, after));
                }
            }
            let verb = if *dry_run { "would reset" } else { "reset" };
            for (group, partition, queue, before, planned) in plans {
                let after = if *dry_run {
                    planned
                } else {
                    let to = match target {
                        Target::To(to) => to,
                        Target::Shift(_) => SeekTo::Offset(planned),
                    };
                    queue.reset_group(group, to).at(queue.path())?
                };
                let lag = queue.tail_offset().saturating_sub(after);
                let change = match after.cmp(&before) {
                    std::cmp::Ordering::Less => {
                        format!("{} messages to read again", count(before - after))
                    }
                    std::cmp::Ordering::Greater => {
                        format!("skips {} messages", count(after - before))
                    }
                    std::cmp::Ordering::Equal => "unchanged".to_string(),
                };
                outln!(
                    "{verb} group {group:?} in {}: committed offset {} -> {} (lag {}): {change}",
                    place(path, partition),
                    count(before),
                    count(after),
                    count(lag)
                );
            }
            Ok(())
        }
        Action::Describe { path, group, json } => describe(path, group, *json, &args.trust),
        Action::Delete { path, group } => {
            let queues = open(path, &args.trust)?;
            let before = existing(path, &queues, group)?;
            for ((partition, queue), committed) in queues.iter().zip(before) {
                queue.delete_group(group).at(queue.path())?;
                outln!(
                    "deleted group {group:?} from {} (it had committed up to offset {})",
                    place(path, *partition),
                    count(committed)
                );
            }
            Ok(())
        }
    }
}

/// Where `group reset` moves a committed offset.
#[derive(Clone, Copy)]
enum Target {
    /// To a place (`--to`, `--to-offset`).
    To(SeekTo),
    /// By this many messages from the committed offset (`--shift-by`).
    Shift(i64),
}

impl Target {
    /// The committed offset a reset of a group at `committed` in `queue` moves to now (what
    /// [`Queue::reset_group`] would find; an offset out of the ring is an error).
    fn offset(self, queue: &Queue, committed: u64) -> shmq::Result<u64> {
        match self {
            Target::To(to) => Ok(queue.tail_reader(to)?.position()),
            Target::Shift(n) => {
                let moved = i128::from(committed) + i128::from(n);
                let (oldest, tail) = (queue.oldest_offset(), queue.tail_offset());
                // Clamped into oldest..=tail, so it fits a u64.
                Ok(moved.clamp(i128::from(oldest), i128::from(tail)) as u64)
            }
        }
    }
}

/// Every group name in `queues`, in the order first seen; an error if there is none.
fn all_groups(path: &Path, queues: &[(Option<u32>, Queue)]) -> Result<Vec<String>, CliError> {
    let mut names: Vec<String> = Vec::new();
    for (_, q) in queues {
        for g in q.groups() {
            if !names.contains(&g.name) {
                names.push(g.name);
            }
        }
    }
    if names.is_empty() {
        return Err(CliError::new(path.display(), "has no consumer groups"));
    }
    Ok(names)
}

/// `shmq group describe`: the group's row per partition and, for a topic, its members.
fn describe(path: &Path, group: &str, json: bool, trust: &TrustArgs) -> Result<(), CliError> {
    let queues = open(path, trust)?;
    existing_anywhere(path, &queues, group)?;
    let rows: Vec<info::Group> = queues
        .iter()
        .flat_map(|(p, q)| info::groups(q, *p))
        .filter(|g| g.name == group)
        .collect();
    let members: Vec<crate::topic::Member> = if Topic::is_topic(path) {
        crate::topic::members(&trust.open_topic(path)?)
            .into_iter()
            .filter(|m| m.group == group)
            .collect()
    } else {
        Vec::new()
    };
    let text = if json {
        #[derive(serde::Serialize)]
        /// `group describe --json`.
        struct Described<'a> {
            /// The queue file or topic.
            path: String,
            /// The group.
            group: &'a str,
            /// Its row per partition (one for a queue file), as `group list --json` has them.
            partitions: Vec<info::Group>,
            /// Its members (topics only).
            members: Vec<crate::topic::Member>,
        }
        let described = Described {
            path: path.display().to_string(),
            group,
            partitions: rows,
            members,
        };
        info::to_json(path, &described)?
    } else {
        let mut text = info::group_table(&rows);
        if Topic::is_topic(path) {
            text.push_str("\n\n");
            if members.is_empty() {
                text.push_str("members      none");
            } else {
                text.push_str(&crate::topic::member_table(&members));
            }
        }
        text
    };
    info::print(&text)
}

/// Fails unless `group` exists in at least one of `queues`.
fn existing_anywhere(
    path: &Path,
    queues: &[(Option<u32>, Queue)],
    group: &str,
) -> Result<(), CliError> {
    if queues.iter().any(|(_, q)| find(q, group).is_some()) {
        Ok(())
    } else {
        Err(CliError::queue(
            path,
            shmq::Error::UnknownGroup(group.to_string()),
        ))
    }
}

/// The queue file, or every partition of the topic, at `path`, with its partition index.
fn open(path: &Path, trust: &TrustArgs) -> Result<Vec<(Option<u32>, Queue)>, CliError> {
    if Topic::is_topic(path) {
        let topic = trust.open_topic(path)?;
        Ok((0u32..)
            .zip(topic.partitions())
            .map(|(i, q)| (Some(i), q.clone()))
            .collect())
    } else {
        Ok(vec![(None, trust.open_queue(path)?)])
    }
}

/// Only partition `partition` of `queues` if one is given (an error for a queue file or a
/// partition the topic lacks).
fn chosen(
    path: &Path,
    mut queues: Vec<(Option<u32>, Queue)>,
    partition: Option<u32>,
) -> Result<Vec<(Option<u32>, Queue)>, CliError> {
    let Some(p) = partition else {
        return Ok(queues);
    };
    match queues.iter().position(|(i, _)| *i == Some(p)) {
        Some(at) => Ok(vec![queues.swap_remove(at)]),
        None if queues[0].0.is_none() => Err(CliError::new(
            "--partition",
            format_args!("{} is a queue file, not a topic", path.display()),
        )),
        None => Err(CliError::new(
            format_args!("--partition {p}"),
            format_args!(
                "{} has partitions 0 to {}",
                path.display(),
                queues.len() - 1
            ),
        )),
    }
}

/// "PATH" for a queue file, "partition P of PATH" for a topic.
fn place(path: &Path, partition: Option<u32>) -> String {
    match partition {
        Some(p) => format!("partition {p} of {}", path.display()),
        None => path.display().to_string(),
    }
}

/// `group` in `queue`, if it exists there.
fn find(queue: &Queue, group: &str) -> Option<shmq::GroupInfo> {
    queue.groups().into_iter().find(|g| g.name == group)
}

/// The committed offset of `group` in `queue`, if it exists there.
fn committed_of(queue: &Queue, group: &str) -> Option<u64> {
    find(queue, group).map(|g| g.committed)
}

/// The committed offset of `group` in each of `queues`, checked before anything changes:
/// the error names the first queue that lacks the group or where a live member holds it.
fn existing(
    path: &Path,
    queues: &[(Option<u32>, Queue)],
    group: &str,
) -> Result<Vec<u64>, CliError> {
    queues
        .iter()
        .map(|(partition, q)| {
            let e = match find(q, group) {
                Some(g) if !g.holder_alive => return Ok(g.committed),
                Some(g) => shmq::Error::GroupBusy {
                    group: group.to_string(),
                    pid: g.holder.unwrap_or(0),
                },
                None => shmq::Error::UnknownGroup(group.to_string()),
            };
            Err(match partition {
                Some(p) => CliError::new(place(path, Some(*p)), e),
                None => CliError::queue(path, e),
            })
        })
        .collect()
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
