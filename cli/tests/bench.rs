//! End-to-end test of `shmq bench`: a short run reports every mode with consistent figures, in
//! the latency mode and with `--throughput`.

use std::collections::HashMap;
use std::process::Command;

/// Every mode the CLI measures, in the order it prints them.
const MODES: [&str; 6] = [
    "floor_atomic",
    "floor_futex",
    "shmq_spin",
    "shmq_blocking",
    "pipe",
    "unix_socket",
];

/// Runs `shmq bench` with `args`; returns (success, stdout, stderr).
fn bench(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shmq"))
        .arg("bench")
        .args(args)
        .output()
        .expect("start shmq");
    (
        out.status.success(),
        String::from_utf8(out.stdout).expect("UTF-8 stdout"),
        String::from_utf8(out.stderr).expect("UTF-8 stderr"),
    )
}

/// The rows of the table that starts at the line beginning with `header`: first word to the
/// numbers after it (a trailing `x` stripped).
fn table(stdout: &str, header: &str) -> HashMap<String, Vec<f64>> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with(header))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            let (name, nums) = match l.split_once(" / ") {
                // A ratio row: "a / b   1.00x ..."
                Some((a, rest)) => {
                    let mut it = rest.split_whitespace();
                    let b = it.next().expect("denominator");
                    (format!("{a}/{b}"), it.collect::<Vec<_>>())
                }
                None => {
                    let mut it = l.split_whitespace();
                    let a = it.next().expect("mode").to_string();
                    (a, it.collect())
                }
            };
            let nums = nums
                .iter()
                .map(|n| {
                    n.trim_end_matches('x')
                        .parse::<f64>()
                        .unwrap_or_else(|_| panic!("{n:?} in {l:?} is not a number"))
                })
                .collect();
            (name, nums)
        })
        .collect()
}

#[test]
fn short_run_reports_every_mode_with_sane_figures() {
    let (ok, stdout, stderr) = bench(&["--messages", "20000", "--rounds", "4", "--no-progress"]);
    assert!(ok, "shmq bench failed: {stderr}\n{stdout}");
    assert!(stdout.contains("20,000 messages per mode in 4 interleaved rounds"));
    // Which mode spins and which sleeps, and what each ratio compares, are said in words.
    for line in [
        "    shmq_spin      spins: poll with a zero timeout in a loop",
        "    shmq_blocking  spins briefly, then sleeps on the futex",
        "    floor_futex    sleeps in FUTEX_WAIT at once",
        "    shmq_blocking / floor_futex   the cost of shmq's sleeping reader over a bare futex \
         wake-up; below 1 when its spin catches messages before it sleeps",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
    let rows = table(&stdout, "MODE");
    for mode in MODES {
        let v = rows
            .get(mode)
            .unwrap_or_else(|| panic!("no row for {mode}:\n{stdout}"));
        // p50, p99, p99.9, p99.99, max: positive, ordered, and the median under 100 ms.
        assert_eq!(v.len(), 5, "{mode}: {v:?}");
        assert!(v[0] >= 1.0 && v[0] < 1e8, "{mode}: p50 {} ns", v[0]);
        assert!(v.windows(2).all(|w| w[0] <= w[1]), "{mode}: {v:?}");
    }
    let pairs = [
        ("shmq_spin", "floor_atomic"),
        ("shmq_blocking", "floor_futex"),
        ("unix_socket", "shmq_spin"),
        ("unix_socket", "shmq_blocking"),
        ("pipe", "shmq_spin"),
        ("pipe", "shmq_blocking"),
    ];
    // The median of the rounds' ratios: the same pairs, each a positive number per column.
    let medians = table(&stdout, "RATIO (median of rounds)");
    for (a, b) in pairs {
        let r = medians
            .get(&format!("{a}/{b}"))
            .unwrap_or_else(|| panic!("no median ratio {a} / {b}:\n{stdout}"));
        assert_eq!(r.len(), 5, "{a} / {b}: {r:?}");
        assert!(
            r.iter().all(|&x| x > 0.0 && x.is_finite()),
            "{a} / {b}: {r:?}"
        );
    }
    let ratios = table(&stdout, "RATIO (whole run)");
    for (a, b) in pairs {
        let r = ratios
            .get(&format!("{a}/{b}"))
            .unwrap_or_else(|| panic!("no ratio {a} / {b}:\n{stdout}"));
        assert_eq!(r.len(), 5, "{a} / {b}: {r:?}");
        // Each ratio is the quotient of the two rows above it (printed to 2 decimals).
        for (i, got) in r.iter().enumerate() {
            let want = rows[a][i] / rows[b][i];
            assert!(
                (got - want).abs() <= 0.005 + want * 1e-9,
                "{a} / {b} column {i}: printed {got}, table gives {want}"
            );
        }
    }
}

#[test]
fn throughput_reports_every_case_with_positive_rates() {
    let (ok, stdout, stderr) = bench(&[
        "--throughput",
        "--messages",
        "40000",
        "--rounds",
        "2",
        "--no-progress",
    ]);
    assert!(ok, "shmq bench --throughput failed: {stderr}\n{stdout}");
    assert!(
        stdout.contains("40,000 messages per case in 2 interleaved rounds"),
        "{stdout}"
    );
    let rows = table(&stdout, "CASE");
    for case in ["floor_ring", "shmq_1p_1g", "shmq_4p_1g"] {
        let v = rows
            .get(case)
            .unwrap_or_else(|| panic!("no row for {case}:\n{stdout}"));
        // Median, lowest and highest msgs/s of the rounds: positive and ordered.
        assert_eq!(v.len(), 3, "{case}: {v:?}");
        assert!(v[1] >= 1.0, "{case}: lowest rate {} msgs/s", v[1]);
        assert!(v[1] <= v[0] && v[0] <= v[2], "{case}: {v:?}");
    }
    let ratios = table(&stdout, "RATIO");
    for (a, b) in [
        ("shmq_1p_1g", "floor_ring"),
        ("shmq_4p_1g", "floor_ring"),
        ("shmq_4p_1g", "shmq_1p_1g"),
    ] {
        let r = ratios
            .get(&format!("{a}/{b}"))
            .unwrap_or_else(|| panic!("no ratio {a} / {b}:\n{stdout}"));
        assert_eq!(r.len(), 1, "{a} / {b}: {r:?}");
        assert!(r[0] > 0.0, "{a} / {b}: {r:?}");
    }
}

#[test]
fn rejects_a_zero_count_in_one_line() {
    let (ok, stdout, stderr) = bench(&["--messages", "0"]);
    assert!(!ok);
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("shmq: ") && stderr.contains("--messages"),
        "{stderr}"
    );
}
