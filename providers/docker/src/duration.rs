//! Go-style duration strings (`"2s"`, `"1m30s"`, `"500ms"`, `"1.5h"`) as
//! used by `healthcheck { interval = ... }`, parsed to nanoseconds the way
//! Docker's API wants them.

/// Parses a Go duration (`[0-9.]+(ns|us|µs|ms|s|m|h)` repeated, or a bare
/// `0`) into nanoseconds.
pub(crate) fn parse_duration(input: &str) -> Result<i64, String> {
    let s = input.trim();
    let invalid =
        || format!("invalid duration {input:?} (expected e.g. \"2s\", \"1m30s\", \"500ms\")");
    if s.is_empty() {
        return Err(invalid());
    }
    if s == "0" {
        return Ok(0);
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
    if !total.is_finite() || total > i64::MAX as f64 {
        return Err(invalid());
    }
    Ok(total.round() as i64)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_duration("2s"), Ok(2_000_000_000));
        assert_eq!(parse_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_duration("500ms"), Ok(500_000_000));
        assert_eq!(parse_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_duration("10us"), Ok(10_000));
        assert_eq!(parse_duration("3ns"), Ok(3));
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration("1h2m3s"), Ok(3_723_000_000_000));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "s", "10", "1x", "1.2.3s", "-1s", "1 s"] {
            assert!(parse_duration(bad).is_err(), "{bad} should not parse");
        }
    }
}
