//! `shmq pending QUEUE GROUP`: a work group's unsettled records (Redis's `XPENDING`): each
//! record in flight, waiting for a due time, or being dead-lettered, with its holder, its
//! deadline and how often it was delivered.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use serde::Serialize;
use shmq::{PendingInfo, PendingState};

use crate::duration::format_ns;
use crate::error::{At, CliError};
use crate::fmt::count;
use crate::info;
use crate::trust::TrustArgs;

/// Arguments of `shmq pending`.
#[derive(Args)]
pub struct PendingArgs {
    /// The queue file.
    path: PathBuf,
    /// The work group.
    group: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Whom to trust with a file another user made.
    #[command(flatten)]
    trust: TrustArgs,
}

/// One unsettled record, in the shape of the JSON output.
#[derive(Serialize)]
struct Entry {
    /// The record's offset.
    offset: u64,
    /// `in_flight`, `waiting` or `dead_lettering`.
    state: &'static str,
    /// Process id of the worker holding it (in flight or dead-lettering).
    holder_pid: Option<u32>,
    /// Whether that worker is still running.
    holder_alive: bool,
    /// When its lease ends (in flight, dead-lettering) or it is due (waiting), ms since the
    /// Unix epoch.
    deadline_ms: u64,
    /// Milliseconds from now to the deadline; negative once it has passed.
    deadline_in_ms: i64,
    /// How many times it was delivered.
    deliveries: u32,
}

/// The name of a state in the output.
fn state_name(state: PendingState) -> &'static str {
    match state {
        PendingState::InFlight => "in_flight",
        PendingState::Waiting => "waiting",
        PendingState::DeadLettering => "dead_lettering",
    }
}

/// Prints the group's unsettled records, oldest first.
pub fn run(args: &PendingArgs) -> Result<(), CliError> {
    let path = &args.path;
    let queue = args.trust.open_queue(path)?;
    let pending = queue.pending(&args.group).at(path)?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let entries: Vec<Entry> = pending.iter().map(|p| entry(p, now_ms)).collect();
    let text = if args.json {
        info::to_json(path, &entries)?
    } else {
        table(&args.group, &entries)
    };
    info::print(&text)
}

/// The output form of `p`, its deadline measured from `now_ms`.
fn entry(p: &PendingInfo, now_ms: i64) -> Entry {
    Entry {
        offset: p.offset,
        state: state_name(p.state),
        holder_pid: p.holder,
        holder_alive: p.holder_alive,
        deadline_ms: p.deadline_ms,
        deadline_in_ms: i64::try_from(p.deadline_ms)
            .unwrap_or(i64::MAX)
            .saturating_sub(now_ms),
        deliveries: p.deliveries,
    }
}

/// `in 29.5 s`, `1.20 s ago`.
fn relative(ms: i64) -> String {
    let shown = format_ns(ms.unsigned_abs().saturating_mul(1_000_000));
    if ms >= 0 {
        format!("in {shown}")
    } else {
        format!("{shown} ago")
    }
}

/// A summary line, then one row per record.
fn table(group: &str, entries: &[Entry]) -> String {
    if entries.is_empty() {
        return format!("work group {group:?}: nothing pending");
    }
    let of = |state| entries.iter().filter(|e| e.state == state).count() as u64;
    let mut out = format!(
        "work group {group:?}: {} pending ({} in flight, {} waiting, {} dead-lettering)\n",
        count(entries.len() as u64),
        count(of("in_flight")),
        count(of("waiting")),
        count(of("dead_lettering")),
    );
    let mut rows = vec![["OFFSET", "STATE", "HOLDER", "DEADLINE", "DELIVERIES"].map(String::from)];
    for e in entries {
        let deadline = match e.state {
            "waiting" => format!("due {}", relative(e.deadline_in_ms)),
            _ => format!("lease ends {}", relative(e.deadline_in_ms)),
        };
        rows.push([
            e.offset.to_string(),
            e.state.replace('_', " "),
            info::holder(e.holder_pid, e.holder_alive),
            deadline,
            e.deliveries.to_string(),
        ]);
    }
    out.push_str(&info::render_rows(&rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_say_when_a_deadline_is() {
        let p = PendingInfo {
            offset: 7,
            state: PendingState::InFlight,
            holder: Some(42),
            holder_alive: true,
            deadline_ms: 31_500,
            deliveries: 2,
        };
        let waiting = PendingInfo {
            offset: 8,
            state: PendingState::Waiting,
            holder: None,
            holder_alive: false,
            deadline_ms: 800,
            deliveries: 1,
        };
        let entries = [entry(&p, 2_000), entry(&waiting, 2_000)];
        assert_eq!(entries[0].deadline_in_ms, 29_500);
        assert_eq!(
            table("g", &entries),
            "work group \"g\": 2 pending (1 in flight, 1 waiting, 0 dead-lettering)\n\
             OFFSET  STATE      HOLDER          DEADLINE              DELIVERIES\n\
             7       in flight  pid 42 (alive)  lease ends in 29.5 s  2\n\
             8       waiting    -               due 1.20 s ago        1"
        );
    }
}
