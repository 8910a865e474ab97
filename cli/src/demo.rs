//! `shmq demo`: an order service and three consumer groups, each in its own process, sharing
//! one queue file.
//!
//! The parent creates the queue and the three gating groups (coupons, points, sms), then
//! re-executes this binary as `shmq demo-worker` four times: one producer publishing "order
//! paid" events and one consumer per group. sms is throttled, so a backlog builds while orders
//! pour in and drains afterwards (peak shaving). The parent draws progress from the queue's
//! tail and the groups' committed offsets, then collects each worker's report and checks that
//! every group got every order exactly once and in order.

mod event;
mod progress;
mod report;
pub mod worker;

use std::fs::File;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use shmq::{Options, Queue};

use self::event::EVENT_LEN;
use self::progress::{Progress, Snapshot};
use self::report::Report;
use crate::duration::format_ns;
use crate::error::{At, CliError};
use crate::fmt::{count, rate};
use crate::info::render_rows;
use crate::size;
use crate::size::format_size;

/// Arguments of `shmq demo`.
#[derive(Args)]
pub struct DemoArgs {
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

/// The consumer groups: name, what the service does with an order, and whether it is the
/// throttled one.
const GROUPS: [(&str, &str, bool); 3] = [
    ("coupons", "issue coupon", false),
    ("points", "credit points", false),
    ("sms", "send sms, slow", true),
];

/// How often the parent samples the queue.
const TICK: Duration = Duration::from_millis(100);

/// The demo fails if nothing moves (tail or any commit) for this long.
const STALL_LIMIT: Duration = Duration::from_secs(20);

/// The queue file's name inside the demo directory.
const QUEUE_FILE: &str = "orders.q";

/// One child process and where it reports.
struct Worker {
    /// `producer` or the group name.
    name: String,
    /// The process.
    child: Child,
    /// Its JSON report, written when it succeeds.
    report: PathBuf,
    /// Its stderr, kept for the failure message.
    stderr: PathBuf,
    /// Its exit status, once it has exited.
    status: Option<ExitStatus>,
}

/// The running workers; dropping this kills and reaps any still running.
struct Workers(Vec<Worker>);

impl Workers {
    /// Reaps exited workers; returns the first one that failed, if any.
    fn poll(&mut self) -> Result<Option<&Worker>, CliError> {
        for w in &mut self.0 {
            if w.status.is_none() {
                w.status = w
                    .child
                    .try_wait()
                    .map_err(|e| CliError::new(format_args!("demo worker {}", w.name), e))?;
            }
        }
        Ok(self
            .0
            .iter()
            .find(|w| w.status.is_some_and(|s| !s.success())))
    }

    /// Whether every worker has exited.
    fn all_exited(&self) -> bool {
        self.0.iter().all(|w| w.status.is_some())
    }

