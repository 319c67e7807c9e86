//! Timestamps as the wire shows them: RFC 3339 in UTC with the fraction's trailing zeros trimmed
//! (`2022-10-12T15:07:12.319191Z`), which is how the upstream (Go) renders them.

use chrono::{DateTime, SubsecRound, Timelike, Utc};

/// The current time at the precision PostgreSQL stores (microseconds), so a value returned on
/// creation reads back identically later.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Formats a timestamp the way the upstream does.
pub fn format(timestamp: &DateTime<Utc>) -> String {
    let mut text = timestamp.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = timestamp.nanosecond() % 1_000_000_000;
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push('Z');
    text
}

/// Serde helpers for timestamps in the upstream format.
pub mod serde_format {
    use chrono::{DateTime, Utc};
    use serde::Serializer;

    /// Serialises a timestamp.
    pub fn serialize<S: Serializer>(
        timestamp: &DateTime<Utc>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format(timestamp))
    }

    /// Serialises an optional timestamp (use with `skip_serializing_if = "Option::is_none"`).
    pub fn serialize_option<S: Serializer>(
        timestamp: &Option<DateTime<Utc>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match timestamp {
            Some(timestamp) => serialize(timestamp, serializer),
            None => serializer.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn trims_fraction_like_go() {
        let base = Utc.with_ymd_and_hms(2022, 10, 12, 15, 7, 12).unwrap();
        assert_eq!(format(&base), "2022-10-12T15:07:12Z");
        let micros = base + chrono::Duration::microseconds(319_190);
        assert_eq!(format(&micros), "2022-10-12T15:07:12.31919Z");
        let nanos = base + chrono::Duration::nanoseconds(5);
        assert_eq!(format(&nanos), "2022-10-12T15:07:12.000000005Z");
    }

    #[test]
    fn now_has_microsecond_precision() {
        assert_eq!(now().nanosecond() % 1_000, 0);
    }
}
