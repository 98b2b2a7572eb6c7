//! One bucket of canonical events (every event of its entities) into output rows: sort by
//! (entity, time, input order), then per entity slide each window end `t` along the grid
//! with two pointers per input, so every event enters and leaves each running aggregate once.
//! The label and the sequence steps are read directly from their (short) ranges.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float64Array, Int64Array, RecordBatch, StringArray,
    StringBuilder, TimestampMicrosecondArray, UInt32Array,
};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, UInt64Type};

use super::exact_sum::{sample_variance, DoubleDouble};
use super::prepare::{InputKind, InputPlan, ENTITY, FIRST_INPUT, SEQ, TIME};
use super::spec::{Agg, WindowSpec};
use super::time::{NANOS_PER_MICRO, NANOS_PER_SECOND};
use crate::error::Result;

/// Field metadata holding the sequence tensor's per-row shape (JSON list), as `kiln score`.
pub const SHAPE_KEY: &str = "kiln.shape";
/// Field metadata naming the sequence tensor's feature axis (JSON list).
pub const FEATURES_KEY: &str = "kiln.features";

/// The output table's schema: entity (named as in the input), `t`, the features, the
/// optional `sequence` and `label`.
pub fn output_schema(spec: &WindowSpec, entity_name: &str, entity_type: &DataType) -> SchemaRef {
    let agg_type = |agg: Agg| {
        if agg.is_integer() {
            DataType::Int64
        } else {
            DataType::Float64
        }
    };
    let mut fields = vec![
        Field::new(entity_name, entity_type.clone(), false),
        Field::new(
            "t",
            DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ];
    for feature in &spec.features {
        let agg = feature.aggregate.agg;
        fields.push(Field::new(&feature.name, agg_type(agg), !agg.is_integer()));
    }
    if let Some(steps) = spec.steps() {
        let width = steps * spec.features.len();
        let names: Vec<&str> = spec.features.iter().map(|f| f.name.as_str()).collect();
        fields.push(
            Field::new(
                "sequence",
                DataType::FixedSizeList(
                    Arc::new(Field::new("item", DataType::Float64, false)),
                    width as i32,
                ),
                false,
            )
            .with_metadata(HashMap::from([
                (
                    SHAPE_KEY.to_owned(),
                    format!("[{steps}, {}]", spec.features.len()),
                ),
                (
                    FEATURES_KEY.to_owned(),
                    serde_json::to_string(&names).expect("names serialise"),
                ),
            ])),
        );
    }
    if let Some(label) = &spec.label {
        let agg = label.aggregate.agg;
        fields.push(Field::new("label", agg_type(agg), !agg.is_integer()));
    }
    Arc::new(Schema::new(fields))
}

/// `batch` sorted by (entity, time, order key): the order of events at equal times is the
/// input's (file, then row), whatever order the partitions were spilled in.
pub fn sorted(batch: &RecordBatch) -> Result<RecordBatch> {
    let time = batch.column(TIME).as_primitive::<Int64Type>().values();
    let seq = batch.column(SEQ).as_primitive::<UInt64Type>().values();
    let mut order: Vec<u32> = (0..batch.num_rows() as u32).collect();
    let entity = batch.column(ENTITY);
    match entity.data_type() {
        DataType::Int64 => {
            let e = entity.as_primitive::<Int64Type>().values();
            order.sort_unstable_by_key(|&i| {
                let i = i as usize;
                (e[i], time[i], seq[i])
            });
        }
        _ => {
            let e = entity.as_string::<i32>();
            order.sort_unstable_by(|&a, &b| {
                let (a, b) = (a as usize, b as usize);
                e.value(a)
                    .cmp(e.value(b))
                    .then(time[a].cmp(&time[b]))
                    .then(seq[a].cmp(&seq[b]))
            });
        }
    }
    Ok(arrow::compute::take_record_batch(
        batch,
        &UInt32Array::from(order),
    )?)
}

/// An entity column's values, compared across the events and the labels table.
enum Entities<'a> {
    Ints(&'a [i64]),
    Strings(&'a StringArray),
}

impl<'a> Entities<'a> {
    fn of(column: &'a ArrayRef) -> Entities<'a> {
        match column.data_type() {
            DataType::Int64 => Entities::Ints(column.as_primitive::<Int64Type>().values()),
            _ => Entities::Strings(column.as_string::<i32>()),
        }
    }
    fn same(&self, a: usize, b: usize) -> bool {
        match self {
            Entities::Ints(v) => v[a] == v[b],
            Entities::Strings(s) => s.value(a) == s.value(b),
        }
    }
    fn cmp_with(&self, a: usize, other: &Entities, b: usize) -> std::cmp::Ordering {
        match (self, other) {
            (Entities::Ints(x), Entities::Ints(y)) => x[a].cmp(&y[b]),
            (Entities::Strings(x), Entities::Strings(y)) => x.value(a).cmp(y.value(b)),
            _ => unreachable!("entity types are checked to agree"),
        }
    }
}

/// One canonical input column, read per entity into compact (present-only) lists.
enum Column<'a> {
    Presence(&'a arrow::array::BooleanArray),
    Number(&'a Float64Array),
    /// Distinct-value keys (strings interned per bucket); validity from the array.
    Key(Vec<u64>, &'a ArrayRef),
}

impl<'a> Column<'a> {
    fn of(array: &'a ArrayRef, kind: InputKind) -> Column<'a> {
        match kind {
            InputKind::Presence => Column::Presence(array.as_boolean()),
            InputKind::Number => Column::Number(array.as_primitive::<Float64Type>()),
            InputKind::Key => {
                let keys = match array.data_type() {
                    DataType::Int64 => array
                        .as_primitive::<Int64Type>()
                        .values()
                        .iter()
                        .map(|&v| v as u64)
                        .collect(),
                    DataType::Float64 => array
                        .as_primitive::<Float64Type>()
                        .values()
                        .iter()
                        .map(|v| v.to_bits())
                        .collect(),
                    _ => {
                        let strings = array.as_string::<i32>();
                        let mut ids: HashMap<&str, u64> = HashMap::new();
                        (0..strings.len())
                            .map(|i| {
                                if strings.is_null(i) {
                                    return 0;
                                }
                                let next = ids.len() as u64;
                                *ids.entry(strings.value(i)).or_insert(next)
                            })
                            .collect()
                    }
                };
                Column::Key(keys, array)
            }
        }
    }

    /// The present events of rows `range` into `out`.
    fn compact(&self, times: &[i64], range: std::ops::Range<usize>, out: &mut Compact) {
        out.clear();
        match self {
            Column::Presence(mask) => {
                for i in range {
                    if mask.value(i) {
                        out.times.push(times[i]);
                    }
                }
            }
            Column::Number(values) => {
                for i in range {
                    if values.is_valid(i) {
                        out.times.push(times[i]);
                        out.values.push(values.value(i));
                    }
                }
            }
            Column::Key(keys, array) => {
                for i in range {
                    if array.is_valid(i) {
                        out.times.push(times[i]);
                        out.keys.push(keys[i]);
                    }
                }
            }
        }
    }
}

/// One entity's present events of one input, in time order.
#[derive(Default)]
struct Compact {
    times: Vec<i64>,
    values: Vec<f64>,
    keys: Vec<u64>,
}

impl Compact {
    fn clear(&mut self) {
        self.times.clear();
        self.values.clear();
        self.keys.clear();
    }
}

/// Which running aggregates an input keeps (only those some feature reads).
#[derive(Default, Clone, Copy)]
struct Needs {
    sum: bool,
    squares: bool,
    min: bool,
    max: bool,
    unique: bool,
}

/// The running aggregates of one input over the current window `[lo, hi)` of its compact list.
#[derive(Default)]
struct Slide {
    needs: Needs,
    lo: usize,
    hi: usize,
    sum: DoubleDouble,
    sum_sq: DoubleDouble,
    /// Values the double-double sums cannot hold: +inf, -inf, and finite values whose
    /// square overflows. Counted apart, so one of them leaving the window leaves no NaN.
    pos_inf: usize,
    neg_inf: usize,
    huge: usize,
    min: VecDeque<usize>,
    max: VecDeque<usize>,
    counts: HashMap<u64, u32>,
}

/// Window edges: which events at exactly `start`/`end` a window holds.
#[derive(Clone, Copy)]
struct Edges {
    start_in: bool,
    end_in: bool,
}

impl Edges {
    /// Whether an event at `time` is before a window ending at `end` ends.
    #[inline]
    fn before_end(self, time: i64, end: i64) -> bool {
        time < end || (self.end_in && time == end)
    }
    /// Whether an event at `time` is before a window starting at `start` starts.
    #[inline]
    fn before_start(self, time: i64, start: i64) -> bool {
        time < start || (!self.start_in && time == start)
    }
}

impl Slide {
    fn reset(&mut self, needs: Needs) {
        self.needs = needs;
        self.lo = 0;
        self.hi = 0;
        self.sum = DoubleDouble::ZERO;
        self.sum_sq = DoubleDouble::ZERO;
        (self.pos_inf, self.neg_inf, self.huge) = (0, 0, 0);
        self.min.clear();
        self.max.clear();
        self.counts.clear();
    }

    /// Moves the window to `[start, end)` (edges per `edges`); both only ever grow.
    fn advance(&mut self, list: &Compact, start: i64, end: i64, edges: Edges) {
        let n = list.times.len();
        while self.hi < n && edges.before_end(list.times[self.hi], end) {
            let i = self.hi;
            if self.needs.sum {
                self.enter(list.values[i], 1);
            }
            if self.needs.min {
                while self.min.back().is_some_and(|&j| list.values[j] >= list.values[i]) {
                    self.min.pop_back();
                }
                self.min.push_back(i);
            }
            if self.needs.max {
                while self.max.back().is_some_and(|&j| list.values[j] <= list.values[i]) {
                    self.max.pop_back();
                }
                self.max.push_back(i);
            }
            if self.needs.unique {
                *self.counts.entry(list.keys[i]).or_insert(0) += 1;
            }
            self.hi += 1;
        }
        while self.lo < self.hi && edges.before_start(list.times[self.lo], start) {
            let i = self.lo;
            if self.needs.sum {
                self.enter(list.values[i], -1);
            }
            if self.needs.unique {
                let key = list.keys[i];
                let count = self.counts.get_mut(&key).expect("counted when it entered");
                *count -= 1;
                if *count == 0 {
                    self.counts.remove(&key);
                }
            }
            self.lo += 1;
        }
        while self.min.front().is_some_and(|&j| j < self.lo) {
            self.min.pop_front();
        }
        while self.max.front().is_some_and(|&j| j < self.lo) {
            self.max.pop_front();
        }
        if self.lo == self.hi {
            // An empty window restarts the sums from an exact zero.
            self.sum = DoubleDouble::ZERO;
            self.sum_sq = DoubleDouble::ZERO;
        }
    }

    /// Adds (`sign` 1) or removes (`sign` -1) `v` from the sums.
    #[inline]
    fn enter(&mut self, v: f64, sign: isize) {
        let step = |count: &mut usize| *count = count.wrapping_add_signed(sign);
        if v.is_infinite() {
            step(if v > 0.0 {
                &mut self.pos_inf
            } else {
                &mut self.neg_inf
            });
            return;
        }
        let signed = if sign > 0 { v } else { -v };
        self.sum = self.sum + signed;
        if self.needs.squares {
            let square = DoubleDouble::square(v);
            if square.hi.is_finite() {
                self.sum_sq = self.sum_sq + if sign > 0 { square } else { -square };
            } else {
                step(&mut self.huge);
            }
        }
    }

    /// The window's sum, with infinities as IEEE adds them (inf - inf is NaN).
    fn total(&self) -> f64 {
        match (self.pos_inf > 0, self.neg_inf > 0) {
            (true, true) => f64::NAN,
            (true, false) => f64::INFINITY,
            (false, true) => f64::NEG_INFINITY,
            (false, false) => self.sum.value(),
        }
    }

    fn value(&self, agg: Agg, list: &Compact, end: i64) -> Value {
        let n = self.hi - self.lo;
        let last = |v: Option<f64>| if n == 0 { None } else { v };
        let finite = self.pos_inf + self.neg_inf == 0;
        match agg {
            Agg::Count => Value::Int(n as i64),
            Agg::NUnique => Value::Int(self.counts.len() as i64),
            Agg::Sum => Value::Float(Some(self.total())),
            Agg::Mean if finite => Value::Float(last(Some((self.sum / n as f64).value()))),
            Agg::Mean => Value::Float(last(Some(self.total()))),
            // An infinite value, or one whose square overflows, has no finite spread.
            Agg::Std if finite && self.huge == 0 => {
                Value::Float(sample_variance(n, self.sum, self.sum_sq).map(f64::sqrt))
            }
            Agg::Std => Value::Float((n >= 2).then_some(f64::NAN)),
            Agg::Min => Value::Float(self.min.front().map(|&j| list.values[j])),
            Agg::Max => Value::Float(self.max.front().map(|&j| list.values[j])),
            Agg::First => Value::Float(last(list.values.get(self.lo).copied())),
            Agg::Last => Value::Float(last(self.hi.checked_sub(1).map(|j| list.values[j]))),
            Agg::TimeSinceLast => {
                Value::Float(last(self.hi.checked_sub(1).map(|j| seconds(end - list.times[j]))))
            }
        }
    }
}

fn seconds(nanos: i64) -> f64 {
    nanos as f64 / NANOS_PER_SECOND as f64
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    Int(i64),
    Float(Option<f64>),
}

impl Value {
    /// As one element of the sequence tensor: nulls are NaN.
    fn as_f64(self) -> f64 {
        match self {
            Value::Int(v) => v as f64,
            Value::Float(v) => v.unwrap_or(f64::NAN),
        }
    }
}

/// `agg` over compact-list entries `range` of a window ending at `end`, computed directly.
fn direct(
    agg: Agg,
    list: &Compact,
    range: std::ops::Range<usize>,
    end: i64,
    seen: &mut HashSet<u64>,
) -> Value {
    let n = range.len();
    if agg == Agg::Count {
        return Value::Int(n as i64);
    }
    if agg == Agg::NUnique {
        seen.clear();
        seen.extend(&list.keys[range]);
        return Value::Int(seen.len() as i64);
    }
    if agg == Agg::Sum && n == 0 {
        return Value::Float(Some(0.0));
    }
    if n == 0 {
        return Value::Float(None);
    }
    let values = || &list.values[range.clone()];
    // Only numeric aggregates have values to look at (counts and times read `times`).
    let finite = !agg.is_numeric() || values().iter().all(|v| v.is_finite());
    // Infinities as IEEE adds them; the double-double only holds finite values.
    let sum = || values().iter().fold(DoubleDouble::ZERO, |s, &v| s + v);
    Value::Float(match agg {
        Agg::Sum | Agg::Mean if !finite => {
            let plain: f64 = values().iter().sum();
            Some(if agg == Agg::Mean { plain / n as f64 } else { plain })
        }
        Agg::Sum => Some(sum().value()),
        Agg::Mean => Some((sum() / n as f64).value()),
        Agg::Std if !finite || values().iter().any(|v| !(v * v).is_finite()) => (n >= 2).then_some(f64::NAN),
        Agg::Std => {
            let (s, q) = values()
                .iter()
                .fold((DoubleDouble::ZERO, DoubleDouble::ZERO), |(s, q), &v| {
                    (s + v, q + DoubleDouble::square(v))
                });
            sample_variance(n, s, q).map(f64::sqrt)
        }
        Agg::Min => values().iter().copied().reduce(f64::min),
        Agg::Max => values().iter().copied().reduce(f64::max),
        Agg::First => Some(list.values[range.start]),
        Agg::Last => Some(list.values[range.end - 1]),
        Agg::TimeSinceLast => Some(seconds(end - list.times[range.end - 1])),
        Agg::Count | Agg::NUnique => unreachable!("answered above"),
    })
}

/// Floor division for grid indices (`every` > 0).
fn floor_div(a: i128, b: i128) -> i128 {
    a.div_euclid(b)
}

fn ceil_div(a: i128, b: i128) -> i128 {
    -(-a).div_euclid(b)
}

/// Output columns being filled, flushed as a batch every `chunk_rows` rows.
struct Rows {
    schema: SchemaRef,
    int_entities: Vec<i64>,
    string_entities: StringBuilder,
    times: Vec<i64>,
    features: Vec<Vec<Value>>,
    sequence: Vec<f64>,
    labels: Vec<Value>,
    len: usize,
}

impl Rows {
    fn new(schema: SchemaRef, n_features: usize) -> Rows {
        Rows {
            schema,
            int_entities: Vec::new(),
            string_entities: StringBuilder::new(),
            times: Vec::new(),
            features: vec![Vec::new(); n_features],
            sequence: Vec::new(),
            labels: Vec::new(),
            len: 0,
        }
    }

    fn column(values: &mut Vec<Value>, field: &Field) -> ArrayRef {
        let taken = std::mem::take(values);
        if field.data_type() == &DataType::Int64 {
            Arc::new(Int64Array::from_iter_values(taken.into_iter().map(|v| match v {
                Value::Int(v) => v,
                Value::Float(_) => unreachable!("integer aggregates give integers"),
            })))
        } else {
            Arc::new(Float64Array::from_iter(taken.into_iter().map(|v| match v {
                Value::Float(v) => v,
                Value::Int(v) => Some(v as f64),
            })))
        }
    }

    fn take(&mut self) -> Result<RecordBatch> {
        let schema = self.schema.clone();
        let fields = schema.fields();
        let entity: ArrayRef = if fields[0].data_type() == &DataType::Int64 {
            Arc::new(Int64Array::from(std::mem::take(&mut self.int_entities)))
        } else {
            Arc::new(self.string_entities.finish())
        };
        let times: Vec<i64> = std::mem::take(&mut self.times);
        let mut columns: Vec<ArrayRef> = vec![
            entity,
            Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
        ];
        let mut next = 2;
        for values in &mut self.features {
            columns.push(Self::column(values, &fields[next]));
            next += 1;
        }
        if let DataType::FixedSizeList(item, width) =
            fields.get(next).map(|f| f.data_type()).unwrap_or(&DataType::Null)
        {
            let values = Float64Array::from(std::mem::take(&mut self.sequence));
            columns.push(Arc::new(FixedSizeListArray::try_new(
                item.clone(),
                *width,
                Arc::new(values),
                None,
            )?));
            next += 1;
        }
        if next < fields.len() {
            columns.push(Self::column(&mut self.labels, &fields[next]));
        }
        self.len = 0;
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

/// Computes every window of the entities in one bucket and hands the rows to `emit` in
/// batches of at most `chunk_rows`, sorted by (entity, t); returns the rows and entities.
pub fn compute_bucket(
    spec: &WindowSpec,
    plan: &InputPlan,
    schema: &SchemaRef,
    events: &RecordBatch,
    labels: Option<&RecordBatch>,
    chunk_rows: usize,
    emit: &mut dyn FnMut(RecordBatch) -> Result<()>,
) -> Result<(u64, u64)> {
    let events = sorted(events)?;
    let labels = labels.map(sorted).transpose()?;
    let entities = Entities::of(events.column(ENTITY));
    let times = events.column(TIME).as_primitive::<Int64Type>().values();
    let inputs: Vec<Column> = plan
        .events
        .defs
        .iter()
        .enumerate()
        .map(|(i, def)| Column::of(events.column(FIRST_INPUT + i), def.kind))
        .collect();
    let label_table = labels.as_ref().map(|l| {
        let def = &plan.labels.defs[plan.label_input.expect("a labels table has a label")];
        (
            Entities::of(l.column(ENTITY)),
            l.column(TIME).as_primitive::<Int64Type>().values(),
            Column::of(l.column(FIRST_INPUT + plan.label_input.unwrap()), def.kind),
        )
    });

    // Which running aggregates each input keeps.
    let mut needs = vec![Needs::default(); inputs.len()];
    for (feature, &input) in spec.features.iter().zip(&plan.feature_inputs) {
        let n = &mut needs[input];
        match feature.aggregate.agg {
            Agg::Sum | Agg::Mean => n.sum = true,
            Agg::Std => (n.sum, n.squares) = (true, true),
            Agg::Min => n.min = true,
            Agg::Max => n.max = true,
            Agg::NUnique => n.unique = true,
            _ => {}
        }
    }
    let edges = Edges {
        start_in: spec.closed.includes_start(),
        end_in: spec.closed.includes_end(),
    };
    // The label looks at what the features do not: `[t, t + h)` after `[.., t)`, else `(t, t + h]`.
    let label_edges = Edges {
        start_in: !edges.end_in,
        end_in: edges.end_in,
    };
    let mut lists: Vec<Compact> = inputs.iter().map(|_| Compact::default()).collect();
    let mut slides: Vec<Slide> = inputs.iter().map(|_| Slide::default()).collect();
    let mut label_list = Compact::default();
    let mut seen = HashSet::new();
    let mut rows = Rows::new(schema.clone(), spec.features.len());
    let mut total = 0u64;
    let mut entity_count = 0u64;
    let mut label_row = 0usize;
    let (every, offset, period) = (i128::from(spec.every), i128::from(spec.offset), spec.period);
    let steps = spec.steps().unwrap_or(0);

    let mut a = 0;
    while a < events.num_rows() {
        let mut b = a + 1;
        while b < events.num_rows() && entities.same(a, b) {
            b += 1;
        }
        let entity_times = &times[a..b];
        entity_count += 1;
        for (i, input) in inputs.iter().enumerate() {
            input.compact(times, a..b, &mut lists[i]);
            slides[i].reset(needs[i]);
        }
        // This entity's label events, from the labels table (both sorted by entity).
        match (&label_table, plan.label_input) {
            (Some((label_entities, label_times, label_column)), Some(_)) => {
                while label_row < label_times.len()
                    && label_entities.cmp_with(label_row, &entities, a).is_lt()
                {
                    label_row += 1;
                }
                let mut end = label_row;
                while end < label_times.len() && label_entities.cmp_with(end, &entities, a).is_eq() {
                    end += 1;
                }
                label_column.compact(label_times, label_row..end, &mut label_list);
                label_row = end;
            }
            // A partition the labels table has no rows for: no label events.
            (None, Some(_)) if plan.separate_labels => label_list.clear(),
            (None, Some(input)) => inputs[input].compact(times, a..b, &mut label_list),
            _ => {}
        }
        let (mut label_lo, mut label_hi) = (0usize, 0usize);

        let (first, last) = (
            i128::from(entity_times[0]),
            i128::from(entity_times[entity_times.len() - 1]),
        );
        let k_first = match spec.start {
            Some(start) => ceil_div(i128::from(start) - offset, every),
            None => floor_div(first - offset, every) + 1,
        };
        let k_last = match spec.end {
            Some(end) => floor_div(i128::from(end) - offset, every),
            None => floor_div(last - offset, every),
        };
        let (mut all_lo, mut all_hi) = (0usize, 0usize);
        let mut k = k_first;
        while k <= k_last {
            let Ok(t) = i64::try_from(offset + k * every) else {
                break;
            };
            let window_start = t.saturating_sub(period);
            while all_hi < entity_times.len() && edges.before_end(entity_times[all_hi], t) {
                all_hi += 1;
            }
            while all_lo < all_hi && edges.before_start(entity_times[all_lo], window_start) {
                all_lo += 1;
            }
            let n_events = (all_hi - all_lo) as u64;
            if n_events == 0 && spec.min_events >= 1 {
                // Jump to the first window end that holds the next event.
                let Some(&next) = entity_times.get(all_hi) else {
                    break;
                };
                let next = i128::from(next) - offset;
                let k_next = if edges.end_in {
                    ceil_div(next, every)
                } else {
                    floor_div(next, every) + 1
                };
                k = k_next.max(k + 1);
                continue;
            }
            k += 1;
            if n_events < spec.min_events {
                continue;
            }
            for (i, slide) in slides.iter_mut().enumerate() {
                slide.advance(&lists[i], window_start, t, edges);
            }
            match &entities {
                Entities::Ints(v) => rows.int_entities.push(v[a]),
                Entities::Strings(s) => rows.string_entities.append_value(s.value(a)),
            }
            rows.times.push(t / NANOS_PER_MICRO);
            for (f, (feature, &input)) in spec.features.iter().zip(&plan.feature_inputs).enumerate() {
                rows.features[f].push(slides[input].value(feature.aggregate.agg, &lists[input], t));
            }
            if let Some(step) = spec.step {
                for j in 0..steps {
                    let step_start = window_start + j as i64 * step;
                    let step_end = step_start + step;
                    for (feature, &input) in spec.features.iter().zip(&plan.feature_inputs) {
                        let list = &lists[input];
                        let slide = &slides[input];
                        let in_window = &list.times[slide.lo..slide.hi];
                        // Each event of the window falls in exactly one step: inner edges
                        // follow the window's own closed end.
                        let from = if j == 0 {
                            0
                        } else {
                            in_window.partition_point(|&x| edges.before_end(x, step_start))
                        };
                        let to = if j + 1 == steps {
                            in_window.len()
                        } else {
                            in_window.partition_point(|&x| edges.before_end(x, step_end))
                        };
                        let value = direct(
                            feature.aggregate.agg,
                            list,
                            slide.lo + from..slide.lo + to,
                            step_end,
                            &mut seen,
                        );
                        rows.sequence.push(value.as_f64());
                    }
                }
            }
            if let Some(label) = &spec.label {
                let horizon_end = t.saturating_add(label.horizon);
                while label_hi < label_list.times.len()
                    && label_edges.before_end(label_list.times[label_hi], horizon_end)
                {
                    label_hi += 1;
                }
                while label_lo < label_hi && label_edges.before_start(label_list.times[label_lo], t) {
                    label_lo += 1;
                }
                rows.labels.push(direct(
                    label.aggregate.agg,
                    &label_list,
                    label_lo..label_hi,
                    horizon_end,
                    &mut seen,
                ));
            }
            rows.len += 1;
            total += 1;
            if rows.len >= chunk_rows {
                emit(rows.take()?)?;
            }
        }
        a = b;
    }
    if rows.len > 0 {
        emit(rows.take()?)?;
    }
    Ok((total, entity_count))
}
