//! Timestamps as CloudWatch writes them, which is not one format.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

/// Parses every timestamp form seen in alarm events and VPN logs:
/// `2023-08-04T12:36:15.490+0000` (offset without colon), RFC 3339 with or without
/// milliseconds (`2019-10-02T17:04:40Z`), a space instead of `T`
/// (`2025-11-08 05:40:29.641Z`), and epoch milliseconds or seconds as digits.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        let n: i64 = s.parse().ok()?;
        // Ten digits are seconds until 2286; more are milliseconds.
        return if s.len() <= 10 {
            Utc.timestamp_opt(n, 0).single()
        } else {
            Utc.timestamp_millis_opt(n).single()
        };
    }
    let normalized = s.replacen(' ', "T", 1);
    if let Ok(t) = DateTime::parse_from_rfc3339(&normalized) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_str(&normalized, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(t.with_timezone(&Utc));
    }
    // No offset at all: CloudWatch means UTC.
    NaiveDateTime::parse_from_str(&normalized, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso(s: &str) -> String {
        parse_timestamp(s)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_else(|| "NONE".into())
    }

    #[test]
    fn parse_timestamp_accepts_every_cloudwatch_form() {
        assert_eq!(
            iso("2023-08-04T12:36:15.490+0000"),
            "2023-08-04T12:36:15.490Z"
        );
        assert_eq!(iso("2019-10-02T17:04:40Z"), "2019-10-02T17:04:40.000Z");
        assert_eq!(iso("2025-11-08 05:40:29.641Z"), "2025-11-08T05:40:29.641Z");
        assert_eq!(
            iso("2023-08-04T14:36:15.490+02:00"),
            "2023-08-04T12:36:15.490Z"
        );
        assert_eq!(iso("1699422029641"), "2023-11-08T05:40:29.641Z");
        assert_eq!(iso("1699422029"), "2023-11-08T05:40:29.000Z");
        assert_eq!(iso("2023-08-04T12:36:15.490"), "2023-08-04T12:36:15.490Z");
    }

    #[test]
    fn parse_timestamp_rejects_garbage() {
        assert_eq!(iso(""), "NONE");
        assert_eq!(iso("yesterday"), "NONE");
        assert_eq!(iso("2023-13-45T99:00:00Z"), "NONE");
        assert_eq!(iso(&"9".repeat(100)), "NONE");
    }
}
