//! Process identity for leases: a pid plus the process's start time, so a recycled pid is not
//! mistaken for the original holder.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use crate::sync::pack;

/// Start time of process `pid` in clock ticks since boot (`/proc/<pid>/stat` field 22), or
/// `None` if the process does not exist or has exited (a zombie not yet reaped by its parent
/// holds nothing: it will never run again).
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: parse after the last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    // Field 3, the state: Z (zombie) and X (dead) are gone for our purposes.
    if matches!(fields.next()?, "Z" | "X") {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// The running kernel's boot id (`/proc/sys/kernel/random/boot_id`): it changes at every boot,
/// so a queue file that records another one was last used before a machine restart.
pub(crate) fn boot_id() -> std::io::Result<[u8; 16]> {
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?;
    let hex: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed boot id");
    if hex.len() != 32 {
        return Err(bad());
    }
    let mut id = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).map_err(|_| bad())?;
        id[i] = u8::from_str_radix(s, 16).map_err(|_| bad())?;
    }
    Ok(id)
}

/// This process's `(pid, start time)`.
pub(crate) fn me() -> (u32, u64) {
    static ME: OnceLock<(u32, u64)> = OnceLock::new();
    *ME.get_or_init(|| {
        let pid = std::process::id();
        (pid, start_time(pid).unwrap_or(0))
    })
}

/// A lease word for this process: `(pid | token << 32, start time)`. The token tells apart
/// several holders inside one process; it is never 0, so a lease word is never 0.
pub(crate) fn lease_word() -> u128 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    // Relaxed: only uniqueness matters.
    let token = NEXT.fetch_add(1, Ordering::Relaxed).max(1);
    let (pid, start) = me();
    pack(pid as u64 | (token as u64) << 32, start)
}

/// The pid recorded in a lease word.
pub(crate) fn lease_pid(word: u128) -> u32 {
    word as u32
}

/// Whether the holder of a lease word is still running. A start time of 0 (unknown) trusts the
/// pid alone. Values read from the shared file may be garbage: pid 0 or one that does not
/// parse as a live process reads as dead.
pub(crate) fn alive(word: u128) -> bool {
    let pid = lease_pid(word);
    let start = (word >> 64) as u64;
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    match start_time(pid) {
        Some(s) => start == 0 || s == start,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_zombie_is_not() {
        assert!(alive(lease_word()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Until it is reaped, the exited child is a zombie: it must read as dead.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while start_time(pid).is_some() {
            assert!(std::time::Instant::now() < deadline, "child never exited");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!alive(pack(pid as u64, 1)));
        child.wait().unwrap();
        assert!(!alive(pack(0, 0)), "pid 0 is never a holder");
    }
}
