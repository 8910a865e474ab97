//! Byte sizes on the command line: parsing `64MiB`-style strings and printing sizes.

/// Units accepted after the number (compared case-insensitively) and their sizes in bytes.
/// `K`, `M`, `G`, `T` and the `…iB` spellings are binary; `KB`, `MB`, `GB`, `TB` are decimal.
const UNITS: [(&str, u64); 14] = [
    ("", 1),
    ("b", 1),
    ("k", 1 << 10),
    ("kib", 1 << 10),
    ("kb", 1_000),
    ("m", 1 << 20),
    ("mib", 1 << 20),
    ("mb", 1_000_000),
    ("g", 1 << 30),
    ("gib", 1 << 30),
    ("gb", 1_000_000_000),
    ("t", 1 << 40),
    ("tib", 1 << 40),
    ("tb", 1_000_000_000_000),
];

/// Parses a byte size: a whole number, optionally followed by a unit (`64MiB`, `4096`, `1 GiB`,
/// `16k`). Errors name what is wrong without repeating the input (clap shows it).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() {
        return Err("expected a whole number of bytes with an optional unit, like 64MiB".into());
    }
    let unit = unit.trim_start();
    let scale = UNITS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(unit))
        .map(|&(_, scale)| scale)
        .ok_or_else(|| {
            if unit.starts_with('.') {
                "fractions are not supported; use a smaller unit (1536KiB, not 1.5MiB)".to_string()
            } else {
                format!("unknown unit '{unit}' (use B, KiB, MiB, GiB, TiB or KB, MB, GB, TB)")
            }
        })?;
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| "too large (at most 16 EiB - 1)".to_string())
}

/// Parses a ring size (`--capacity`): a size as [`parse_size`] reads it that is a power of
/// two. A decimal unit (`64MB`) gets a hint at its binary twin (`64MiB`).
pub fn parse_capacity(s: &str) -> Result<u64, String> {
    let n = parse_size(s)?;
    if n.is_power_of_two() {
        return Ok(n);
    }
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let unit = unit.trim_start();
    match unit.to_ascii_lowercase().as_str() {
        "kb" | "mb" | "gb" | "tb" => Err(format!(
            "{unit} is decimal, so this is {n} bytes, not a power of two: use {digits}{}iB",
            unit[..1].to_ascii_uppercase()
        )),
        _ => Err(format!(
            "{n} bytes is not a power of two (like 4KiB, 64KiB, 1MiB, 64MiB)"
        )),
    }
}

/// Formats a byte count for people: `64 MiB` for exact binary multiples, `511.97 KiB`
/// otherwise, `100 B` below 1 KiB.
pub fn format_size(n: u64) -> String {
    const NAMES: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 0;
    while unit + 1 < NAMES.len() && n >= 1u64 << (10 * (unit + 1)) {
        unit += 1;
    }
    let scale = 1u64 << (10 * unit);
    if n.is_multiple_of(scale) {
        format!("{} {}", n / scale, NAMES[unit])
    } else {
        format!("{:.2} {}", n as f64 / scale as f64, NAMES[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64mib"), Ok(64 << 20));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("16k"), Ok(16 << 10));
        assert_eq!(parse_size("2KB"), Ok(2000));
        assert_eq!(parse_size("1TiB"), Ok(1 << 40));
        assert_eq!(parse_size("10B"), Ok(10));
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(parse_size("").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("64XB")
            .unwrap_err()
            .contains("unknown unit 'XB'"));
        assert!(parse_size("1.5MiB").unwrap_err().contains("fractions"));
        assert!(parse_size("99999999999TiB")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_size("99999999999999999999").is_err());
    }

    #[test]
    fn formats_sizes() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(100), "100 B");
        assert_eq!(format_size(64 << 20), "64 MiB");
        assert_eq!(format_size(1536), "1.50 KiB");
        assert_eq!(format_size(524_256), "511.97 KiB");
        assert_eq!(format_size(1 << 40), "1 TiB");
    }
}