    /// Kills (by process id, via the handle) and reaps every worker still running.
    fn kill_all(&mut self) {
        for w in &mut self.0 {
            if w.status.is_none() {
                let _ = w.child.kill();
                w.status = w.child.wait().ok();
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.kill_all();
    }
}

impl Worker {
    /// What the worker said on stderr (its last line), or its exit status.
    fn failure(&self) -> String {
        let said = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        match said.lines().rev().find(|l| !l.trim().is_empty()) {
            Some(line) => format!("{} worker failed: {}", self.name, line.trim()),
            None => match self.status {
                Some(s) => format!("{} worker failed ({s})", self.name),
                None => format!("{} worker failed", self.name),
            },
        }
    }
}

/// Runs the demo; `Ok` only if every group received every order exactly once, in order.
pub fn run(args: &DemoArgs) -> Result<(), CliError> {
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        // If a handler cannot be installed, Ctrl-C simply kills the demo (temp files remain).
        let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    }
    let (_temp, dir) = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| CliError::io(dir, "create directory", e))?;
            (None, dir.clone())
        }
        None => {
            let t = temp_dir("shmq-demo-")?;
            let dir = t.path().to_path_buf();
            (Some(t), dir)
        }
    };
    let path = dir.join(QUEUE_FILE);
    let reports = temp_dir("shmq-demo-reports-")?;
    let options = Options {
        capacity: args.capacity,
        max_message: 1024.min((args.capacity / 2).saturating_sub(32)).max(1) as u32,
        ..Options::default()
    };
    let queue = Queue::create(&path, &options).map_err(|e| match e {
        shmq::Error::Exists { .. } => CliError::new(
            path.display(),
            "already exists (remove it, or pick another --dir)",
        ),
        e => CliError::queue(&path, e),
    })?;
    // The groups exist before the first order, so each starts at offset 0 and gates from it.
    for (name, _, _) in GROUPS {
        drop(queue.consumer(name).at(&path)?);
    }
    let n = args.messages;
    print_header(args, &queue);
    outln!();

    let exe = std::env::current_exe().map_err(|e| CliError::new("current executable", e))?;
    let spawn = |name: &str, extra: &[&str], rate: u64| -> Result<Worker, CliError> {
        let report = reports.path().join(format!("{name}.json"));
        let stderr = reports.path().join(format!("{name}.err"));
        let err_file = File::create(&stderr).map_err(|e| CliError::io(&stderr, "create", e))?;
        let child = Command::new(&exe)
            .arg("demo-worker")
            .args(extra)
            .arg("--queue")
            .arg(&path)
            .args(["--messages", &n.to_string(), "--rate", &rate.to_string()])
            .arg("--report")
            .arg(&report)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err_file)
            .spawn()
            .map_err(|e| CliError::io(&exe, "start demo worker", e))?;
        Ok(Worker {
            name: name.to_string(),
            child,
            report,
            stderr,
            status: None,
        })
    };
    let mut workers = Workers(Vec::new());
    for (name, _, slow) in GROUPS {
        let rate = if slow { args.sms_rate } else { 0 };
        workers
            .0
            .push(spawn(name, &["--role", "consumer", "--group", name], rate)?);
    }
    workers
        .0
        .push(spawn("producer", &["--role", "producer"], args.rate)?);

    let labels: Vec<(&str, &str)> = GROUPS.iter().map(|&(n, what, _)| (n, what)).collect();
    let bars = !args.no_progress && std::io::stderr().is_terminal();
    let mut progress = Progress::new(n, &labels, bars);
    let start = Instant::now();
    let mut peak = [0u64; GROUPS.len()];
    let mut last = snapshot(&queue);
    let mut moved = Instant::now();
    let outcome = loop {
        let snap = snapshot(&queue);
        for (p, &c) in peak.iter_mut().zip(&snap.committed) {
            *p = (*p).max(snap.tail.saturating_sub(c));
        }
        progress.update(&snap);
        if snap != last {
            last = snap;
            moved = Instant::now();
        }
        let failed = workers.poll()?.map(Worker::failure);
        // Ctrl-C reaches the workers too: report the interruption, not their deaths.
        if interrupted.load(Ordering::SeqCst) {
            break Err(CliError::new(path.display(), "demo interrupted").with_code(130));
        }
        if let Some(failure) = failed {
            break Err(CliError::new(path.display(), failure));
        }
        if workers.all_exited() {
            break Ok(());
        }
        if moved.elapsed() >= STALL_LIMIT {
            break Err(CliError::new(
                path.display(),
                format_args!(
                    "demo stalled: nothing moved for {} s (tail {})",
                    STALL_LIMIT.as_secs(),
                    last.tail
                ),
            ));
        }
        std::thread::sleep(TICK);
    };
    let elapsed = start.elapsed();
    if let Err(e) = outcome {
        progress.abandon();
        workers.kill_all();
        return Err(e);
    }
    let end = snapshot(&queue);
    progress.finish(&end);

    let produced = Report::read(&workers.0[GROUPS.len()].report)?;
    let mut consumed = Vec::new();
    for w in &workers.0[..GROUPS.len()] {
        consumed.push(Report::read(&w.report)?);
    }
    let failures = verify(n, &produced, &consumed, &end);
    print_summary(args, elapsed, &produced, &consumed, &end, &peak);
    if let Some(first) = failures.first() {
        outln!();
        for f in &failures {
            outln!("FAILED: {f}");
        }
        return Err(CliError::new(
            path.display(),
            format_args!("demo failed: {first}"),
        ));
    }
    outln!();
    outln!(
        "OK: coupons, points and sms each received all {} orders exactly once and in order",
        count(n)
    );
    outln!(
        "    (offsets 0..={} dense, order ids rising by one, digest {:#018x} equal to the producer's)",
        n - 1,
        produced.digest
    );
    Ok(())
}

