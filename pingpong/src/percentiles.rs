//! One-way latency percentiles from HDR histograms, every mode measured in interleaved rounds
//! of one run.

use std::time::Instant;

use hdrhistogram::Histogram;

use crate::{Error, Pinger};

/// The quantiles a report shows, with their labels.
pub const QUANTILES: [(&str, f64); 4] = [
    ("p50", 0.5),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
];
/// Largest one-way latency a histogram holds (longer ones are recorded as this): 60 s.
const MAX_NS: u64 = 60_000_000_000;
/// Untimed round trips before each timed block (wake an idle child).
const WARM_UP: u32 = 200;

/// A new histogram of nanoseconds from 1 ns to 60 s at 3 significant digits.
fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 * low).
    Histogram::new_with_bounds(1, MAX_NS, 3).expect("valid constant bounds")
}

/// The cost of one `Instant::now()` read, back to back, `n` times: every timed round trip
/// includes one.
pub fn clock_read_cost(n: u32) -> Histogram<u64> {
    let mut h = histogram();
    for _ in 0..n {
        let t = Instant::now();
        h.saturating_record(t.elapsed().as_nanos().max(1) as u64);
    }
    h
}

/// Measures `per_mode` messages on every pinger in `rounds` interleaved rounds (each round
/// gives every pinger an equal share in turn). Each round trip is timed with one
/// `Instant::now()`; one-way = round trip / 2. `progress` is called with the message count
/// after each block, outside the timed part. Returns one histogram per pinger, in order.
pub fn measure(
    pingers: &mut [Pinger],
    per_mode: u64,
    rounds: u64,
    mut progress: impl FnMut(u64),
) -> Result<Vec<Histogram<u64>>, Error> {
    let rounds = rounds.clamp(1, per_mode.max(1));
    let mut hists: Vec<Histogram<u64>> = pingers.iter().map(|_| histogram()).collect();
    for round in 0..rounds {
        // Spread the remainder over the first rounds so the total is exactly `per_mode`.
        let block = per_mode / rounds + u64::from(round < per_mode % rounds);
        for (p, h) in pingers.iter_mut().zip(hists.iter_mut()) {
            p.warm(WARM_UP)?;
            let mut prev = Instant::now();
            for _ in 0..block {
                p.round_trip()?;
                let now = Instant::now();
                h.saturating_record(((now - prev).as_nanos() / 2).max(1) as u64);
                prev = now;
            }
            progress(block);
        }
    }
    Ok(hists)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_cost_is_recorded() {
        let h = clock_read_cost(1000);
        assert_eq!(h.len(), 1000);
        assert!(h.min() >= 1);
    }
}
