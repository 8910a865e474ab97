//! The machine's identity: the boot id that tells a queue file last used before a restart.

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
