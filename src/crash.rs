//! Named crash points for the crash tests.
//!
//! With the `fault-injection` feature, `SHMQ_CRASH_AT=<name>` (or `<name>:<n>` for the n-th time the
//! point is reached, counting from 1) makes the process SIGKILL itself at that point, so each torn
//! state of publish and commit can be produced deterministically. Without the feature every point
//! compiles to nothing.

/// Every crash point, in protocol order (tests iterate over this list).
pub const POINTS: &[&str] = &[
    "publish.before_claim",
    "publish.after_claim",
    "publish.before_header",
    "publish.before_commit",
    "publish.after_commit",
    "flush.before_sync",
    "flush.after_sync",
    "commit.before_store",
    "commit.after_store",
    "group.join.after_lease",
    "group.join.after_session",
    "member.join.after_lease",
    "member.join.after_ready",
    "member.leave.before_lease",
];

/// Kills the process here if `SHMQ_CRASH_AT` names this point (test builds only).
#[cfg(feature = "fault-injection")]
pub(crate) fn point(name: &'static str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let target = TARGET.get_or_init(|| {
        let v = std::env::var("SHMQ_CRASH_AT").ok()?;
        let (n, k) = v
            .split_once(':')
            .map_or((v.as_str(), 1), |(n, k)| (n, k.parse().unwrap_or(1)));
        Some((n.to_string(), k))
    });
    if let Some((target, nth)) = target {
        // Relaxed: a per-process counter, only this thread's count matters for the test.
        if target == name && HITS.fetch_add(1, Ordering::Relaxed) + 1 == *nth {
            // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
    }
}

/// Kills the process here if `SHMQ_CRASH_AT` names this point (test builds only).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn point(_name: &'static str) {}
