//! What each demo process reports back to the parent: a JSON file with its tally and its
//! latency histogram.

use std::path::Path;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::event::{Digest, OrderPaid, FIRST_ORDER};
use crate::error::CliError;

/// Longest latency the histograms track (longer ones are recorded as this): one hour.
const MAX_LATENCY_NS: u64 = 3_600_000_000_000;

/// A new latency histogram in nanoseconds with three significant digits.
pub fn histogram() -> Histogram<u64> {
    // Constant, valid bounds (1 ≤ low, 2·low ≤ high, digits ≤ 5): this cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("constant histogram bounds are valid")
}

/// One process's account of what it published or received.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    /// Events seen.
    pub count: u64,
    /// Offset of the first event seen.
    pub first_offset: Option<u64>,
    /// Offset of the last event seen.
    pub last_offset: Option<u64>,
    /// [`Digest`] of every `(offset, payload)` seen, in order.
    pub digest: u64,
    /// The first broken expectation (a gap, a repeat, an out-of-order order id), if any.
    pub violation: Option<String>,
    /// From the first event to the last, in nanoseconds.
    pub elapsed_ns: u64,
    /// Latency histogram as `[value, count]` pairs (empty for the producer).
    pub latency: Vec<[u64; 2]>,
}

impl Report {
    /// Writes the report to `path` (via a temporary name, so a reader never sees half of it).
    pub fn write(&self, path: &Path) -> Result<(), CliError> {
        let tmp = path.with_extension("tmp");
        let json = serde_json::to_vec(self).map_err(|e| CliError::new(path.display(), e))?;
        std::fs::write(&tmp, json).map_err(|e| CliError::io(&tmp, "write", e))?;
        std::fs::rename(&tmp, path).map_err(|e| CliError::io(path, "rename", e))
    }

    /// Reads a report written by [`Report::write`].
    pub fn read(path: &Path) -> Result<Report, CliError> {
        let bytes = std::fs::read(path).map_err(|e| CliError::io(path, "read report", e))?;
        serde_json::from_slice(&bytes).map_err(|e| CliError::new(path.display(), e))
    }

    /// The latency histogram back from its pairs.
    pub fn histogram(&self) -> Histogram<u64> {
        let mut h = histogram();
        for &[value, count] in &self.latency {
            h.saturating_record_n(value.max(1), count);
        }
        h
    }
}

/// Serialises a histogram as `[value, count]` pairs of its non-empty buckets.
pub fn to_pairs(h: &Histogram<u64>) -> Vec<[u64; 2]> {
    h.iter_recorded()
        .map(|v| [v.value_iterated_to(), v.count_at_value()])
        .collect()
}

/// The running check of one process: offsets must be dense from 0 and order ids must rise by
/// exactly one from [`FIRST_ORDER`].
#[derive(Debug)]
pub struct Tally {
    /// Events seen.
    pub count: u64,
    /// First offset seen.
    first: Option<u64>,
    /// Last offset seen.
    last: Option<u64>,
    /// Checksum of everything seen.
    digest: Digest,
    /// The first broken expectation.
    violation: Option<String>,
}

impl Tally {
    /// Nothing seen yet.
    pub fn new() -> Self {
        Tally {
            count: 0,
            first: None,
            last: None,
            digest: Digest::new(),
            violation: None,
        }
    }

    /// Checks and counts the event at `offset`; returns it if it decodes.
    pub fn see(&mut self, offset: u64, payload: &[u8]) -> Option<OrderPaid> {
        let event = OrderPaid::decode(payload);
        let expected_offset = self.last.map_or(0, |l| l + 1);
        let expected_order = FIRST_ORDER + self.count;
        if self.violation.is_none() {
            self.violation = match event {
                _ if offset != expected_offset => Some(format!(
                    "got offset {offset} where {expected_offset} was expected"
                )),
                None => Some(format!(
                    "offset {offset}: a {}-byte payload is not an order event",
                    payload.len()
                )),
                Some(e) if e.order_id != expected_order => Some(format!(
                    "offset {offset}: order {} where order {expected_order} was expected",
                    e.order_id
                )),
                Some(_) => None,
            };
        }
        self.count += 1;
        self.first.get_or_insert(offset);
        self.last = Some(offset);
        self.digest.add(offset, payload);
        event
    }

    /// The report for this tally.
    pub fn report(&self, elapsed_ns: u64, latency: Vec<[u64; 2]>) -> Report {
        Report {
            count: self.count,
            first_offset: self.first,
            last_offset: self.last,
            digest: self.digest.value(),
            violation: self.violation.clone(),
            elapsed_ns,
            latency,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_accepts_a_dense_sequence() {
        let mut t = Tally::new();
        for i in 0..3 {
            t.see(i, &OrderPaid::new(FIRST_ORDER + i).encode());
        }
        let r = t.report(0, vec![]);
        assert_eq!(
            (r.count, r.first_offset, r.last_offset),
            (3, Some(0), Some(2))
        );
        assert_eq!(r.violation, None);
    }

    #[test]
    fn tally_flags_gaps_repeats_and_bad_ids() {
        let mut t = Tally::new();
        t.see(0, &OrderPaid::new(FIRST_ORDER).encode());
        t.see(2, &OrderPaid::new(FIRST_ORDER + 1).encode());
        assert!(t.violation.as_deref().unwrap().contains("offset 2"));

        let mut t = Tally::new();
        t.see(0, &OrderPaid::new(FIRST_ORDER).encode());
        t.see(1, &OrderPaid::new(FIRST_ORDER).encode());
        assert!(t.violation.as_deref().unwrap().contains("order 1000001"));

        let mut t = Tally::new();
        t.see(0, b"junk");
        assert!(t.violation.is_some());
    }

    #[test]
    fn histograms_survive_the_trip() {
        let mut h = histogram();
        for v in [1_000, 2_000, 2_000, 5_000_000_000] {
            h.record(v).unwrap();
        }
        let r = Tally::new().report(0, to_pairs(&h));
        let json = serde_json::to_string(&r).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        let h2 = back.histogram();
        assert_eq!(h2.len(), 4);
        assert_eq!(h2.max(), h.max());
        assert_eq!(h2.value_at_quantile(0.5), h.value_at_quantile(0.5));
    }
}
