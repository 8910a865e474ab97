//! Number formatting for output meant for people.

/// Formats a count with thousands separators: `200,000`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Formats a rate of `n` events over `secs` seconds: `49,871/s` (`-` if no time passed).
pub fn rate(n: u64, secs: f64) -> String {
    if secs > 0.0 {
        format!("{}/s", count((n as f64 / secs).round() as u64))
    } else {
        "-".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_digits() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(200_000), "200,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(rate(100, 2.0), "50/s");
        assert_eq!(rate(1, 0.0), "-");
    }
}
