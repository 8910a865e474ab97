//! Clocks: wall-clock timestamps for records, and the monotonic clock that heartbeats and
//! sessions are measured on. Every kernel clock read of the library goes through
//! [`clock_ns`]; a producer's precise clock extrapolates between such reads
//! ([`WallClock`](crate::runtime::wall_clock::WallClock)).

use std::time::Duration;

/// Now on `clock`, in nanoseconds (0 if the clock cannot be read or is before its epoch).
// Always inlined: a call cost `publish` about 20 instructions (callgrind, `call_cost`).
#[inline(always)]
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec that outlives the call; clock_gettime writes
    // only it.
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    if r != 0 || ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Nanoseconds since the Unix epoch (0 if the clock is before it or cannot be read).
///
/// Reads `CLOCK_REALTIME`, the clock behind `SystemTime::now()`, directly: every publish
/// stamps its record, and std's `SystemTime::duration_since` + `Duration` arithmetic cost
/// about 90 of the ~730 instructions of a 64-byte publish (callgrind, `BENCHMARKS.md`).
#[inline]
pub(crate) fn now_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// Nanoseconds since the Unix epoch at the kernel's last tick (`CLOCK_REALTIME_COARSE`: up to
/// one tick behind [`now_ns`], at a fraction of its cost; 0 as for `now_ns`).
#[inline]
pub(crate) fn coarse_now_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME_COARSE)
}

/// Now on `CLOCK_MONOTONIC`, in nanoseconds: one clock for every process on the host.
pub(crate) fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// The same clock at tick resolution (a few milliseconds) and a fraction of the cost: what a
/// poll checks to know whether a heartbeat is due.
pub(crate) fn coarse_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC_COARSE)
}

/// `d` in nanoseconds, saturating at `u64::MAX` (about 584 years) instead of truncating.
pub(crate) fn saturating_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
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
