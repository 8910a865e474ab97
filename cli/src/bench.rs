//! `shmq bench`: one-way latency percentiles of 64-byte messages between two processes, for
//! shmq and the floors and transports it is compared with, all measured in one run. Built with
//! the `alternatives` feature it also measures iceoryx2, Redis Streams and NATS (a broker whose
//! server is not installed is skipped with a note).
//!
//! `shmq bench --throughput`: messages per second from producer processes to a consumer
//! process, for shmq (1 and 4 producers, one gating group) and a minimal single-producer ring
//! (the floor), in interleaved rounds, with the ratios against the floor.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use shmq_pingpong::percentiles::{self, Latencies, QUANTILES};
use shmq_pingpong::throughput::{self, Case, Flow};
use shmq_pingpong::{Mode, Pinger};

use crate::error::CliError;
use crate::fmt::count;

pub use shmq_pingpong::maybe_run_child;

/// Messages per mode with `--quick`.
const QUICK_MESSAGES: u64 = 100_000;
/// Messages per mode without `--messages`.
const DEFAULT_MESSAGES: u64 = 1_000_000;
/// Messages per throughput case with `--throughput --quick`.
const QUICK_THROUGHPUT: u64 = 2_000_000;
/// Messages per throughput case with `--throughput` and without `--messages`.
const DEFAULT_THROUGHPUT: u64 = 20_000_000;
/// Back-to-back clock reads measured for the clock's own cost.
const CLOCK_READS: u32 = 100_000;

/// Arguments of `shmq bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Messages per mode: timed round trips [default: 1,000,000]; with --throughput, messages
    /// moved per case [default: 20,000,000].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    messages: Option<u64>,
    /// A short run: 100,000 messages per mode (2,000,000 per case with --throughput).
    #[arg(long, conflicts_with = "messages")]
    quick: bool,
    /// Measure throughput instead of latency: msgs/s of shmq with 1 and 4 producer processes
    /// into one consumer process, next to a minimal single-producer ring.
    #[arg(long)]
    throughput: bool,
    /// Interleaved rounds: each mode gets messages/rounds per round, in turn.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    rounds: u64,
    /// Where the pairs' temporary files go [default: the system's temporary directory].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// No progress bar (for logs and CI).
    #[arg(long)]
    no_progress: bool,
}

/// The ratios printed under the table: (numerator, denominator), where both ran.
const RATIOS: &[(Mode, Mode)] = &[
    (Mode::ShmqSpin, Mode::Floor),
    (Mode::ShmqBlocking, Mode::FutexFloor),
    (Mode::ShmqBlocking, Mode::Floor),
    (Mode::UnixSocket, Mode::ShmqSpin),
    (Mode::UnixSocket, Mode::ShmqBlocking),
    (Mode::Pipe, Mode::ShmqSpin),
    (Mode::Pipe, Mode::ShmqBlocking),
];

/// Runs `shmq bench`.
pub fn run(args: &BenchArgs) -> Result<(), CliError> {
    if args.throughput {
        return throughput(args);
    }
    let messages = if args.quick {
        QUICK_MESSAGES
    } else {
        args.messages.unwrap_or(DEFAULT_MESSAGES)
    };
    let dir = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    outln!(
        "shmq bench: one-way latency of 64-byte messages between two processes (round trip / 2)"
    );
    outln!(
        "  {} messages per mode in {} interleaved rounds; {}",
        count(messages),
        args.rounds.min(messages),
        machine()
    );
    let clock = percentiles::clock_read_cost(CLOCK_READS);
    outln!(
        "  clock read, included in every sample: p50 {} ns, p99 {} ns",
        clock.value_at_quantile(0.5),
        clock.value_at_quantile(0.99)
    );

    let mut pingers = Vec::new();
    for &m in Mode::ALL {
        match Pinger::start(m, &dir) {
            Ok(p) => pingers.push(p),
            Err(e @ shmq_pingpong::Error::Unavailable { .. }) => outln!("  {e}"),
            Err(e) => return Err(CliError::new("bench", e)),
        }
    }
    let modes: Vec<Mode> = pingers.iter().map(|p| p.mode()).collect();
    let bar = progress_bar(messages * modes.len() as u64, !args.no_progress);
    let found = percentiles::measure(&mut pingers, messages, args.rounds, |n| bar.inc(n))
        .map_err(|e| CliError::new("bench", e))?;
    bar.finish_and_clear();
    drop(pingers);

    outln!();
    outln!("  how each mode waits for the next message:");
    for &m in &modes {
        outln!("    {:<15}{}", m.name(), waits(m));
    }
    outln!(
        "  shmq's pairs prefault their queue files (Queue::prefault) before they are timed: \
         without it, the first lap takes a page fault on every 4 KiB page it touches in each \
         process, a few microseconds each, which sets a short run's p99.9"
    );
    outln!();
    print_table(&modes, &found);
    outln!();
    let pairs = print_ratios(&modes, &found, "RATIO (whole run)", whole_run);
    outln!();
    print_ratios(&modes, &found, "RATIO (median of rounds)", median_of_rounds);
    outln!();
    outln!(
        "  whole run: the percentiles of every round's samples together; median of rounds: \
         each round's ratio, then their median (a round the VM slows as a whole moves the \
         first, not the second)"
    );
    outln!("  each ratio divides the first mode's figure by the second's (below 1: the first is faster):");
    for (a, b) in pairs {
        outln!(
            "    {:<30}{}",
            format!("{} / {}", a.name(), b.name()),
            compares(a, b)
        );
    }
    Ok(())
}

