//! Functions whose result can be far larger than their arguments (`range(0, 3000000000)`,
//! `repeat(s, 1e9)`) count against the memory limit before they allocate.
//!
//! DataFusion accounts memory by operator (sorts, joins, aggregates reserve from the pool)
//! but not inside a function call, and the planner folds constant calls while it plans:
//! a few bytes of SQL could take the whole machine before any operator runs. Each such
//! function is wrapped so that it first estimates its output from its arguments and
//! reserves that much from the session's memory pool; when the pool cannot give it, the
//! query fails with RESOURCES_EXHAUSTED instead of the process running out of memory.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use arrow::compute::cast;
use arrow::compute::kernels::length::length;
use arrow::datatypes::{DataType, FieldRef, IntervalMonthDayNanoType, TimeUnit};
use datafusion::common::Result;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};

/// Below this, a call is not worth a reservation.
const FREE_BYTES: u64 = 4 << 20;

/// How the output of each wrapped function is estimated, from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Estimate {
    /// `range(start, stop, step)`, `generate_series(…)`: one element per step.
    Series,
    /// `repeat(s, n)`: `len(s) × n`.
    Repeat,
    /// `lpad(s, n, …)`, `rpad(…)`: `n` characters of up to four bytes.
    Pad,
    /// `array_repeat(x, n)`, `array_resize(a, n, …)`: `n` elements.
    Elements,
    /// `replace(s, from, to)`, `regexp_replace(s, p, to, …)`: every match grows by `to`.
    Replace,
}

/// The functions that are wrapped, and how each is estimated.
const AMPLIFIERS: [(&str, Estimate); 9] = [
    ("range", Estimate::Series),
    ("generate_series", Estimate::Series),
    ("repeat", Estimate::Repeat),
    ("lpad", Estimate::Pad),
    ("rpad", Estimate::Pad),
    ("array_repeat", Estimate::Elements),
    ("array_resize", Estimate::Elements),
    ("replace", Estimate::Replace),
    ("regexp_replace", Estimate::Replace),
];

/// Wraps the amplifying functions among `functions` so they reserve from `pool`.
pub(crate) fn bound(functions: &mut [Arc<ScalarUDF>], pool: &Arc<dyn MemoryPool>) {
    for f in functions.iter_mut() {
        if let Some((_, estimate)) = AMPLIFIERS.iter().find(|(name, _)| *name == f.name()) {
            *f = Arc::new(ScalarUDF::new_from_impl(Bounded {
                inner: Arc::clone(f),
                estimate: *estimate,
                pool: Arc::clone(pool),
            }));
        }
    }
}

#[derive(Debug)]
struct Bounded {
    inner: Arc<ScalarUDF>,
    estimate: Estimate,
    pool: Arc<dyn MemoryPool>,
}

impl PartialEq for Bounded {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner && self.estimate == other.estimate
    }
}

impl Eq for Bounded {}

impl std::hash::Hash for Bounded {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
        self.estimate.hash(state);
    }
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let bytes = estimate(self.estimate, &args.args, args.number_rows);
        if bytes <= FREE_BYTES {
            return self.inner.invoke_with_args(args);
        }
        let reservation =
            MemoryConsumer::new(format!("{}()", self.inner.name())).register(&self.pool);
        reservation.try_grow(usize::try_from(bytes).unwrap_or(usize::MAX))?;
        let out = self.inner.invoke_with_args(args);
        drop(reservation);
        out
    }
}

/// The bytes a call would produce, by over-estimate; 0 when the arguments say nothing.
fn estimate(kind: Estimate, args: &[ColumnarValue], rows: usize) -> u64 {
    let arrays: Vec<ArrayRef> = match args.iter().map(|a| a.to_array(rows)).collect() {
        Ok(a) => a,
        Err(_) => return 0,
    };
    let per_row = |f: &dyn Fn(usize) -> Option<u64>| -> u64 {
        (0..rows).filter_map(f).fold(0u64, u64::saturating_add)
    };
    match kind {
        Estimate::Series => {
            let [start, stop, rest @ ..] = arrays.as_slice() else {
                // `range(n)`: 0 to n.
                return arrays.first().and_then(ints).map_or(0, |n| {
                    per_row(&|i| {
                        n.is_valid(i)
                            .then(|| n.value(i).unsigned_abs().saturating_mul(8))
                    })
                });
            };
            series(start, stop, rest.first(), rows)
        }
        Estimate::Repeat => match (
            arrays.first().and_then(lengths),
            arrays.get(1).and_then(ints),
        ) {
            (Some(len), Some(n)) => per_row(&|i| {
                (len.is_valid(i) && n.is_valid(i))
                    .then(|| (len.value(i).max(0) as u64).saturating_mul(n.value(i).max(0) as u64))
            }),
            _ => 0,
        },
        Estimate::Pad => match arrays.get(1).and_then(ints) {
            Some(n) => per_row(&|i| {
                n.is_valid(i)
                    .then(|| (n.value(i).max(0) as u64).saturating_mul(4))
            }),
            None => 0,
        },
        Estimate::Elements => {
            let Some(n) = arrays.get(1).and_then(ints) else {
                return 0;
            };
            let width = arrays
                .first()
                .map(|a| (a.get_array_memory_size() / a.len().max(1)).max(8) as u64)
                .unwrap_or(8);
            per_row(&|i| {
                n.is_valid(i)
                    .then(|| (n.value(i).max(0) as u64).saturating_mul(width))
            })
        }
        Estimate::Replace => {
            let (Some(s), Some(to)) = (
                arrays.first().and_then(lengths),
                arrays.get(2).and_then(lengths),
            ) else {
                return 0;
            };
            // At most one match per character, each replaced by `to`.
            per_row(&|i| {
                (s.is_valid(i) && to.is_valid(i)).then(|| {
                    let s = s.value(i).max(0) as u64;
                    (s + 1).saturating_mul((to.value(i).max(0) as u64).saturating_add(1))
                })
            })
        }
    }
}

