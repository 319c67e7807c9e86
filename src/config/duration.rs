//! Parsing of Go-style duration strings (`5s`, `1m30s`, `250ms`), which is what the upstream
//! service reads its timeout variables with, so existing deployments keep working.

use std::time::Duration;

/// Parses a Go `time.ParseDuration` string: a sequence of decimal numbers, each with an optional
/// fraction and a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), e.g. `1h15m` or `1.5s`.
/// A bare `0` is accepted; negative durations are not (a timeout cannot be negative).
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if text.starts_with('-') {
        return Err("a duration cannot be negative".into());
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    let mut total_nanos: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration '{text}' (use e.g. 5s, 250ms, 1m)"))?;
        let (number, after) = rest.split_at(number_len);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("invalid number '{number}' in duration '{text}'"))?;
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
            "" => return Err(format!("missing unit in duration '{text}'")),
            other => return Err(format!("unknown unit '{other}' in duration '{text}'")),
        };
        total_nanos += value * nanos_per_unit;
        rest = remainder;
    }
    if !total_nanos.is_finite() || total_nanos > u64::MAX as f64 {
        return Err(format!("duration '{text}' is too large"));
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
    }
}