/// Runs `shmq bench --throughput`.
fn throughput(args: &BenchArgs) -> Result<(), CliError> {
    let messages = if args.quick {
        QUICK_THROUGHPUT
    } else {
        args.messages.unwrap_or(DEFAULT_THROUGHPUT)
    };
    let dir = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    outln!(
        "shmq bench --throughput: 64-byte messages from producer processes to one consumer process"
    );
    outln!(
        "  {} messages per case in {} interleaved rounds; {}",
        count(messages),
        args.rounds.min(messages / 2).max(1),
        machine()
    );
    outln!();
    for case in Case::ALL {
        outln!("    {:<16}{}", case.name(), case.describe());
    }
    outln!();
    let mut flows = Vec::new();
    for case in Case::ALL {
        flows.push(Flow::start(case, &dir).map_err(|e| CliError::new("bench", e))?);
    }
    let bar = progress_bar(messages * flows.len() as u64, !args.no_progress);
    let report = throughput::measure(&mut flows, messages, args.rounds, |n| bar.inc(n))
        .map_err(|e| CliError::new("bench", e))?;
    bar.finish_and_clear();
    drop(flows);
    outln!("{}", report.to_string().trim_end());
    Ok(())
}

/// How `mode`'s reader waits: whether it spins or sleeps, which explains most differences.
fn waits(mode: Mode) -> &'static str {
    match mode {
        Mode::Floor => "spins on one shared atomic word (the floor of a spinning reader)",
        Mode::FutexFloor => "sleeps in FUTEX_WAIT at once (the floor of waking a sleeping process)",
        Mode::ShmqSpin => {
            "spins: poll with a zero timeout in a loop (a busy core each side; on a machine \
             without a free core per spinner it is descheduled, and its tail is worse than \
             shmq_blocking's)"
        }
        Mode::ShmqBlocking => {
            "spins briefly, then sleeps on the futex (no CPU while idle; a message that comes \
             during the spin skips the wake-up)"
        }
        Mode::Pipe | Mode::UnixSocket => "sleeps in a blocking read(2) until the kernel wakes it",
        // The alternatives exist when shmq-pingpong is built with their features, which a
        // workspace build can turn on without this crate's `alternatives`: named by name.
        #[allow(unreachable_patterns)]
        other => match other.name() {
            "iceoryx2" => "spins on receive()",
            "redis_streams" => "sleeps in XREAD BLOCK until the server answers",
            _ => "sleeps in a socket read until the broker pushes the message",
        },
    }
}

/// What the ratio `a / b` tells.
fn compares(a: Mode, b: Mode) -> String {
    match (a, b) {
        (Mode::ShmqSpin, Mode::Floor) => {
            "the cost of shmq's protocol over a bare atomic handoff, both spinning".into()
        }
        (Mode::ShmqBlocking, Mode::FutexFloor) => "the cost of shmq's sleeping reader over a bare \
             futex wake-up; below 1 when its spin catches messages before it sleeps"
            .into(),
        (Mode::ShmqBlocking, Mode::Floor) => {
            "a reader that may sleep against the spinning floor".into()
        }
        (_, Mode::ShmqSpin) => format!("how many times slower {} is than spinning shmq", a.name()),
        (_, Mode::ShmqBlocking) => {
            format!("how many times slower {} is than sleeping shmq", a.name())
        }
        _ => format!("{} against {}", a.name(), b.name()),
    }
}

