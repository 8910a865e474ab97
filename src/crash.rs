//! Named crash points for the crash tests.
//!
//! With the `fault-injection` feature, `SHMQ_CRASH_AT=<name>` (or `<name>:<n>` for the n-th time the
//! point is reached, counting from 1) makes the process SIGKILL itself at that point, so each torn
//! state of publish and commit can be produced deterministically. `SHMQ_STOP_AT=<name>[:<n>]`
//! (same syntax, counted separately) makes it SIGSTOP itself there instead: the process stays
//! alive, holding every lease it has, until someone sends it SIGCONT, and then carries on from
//! that point. It stands for a producer descheduled or stopped mid-publish for longer than the
//! claim timeout (`tests/liveness.rs`). Without the feature every point compiles to nothing.

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
    "group.join.before_lease",
    "group.join.after_lease",
    "group.join.after_session",
    "member.join.after_lease",
    "member.join.after_ready",
    "member.leave.before_lease",
    "work.dispatch.after_cas",
    "work.redeliver.after_cas",
    "work.ack.before_advance",
    "work.advance.after_base",
    "work.dead_letter.before_publish",
    "work.dead_letter.after_publish",
    "inbox.admit.after_pending",
    "inbox.admit.before_state",
    "inbox.admit.after_state",
    "inbox.done.before_cas",
    "txn.after_list",
    "txn.after_prepare",
    "txn.after_commit_point",
    "txn.before_input_commit",
    "ids.after_claim",
    "ids.after_inflight",
    "ids.after_publish",
    "ids.after_entry",
];

/// One trigger variable: which point (and which hit of it) it names, and the hits so far.
#[cfg(feature = "fault-injection")]
struct Trigger {
    var: &'static str,
    target: std::sync::OnceLock<Option<(String, u64)>>,
    hits: std::sync::atomic::AtomicU64,
}

#[cfg(feature = "fault-injection")]
impl Trigger {
    const fn new(var: &'static str) -> Self {
        Trigger {
            var,
            target: std::sync::OnceLock::new(),
            hits: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whether reaching point `name` now is the hit the variable asks for.
    fn fires(&self, name: &str) -> bool {
        let target = self.target.get_or_init(|| {
            let v = std::env::var(self.var).ok()?;
            let (n, k) = v
                .split_once(':')
                .map_or((v.as_str(), 1), |(n, k)| (n, k.parse().unwrap_or(1)));
            Some((n.to_string(), k))
        });
        // Relaxed: a per-process counter, only this thread's count matters for the test.
        matches!(target, Some((target, nth))
            if target == name
                && self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 == *nth)
    }
}

/// Kills the process here if `SHMQ_CRASH_AT` names this point, or stops it here if
/// `SHMQ_STOP_AT` does (test builds only).
#[cfg(feature = "fault-injection")]
pub(crate) fn point(name: &'static str) {
    static CRASH: Trigger = Trigger::new("SHMQ_CRASH_AT");
    static STOP: Trigger = Trigger::new("SHMQ_STOP_AT");
    if CRASH.fires(name) {
        // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    if STOP.fires(name) {
        // SAFETY: as above; SIGSTOP stops every thread of the process until SIGCONT, and the
        // call returns once the process continues.
        unsafe { libc::kill(libc::getpid(), libc::SIGSTOP) };
    }
}

/// Kills or stops the process here if `SHMQ_CRASH_AT` or `SHMQ_STOP_AT` names this point (test
/// builds only).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn point(_name: &'static str) {}
