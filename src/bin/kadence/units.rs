//! Durations and times as people type and read them: `48h`, `1h30m`, RFC 3339.

use std::time::{Duration, SystemTime};

const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];

/// A duration written as numbers with units, like go's and Kubo's: `48h`, `1h30m`, `90s`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad =
        || format!("durations are numbers with units d, h, m, s (e.g. 48h, 1h30m), got {text:?}");
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let (_, seconds) = UNITS.iter().find(|(unit, _)| *unit == c).ok_or_else(bad)?;
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(*seconds)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() || text.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// A duration in the form [`parse_duration`] reads (`1h30m`, `0s`); sub-second parts as Rust
/// prints them (`1.5s`).
pub fn format_duration(duration: Duration) -> String {
    if duration.subsec_nanos() != 0 {
        return format!("{duration:?}");
    }
    let mut left = duration.as_secs();
    if left == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, seconds) in UNITS {
        if left >= seconds {
            out.push_str(&format!("{}{unit}", left / seconds));
            left %= seconds;
        }
    }
    out
}

/// A time in RFC 3339, in UTC with as many fraction digits as it has.
pub fn rfc3339(when: SystemTime) -> String {
    // RFC 3339 has no form past year 9999 (nor has `time` without its large dates, and its
    // `From<SystemTime>` would panic there): such a time prints as Rust debugs it.
    let formatted = when
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|since| time::Duration::try_from(since).ok())
        .and_then(|since| time::OffsetDateTime::UNIX_EPOCH.checked_add(since))
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        });
    formatted.unwrap_or_else(|| format!("{when:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_kubo_writes_them() {
        for (text, seconds) in [
            ("48h", 48 * 3600),
            ("1h30m", 5400),
            ("90s", 90),
            ("7d", 7 * 86_400),
            ("0s", 0),
            ("1d2h3m4s", 86_400 + 7200 + 180 + 4),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(seconds)),
                "{text}"
            );
        }
    }

    #[test]
    fn durations_without_units_or_with_others_are_refused() {
        for text in [
            "",
            "48",
            "h",
            "1.5h",
            "1w",
            "-1h",
            "1h30",
            "99999999999999999999d",
        ] {
            let error = parse_duration(text).unwrap_err();
            assert!(error.contains("units"), "{text}: {error}");
        }
    }

    #[test]
    fn durations_print_as_they_are_read() {
        for text in ["48h", "1h30m", "90s", "7d", "0s", "1d2h3m4s"] {
            let duration = parse_duration(text).unwrap();
            let printed = format_duration(duration);
            assert_eq!(parse_duration(&printed), Ok(duration), "{printed}");
        }
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn times_print_in_rfc3339_utc() {
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
        assert_eq!(rfc3339(when), "2026-09-21T14:13:20Z");
        let when = when + Duration::from_nanos(500_000_000);
        assert_eq!(rfc3339(when), "2026-09-21T14:13:20.5Z");
    }

    #[test]
    fn times_past_year_9999_print_without_panicking() {
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(300_000_000_000);
        assert!(rfc3339(when).starts_with("SystemTime"), "{}", rfc3339(when));
    }
}
