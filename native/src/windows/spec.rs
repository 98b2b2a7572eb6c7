//! `WINDOWS.json`: what windows to cut and what to compute in them, in Polars'/Spark's
//! vocabulary (`period`, `every`, `offset`, `closed`), checked once before any data is read.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::time::{parse_instant, parse_span, NANOS_PER_MICRO};
use crate::error::{Error, Result};

/// How an aggregate turns the events of a window into one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Agg {
    Count,
    Sum,
    Mean,
    Min,
    Max,
    Std,
    First,
    Last,
    NUnique,
    TimeSinceLast,
}

impl Agg {
    /// `count` and `n_unique` are int64 (0 for an empty window); everything else is float64.
    pub fn is_integer(self) -> bool {
        matches!(self, Agg::Count | Agg::NUnique)
    }

    /// Whether the aggregate reads the column's values as numbers (not only which are present).
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            Agg::Sum | Agg::Mean | Agg::Min | Agg::Max | Agg::Std | Agg::First | Agg::Last
        )
    }
}

/// Which side of a window includes its edge, as Polars' `closed`: `left` is `[t - period, t)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Closed {
    #[default]
    Left,
    Right,
    Both,
    None,
}

impl Closed {
    pub fn includes_start(self) -> bool {
        matches!(self, Closed::Left | Closed::Both)
    }
    pub fn includes_end(self) -> bool {
        matches!(self, Closed::Right | Closed::Both)
    }
}

/// One `where` condition: the column's value equals one of `values` (JSON scalars).
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub column: String,
    pub values: Vec<Value>,
}

/// One aggregate of a column (or of the events themselves) over the events that pass `filter`.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub agg: Agg,
    pub column: Option<String>,
    /// All conditions must hold (AND); within one, any listed value (inclusion).
    pub filter: Vec<Condition>,
}

#[derive(Debug, Clone)]
pub struct Feature {
    pub name: String,
    pub aggregate: Aggregate,
}

#[derive(Debug, Clone)]
pub struct Label {
    pub aggregate: Aggregate,
    /// Nanoseconds after `t` the label looks.
    pub horizon: i64,
}

