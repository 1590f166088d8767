//! Human units in config files: durations (`"10s"`, `"5m"`) and byte sizes (`"10MB"`, `"512k"`).
//!
//! Both accept either a string with a unit or a bare integer (seconds for durations, bytes for
//! sizes), so `max_body_size = 1048576` and `max_body_size = "1MB"` mean the same thing.

use serde::Deserialize;
use std::time::Duration;

/// Longest duration any setting accepts (7 days): longer is surely a typo.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

const DURATION_HELP: &str =
    "expected a duration such as \"500ms\", \"10s\", \"5m\" or \"1h\" (or a whole number of seconds)";
const SIZE_HELP: &str =
    "expected a size such as \"512\", \"64k\", \"10MB\" or \"1GB\" (units are powers of 1024)";

/// A duration as written in the config file, parsed during validation so that every bad value
/// in a file is reported at once rather than only the first.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum RawDuration {
    /// Whole seconds.
    Seconds(u64),
    /// A number with a unit: `ms`, `s`, `m`, `h`, `d` (as `humantime` reads them).
    Text(String),
    /// Anything else (a fraction, a negative number, a table): always an error.
    Other(toml::Value),
}

impl RawDuration {
    /// Parses the value; the error text says what would be accepted.
    pub fn parse(&self) -> Result<Duration, String> {
        match self {
            RawDuration::Seconds(s) => Ok(Duration::from_secs(*s)),
            RawDuration::Text(t) => {
                humantime::parse_duration(t.trim()).map_err(|_| DURATION_HELP.to_string())
            }
            RawDuration::Other(_) => Err(DURATION_HELP.to_string()),
        }
    }

    /// The value as written, for error messages.
    pub fn shown(&self) -> String {
        match self {
            RawDuration::Seconds(s) => s.to_string(),
            RawDuration::Text(t) => format!("{t:?}"),
            RawDuration::Other(v) => v.to_string(),
        }
    }
}

/// A byte size as written in the config file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum RawSize {
    /// Bytes.
    Bytes(u64),
    /// A number with a unit.
    Text(String),
    /// Anything else (a fraction, a negative number, a table): always an error.
    Other(toml::Value),
}

impl RawSize {
    /// Parses the value. Units are powers of 1024 as in nginx (`k`, `m`, `g`, with an optional
    /// `b` or `ib`, any case): `"10MB"` is 10 MiB.
    pub fn parse(&self) -> Result<u64, String> {
        match self {
            RawSize::Bytes(b) => Ok(*b),
            RawSize::Text(t) => parse_size(t).ok_or_else(|| SIZE_HELP.to_string()),
            RawSize::Other(_) => Err(SIZE_HELP.to_string()),
        }
    }

    /// The value as written, for error messages.
    pub fn shown(&self) -> String {
        match self {
            RawSize::Bytes(b) => b.to_string(),
            RawSize::Text(t) => format!("{t:?}"),
            RawSize::Other(v) => v.to_string(),
        }
    }
}

/// Parses `"10MB"`, `"64k"`, `"1 GiB"`, `"512"`. Returns `None` for anything else, including
/// overflow, so a typo can never become a huge or zero limit silently.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return None;
    }
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10MB"), Some(10 << 20));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("1 GiB"), Some(1 << 30));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("ten"), None);
        assert_eq!(parse_size("10XB"), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size("99999999999999999999G"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(
            RawDuration::Text("5m".into()).parse(),
            Ok(Duration::from_secs(300))
        );
        assert_eq!(RawDuration::Seconds(3).parse(), Ok(Duration::from_secs(3)));
        assert!(RawDuration::Text("soon".into()).parse().is_err());
    }
}
