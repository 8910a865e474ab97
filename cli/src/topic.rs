//! Topics on the command line: `shmq info` of a topic (per partition, per group, per member)
//! and `shmq topic grow|fan-out|route`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Serialize;
use shmq::{partition_for_key, Topic, TransactionState};

use crate::error::{At, CliError};
use crate::fmt::count;
use crate::info::{self, render_rows};
use crate::size::format_size;
use crate::trust::TrustArgs;

/// Arguments of `shmq topic`.
#[derive(Args)]
pub struct TopicArgs {
    /// What to do with the topic.
    #[command(subcommand)]
    action: Action,
    /// Whom to trust with a file another user made.
    #[command(flatten)]
    trust: TrustArgs,
}

/// The `topic` subcommands.
#[derive(Subcommand)]
enum Action {
    /// Add partitions to a topic. New keyed messages are routed over all of them, so a key's
    /// later messages may land in another partition than its earlier ones (use fan-out to
    /// spread a backlog while keeping per-key order).
    Grow {
        /// The topic directory.
        path: PathBuf,
        /// The new number of partitions (at least the current one).
        #[arg(long)]
        partitions: u32,
    },
    /// Copy a group's uncommitted backlog into another topic (typically one with more
    /// partitions), keeping per-key order, and commit it in the group. Stop the group's
    /// members first.
    FanOut {
        /// The topic whose backlog to copy.
        source: PathBuf,
        /// The topic to copy it into (create it first, with `shmq create --partitions N`).
        dest: PathBuf,
        /// The consumer group whose backlog it is.
        #[arg(long, short)]
        group: String,
    },
    /// Print the partition a key is routed to: CRC32C(key) mod the partition count.
    Route {
        /// The topic directory.
        path: PathBuf,
        /// The key.
        key: String,
    },
}

/// Runs a `topic` subcommand.
pub fn run(args: &TopicArgs) -> Result<(), CliError> {
    match &args.action {
        Action::Grow { path, partitions } => {
            let mut topic = args.trust.open_topic(path)?;
            let before = topic.partition_count();
            topic.grow(*partitions).at(path)?;
            outln!(
                "{}: {before} -> {} partitions",
                path.display(),
                topic.partition_count()
            );
            Ok(())
        }
        Action::FanOut {
            source,
            dest,
            group,
        } => {
            let from = args.trust.open_topic(source)?;
            let to = args.trust.open_topic(dest)?;
            let done = shmq::fan_out(&from, group, &to).at(source)?;
            outln!(
                "copied {} messages of group {group:?} from {} ({} partitions) to {} ({} partitions)",
                count(done.copied),
                source.display(),
                from.partition_count(),
                dest.display(),
                to.partition_count()
            );
            for (p, n) in done.per_partition.iter().enumerate() {
                outln!("  partition {p}: {}", count(*n));
            }
            Ok(())
        }
        Action::Route { path, key } => {
            let topic = args.trust.open_topic(path)?;
            outln!(
                "{}",
                partition_for_key(key.as_bytes(), topic.partition_count())
            );
            Ok(())
        }
    }
}

/// Everything `info` reports about a topic, in the shape of its JSON output.
#[derive(Serialize)]
struct TopicInfo {
    /// The topic directory.
    path: String,
    /// Number of partitions.
    partitions: u32,
    /// Every partition, as `info` reports a queue file.
    partition_info: Vec<info::Info>,
    /// Every member of every group.
    members: Vec<Member>,
    /// Every transactional id (absent when the topic has none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    transactions: Vec<Transaction>,
    /// Why the transactional ids could not be read (their file is damaged; absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    transactions_error: Option<String>,
}

/// One transactional id of a topic (`Topic::transactions`).
#[derive(Serialize)]
struct Transaction {
    /// The transactional id (absent when its name in the file is unreadable).
    id: Option<String>,
    /// Its slot in the transaction file.
    slot: u32,
    /// Its current transaction's epoch (one per commit).
    epoch: u64,
    /// That transaction's state: `none`, `preparing`, `committed` or `aborted`.
    state: &'static str,
    /// The last epoch whose records are all settled.
    settled: u64,
    /// Process id of its holder, if any.
    holder_pid: Option<u32>,
    /// Whether that process is running.
    holder_alive: bool,
}

impl From<shmq::TransactionInfo> for Transaction {
    fn from(t: shmq::TransactionInfo) -> Self {
        Transaction {
            id: t.id,
            slot: t.slot,
            epoch: t.epoch,
            state: match t.state {
                TransactionState::None => "none",
                TransactionState::Preparing => "preparing",
                TransactionState::Committed => "committed",
                TransactionState::Aborted => "aborted",
            },
            settled: t.settled,
            holder_pid: t.holder,
            holder_alive: t.holder_alive,
        }
    }
}

