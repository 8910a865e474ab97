//! `shmq info`: a queue's parameters, tail offset and consumer groups, as a table or JSON.

use std::io::Write;

use serde::Serialize;
use shmq::{FullPolicy, Queue};

use crate::error::CliError;
use crate::fmt::count;
use crate::size::format_size;
use crate::InfoArgs;

/// Everything `info` reports, in the shape of its JSON output.
#[derive(Serialize)]
struct Info {
    /// The queue file.
    path: String,
    /// Ring size in bytes.
    capacity: u64,
    /// Largest message in bytes.
    max_message: u32,
    /// `block`, `reject` or `overwrite`.
    full_policy: &'static str,
    /// Consumer-group slots.
    group_slots: u32,
    /// Producer slots.
    producer_slots: u32,
    /// How long a stalled publish may hold readers up, in milliseconds.
    claim_timeout_ms: u128,
    /// Creation time, nanoseconds since the Unix epoch.
    created_ns: u64,
    /// The next offset a producer will be given.
    tail_offset: u64,
    /// Every consumer group.
    groups: Vec<Group>,
}

/// One consumer group as reported by `info`.
#[derive(Serialize)]
struct Group {
    /// The group's name.
    name: String,
    /// The next offset the group reads after a restart.
    committed: u64,
    /// Messages published but not committed by the group (tail minus committed).
    lag: u64,
    /// Whether the group holds producers back.
    gating: bool,
    /// Process id of the member holding the group, if any.
    holder_pid: Option<u32>,
    /// Whether that process is running.
    holder_alive: bool,
}

/// The command-line spelling of a full policy.
pub fn policy_name(p: FullPolicy) -> &'static str {
    match p {
        FullPolicy::Block => "block",
        FullPolicy::Reject => "reject",
        FullPolicy::Overwrite => "overwrite",
    }
}

/// Opens the queue and prints its state.
pub fn run(args: &InfoArgs) -> Result<(), CliError> {
    let queue = Queue::open(&args.path).map_err(|e| CliError::queue(&args.path, e))?;
    let info = gather(&queue);
    let text = if args.json {
        serde_json::to_string_pretty(&info)
            .map_err(|e| CliError::new(args.path.display(), format_args!("JSON: {e}")))?
    } else {
        table(&info)
    };
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::new("stdout", e)),
        _ => Ok(()),
    }
}

/// Reads the queue's state: the groups first, then the tail, so no lag comes out negative.
fn gather(queue: &Queue) -> Info {
    let groups = queue.groups();
    let tail = queue.tail_offset();
    let g = queue.geometry();
    Info {
        path: queue.path().display().to_string(),
        capacity: g.capacity,
        max_message: g.max_message,
        full_policy: policy_name(g.full_policy),
        group_slots: g.group_slots,
        producer_slots: g.producer_slots,
        claim_timeout_ms: g.claim_timeout.as_millis(),
        created_ns: g.created_ns,
        tail_offset: tail,
        groups: groups
            .into_iter()
            .map(|gi| Group {
                lag: tail.saturating_sub(gi.committed),
                name: gi.name,
                committed: gi.committed,
                gating: gi.gating,
                holder_pid: gi.holder,
                holder_alive: gi.holder_alive,
            })
            .collect(),
    }
}

/// Renders the human-readable form.
fn table(info: &Info) -> String {
    let mut out = format!(
        "queue        {}\n\
         capacity     {} ({} bytes)\n\
         max message  {} ({} bytes)\n\
         full policy  {}\n\
         slots        {} groups, {} producers\n\
         tail offset  {}\n",
        info.path,
        format_size(info.capacity),
        info.capacity,
        format_size(u64::from(info.max_message)),
        info.max_message,
        info.full_policy,
        info.group_slots,
        info.producer_slots,
        count(info.tail_offset),
    );
    if info.groups.is_empty() {
        out.push_str("groups       none");
        return out;
    }
    let mut rows = vec![[
        "GROUP".to_string(),
        "COMMITTED".to_string(),
        "LAG".to_string(),
        "GATING".to_string(),
        "HOLDER".to_string(),
    ]];
    for g in &info.groups {
        let holder = match g.holder_pid {
            Some(pid) if g.holder_alive => format!("pid {pid} (alive)"),
            Some(pid) => format!("pid {pid} (dead)"),
            None => "-".to_string(),
        };
        rows.push([
            g.name.clone(),
            count(g.committed),
            count(g.lag),
            if g.gating { "yes" } else { "no" }.to_string(),
            holder,
        ]);
    }
    out.push('\n');
    out.push_str(&render_rows(&rows));
    out
}

/// Lays out rows in left-aligned columns two spaces apart.
pub fn render_rows<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let lines: Vec<String> = rows
        .iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect();
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_line_up() {
        let rows = [
            ["A".to_string(), "BB".to_string()],
            ["CCC".to_string(), "D".to_string()],
        ];
        assert_eq!(render_rows(&rows), "A    BB\nCCC  D");
    }
}
