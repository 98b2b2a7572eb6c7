//! Times as kiln's windows see them: UTC instants in integer nanoseconds since the epoch, read
//! from Arrow timestamp/date columns, RFC 3339 strings or epoch-microsecond integers; spans in
//! Polars' (`14d`, `1d12h`) or Spark's (`14 days`) words.

use arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use arrow::datatypes::{DataType, Int64Type, TimeUnit};

pub const NANOS_PER_MICRO: i64 = 1_000;
pub const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// Nanoseconds in one fixed-length unit; calendar units (months, years) have no fixed length.
fn unit_nanos(unit: &str) -> Result<i64, String> {
    Ok(match unit {
        "ns" | "nanosecond" | "nanoseconds" => 1,
        "us" | "µs" | "microsecond" | "microseconds" => 1_000,
        "ms" | "millisecond" | "milliseconds" => 1_000_000,
        "s" | "second" | "seconds" | "sec" | "secs" => NANOS_PER_SECOND,
        "m" | "minute" | "minutes" | "min" | "mins" => 60 * NANOS_PER_SECOND,
        "h" | "hour" | "hours" => 3_600 * NANOS_PER_SECOND,
        "d" | "day" | "days" => 86_400 * NANOS_PER_SECOND,
        "w" | "week" | "weeks" => 7 * 86_400 * NANOS_PER_SECOND,
        "mo" | "month" | "months" | "q" | "quarter" | "quarters" | "y" | "year" | "years" => {
            return Err(format!(
                "{unit:?} is a calendar unit of varying length; use days or weeks"
            ))
        }
        "i" => return Err("index windows (`i`) are not time spans".into()),
        other => return Err(format!("unknown unit {other:?} (use ns, us, ms, s, m, h, d, w)")),
    })
}

/// Parses `14d`, `1d12h`, `90m`, `500ms` (Polars) or `14 days`, `1 hour 30 minutes` (Spark).
pub fn parse_span(text: &str) -> Result<i64, String> {
    let bad = |why: String| format!("{text:?}: {why}");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad("empty".into()));
    }
    let negative = rest.starts_with('-');
    if negative {
        rest = &rest[1..];
    }
    let mut total: i64 = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad("expected a number, e.g. 14d or \"14 days\"".into()));
        }
        let number: i64 = rest[..digits]
            .parse()
            .map_err(|_| bad("number too large".into()))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.find(|c: char| !c.is_alphabetic()).unwrap_or(rest.len());
        if unit_len == 0 {
            return Err(bad("a number needs a unit (ns, us, ms, s, m, h, d, w)".into()));
        }
        let unit = rest[..unit_len].to_ascii_lowercase();
        let nanos = unit_nanos(&unit).map_err(bad)?;
        total = number
            .checked_mul(nanos)
            .and_then(|n| total.checked_add(n))
            .ok_or_else(|| bad("too long".into()))?;
        rest = rest[unit_len..].trim_start();
    }
    Ok(if negative { -total } else { total })
}

/// An RFC 3339 time (`2024-03-01T12:00:00Z`, `...+02:00`) as UTC nanoseconds. A time without
/// an offset is refused: it names no instant.
pub fn parse_instant(text: &str) -> Result<i64, String> {
    let parsed = chrono::DateTime::parse_from_rfc3339(text.trim()).map_err(|e| {
        format!("{text:?} is not an RFC 3339 time with an offset, e.g. 2024-03-01T12:00:00Z ({e})")
    })?;
    parsed
        .timestamp_nanos_opt()
        .ok_or_else(|| format!("{text:?} is outside the years 1677-2262 that nanoseconds cover"))
}

fn scaled(values: &Int64Array, nanos_per_unit: i64) -> Result<Vec<Option<i64>>, String> {
    values
        .iter()
        .map(|v| {
            v.map(|v| {
                v.checked_mul(nanos_per_unit)
                    .ok_or_else(|| format!("time {v} is outside the years 1677-2262"))
            })
            .transpose()
        })
        .collect()
}

