//! Parsing of Go-style duration strings (`5s`, `1m30s`, `250ms`), which is what the upstream
//! service reads its timeout variables with, so existing deployments keep working.

use std::time::Duration;

/// Why a text is not a Go duration; each message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing was given.
    #[error("empty duration")]
    Empty,
    /// A minus sign: a timeout cannot be negative.
    #[error("a duration cannot be negative")]
    Negative,
    /// A number without its unit.
    #[error("missing unit in duration '{0}' (use e.g. 5s, 250ms, 1m)")]
    MissingUnit(String),
    /// A number that does not parse.
    #[error("invalid number '{number}' in duration '{text}'")]
    InvalidNumber {
        /// The number.
        number: String,
        /// The whole duration.
        text: String,
    },
    /// A unit Go does not know.
    #[error("unknown unit '{unit}' in duration '{text}'")]
    UnknownUnit {
        /// The unit.
        unit: String,
        /// The whole duration.
        text: String,
    },
    /// More than a `Duration` holds.
    #[error("duration '{0}' is too large")]
    TooLarge(String),
}

/// Parses a Go `time.ParseDuration` string: a sequence of decimal numbers, each with an optional
/// fraction and a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), e.g. `1h15m` or `1.5s`.
/// A bare `0` is accepted; negative durations are not (a timeout cannot be negative).
pub fn parse_go_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    if text.starts_with('-') {
        return Err(DurationError::Negative);
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    let mut total_nanos: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| DurationError::MissingUnit(text.to_owned()))?;
        let (number, after) = rest.split_at(number_len);
        let value: f64 = number.parse().map_err(|_| DurationError::InvalidNumber {
            number: number.to_owned(),
            text: text.to_owned(),
        })?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, remainder) = after.split_at(unit_len);
        let nanos_per_unit = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(DurationError::MissingUnit(text.to_owned())),
            other => {
                return Err(DurationError::UnknownUnit {
                    unit: other.to_owned(),
                    text: text.to_owned(),
                });
            }
        };
        total_nanos += value * nanos_per_unit;
        rest = remainder;
    }
    if !total_nanos.is_finite() || total_nanos > u64::MAX as f64 {
        return Err(DurationError::TooLarge(text.to_owned()));
    }
    Ok(Duration::from_nanos(total_nanos as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_forms() {
        assert_eq!(parse_go_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_go_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "5", "s", "5x", "-5s", "1..5s", "5 s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad} should be rejected");
        }
        assert_eq!(parse_go_duration("-5s"), Err(DurationError::Negative));
        assert_eq!(
            parse_go_duration("5x").unwrap_err().to_string(),
            "unknown unit 'x' in duration '5x'"
        );
    }
}
