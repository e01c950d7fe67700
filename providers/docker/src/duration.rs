//! Go-style duration strings (`"2s"`, `"1m30s"`, `"500ms"`, `"1.5h"`) as
//! used by `healthcheck { interval = ... }`, in the nanoseconds Docker's API
//! wants. The parsing itself is [`berth_provider::duration::parse`], shared
//! by every provider.

/// Parses a Go duration (`[0-9.]+(ns|us|µs|ms|s|m|h)` repeated, or a bare
/// `0`) into nanoseconds.
pub(crate) fn parse_duration(input: &str) -> Result<i64, String> {
    let duration = berth_provider::duration::parse(input)?;
    i64::try_from(duration.as_nanos()).map_err(|_| format!("duration {input:?} is too long"))
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
