//! Go-style duration strings (`"10m"`, `"1m30s"`, `"500ms"`, `"1.5h"`), as
//! Terraform's `timeouts { create = "10m" }` blocks and berth's health
//! checks write them. Every provider parses them the same way.

use std::time::Duration;

/// Parses a Go duration (`[0-9.]+(ns|us|µs|ms|s|m|h)` repeated, or a bare
/// `0`).
pub fn parse(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    let invalid =
        || format!("invalid duration {input:?} (expected e.g. \"10m\", \"1m30s\", \"90s\")");
    if s.is_empty() {
        return Err(invalid());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        if number_len == 0 {
            return Err(invalid());
        }
        let number: f64 = rest[..number_len].parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        // In nanoseconds, so that `3ns` is exactly 3 (Docker's API takes
        // nanoseconds).
        let scale: f64 = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60.0 * 1e9,
            "h" => 3600.0 * 1e9,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err(invalid());
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "s", "10", "1x", "1.2.3s", "-1s", "1 s"] {
            assert!(parse(bad).is_err(), "{bad} should not parse");
        }
    }
}