/// A checked spec; every span in nanoseconds, whole microseconds (the output's time unit).
#[derive(Debug, Clone)]
pub struct WindowSpec {
    pub period: i64,
    pub every: i64,
    pub offset: i64,
    pub closed: Closed,
    pub min_events: u64,
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub step: Option<i64>,
    pub features: Vec<Feature>,
    pub label: Option<Label>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    period: String,
    every: String,
    #[serde(default)]
    offset: Option<String>,
    #[serde(default)]
    closed: Closed,
    #[serde(default)]
    min_events: Option<u64>,
    #[serde(default)]
    start: Option<Value>,
    #[serde(default)]
    end: Option<Value>,
    #[serde(default)]
    step: Option<String>,
    features: Vec<RawFeature>,
    #[serde(default)]
    label: Option<RawLabel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeature {
    name: String,
    agg: Agg,
    #[serde(default)]
    column: Option<String>,
    #[serde(default, rename = "where")]
    filter: Option<BTreeMap<String, Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLabel {
    agg: Agg,
    #[serde(default)]
    column: Option<String>,
    #[serde(default, rename = "where")]
    filter: Option<BTreeMap<String, Value>>,
    horizon: String,
}

/// Output columns kiln writes itself; a feature may not take these names.
pub const RESERVED: [&str; 3] = ["t", "label", "sequence"];

fn spec_error(field: &str, problem: impl Into<String>) -> Error {
    Error::invalid(format!("spec {field}"), problem)
}

fn conditions(field: &str, filter: Option<BTreeMap<String, Value>>) -> Result<Vec<Condition>> {
    let mut out = Vec::new();
    for (column, value) in filter.unwrap_or_default() {
        let values = match value {
            Value::Array(values) => values,
            scalar => vec![scalar],
        };
        if values.is_empty() {
            return Err(spec_error(
                field,
                format!("`where` on {column:?} lists no values"),
            ));
        }
        if let Some(bad) = values
            .iter()
            .find(|v| !(v.is_string() || v.is_number() || v.is_boolean()))
        {
            return Err(spec_error(
                field,
                format!("`where` on {column:?}: {bad} is not a string, number or boolean"),
            ));
        }
        out.push(Condition { column, values });
    }
    Ok(out)
}

fn aggregate(
    field: &str,
    agg: Agg,
    column: Option<String>,
    filter: Option<BTreeMap<String, Value>>,
) -> Result<Aggregate> {
    if column.is_none() && !matches!(agg, Agg::Count | Agg::TimeSinceLast) {
        return Err(spec_error(field, format!("`{}` needs a `column`", agg_name(agg))));
    }
    Ok(Aggregate {
        agg,
        column,
        filter: conditions(field, filter)?,
    })
}

pub fn agg_name(agg: Agg) -> &'static str {
    match agg {
        Agg::Count => "count",
        Agg::Sum => "sum",
        Agg::Mean => "mean",
        Agg::Min => "min",
        Agg::Max => "max",
        Agg::Std => "std",
        Agg::First => "first",
        Agg::Last => "last",
        Agg::NUnique => "n_unique",
        Agg::TimeSinceLast => "time_since_last",
    }
}

fn span(field: &str, text: &str, allow_zero: bool) -> Result<i64> {
    let nanos = parse_span(text).map_err(|problem| spec_error(field, problem))?;
    if nanos % NANOS_PER_MICRO != 0 {
        return Err(spec_error(
            field,
            format!(
                "{text:?} is not a whole number of microseconds (window ends are written in microseconds)"
            ),
        ));
    }
    if nanos < 0 || (nanos == 0 && !allow_zero) {
        return Err(spec_error(field, format!("{text:?} must be positive")));
    }
    Ok(nanos)
}

fn instant(field: &str, value: &Value) -> Result<i64> {
    let nanos = match value {
        Value::String(s) => parse_instant(s).map_err(|problem| spec_error(field, problem))?,
        Value::Number(n) => n
            .as_i64()
            .and_then(|micros| micros.checked_mul(NANOS_PER_MICRO))
            .ok_or_else(|| spec_error(field, format!("{n} is not an epoch-microsecond integer in range")))?,
        other => {
            return Err(spec_error(
                field,
                format!("{other} is neither an RFC 3339 time nor epoch microseconds"),
            ))
        }
    };
    if nanos % NANOS_PER_MICRO != 0 {
        return Err(spec_error(field, "must be a whole microsecond"));
    }
    Ok(nanos)
}

impl WindowSpec {
    /// Parses and checks a spec; errors name the field (`spec features[2].agg: ...`).
    pub fn parse(json: &str) -> Result<WindowSpec> {
        let raw: RawSpec = serde_json::from_str(json).map_err(|e| Error::invalid("spec", e.to_string()))?;
        let period = span("period", &raw.period, false)?;
        let every = span("every", &raw.every, false)?;
        let offset = match &raw.offset {
            Some(text) => span("offset", text, true)?,
            None => 0,
        };
        let start = raw.start.as_ref().map(|v| instant("start", v)).transpose()?;
        let end = raw.end.as_ref().map(|v| instant("end", v)).transpose()?;
        if let (Some(s), Some(e)) = (start, end) {
            if s > e {
                return Err(spec_error("start", "is after `end`"));
            }
        }
        let step = raw.step.as_ref().map(|s| span("step", s, false)).transpose()?;
        if let Some(step) = step {
            if period % step != 0 {
                return Err(spec_error(
                    "step",
                    format!(
                        "{:?} does not divide the period {:?}",
                        raw.step.as_deref().unwrap_or(""),
                        raw.period
                    ),
                ));
            }
            if period / step > 1 << 16 {
                return Err(spec_error("step", "gives more than 65536 steps per window"));
            }
        }
        if raw.features.is_empty() && raw.label.is_none() {
            return Err(spec_error("features", "is empty and there is no label"));
        }
        let mut features: Vec<Feature> = Vec::with_capacity(raw.features.len());
        for (i, f) in raw.features.into_iter().enumerate() {
            let field = format!("features[{i}]");
            if f.name.is_empty() {
                return Err(spec_error(&field, "has an empty name"));
            }
            if RESERVED.contains(&f.name.as_str()) {
                return Err(spec_error(
                    &field,
                    format!("name {:?} is one kiln writes itself (t, label, sequence)", f.name),
                ));
            }
            if features.iter().any(|g| g.name == f.name) {
                return Err(spec_error(&field, format!("name {:?} is used twice", f.name)));
            }
            features.push(Feature {
                aggregate: aggregate(&field, f.agg, f.column, f.filter)?,
                name: f.name,
            });
        }
        if step.is_some() && features.is_empty() {
            return Err(spec_error("step", "needs features for the sequence"));
        }
        let label = raw
            .label
            .map(|l| -> Result<Label> {
                Ok(Label {
                    horizon: span("label.horizon", &l.horizon, false)?,
                    aggregate: aggregate("label", l.agg, l.column, l.filter)?,
                })
            })
            .transpose()?;
        Ok(WindowSpec {
            period,
            every,
            offset,
            closed: raw.closed,
            min_events: raw.min_events.unwrap_or(1),
            start,
            end,
            step,
            features,
            label,
        })
    }