/// Prints what the demo is about to do.
fn print_header(args: &DemoArgs, queue: &Queue) {
    let limit = |rate: u64, none: &str| {
        if rate == 0 {
            none.to_string()
        } else {
            format!("{}/s", count(rate))
        }
    };
    outln!(
        "shmq demo: {} \"order paid\" events ({EVENT_LEN} bytes each) through one queue file \
         shared by 4 processes",
        count(args.messages)
    );
    outln!(
        "  producer  order service, publishing at {}",
        limit(args.rate, "full speed")
    );
    outln!("  groups    coupons, points: as fast as they can");
    outln!(
        "            sms: throttled to {}, so a backlog builds while orders pour in, then drains",
        limit(args.sms_rate, "no limit (--sms-rate 0)")
    );
    outln!(
        "            each a gating group with one consumer process, committing every {} events",
        worker::COMMIT_EVERY
    );
    outln!(
        "  queue     {} ({} ring, full policy block, {})",
        queue.path().display(),
        format_size(queue.geometry().capacity),
        if args.dir.is_some() {
            "kept"
        } else {
            "removed at exit"
        }
    );
}

/// A new temporary directory with a recognisable name prefix.
fn temp_dir(prefix: &str) -> Result<tempfile::TempDir, CliError> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| CliError::io(&std::env::temp_dir(), "create temporary directory", e))
}

/// The tail and every demo group's committed offset (0 for a group that vanished).
fn snapshot(queue: &Queue) -> Snapshot {
    let groups = queue.groups();
    let tail = queue.tail_offset();
    let committed = GROUPS
        .iter()
        .map(|(name, _, _)| {
            groups
                .iter()
                .find(|g| g.name == *name)
                .map_or(0, |g| g.committed)
        })
        .collect();
    Snapshot { tail, committed }
}

/// Everything that is wrong with the run, if anything.
fn verify(n: u64, produced: &Report, consumed: &[Report], end: &Snapshot) -> Vec<String> {
    let mut failures = Vec::new();
    let whole =
        |r: &Report| r.count == n && r.first_offset == Some(0) && r.last_offset == Some(n - 1);
    if let Some(v) = &produced.violation {
        failures.push(format!("producer: {v}"));
    }
    if !whole(produced) {
        failures.push(format!(
            "producer published {} of {} orders",
            produced.count, n
        ));
    }
    if end.tail != n {
        failures.push(format!("queue tail is {}, expected {n}", end.tail));
    }
    for ((name, _, _), (r, &committed)) in GROUPS.iter().zip(consumed.iter().zip(&end.committed)) {
        if let Some(v) = &r.violation {
            failures.push(format!("{name}: {v}"));
        }
        if !whole(r) {
            failures.push(format!("{name} received {} of {n} orders", r.count));
        } else if r.digest != produced.digest {
            failures.push(format!(
                "{name}: digest {:#018x} differs from the producer's {:#018x}",
                r.digest, produced.digest
            ));
        }
        if committed != n {
            failures.push(format!(
                "{name} committed offset is {committed}, expected {n}"
            ));
        }
    }
    failures
}

/// Prints the summary table.
fn print_summary(
    args: &DemoArgs,
    elapsed: Duration,
    produced: &Report,
    consumed: &[Report],
    end: &Snapshot,
    peak: &[u64],
) {
    let secs = produced.elapsed_ns as f64 / 1e9;
    outln!();
    outln!("summary");
    outln!(
        "  orders    {} published in {secs:.2} s ({})",
        count(produced.count),
        rate(produced.count, secs)
    );
    outln!(
        "  elapsed   {:.2} s until every group had received and committed them",
        elapsed.as_secs_f64()
    );
    outln!("  latency   publish to receive, per group (sms includes its backlog)");
    outln!();
    let mut rows = vec![[
        "GROUP",
        "RECEIVED",
        "IN ORDER",
        "FINAL LAG",
        "PEAK LAG",
        "P50",
        "P99",
        "P99.9",
        "MAX",
    ]
    .map(String::from)];
    for (((name, _, _), r), (&committed, &peak)) in GROUPS
        .iter()
        .zip(consumed)
        .zip(end.committed.iter().zip(peak))
    {
        let h = r.histogram();
        let q = |x: f64| {
            if h.is_empty() {
                "-".to_string()
            } else {
                format_ns(h.value_at_quantile(x))
            }
        };
        rows.push([
            name.to_string(),
            count(r.count),
            if r.violation.is_none() && r.count == args.messages {
                "yes"
            } else {
                "NO"
            }
            .to_string(),
            count(end.tail.saturating_sub(committed)),
            count(peak),
            q(0.5),
            q(0.99),
            q(0.999),
            if h.is_empty() {
                "-".to_string()
            } else {
                format_ns(h.max())
            },
        ]);
    }
    for line in render_rows(&rows).lines() {
        outln!("  {line}");
    }
}