/// One member of a topic's group.
#[derive(Serialize)]
pub struct Member {
    /// Its consumer group.
    pub group: String,
    /// Its process id.
    pid: u32,
    /// Whether that process runs.
    alive: bool,
    /// Milliseconds since its last heartbeat.
    heartbeat_age_ms: u128,
    /// How old its heartbeat may get before the others take its partitions, in milliseconds.
    session_timeout_ms: u128,
    /// Alive with a fresh heartbeat: it counts in the assignment.
    live: bool,
}

/// Prints `shmq info` of `topic`.
pub fn info(topic: &Topic, json: bool) -> Result<(), CliError> {
    let path = topic.path();
    let (transactions, transactions_error) = match topic.transactions() {
        Ok(t) => (t.into_iter().map(Transaction::from).collect(), None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let report = TopicInfo {
        path: path.display().to_string(),
        partitions: topic.partition_count(),
        partition_info: topic.partitions().iter().map(info::gather).collect(),
        members: members(topic),
        transactions,
        transactions_error,
    };
    let text = if json {
        info::to_json(path, &report)?
    } else {
        table(topic, &report)
    };
    info::print(&text)
}

/// Every member of every group of `topic`.
pub fn members(topic: &Topic) -> Vec<Member> {
    topic
        .members()
        .into_iter()
        .map(|m| Member {
            group: m.group,
            pid: m.pid,
            alive: m.alive,
            heartbeat_age_ms: m.heartbeat_age.as_millis(),
            session_timeout_ms: m.session_timeout.as_millis(),
            live: m.live,
        })
        .collect()
}

/// The members as a table, one row each.
pub fn member_table(members: &[Member]) -> String {
    let mut rows = vec![["MEMBER OF", "PID", "ALIVE", "HEARTBEAT", "LIVE"].map(String::from)];
    for m in members {
        rows.push([
            m.group.clone(),
            m.pid.to_string(),
            if m.alive { "yes" } else { "no" }.to_string(),
            format!("{} ms ago", m.heartbeat_age_ms),
            if m.live { "yes" } else { "no" }.to_string(),
        ]);
    }
    render_rows(&rows)
}

/// The human-readable form: the parameters, a row per partition, per group and partition,
/// and per member.
fn table(topic: &Topic, report: &TopicInfo) -> String {
    let g = topic.partitions()[0].geometry();
    let mut out = format!(
        "topic        {}\n\
         partitions   {}, each: capacity {}, max message {}, full policy {}, durability {}\n\n",
        report.path,
        report.partitions,
        format_size(g.capacity),
        format_size(u64::from(g.max_message)),
        g.full_policy.name(),
        g.durability.name(),
    );
    let mut rows = vec![[
        "PARTITION",
        "OLDEST",
        "TAIL",
        "DURABLE",
        "FILL",
        "PRODUCERS",
    ]
    .map(String::from)];
    for (p, i) in report.partition_info.iter().enumerate() {
        rows.push([
            p.to_string(),
            count(i.oldest_offset),
            count(i.tail_offset),
            count(i.durable_offset),
            format_size(i.fill_bytes),
            i.producers_alive.to_string(),
        ]);
    }
    out.push_str(&render_rows(&rows));
    let groups: Vec<info::Group> = (0u32..)
        .zip(topic.partitions())
        .flat_map(|(p, q)| info::groups(q, Some(p)))
        .collect();
    out.push_str("\n\n");
    if groups.is_empty() {
        out.push_str("groups       none");
    } else {
        out.push_str(&info::group_table(&groups));
    }
    if !report.members.is_empty() {
        out.push_str("\n\n");
        out.push_str(&member_table(&report.members));
    }
    if let Some(e) = &report.transactions_error {
        out.push_str(&format!("\n\ntransactions {e}"));
    } else if !report.transactions.is_empty() {
        out.push_str("\n\n");
        out.push_str(&transaction_table(&report.transactions));
    }
    out
}

/// The transactional ids, one row each: the state of the current transaction, its epoch,
/// the last settled epoch (behind the current one: the id's next commit or holder finishes
/// that transaction first) and the holder.
fn transaction_table(transactions: &[Transaction]) -> String {
    let header = ["TRANSACTIONAL ID", "STATE", "EPOCH", "SETTLED", "HOLDER"];
    let mut rows = vec![header.map(String::from)];
    for t in transactions {
        rows.push([
            t.id.clone()
                .unwrap_or_else(|| format!("(unreadable name, slot {})", t.slot)),
            t.state.to_string(),
            count(t.epoch),
            count(t.settled),
            info::holder(t.holder_pid, t.holder_alive),
        ]);
    }
    render_rows(&rows)
}