/// The CPU count and load average, which every figure depends on.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_string());
    format!("{cpus} CPUs, load average {load}")
}

/// A progress bar over `total` messages on stderr, hidden unless `wanted` and stderr is a
/// terminal.
fn progress_bar(total: u64, wanted: bool) -> ProgressBar {
    if !(wanted && std::io::stderr().is_terminal()) {
        return ProgressBar::hidden();
    }
    ProgressBar::new(total)
        .with_style(crate::bar::style("cyan"))
        .with_prefix("measuring")
}

/// The percentile table: one row per mode, one-way nanoseconds.
fn print_table(modes: &[Mode], found: &[Latencies]) {
    let mut head = format!("{:<15}", "MODE");
    for (label, _) in QUANTILES {
        head.push_str(&format!(" {:>10}", label.to_uppercase()));
    }
    outln!("{head} {:>12}   (one-way, ns)", "MAX");
    for (m, l) in modes.iter().zip(found) {
        let mut row = format!("{:<15}", m.name());
        for (_, q) in QUANTILES {
            row.push_str(&format!(" {:>10}", l.all.value_at_quantile(q)));
        }
        outln!("{row} {:>12}", l.all.max());
    }
}

/// Ratios of the percentiles (and max) of the pairs in `RATIOS` (and of the alternatives to
/// shmq); returns the pairs printed.
fn print_ratios(
    modes: &[Mode],
    found: &[Latencies],
    title: &str,
    how: fn(&Latencies, &Latencies, Option<f64>) -> f64,
) -> Vec<(Mode, Mode)> {
    let of = |m: Mode| modes.iter().position(|&x| x == m).map(|i| &found[i]);
    let mut head = format!("{title:<30}");
    for (label, _) in QUANTILES {
        head.push_str(&format!(" {:>9}", label.to_uppercase()));
    }
    outln!("{head} {:>9}", "MAX");
    let mut pairs: Vec<(Mode, Mode)> = RATIOS.to_vec();
    pairs.extend(
        modes
            .iter()
            .filter(|m| !RATIOS.iter().any(|(a, b)| a == *m || b == *m))
            .filter(|&&m| m != Mode::Floor && m != Mode::FutexFloor)
            .flat_map(|&m| [(m, Mode::ShmqSpin), (m, Mode::ShmqBlocking)]),
    );
    let mut printed = Vec::new();
    for (a, b) in pairs {
        let (Some(la), Some(lb)) = (of(a), of(b)) else {
            continue;
        };
        printed.push((a, b));
        let mut row = format!("{:<30}", format!("{} / {}", a.name(), b.name()));
        for (_, q) in QUANTILES {
            row.push_str(&format!(" {:>8.2}x", how(la, lb, Some(q))));
        }
        outln!("{row} {:>8.2}x", how(la, lb, None));
    }
    printed
}

/// Quantile `q` of `h` (`None`: its maximum).
fn at(h: &Histogram<u64>, q: Option<f64>) -> u64 {
    q.map_or(h.max(), |q| h.value_at_quantile(q))
}

/// `a / b` at quantile `q` of all their samples.
fn whole_run(a: &Latencies, b: &Latencies, q: Option<f64>) -> f64 {
    ratio(at(&a.all, q), at(&b.all, q))
}

/// The median over the rounds of `a / b` at quantile `q` of each round's samples.
fn median_of_rounds(a: &Latencies, b: &Latencies, q: Option<f64>) -> f64 {
    let mut each: Vec<f64> = a
        .rounds
        .iter()
        .zip(&b.rounds)
        .map(|(x, y)| ratio(at(x, q), at(y, q)))
        .collect();
    shmq_pingpong::median(&mut each)
}

/// `a / b` as a float (both are at least 1 ns: the histograms record nothing smaller).
fn ratio(a: u64, b: u64) -> f64 {
    a as f64 / b.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ratio_names_modes_that_run() {
        for (a, b) in RATIOS {
            assert!(Mode::ALL.contains(a) && Mode::ALL.contains(b));
        }
        assert_eq!(ratio(3, 2), 1.5);
        assert_eq!(ratio(3, 0), 3.0);
    }
}
