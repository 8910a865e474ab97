//! `shmq`: the command-line tool for shmq queue files.
//!
//! Subcommands: `demo` (a multi-process order-service demo), `create`, `info`, `publish` and
//! `consume`. This file holds the clap definitions and the error reporting; each subcommand
//! lives in its own module. Every failure is reported as one line `shmq: <subject>: <cause>` on
//! stderr with a non-zero exit status.

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

mod bench;
mod consume;
mod create;
mod demo;
mod duration;
mod error;
mod fmt;
mod info;
mod publish;
mod size;

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
    /// Publish messages: one per line of stdin, or synthetic load with --count.
    Publish(PublishArgs),
    /// Read messages as the member of a consumer group.
    Consume(ConsumeArgs),
    /// Measure one-way latency between two processes: shmq against the floors and pipes/sockets.
    Bench(bench::BenchArgs),
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

/// Arguments of `shmq create`.
#[derive(Args)]
struct CreateArgs {
    /// The queue file to create (must not exist).
    path: PathBuf,
    /// Ring size: a power of two from 4KiB to 1TiB.
    #[arg(long, default_value = "64MiB", value_parser = size::parse_size, value_name = "SIZE")]
    capacity: u64,
    /// Largest message [default: 1MiB, or the most a smaller ring allows].
    #[arg(long, value_parser = size::parse_size, value_name = "SIZE")]
    max_message: Option<u64>,
    /// What producers do when the ring is full.
    #[arg(long, value_enum, default_value_t = Full::Block)]
    full: Full,
    /// Permission bits of the file, in octal.
    #[arg(long, default_value = "0600", value_parser = parse_mode)]
    mode: u32,
}

/// Arguments of `shmq info`.
#[derive(Args)]
struct InfoArgs {
    /// The queue file.
    path: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Arguments of `shmq publish`.
#[derive(Args)]
struct PublishArgs {
    /// The queue file.
    path: PathBuf,
    /// Publish this many synthetic messages instead of reading stdin.
    #[arg(long)]
    count: Option<u64>,
    /// Size of each synthetic message.
    #[arg(long, requires = "count", default_value = "64", value_parser = size::parse_size, value_name = "SIZE")]
    size: u64,
    /// Give up when the queue stays full this long (policy block) [default: wait forever].
    #[arg(long, value_parser = duration::parse_duration, value_name = "DURATION")]
    timeout: Option<Duration>,
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
}

/// Parses `--from`: `earliest`, `latest`, `committed` or an offset.
fn parse_from(s: &str) -> Result<StartAt, String> {
    match s {
        "earliest" => Ok(StartAt::Earliest),
        "latest" => Ok(StartAt::Latest),
        "committed" => Ok(StartAt::Committed),
        _ => s.parse().map(StartAt::Offset).map_err(|_| {
            "expected earliest, latest, committed or an offset (a whole number)".to_string()
        }),
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
    /// One JSON object per line: offset, timestamp and payload.
    Json,
}

/// Arguments of `shmq consume`.
#[derive(Args)]
struct ConsumeArgs {
    /// The queue file.
    path: PathBuf,
    /// The consumer group to read as.
    #[arg(long, short)]
    group: String,
    /// Where to start: earliest, latest, committed, or an offset.
    #[arg(long, default_value = "committed", value_parser = parse_from)]
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
        Command::Publish(args) => publish::run(&args),
        Command::Consume(args) => consume::run(&args),
        Command::Bench(args) => bench::run(&args),
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
    errln!("shmq: {}", one_line(&e.to_string()));
    ExitCode::from(2)
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
        assert!(parse_from("-1").is_err());
        assert_eq!(parse_mode("0600"), Ok(0o600));
        assert_eq!(parse_mode("0o644"), Ok(0o644));
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("1777").is_err());
        assert!(parse_mode("").is_err());
    }
}