    /// Steps of the sequence tensor (`period / step`), when the spec asks for one.
    pub fn steps(&self) -> Option<usize> {
        self.step.map(|s| (self.period / s) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        WindowSpec::parse(json).unwrap_err().to_string()
    }

    #[test]
    fn parses_the_contract() {
        let spec = WindowSpec::parse(
            r#"{"period": "14d", "every": "1d", "offset": "6h", "closed": "left", "step": "1d",
                "start": "2024-01-01T00:00:00Z", "end": 1706745600000000,
                "features": [
                  {"name": "calls", "agg": "count", "where": {"kind": "call"}},
                  {"name": "spend", "agg": "sum", "column": "amount", "where": {"kind": ["pay", "topup"]}}
                ],
                "label": {"agg": "count", "where": {"kind": "churn"}, "horizon": "30d"}}"#,
        )
        .unwrap();
        let day = 86_400_000_000_000;
        assert_eq!((spec.period, spec.every, spec.offset), (14 * day, day, day / 4));
        assert_eq!(spec.steps(), Some(14));
        assert_eq!(spec.start, Some(1_704_067_200_000_000_000));
        assert_eq!(spec.end, Some(1_706_745_600_000_000_000));
        assert_eq!(spec.min_events, 1);
        assert_eq!(spec.features[1].aggregate.filter[0].values.len(), 2);
        assert_eq!(spec.label.unwrap().horizon, 30 * day);
    }

    #[test]
    fn names_the_bad_field() {
        assert!(
            err(r#"{"period": "14x", "every": "1d", "features": [{"name": "n", "agg": "count"}]}"#)
                .starts_with("invalid spec period: ")
        );
        assert!(
            err(r#"{"period": "1mo", "every": "1d", "features": [{"name": "n", "agg": "count"}]}"#)
                .contains("calendar")
        );
        assert_eq!(
            err(r#"{"period": "14d", "every": "1d", "features": [{"name": "s", "agg": "sum"}]}"#),
            "invalid spec features[0]: `sum` needs a `column`"
        );
        assert!(err(
            r#"{"period": "14d", "every": "1d", "features": [{"name": "n", "agg": "median", "column": "x"}]}"#
        )
        .contains("unknown variant `median`"));
        assert!(
            err(r#"{"period": "14d", "every": "1d", "features": [{"name": "t", "agg": "count"}]}"#)
                .contains("kiln writes itself")
        );
        assert!(err(
            r#"{"period": "14d", "every": "1d", "step": "5d", "features": [{"name": "n", "agg": "count"}]}"#
        )
        .contains("does not divide"));
        assert!(
            err(r#"{"period": "14d", "every": "0d", "features": [{"name": "n", "agg": "count"}]}"#)
                .contains("must be positive")
        );
        assert!(err(r#"{"period": "14d", "every": "1d", "features": [{"name": "n", "agg": "count", "where": {"k": null}}]}"#)
            .contains("not a string, number or boolean"));
        assert!(err(r#"{"period": "14d", "every": "1d", "feature": []}"#).contains("unknown field"));
        assert!(
            err(r#"{"period": "1ns", "every": "1d", "features": [{"name": "n", "agg": "count"}]}"#)
                .contains("whole number of microseconds")
        );
    }
}
