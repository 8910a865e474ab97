//! The work-group cases of the cross-process throughput harness (`shmq_pingpong::throughput`,
//! `Case::WORK`), run briefly. Each flow starts its producer process and its consumer or worker
//! process, and every run is checked: the consumer checks each record's sequence number, a
//! worker that its sequence numbers rise, and the harness, once the group's committed cursor
//! has passed the run's last record, that the work group delivered each record once and acked
//! it. `harness = false`: the flows' children are this binary again.
//!
//! `commit_1c` and `ack_1w` only: two busy processes each. `ack_2w` and `ack_4w` run the same
//! code with more workers, in the bench (`cargo bench -p shmq-benches --bench throughput`).

#[path = "../../tests/common/harness.rs"]
mod harness;

use std::time::Duration;

use shmq_pingpong::throughput::{Case, Flow};

/// Records per run: a few ring-fulls (5,461 records) and window-fulls (4,096).
const RECORDS: u64 = 20_000;

fn main() {
    // The flows' producers, consumers and workers.
    shmq_pingpong::maybe_run_child();
    harness::run(&[
        ("commit_1c_commits_every_record", || moves(Case::Commit1c)),
        ("ack_1w_acks_every_record_once", || moves(Case::Ack1w)),
    ]);
}

/// Two runs of `case` (the second starts where the first ended); each must move and settle
/// every record. A stuck flow fails after 10 s without progress.
fn moves(case: Case) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut flow = Flow::start(case, dir.path())
        .unwrap_or_else(|e| panic!("{}: start the processes: {e}", case.name()));
    for round in 0..2 {
        let run = flow
            .run(RECORDS)
            .unwrap_or_else(|e| panic!("{}: run {round}: {e}", case.name()));
        // Timed from the first record's publication: every other record counts.
        assert_eq!(run.messages, RECORDS - 1, "{}", case.name());
        assert!(run.elapsed > Duration::ZERO, "{}", case.name());
    }
}
