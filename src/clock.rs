//! Wall-clock timestamps for records.

/// Nanoseconds since the Unix epoch (0 if the clock is before it or cannot be read).
///
/// Reads `CLOCK_REALTIME`, the clock behind `SystemTime::now()`, directly: every publish
/// stamps its record, and std's `SystemTime::duration_since` + `Duration` arithmetic cost
/// about 90 of the ~730 instructions of a 64-byte publish (callgrind, `BENCHMARKS.md`).
pub(crate) fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec that outlives the call; clock_gettime writes
    // only it.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    if r != 0 || ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_system_time() {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .expect("clock after 1970");
        let ns = now_ns();
        let after = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .expect("clock after 1970");
        assert!(before <= ns && ns <= after, "{before} <= {ns} <= {after}");
    }
}
