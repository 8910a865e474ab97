//! One cross-process throughput case (`shmq_pingpong::throughput`), run once: for a profiler
//! wrapped around the whole process tree (`perf stat`, `perf trace -s`), which then counts
//! exactly that case's work. The interleaved bench (`benches/throughput.rs`) is where cases are
//! compared; this prints the one run's rate.
//!
//! Usage: `cargo run --release -p shmq-benches --example flow -- CASE [N]` (CASE as the bench
//! prints it, e.g. `ack_1w`; N messages, 2,000,000 by default, after a warm-up of N / 8).

use shmq_benches::bench_dir;
use shmq_pingpong::throughput::{Case, Flow};

fn main() {
    // The flow's producers, consumers and workers are this binary again.
    shmq_pingpong::maybe_run_child();
    let mut args = std::env::args().skip(1);
    let name = args.next().expect("usage: flow CASE [N]");
    let case = Case::from_name(&name).unwrap_or_else(|| {
        let names: Vec<_> = Case::every().map(Case::name).collect();
        panic!("unknown case {name}; one of {}", names.join(", "))
    });
    let n: u64 = args.next().map_or(2_000_000, |s| s.parse().expect("N"));
    let mut flow = Flow::start(case, &bench_dir()).expect("start the flow's processes");
    flow.run(n / 8).expect("warm-up");
    let run = flow.run(n).expect("run");
    println!(
        "{}: {} messages in {:.3} s, {:.0} msgs/s (after a warm-up of {})",
        case.name(),
        run.messages + 1,
        run.elapsed.as_secs_f64(),
        run.rate(),
        n / 8
    );
}
