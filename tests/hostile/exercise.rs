//! Driving a (possibly hostile) file through the whole API in a watchdog thread: every call
//! may fail, none may panic or hang.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

use proptest::prelude::*;
use shmq::{Queue, SeekTo, Start, Subscribe};

/// Longest any single case may take before it counts as a hang.
pub(crate) const WATCHDOG: Duration = Duration::from_secs(10);

pub(crate) fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

pub(crate) fn fresh_path() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    scratch_dir().join(format!("case-{}.q", N.fetch_add(1, Ordering::Relaxed)))
}

/// Writes `bytes` to a fresh file and runs [`exercise`] on it in a watchdog thread. Fails the
/// case on a panic or a hang.
pub(crate) fn check_file(bytes: &[u8]) -> Result<(), TestCaseError> {
    let path = fresh_path();
    std::fs::write(&path, bytes).unwrap();
    let outcome = watchdog(&path, "the API", |p| {
        exercise(p);
    });
    let _ = std::fs::remove_file(&path);
    outcome
}

/// Runs `run(path)` in a watchdog thread: fails the case if it panics, or if it does not
/// return within [`WATCHDOG`] (`what` names the API in the message). The caller removes its
/// files afterwards.
pub(crate) fn watchdog(path: &Path, what: &str, run: fn(&Path)) -> Result<(), TestCaseError> {
    let (tx, rx) = mpsc::channel();
    let worker = {
        let path = path.to_path_buf();
        std::thread::spawn(move || {
            run(&path);
            let _ = tx.send(());
        })
    };
    if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(WATCHDOG) {
        return Err(TestCaseError::fail(format!(
            "hang: {what} did not return within {WATCHDOG:?} on {}",
            path.display()
        )));
    }
    if let Err(panic) = worker.join() {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        return Err(TestCaseError::fail(format!(
            "{what} panicked on {}: {msg}",
            path.display()
        )));
    }
    Ok(())
}

/// Open, inspect, consume, seek, commit, publish: every call may fail, none may panic or hang.
/// Returns whether the file opened (for the strategies' sanity checks).
pub(crate) fn exercise(path: &Path) -> bool {
    let q = match Queue::open(path) {
        Ok(q) => q,
        Err(e) => {
            // Errors must render (Display walks every field).
            assert!(!e.to_string().is_empty());
            return false;
        }
    };
    let groups = q.groups();
    let tail = q.tail_offset();
    let _ = q.geometry().clone();
    let _ = (
        q.protected_bytes(),
        q.live_producers(),
        q.producers_waiting(),
        q.oldest_offset(),
    );
    if let Some(g) = groups.first() {
        for to in [
            SeekTo::Time(u64::MAX / 2),
            SeekTo::Offset(tail / 2),
            SeekTo::Earliest,
        ] {
            let _ = q.reset_group(&g.name, to);
        }
    }
    for g in groups.iter().take(3) {
        if let Ok(mut c) = q.consumer(&g.name) {
            drive(&mut c, tail);
        }
    }
    for (name, gating) in [("new-gating", true), ("new-free", false)] {
        let opts = Subscribe {
            gating,
            start: if gating {
                Start::Earliest
            } else {
                Start::Latest
            },
            session_timeout: None,
        };
        if let Ok(mut c) = q.subscribe(name, &opts) {
            drive(&mut c, tail);
        }
    }
    if let Ok(mut p) = q.producer() {
        p.set_timeout(Some(Duration::from_millis(10)));
        let _ = p.publish(b"hostile");
        let _ = p.publish(&[7u8; 256]);
        if let Ok(mut claimed) = p.claim(12) {
            claimed.as_mut_slice().fill(0xa5);
            let _ = claimed.offset();
            let _ = claimed.commit();
        }
        if let Ok(claimed) = p.claim(3) {
            drop(claimed); // abandoned
        }
    }
    if let Some(g) = groups.first() {
        if let Ok(mut c) = q.consumer(&g.name) {
            let _ = c.poll(Some(Duration::ZERO));
        }
    }
    let _ = q.delete_group("new-free");
    let _ = q.delete_group("no-such-group");
    let _ = q.groups();
    true
}

pub(crate) fn drive(c: &mut shmq::Consumer, tail: u64) {
    let _ = (c.group(), c.position(), c.committed(), c.lag());
    poll_some(c, 4);
    if let Ok(Some(m)) = c.poll(Some(Duration::from_millis(1))) {
        let _ = m.payload.iter().map(|&b| b as u64).sum::<u64>();
    }
    for to in [
        SeekTo::Earliest,
        SeekTo::Latest,
        SeekTo::Committed,
        SeekTo::Offset(0),
        SeekTo::Offset(tail),
        SeekTo::Offset(tail.wrapping_sub(1)),
        SeekTo::Offset(tail / 2),
        SeekTo::Offset(u64::MAX),
        SeekTo::Time(0),
        SeekTo::Time(u64::MAX),
        SeekTo::Time(c.committed().wrapping_mul(1 << 30)),
        SeekTo::Earliest,
    ] {
        if c.seek(to).is_ok() {
            poll_some(c, 2);
        }
    }
    let _ = c.commit(u64::MAX);
    let _ = c.commit(0);
}

/// Polls up to `n` records without waiting, committing each one read.
pub(crate) fn poll_some(c: &mut shmq::Consumer, n: usize) {
    for _ in 0..n {
        match c.poll(Some(Duration::ZERO)) {
            Ok(Some(m)) => {
                let _ = m.payload.iter().fold(m.timestamp_ns, |a, &b| a ^ b as u64);
                let o = m.offset;
                let _ = c.commit(o);
            }
            Ok(None) => break,
            Err(_) => {}
        }
    }
}
