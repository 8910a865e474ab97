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

/// One pinger's one-way latencies: all of them, and each round's block on its own.
pub struct Latencies {
    /// Every timed round trip of the run.
    pub all: Histogram<u64>,
    /// One histogram per round, in order.
    pub rounds: Vec<Histogram<u64>>,
}

/// Measures `per_mode` messages on every pinger in `rounds` interleaved rounds (each round
/// gives every pinger an equal share in turn). Each round trip is timed with one
/// `Instant::now()`; one-way = round trip / 2. `progress` is called with the message count
/// after each block, outside the timed part. Returns one [`Latencies`] per pinger, in order.
pub fn measure(
    pingers: &mut [Pinger],
    per_mode: u64,
    rounds: u64,
    mut progress: impl FnMut(u64),
) -> Result<Vec<Latencies>, Error> {
    let rounds = rounds.clamp(1, per_mode.max(1));
    let mut found: Vec<Latencies> = pingers
        .iter()
        .map(|_| Latencies {
            all: histogram(),
            rounds: Vec::new(),
        })
        .collect();
    for round in 0..rounds {
        // Spread the remainder over the first rounds so the total is exactly `per_mode`.
        let block = per_mode / rounds + u64::from(round < per_mode % rounds);
        for (p, l) in pingers.iter_mut().zip(found.iter_mut()) {
            p.warm(WARM_UP)?;
            let mut h = histogram();
            let mut prev = Instant::now();
            for _ in 0..block {
                p.round_trip()?;
                let now = Instant::now();
                h.saturating_record(((now - prev).as_nanos() / 2).max(1) as u64);
                prev = now;
            }
            progress(block);
            // Same bounds and precision: the sum cannot fail.
            l.all.add(&h).expect("histograms of the same shape");
            l.rounds.push(h);
        }
    }
    Ok(found)
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
