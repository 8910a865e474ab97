//! `shmq`: the command-line tool for shmq queue files.
//!
//! Subcommands: `demo` (a multi-process order-service demo), `create`, `info`, `list`,
//! `publish`, `consume`, `tail`, `group`, `pending`, `inbox`, `dlq`, `stat`, `topic`, `exporter`,
//! `bench`, `bridge` and `completions`. This file holds the list of
//! subcommands, the dispatch and the error reporting; each subcommand lives in its own module,
//! its arguments next to its code. Every failure
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
mod dlq;
mod duration;
mod error;
mod exporter;
mod fmt;
mod group;
mod inbox;
mod info;
mod list;
mod pending;
mod publish;
mod size;
mod stat;
mod tail;
mod time;
mod topic;
mod trust;
mod work;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    Demo(demo::DemoArgs),
    /// Create a new queue file.
    Create(create::CreateArgs),
    /// Show a queue's parameters, tail offset and consumer groups.
    Info(info::InfoArgs),
    /// List the queue files and topics in a directory: size, messages, groups, processes.
    List(list::ListArgs),
    /// Publish messages to a queue or topic: one per line of stdin, or synthetic load.
    Publish(publish::PublishArgs),
    /// Read messages as the member of a consumer group of a queue or topic, or as one of the
    /// competing workers of a work group (--shared).
    Consume(consume::ConsumeArgs),
    /// Print a queue's or topic's messages without a group: creates nothing, holds nothing back.
    Tail(tail::TailArgs),
    /// List, create, reset or delete consumer groups.
    Group(group::GroupArgs),
    /// Show a work group's unsettled records: in flight, waiting, being dead-lettered.
    Pending(pending::PendingArgs),
    /// List a queue's inboxes (de-duplication filters) with their fill, or delete one.
    Inbox(inbox::InboxArgs),
    /// List, replay or purge the records of a work group's dead-letter queue.
    Dlq(dlq::DlqArgs),
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
    DemoWorker(demo::worker::WorkerArgs),
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
        Command::Pending(args) => pending::run(&args),
        Command::Inbox(args) => inbox::run(&args),
        Command::Dlq(args) => dlq::run(&args),
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
}