/// A time column as UTC nanoseconds (`None` for nulls). Timestamps without a time zone are
/// taken as UTC; integers are epoch microseconds; strings are RFC 3339.
pub fn column_nanos(column: &ArrayRef) -> Result<Vec<Option<i64>>, String> {
    match column.data_type() {
        DataType::Timestamp(unit, _) | DataType::Duration(unit) => {
            let values = arrow::compute::cast(column, &DataType::Int64).map_err(|e| e.to_string())?;
            let per_unit = match unit {
                TimeUnit::Second => NANOS_PER_SECOND,
                TimeUnit::Millisecond => 1_000_000,
                TimeUnit::Microsecond => NANOS_PER_MICRO,
                TimeUnit::Nanosecond => 1,
            };
            scaled(values.as_primitive::<Int64Type>(), per_unit)
        }
        DataType::Date32 | DataType::Date64 => {
            let as_ts = arrow::compute::cast(column, &DataType::Timestamp(TimeUnit::Millisecond, None))
                .map_err(|e| e.to_string())?;
            let values = arrow::compute::cast(&as_ts, &DataType::Int64).map_err(|e| e.to_string())?;
            scaled(values.as_primitive::<Int64Type>(), 1_000_000)
        }
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => {
            let values = arrow::compute::cast(column, &DataType::Int64).map_err(|e| e.to_string())?;
            scaled(values.as_primitive::<Int64Type>(), NANOS_PER_MICRO)
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let strings = arrow::compute::cast(column, &DataType::Utf8).map_err(|e| e.to_string())?;
            strings
                .as_string::<i32>()
                .iter()
                .map(|s| match s {
                    None => Ok(None),
                    Some(s) => match s.trim().parse::<i64>() {
                        Ok(micros) => micros
                            .checked_mul(NANOS_PER_MICRO)
                            .map(Some)
                            .ok_or_else(|| format!("time {micros} is outside the years 1677-2262")),
                        Err(_) => parse_instant(s).map(Some),
                    },
                })
                .collect()
        }
        DataType::Dictionary(_, value) => {
            let plain = arrow::compute::cast(column, value).map_err(|e| e.to_string())?;
            column_nanos(&plain)
        }
        other => Err(format!(
            "is {other}; expected a timestamp, a date, epoch-microsecond integers or RFC 3339 strings"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn spans_in_both_vocabularies() {
        let day = 86_400 * NANOS_PER_SECOND;
        assert_eq!(parse_span("14d").unwrap(), 14 * day);
        assert_eq!(parse_span("1d12h").unwrap(), day + day / 2);
        assert_eq!(parse_span("14 days").unwrap(), 14 * day);
        assert_eq!(parse_span("1 hour 30 minutes").unwrap(), 5_400 * NANOS_PER_SECOND);
        assert_eq!(parse_span("2w").unwrap(), 14 * day);
        assert_eq!(parse_span("250ms").unwrap(), 250_000_000);
        assert_eq!(parse_span("0d").unwrap(), 0);
        assert!(parse_span("1mo").unwrap_err().contains("calendar unit"));
        assert!(parse_span("14").unwrap_err().contains("needs a unit"));
        assert!(parse_span("d").unwrap_err().contains("expected a number"));
        assert!(parse_span("99999999999999d").unwrap_err().contains("too long"));
    }

    #[test]
    fn instants_are_utc() {
        assert_eq!(parse_instant("1970-01-01T00:00:01Z").unwrap(), NANOS_PER_SECOND);
        assert_eq!(
            parse_instant("1970-01-01T02:00:01+02:00").unwrap(),
            NANOS_PER_SECOND
        );
        assert!(parse_instant("2024-01-01T00:00:00")
            .unwrap_err()
            .contains("with an offset"));
    }

    #[test]
    fn columns_of_every_time_type() {
        let strings: ArrayRef = Arc::new(arrow::array::StringArray::from(vec![
            Some("1970-01-01T00:00:01Z"),
            Some("2000000"),
            None,
        ]));
        assert_eq!(
            column_nanos(&strings).unwrap(),
            vec![Some(NANOS_PER_SECOND), Some(2 * NANOS_PER_SECOND), None]
        );
        let ts: ArrayRef =
            Arc::new(arrow::array::TimestampMillisecondArray::from(vec![3_000]).with_timezone("+05:00"));
        assert_eq!(column_nanos(&ts).unwrap(), vec![Some(3 * NANOS_PER_SECOND)]);
        let dates: ArrayRef = Arc::new(arrow::array::Date32Array::from(vec![1]));
        assert_eq!(
            column_nanos(&dates).unwrap(),
            vec![Some(86_400 * NANOS_PER_SECOND)]
        );
        let floats: ArrayRef = Arc::new(arrow::array::Float64Array::from(vec![1.0]));
        assert!(column_nanos(&floats)
            .unwrap_err()
            .contains("expected a timestamp"));
        let bad: ArrayRef = Arc::new(arrow::array::StringArray::from(vec!["yesterday"]));
        assert!(column_nanos(&bad).unwrap_err().contains("RFC 3339"));
    }
}
