//! Raw event batches (any file's schema) into kiln's canonical form: the entity (int64 or
//! string), the time in UTC nanoseconds, an order key (file, then row), and one column per
//! distinct input the aggregates read, with `where` and nulls already applied, so that the
//! sliding code only sees "present" values.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use serde_json::Value;

use super::spec::{Agg, Aggregate, Condition, WindowSpec};
use super::time::column_nanos;

/// What a canonical input column holds for each event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// Boolean: whether the event counts (passes `where`, and its column is not null).
    Presence,
    /// Float64: the column's value where it counts, null elsewhere (NaN is null, as in pandas).
    Number,
    /// Int64, Float64 or Utf8: the value, for distinct counts; null where it does not count.
    Key,
}

/// One distinct thing aggregates read; features that read the same share it.
#[derive(Debug, Clone, PartialEq)]
pub struct InputDef {
    pub column: Option<String>,
    pub filter: Vec<Condition>,
    pub kind: InputKind,
}

impl InputDef {
    fn of(aggregate: &Aggregate) -> InputDef {
        let kind = match aggregate.agg {
            Agg::Count | Agg::TimeSinceLast => InputKind::Presence,
            Agg::NUnique => InputKind::Key,
            _ => InputKind::Number,
        };
        InputDef {
            column: aggregate.column.clone(),
            filter: aggregate.filter.clone(),
            kind,
        }
    }
}

/// The inputs one table (events, or label events) is prepared with.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub defs: Vec<InputDef>,
}

impl Inputs {
    /// The index of `aggregate`'s input, added when new.
    pub fn index_of(&mut self, aggregate: &Aggregate) -> usize {
        let def = InputDef::of(aggregate);
        match self.defs.iter().position(|d| *d == def) {
            Some(i) => i,
            None => {
                self.defs.push(def);
                self.defs.len() - 1
            }
        }
    }