/// Elements of `start..stop` by `step`, as integers, dates (days) or timestamps.
fn series(start: &ArrayRef, stop: &ArrayRef, step: Option<&ArrayRef>, rows: usize) -> u64 {
    // Dates and timestamps count in their own unit; an interval step in the same unit.
    let unit: i128 = match start.data_type() {
        DataType::Date32 | DataType::Date64 => 86_400_000_000_000,
        DataType::Timestamp(TimeUnit::Second, _) => 1_000_000_000,
        DataType::Timestamp(TimeUnit::Millisecond, _) => 1_000_000,
        DataType::Timestamp(TimeUnit::Microsecond, _) => 1_000,
        DataType::Timestamp(TimeUnit::Nanosecond, _) => 1,
        _ => 0,
    };
    let as_ints = |a: &ArrayRef| -> Option<Int64Array> {
        match a.data_type() {
            DataType::Date32 => cast(a, &DataType::Int32)
                .and_then(|a| cast(&a, &DataType::Int64))
                .ok()
                .map(|a| a.as_primitive().clone()),
            _ => ints(a),
        }
    };
    let (Some(start), Some(stop)) = (as_ints(start), as_ints(stop)) else {
        return 0;
    };
    // The step, in the unit of start and stop (an interval's months as 28 days).
    let steps: Vec<Option<i128>> = match step {
        None => vec![Some(1); rows],
        Some(s) if matches!(s.data_type(), DataType::Interval(_)) => {
            let Ok(s) = cast(
                s,
                &DataType::Interval(arrow::datatypes::IntervalUnit::MonthDayNano),
            ) else {
                return 0;
            };
            let s = s.as_primitive::<IntervalMonthDayNanoType>();
            (0..rows)
                .map(|i| {
                    s.is_valid(i).then(|| {
                        let v = s.value(i);
                        let nanos = (i128::from(v.months) * 28 + i128::from(v.days))
                            * 86_400_000_000_000
                            + i128::from(v.nanoseconds);
                        if unit == 0 { 1 } else { nanos / unit }
                    })
                })
                .collect()
        }
        Some(s) => match ints(s) {
            Some(s) => (0..rows)
                .map(|i| s.is_valid(i).then(|| i128::from(s.value(i))))
                .collect(),
            None => return 0,
        },
    };
    (0..rows)
        .filter_map(|i| {
            if !start.is_valid(i) || !stop.is_valid(i) {
                return None;
            }
            let span = (i128::from(stop.value(i)) - i128::from(start.value(i))).unsigned_abs();
            let step = steps.get(i).copied().flatten()?.unsigned_abs().max(1);
            Some(u64::try_from((span / step + 1).saturating_mul(8)).unwrap_or(u64::MAX))
        })
        .fold(0u64, u64::saturating_add)
}

fn ints(a: &ArrayRef) -> Option<Int64Array> {
    cast(a, &DataType::Int64)
        .ok()
        .map(|a| a.as_primitive().clone())
}

fn lengths(a: &ArrayRef) -> Option<Int64Array> {
    let l = length(a).ok()?;
    ints(&l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use datafusion::scalar::ScalarValue;

    fn scalar(v: ScalarValue) -> ColumnarValue {
        ColumnarValue::Scalar(v)
    }

    #[test]
    fn estimates_grow_with_what_the_call_would_make() {
        let series = |a: i64, b: i64| {
            estimate(
                Estimate::Series,
                &[
                    scalar(ScalarValue::Int64(Some(a))),
                    scalar(ScalarValue::Int64(Some(b))),
                ],
                1,
            )
        };
        assert_eq!(series(0, 3_000_000_000), 24_000_000_008);
        assert!(series(0, 10) < FREE_BYTES);
        let repeat = estimate(
            Estimate::Repeat,
            &[
                ColumnarValue::Array(Arc::new(StringArray::from(vec!["abc", "de"]))),
                ColumnarValue::Array(Arc::new(Int64Array::from(vec![1_000_000, 10]))),
            ],
            2,
        );
        assert_eq!(repeat, 3_000_020);
        let pad = estimate(
            Estimate::Pad,
            &[
                scalar(ScalarValue::Utf8(Some("x".into()))),
                scalar(ScalarValue::Int64(Some(1 << 30))),
            ],
            1,
        );
        assert_eq!(pad, 4 << 30);
        // The largest counts saturate; they never overflow (or panic).
        let huge = estimate(
            Estimate::Pad,
            &[
                scalar(ScalarValue::Utf8(Some("x".into()))),
                scalar(ScalarValue::Int64(Some(i64::MAX))),
            ],
            1,
        );
        assert_eq!(huge, u64::MAX);
        // Nothing to go by (NULL counts): nothing reserved.
        assert_eq!(
            estimate(
                Estimate::Pad,
                &[
                    scalar(ScalarValue::Utf8(Some("x".into()))),
                    scalar(ScalarValue::Int64(None))
                ],
                1
            ),
            0
        );
    }
}
