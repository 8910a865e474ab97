//! `shmq`: the command-line tool for shmq queue files.
//!
//! Subcommands: `demo` (a multi-process order-service demo), `create`, `info`, `publish`,
//! `consume`, `group`, `stat`, `topic`, `bench` and `completions`. This file holds the clap
//! definitions and the error reporting; each subcommand lives in its own module. Every failure
//! is reported as one line `shmq: <subject>: <cause>` on stderr with a non-zero exit status.

/// `println!` that never panics: output to a closed or failing stdout (e.g. `| head`) is
/// dropped. Commands whose output is their result check their writes instead.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that never panics (a closed stderr drops the message).
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod bar;
mod bench;
#[cfg(feature = "bridge")]
mod bridge;
mod consume;
mod create;
mod demo;
mod duration;
mod error;
mod exporter;
mod fmt;
mod group;
mod info;
mod list;
mod publish;
mod size;
mod stat;
mod tail;
mod time;
mod topic;
mod trust;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Command-line tool for shmq, a multi-process message queue in one shared memory-mapped file.
#[derive(Parser)]
#[command(name = "shmq", version, about, long_about = None)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Subcommand)]
enum Command {
    /// Run the demo: an order service and three consumer groups, each in its own process.
    Demo(DemoArgs),
    /// Create a new queue file.
    Create(CreateArgs),
    /// Show a queue's parameters, tail offset and consumer groups.
    Info(InfoArgs),
    /// List the queue files and topics in a directory: size, messages, groups, processes.
    List(list::ListArgs),
    /// Publish messages to a queue or topic: one per line of stdin, or synthetic load.
    Publish(PublishArgs),
    /// Read messages as the member of a consumer group of a queue or topic.
    Consume(ConsumeArgs),
    /// Print a queue's or topic's messages without a group: creates nothing, holds nothing back.
    Tail(tail::TailArgs),
    /// List, create, reset or delete consumer groups.
    Group(group::GroupArgs),
    /// Show live rates every interval: published/s, committed/s and lag per group.
    Stat(stat::StatArgs),
    /// Grow a topic, fan a backlog out into another topic, or show where a key is routed.
    Topic(topic::TopicArgs),
    /// Serve the state of queues and topics to Prometheus over HTTP (`GET /metrics`).
    Exporter(exporter::ExporterArgs),
    /// Print a shell completion script (e.g. `shmq completions bash > /etc/bash_completion.d/shmq`).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Measure one-way latency between two processes: shmq against the floors and pipes/sockets.
    Bench(bench::BenchArgs),
    /// Bridge a topic to NATS JetStream (out) or a JetStream stream into a topic (in).
    #[cfg(feature = "bridge")]
    Bridge(bridge::BridgeArgs),
    /// One process of the demo (started by `shmq demo`, not by hand).
    #[command(hide = true)]
    DemoWorker(WorkerArgs),
}

/// Arguments of `shmq demo`.
#[derive(Args)]
struct DemoArgs {
    /// How many "order paid" events the order service publishes.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..))]
    messages: u64,
    /// Keep the queue file (DIR/orders.q) here instead of in a temporary directory.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Plain progress lines instead of progress bars (for logs and CI).
    #[arg(long)]
    no_progress: bool,
    /// Orders per second the order service publishes (0: as fast as it can).
    #[arg(long, default_value_t = 50_000, value_name = "PER_SEC")]
    rate: u64,
    /// Messages per second the slow sms group can send (0: unthrottled).
    #[arg(long, default_value_t = 20_000, value_name = "PER_SEC")]
    sms_rate: u64,
    /// Size of the queue's ring; a small ring makes the slow group hold the producer back.
    #[arg(long, default_value = "64MiB", value_parser = size::parse_size, value_name = "SIZE")]
    capacity: u64,
}

/// Which process of the demo a worker is.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Role {
    /// The order service: publishes the events.
    Producer,
    /// The single member of one consumer group.
    Consumer,
}

/// Arguments of the hidden `shmq demo-worker`.
#[derive(Args)]
struct WorkerArgs {
    /// Producer or consumer.
    #[arg(long, value_enum)]
    role: Role,
    /// The queue file.
    #[arg(long)]
    queue: PathBuf,
    /// The consumer group (consumers only).
    #[arg(long, required_if_eq("role", "consumer"))]
    group: Option<String>,
    /// How many events to publish or to expect.
    #[arg(long)]
    messages: u64,
    /// Events per second at most (0: unthrottled).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Where to write the JSON report for the parent.
    #[arg(long)]
    report: PathBuf,
}

/// What a full queue does, as spelled on the command line.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Full {
    /// Producers wait for the slowest gating group.
    Block,
    /// Publishing fails at once.
    Reject,
    /// The oldest records are overwritten.
    Overwrite,
}

impl From<Full> for shmq::FullPolicy {
    fn from(f: Full) -> Self {
        match f {
            Full::Block => shmq::FullPolicy::Block,
            Full::Reject => shmq::FullPolicy::Reject,
            Full::Overwrite => shmq::FullPolicy::Overwrite,
        }
    }
}

