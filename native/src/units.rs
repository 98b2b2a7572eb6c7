//! Sizes and durations as users write them (`64MiB`, `2GB`, `30s`, `7d`), parsed once for
//! the CLI, the daemon's JSON options and the Python package.

use std::time::Duration;

use crate::error::{Error, Result};

/// Parses sizes like `512MiB`, `2GB`, `1000` (whole bytes, at most 2^63); `name` is the
/// option as the user wrote it, for the error.
pub fn parse_size(name: &str, text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| Error::invalid(name, format!("{text:?}: expected a size such as 64MiB")))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => return Err(Error::invalid(name, format!("{text:?}: unknown unit {other:?}"))),
    };
    let bytes = value * scale as f64;
    if !bytes.is_finite() || bytes > (1u64 << 63) as f64 {
        return Err(Error::invalid(name, format!("{text:?}: too large")));
    }
    Ok(bytes as u64)
}

/// Parses durations like `30s`, `500ms`, `7d`, `12h`.
pub fn parse_duration(name: &str, text: &str) -> Result<Duration> {
    humantime::parse_duration(text)
        .map_err(|_| Error::invalid(name, format!("{text:?}: expected e.g. 30s, 12h, 7d")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("s", "64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("s", "1.5k").unwrap(), 1500);
        assert_eq!(parse_size("s", "7").unwrap(), 7);
        let e = parse_size("--shard-size", "3 parsecs").unwrap_err().to_string();
        assert_eq!(e, "invalid --shard-size: \"3 parsecs\": unknown unit \"parsecs\"");
        assert!(parse_size("s", "1e30").is_err());
        assert!(parse_size("s", "99999999TiB")
            .unwrap_err()
            .to_string()
            .contains("too large"));
        assert_eq!(
            parse_duration("t", "1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        let e = parse_duration("--timeout", "soon").unwrap_err().to_string();
        assert_eq!(e, "invalid --timeout: \"soon\": expected e.g. 30s, 12h, 7d");
    }
}