    /// Raw columns these inputs read (besides entity and time), sorted and distinct.
    pub fn columns(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .defs
            .iter()
            .flat_map(|d| {
                d.column
                    .iter()
                    .cloned()
                    .chain(d.filter.iter().map(|c| c.column.clone()))
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// Which input each feature and the label read.
#[derive(Debug, Clone)]
pub struct InputPlan {
    pub events: Inputs,
    /// Inputs of the `--labels` table (empty when the label reads the events).
    pub labels: Inputs,
    pub feature_inputs: Vec<usize>,
    /// The label's input index, in `labels` when `separate_labels`, else in `events`.
    pub label_input: Option<usize>,
    pub separate_labels: bool,
}

impl InputPlan {
    pub fn new(spec: &WindowSpec, separate_labels: bool) -> InputPlan {
        let mut events = Inputs::default();
        let feature_inputs = spec
            .features
            .iter()
            .map(|f| events.index_of(&f.aggregate))
            .collect();
        let mut labels = Inputs::default();
        let label_input = spec.label.as_ref().map(|l| {
            if separate_labels {
                labels.index_of(&l.aggregate)
            } else {
                events.index_of(&l.aggregate)
            }
        });
        InputPlan {
            events,
            labels,
            feature_inputs,
            label_input,
            separate_labels,
        }
    }
}

pub const ENTITY: usize = 0;
pub const TIME: usize = 1;
pub const SEQ: usize = 2;
/// Index of the first input column in a canonical batch.
pub const FIRST_INPUT: usize = 3;

/// The canonical schema for `inputs` with the given entity type and key types.
pub fn canonical_schema(entity: &DataType, inputs: &[DataType]) -> SchemaRef {
    let mut fields = vec![
        Field::new("entity", entity.clone(), true),
        Field::new("time", DataType::Int64, false),
        Field::new("seq", DataType::UInt64, false),
    ];
    fields.extend(
        inputs
            .iter()
            .enumerate()
            .map(|(i, t)| Field::new(format!("i{i}"), t.clone(), true)),
    );
    Arc::new(Schema::new(fields))
}

/// Ints, floats, strings and booleans in one type each: Int64, Float64, Utf8, Boolean.
fn normalized(column: &ArrayRef) -> Result<ArrayRef, String> {
    let target = match column.data_type() {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => DataType::Int64,
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal32(_, _)
        | DataType::Decimal64(_, _)
        | DataType::Decimal128(_, _)
        | DataType::Decimal256(_, _) => DataType::Float64,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::Boolean => DataType::Boolean,
        DataType::Null => DataType::Float64,
        DataType::Dictionary(_, value) => {
            let plain = arrow::compute::cast(column, value).map_err(|e| e.to_string())?;
            return normalized(&plain);
        }
        other => return Err(format!("is {other}; kiln reads numbers, strings and booleans")),
    };
    if column.data_type() == &target {
        return Ok(column.clone());
    }
    // Safe casts: an unsigned value past i64::MAX is an error, not a wrap.
    let options = arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    arrow::compute::cast_with_options(column, &target, &options).map_err(|e| e.to_string())
}

/// The entity column as Int64 or Utf8.
pub fn entity_column(column: &ArrayRef) -> Result<ArrayRef, String> {
    let values = normalized(column)?;
    match values.data_type() {
        DataType::Int64 | DataType::Utf8 => Ok(values),
        other => Err(format!("is {other}; an entity is an integer or a string")),
    }
}

/// Rows that satisfy one condition (nulls never do).
fn condition_mask(condition: &Condition, column: &ArrayRef) -> Result<Vec<bool>, String> {
    let column = normalized(column)?;
    let wrong = |want: &str| {
        format!(
            "`where` on {:?}: the column is {} but the values are not all {want}",
            condition.column,
            column.data_type()
        )
    };
    let valid = |i: usize| column.is_valid(i);
    Ok(match column.data_type() {
        DataType::Int64 => {
            if !condition.values.iter().all(|v| v.is_number()) {
                return Err(wrong("numbers"));
            }
            let ints = column.as_primitive::<Int64Type>();
            // 7.0 matches 7; 7.5 matches no integer.
            let wanted: HashSet<i64> = condition
                .values
                .iter()
                .filter_map(|v| {
                    v.as_i64().or_else(|| {
                        v.as_f64()
                            .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                            .map(|f| f as i64)
                    })
                })
                .collect();
            (0..ints.len())
                .map(|i| valid(i) && wanted.contains(&ints.value(i)))
                .collect()
        }
        DataType::Float64 => {
            if !condition.values.iter().all(|v| v.is_number()) {
                return Err(wrong("numbers"));
            }
            let wanted: Vec<f64> = condition.values.iter().filter_map(|v| v.as_f64()).collect();
            let floats = column.as_primitive::<Float64Type>();
            (0..floats.len())
                .map(|i| valid(i) && wanted.contains(&floats.value(i)))
                .collect()
        }
        DataType::Utf8 => {
            if !condition.values.iter().all(|v| v.is_string()) {
                return Err(wrong("strings"));
            }
            let wanted: HashSet<&str> = condition.values.iter().filter_map(|v| v.as_str()).collect();
            let strings = column.as_string::<i32>();
            (0..strings.len())
                .map(|i| valid(i) && wanted.contains(strings.value(i)))
                .collect()
        }
        DataType::Boolean => {
            if !condition.values.iter().all(|v| v.is_boolean()) {
                return Err(wrong("booleans"));
            }
            let bools = column.as_boolean();
            (0..bools.len())
                .map(|i| valid(i) && condition.values.contains(&Value::Bool(bools.value(i))))
                .collect()
        }
        other => unreachable!("normalized to {other}"),
    })
}

/// Whether each row counts: every condition holds and the column (if any) has a value.
fn counted(
    def: &InputDef,
    column_of: &dyn Fn(&str) -> Result<ArrayRef, String>,
    rows: usize,
) -> Result<Vec<bool>, String> {
    let mut mask = vec![true; rows];
    for condition in &def.filter {
        let hits = condition_mask(condition, &column_of(&condition.column)?).map_err(|e| e.to_string())?;
        mask.iter_mut().zip(hits).for_each(|(m, h)| *m &= h);
    }
    if let Some(name) = &def.column {
        let column = normalized(&column_of(name)?).map_err(|e| format!("column {name:?} {e}"))?;
        let floats = (column.data_type() == &DataType::Float64).then(|| column.as_primitive::<Float64Type>());
        for (i, m) in mask.iter_mut().enumerate() {
            *m &= column.is_valid(i) && floats.is_none_or(|f| !f.value(i).is_nan());
        }
    }
    Ok(mask)
}

/// One input's canonical column for a raw batch.
pub fn input_column(
    def: &InputDef,
    column_of: &dyn Fn(&str) -> Result<ArrayRef, String>,
    rows: usize,
) -> Result<ArrayRef, String> {
    let mask = counted(def, column_of, rows)?;
    let values = match &def.column {
        Some(name) => Some(normalized(&column_of(name)?).map_err(|e| format!("column {name:?} {e}"))?),
        None => None,
    };
    Ok(match def.kind {
        InputKind::Presence => Arc::new(BooleanArray::from(mask)),
        InputKind::Number => {
            let name = def.column.as_deref().unwrap_or_default();
            let values = values.expect("numeric aggregates have a column");
            let floats = match values.data_type() {
                DataType::Utf8 => {
                    return Err(format!(
                        "column {name:?} holds strings; this aggregate needs numbers"
                    ))
                }
                DataType::Boolean | DataType::Int64 => {
                    arrow::compute::cast(&values, &DataType::Float64).map_err(|e| e.to_string())?
                }
                _ => values,
            };
            let floats = floats.as_primitive::<Float64Type>();
            Arc::new(Float64Array::from_iter(
                mask.iter().enumerate().map(|(i, &m)| m.then(|| floats.value(i))),
            ))
        }
        InputKind::Key => {
            let values = values.expect("n_unique has a column");
            let keep = BooleanArray::from(mask);
            let values = match values.data_type() {
                DataType::Boolean => {
                    arrow::compute::cast(&values, &DataType::Int64).map_err(|e| e.to_string())?
                }
                DataType::Float64 => {
                    // -0.0 and 0.0 are one value, as pandas counts them.
                    let floats = values.as_primitive::<Float64Type>();
                    Arc::new(Float64Array::from_iter(
                        floats.iter().map(|v| v.map(|x| if x == 0.0 { 0.0 } else { x })),
                    ))
                }
                _ => values,
            };
            arrow::compute::nullif(&values, &arrow::compute::not(&keep).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?
        }
    })
}

/// A raw batch in canonical form: rows with a null entity or time are dropped (and counted).
#[derive(Debug)]
pub struct Prepared {
    pub batch: RecordBatch,
    pub dropped: u64,
}

/// Prepares `raw` (columns looked up by name) with `inputs`; `seq_base` is the order key of
/// its first row. Errors are the problem only; the caller adds the file.
pub fn prepare(
    raw: &RecordBatch,
    entity: &str,
    time: &str,
    inputs: &Inputs,
    seq_base: u64,
) -> Result<Prepared, String> {
    let column_of = |name: &str| -> Result<ArrayRef, String> {
        raw.column_by_name(name)
            .cloned()
            .ok_or_else(|| format!("has no column {name:?}"))
    };
    let rows = raw.num_rows();
    let entities = entity_column(&column_of(entity)?).map_err(|e| format!("entity column {entity:?} {e}"))?;
    let times = column_nanos(&column_of(time)?).map_err(|e| format!("time column {time:?} {e}"))?;
    let keep: Vec<bool> = (0..rows)
        .map(|i| entities.is_valid(i) && times[i].is_some())
        .collect();
    let dropped = keep.iter().filter(|k| !**k).count() as u64;
    let mut columns: Vec<ArrayRef> = vec![
        entities,
        Arc::new(Int64Array::from_iter_values(times.iter().map(|t| t.unwrap_or(0)))),
        Arc::new(UInt64Array::from_iter_values(
            (0..rows as u64).map(|i| seq_base + i),
        )),
    ];
    for def in &inputs.defs {
        columns.push(input_column(def, &column_of, rows)?);
    }
    let types: Vec<DataType> = columns[FIRST_INPUT..]
        .iter()
        .map(|c| c.data_type().clone())
        .collect();
    let schema = canonical_schema(columns[ENTITY].data_type(), &types);
    let mut batch = RecordBatch::try_new(schema, columns).map_err(|e| e.to_string())?;
    if dropped > 0 {
        batch = arrow::compute::filter_record_batch(&batch, &BooleanArray::from(keep))
            .map_err(|e| e.to_string())?;
    }
    Ok(Prepared { batch, dropped })
}

/// A stable 64-bit hash of each row's entity (the same on every machine and version).
pub fn entity_hashes(entities: &ArrayRef) -> Vec<u64> {
    fn mix(mut z: u64) -> u64 {
        // splitmix64's finalizer: spreads nearby ids over all buckets.
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    match entities.data_type() {
        DataType::Int64 => entities
            .as_primitive::<Int64Type>()
            .values()
            .iter()
            .map(|&v| mix(v as u64))
            .collect(),
        _ => {
            let strings: &StringArray = entities.as_string::<i32>();
            (0..strings.len())
                .map(|i| {
                    // FNV-1a, then mixed.
                    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
                    for &b in strings.value(i).as_bytes() {
                        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
                    }
                    mix(h)
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::windows::spec::WindowSpec;

    #[test]
    fn folds_where_and_nulls_into_inputs() {
        let spec = WindowSpec::parse(
            r#"{"period": "2d", "every": "1d", "features": [
                {"name": "n", "agg": "count"},
                {"name": "calls", "agg": "count", "where": {"kind": "call"}},
                {"name": "spend", "agg": "sum", "column": "amount", "where": {"kind": ["call", "sms"]}},
                {"name": "avg", "agg": "mean", "column": "amount", "where": {"kind": ["call", "sms"]}},
                {"name": "kinds", "agg": "n_unique", "column": "kind"}]}"#,
        )
        .unwrap();
        let plan = InputPlan::new(&spec, false);
        // sum and mean of the same filtered column share one input.
        assert_eq!(plan.feature_inputs, vec![0, 1, 2, 2, 3]);
        let raw = RecordBatch::try_from_iter(vec![
            (
                "user",
                Arc::new(arrow::array::Int32Array::from(vec![
                    Some(1),
                    Some(1),
                    None,
                    Some(2),
                ])) as ArrayRef,
            ),
            (
                "ts",
                Arc::new(arrow::array::StringArray::from(vec!["1", "2", "3", "4"])) as ArrayRef,
            ),
            (
                "kind",
                Arc::new(StringArray::from(vec![
                    Some("call"),
                    Some("sms"),
                    Some("call"),
                    None,
                ])) as ArrayRef,
            ),
            (
                "amount",
                Arc::new(Float64Array::from(vec![
                    Some(1.5),
                    Some(f64::NAN),
                    Some(3.0),
                    Some(4.0),
                ])) as ArrayRef,
            ),
        ])
        .unwrap();
        let prepared = prepare(&raw, "user", "ts", &plan.events, 100).unwrap();
        assert_eq!(prepared.dropped, 1);
        let b = prepared.batch;
        assert_eq!(b.num_rows(), 3);
        assert_eq!(
            b.column(SEQ)
                .as_primitive::<arrow::datatypes::UInt64Type>()
                .values()
                .to_vec(),
            vec![100, 101, 103]
        );
        assert_eq!(
            b.column(TIME).as_primitive::<Int64Type>().values().to_vec(),
            vec![1000, 2000, 4000]
        );
        let calls = b.column(FIRST_INPUT + 1).as_boolean();
        assert_eq!(
            calls.iter().collect::<Vec<_>>(),
            vec![Some(true), Some(false), Some(false)]
        );
        let spend = b.column(FIRST_INPUT + 2).as_primitive::<Float64Type>();
        assert_eq!(spend.iter().collect::<Vec<_>>(), vec![Some(1.5), None, None]);
        let kinds = b.column(FIRST_INPUT + 3).as_string::<i32>();
        assert_eq!(
            kinds.iter().collect::<Vec<_>>(),
            vec![Some("call"), Some("sms"), None]
        );
    }

    #[test]
    fn where_types_must_match() {
        let def = InputDef {
            column: None,
            filter: vec![Condition {
                column: "k".into(),
                values: vec![Value::from("a")],
            }],
            kind: InputKind::Presence,
        };
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
        let e = input_column(&def, &|_| Ok(ints.clone()), 2).unwrap_err();
        assert!(
            e.contains("the column is Int64 but the values are not all numbers"),
            "{e}"
        );
        let def = InputDef {
            filter: vec![Condition {
                column: "k".into(),
                values: vec![Value::from(2), Value::from(7.0)],
            }],
            ..def
        };
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 7]));
        let mask = input_column(&def, &|_| Ok(ints.clone()), 3).unwrap();
        assert_eq!(
            mask.as_boolean().iter().collect::<Vec<_>>(),
            vec![Some(false), Some(true), Some(true)]
        );
    }
}