/// A durability policy, as spelled on the command line.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DurabilityArg {
    /// Page cache only: survives any process crash, not a machine crash.
    None,
    /// Group commit: flushed within --batch-delay or every --batch-bytes.
    Batch,
    /// Each publish returns once its message is on disk.
    Sync,
}

/// Arguments of `shmq create`.
#[derive(Args)]
struct CreateArgs {
    /// The queue file (or, with --partitions, the topic directory) to create; must not exist.
    path: PathBuf,
    /// Create a topic: a directory of this many partitions (queue files with the options
    /// below), to which keyed messages are routed by CRC32C(key) mod N.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(shmq::MAX_PARTITIONS)))]
    partitions: Option<u32>,
    /// Ring size: a power of two from 4KiB to 1TiB.
    #[arg(long, default_value = "64MiB", value_parser = size::parse_capacity, value_name = "SIZE")]
    capacity: u64,
    /// Largest message [default: 1MiB, or the most a smaller ring allows].
    #[arg(long, value_parser = size::parse_size, value_name = "SIZE")]
    max_message: Option<u64>,
    /// What producers do when the ring is full.
    #[arg(long, value_enum, default_value_t = Full::Block)]
    full: Full,
    /// What a publish promises about surviving a machine crash.
    #[arg(long, value_enum, default_value_t = DurabilityArg::None)]
    durability: DurabilityArg,
    /// Batch: longest time a message waits for its flush.
    #[arg(long, default_value = "10ms", value_parser = duration::parse_duration, value_name = "DURATION")]
    batch_delay: Duration,
    /// Batch: unflushed bytes that trigger a flush.
    #[arg(long, default_value = "1MiB", value_parser = size::parse_size, value_name = "SIZE")]
    batch_bytes: u64,
    /// Permission bits of the file, in octal. 0660 shares it with its group, whose users open
    /// it with --trust-group; a mode that lets every user write is refused.
    #[arg(long, default_value = "0600", value_parser = parse_mode)]
    mode: u32,
}

/// Arguments of `shmq info`.
#[derive(Args)]
struct InfoArgs {
    /// The queue file or topic directory.
    path: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Whom to trust with a file another user made.
    #[command(flatten)]
    trust: trust::TrustArgs,
}

/// Arguments of `shmq publish`.
#[derive(Args)]
struct PublishArgs {
    /// The queue file or topic directory.
    path: PathBuf,
    /// Publish the lines of this file instead of stdin's.
    #[arg(long, conflicts_with = "count", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Publish this many synthetic messages instead of reading stdin.
    #[arg(long)]
    count: Option<u64>,
    /// Topics: give every message this key (it picks the partition).
    #[arg(long, conflicts_with = "key_separator")]
    key: Option<String>,
    /// Topics: each message is KEY, this separator, then the value (e.g. --key-separator ' ').
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// Topics: publish to this partition instead of routing by key or in turn.
    #[arg(long)]
    partition: Option<u32>,
    /// Size of each synthetic message.
    #[arg(long, requires = "count", default_value = "64", value_parser = size::parse_size, value_name = "SIZE")]
    size: u64,
    /// A line the queue refuses (larger than its max message, or without the key separator)
    /// is reported on stderr and skipped instead of ending the run.
    #[arg(long, conflicts_with = "count")]
    skip_invalid: bool,
    /// Give up when the queue stays full this long (policy block) [default: wait forever].
    #[arg(long, value_parser = duration::parse_duration, value_name = "DURATION")]
    timeout: Option<Duration>,
    /// Whom to trust with a file another user made.
    #[command(flatten)]
    trust: trust::TrustArgs,
}

/// Where `shmq consume` starts reading.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum StartAt {
    /// The oldest message still in the ring.
    Earliest,
    /// The next message to be published.
    Latest,
    /// The group's committed offset (where it left off).
    Committed,
    /// A given offset.
    Offset(u64),
    /// The first message published at or after this time (nanoseconds since the Unix epoch).
    Time(u64),
}

/// Parses `--from`: `earliest`, `latest`, `committed`, an offset or a time.
fn parse_from(s: &str) -> Result<StartAt, String> {
    match s {
        "earliest" => Ok(StartAt::Earliest),
        "latest" => Ok(StartAt::Latest),
        "committed" => Ok(StartAt::Committed),
        _ => match s.parse() {
            Ok(offset) => Ok(StartAt::Offset(offset)),
            Err(_) => time::parse_time(s).map(StartAt::Time).map_err(|e| {
                format!("expected earliest, latest, committed, an offset or a time; as a time: {e}")
            }),
        },
    }
}

/// Parses `--mode`: octal permission bits such as `0600` or `0o644`.
fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 && !digits.is_empty() => Ok(m),
        _ => Err("expected octal permission bits from 0000 to 0777, like 0600".to_string()),
    }
}

/// How `shmq consume` prints messages.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// The payload bytes as they are, one message per line.
    Text,
    /// The offset and the payload in hex.
    Hex,
    /// One JSON object per line: offset, timestamp and payload (`payload_hex` instead when
    /// it is not UTF-8).
    Json,
}

/// Arguments of `shmq consume`.
#[derive(Args)]
struct ConsumeArgs {
    /// The queue file or topic directory.
    path: PathBuf,
    /// The consumer group to read as.
    #[arg(long, short)]
    group: String,
    /// Where to start: earliest, latest, committed, an offset, or a time: RFC 3339
    /// (2026-12-01T07:00:00Z) or now-DURATION (now-15m).
    #[arg(long, default_value = "committed", value_parser = parse_from, value_name = "WHERE")]
    from: StartAt,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Commit what was printed, so the group resumes after it next time.
    #[arg(long)]
    commit: bool,
    /// Keep waiting for new messages until interrupted (or --count is reached).
    #[arg(long, conflicts_with = "timeout")]
    follow: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Stop once no message arrives for this long.
    #[arg(long, default_value = "0s", value_parser = duration::parse_duration, value_name = "DURATION")]
    timeout: Duration,
    /// Create the group if it does not exist (a gating group, unless --non-gating).
    #[arg(long)]
    create: bool,
    /// With --create: make the new group non-gating (it never holds producers back).
    #[arg(long, requires = "create")]
    non_gating: bool,
    /// Let another consumer take the group (queue files) if this one stops polling for this
    /// long (hung or stopped); without it the group is held while this process lives.
    #[arg(long, value_parser = duration::parse_duration, value_name = "DURATION")]
    session_timeout: Option<Duration>,
    /// Deliver records without checking their CRC32C (by default a damaged record stops the
    /// run with an error naming its offset).
    #[arg(long)]
    no_verify: bool,
    /// Whom to trust with a file another user made.
    #[command(flatten)]
    trust: trust::TrustArgs,
}

fn main() -> ExitCode {
    bench::maybe_run_child();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    let result = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Create(args) => create::run(&args),
        Command::Info(args) => info::run(&args),
        Command::List(args) => list::run(&args),
        Command::Publish(args) => publish::run(&args),
        Command::Consume(args) => consume::run(&args),
        Command::Tail(args) => tail::run(&args),
        Command::Group(args) => group::run(&args),
        Command::Stat(args) => stat::run(&args),
        Command::Topic(args) => topic::run(&args),
        Command::Completions { shell } => completions(shell),
        Command::Exporter(args) => exporter::run(&args),
        Command::Bench(args) => bench::run(&args),
        #[cfg(feature = "bridge")]
        Command::Bridge(args) => bridge::run(&args),
        Command::DemoWorker(args) => demo::worker::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("shmq: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Prints the completion script for `shell` (a closed stdout is not an error).
fn completions(shell: clap_complete::Shell) -> Result<(), error::CliError> {
    use clap::CommandFactory;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "shmq", &mut script);
    info::print(String::from_utf8_lossy(&script).trim_end())
}

/// Reports a command-line error as one line (help and version requests print normally).
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
    }
    let mut text = one_line(&e.to_string());
    if let Some(arg) = dash_value(e) {
        text.push_str(&format!(
            " (a value that starts with '-' goes after '--', as in `shmq group create PATH -- \
             {arg}`, or after '=', as in `--group={arg}`)"
        ));
    }
    errln!("shmq: {text}");
    ExitCode::from(2)
}

/// The argument of an "unexpected argument" error that looks like a value starting with '-'
/// (e.g. a group named `-dash`) rather than a misspelt option.
fn dash_value(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) if arg.starts_with('-') && !arg.starts_with("--") => {
            std::env::args().find(|a| a.starts_with(arg.as_str()))
        }
        _ => None,
    }
}

/// Folds clap's multi-line error text into one line: the message and its details, without the
/// `error:` prefix, tips, usage and help pointer.
fn one_line(text: &str) -> String {
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
        .collect();
    let joined = parts.join(" ");
    joined
        .strip_prefix("error: ")
        .unwrap_or(&joined)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definitions_are_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn one_line_keeps_details() {
        let text = "error: the following required arguments were not provided:\n  --group <GROUP>\n\nUsage: shmq consume --group <GROUP> <PATH>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line(text),
            "the following required arguments were not provided: --group <GROUP>"
        );
    }

    #[test]
    fn parses_from_and_mode() {
        assert_eq!(parse_from("latest"), Ok(StartAt::Latest));
        assert_eq!(parse_from("42"), Ok(StartAt::Offset(42)));
        assert_eq!(
            parse_from("1970-01-01T00:00:03Z"),
            Ok(StartAt::Time(3_000_000_000))
        );
        assert!(parse_from("-1").is_err());
        assert_eq!(parse_mode("0600"), Ok(0o600));
        assert_eq!(parse_mode("0o644"), Ok(0o644));
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("1777").is_err());
        assert!(parse_mode("").is_err());
    }
}
