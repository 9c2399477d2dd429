//! Contract column types and how they map to Arrow.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow_schema::{DataType, TimeUnit};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The logical type a contract promises for a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    String,
    /// 32-bit signed integer.
    Integer,
    /// 64-bit signed integer.
    Long,
    Double,
    /// `decimal` with no precision: whatever precision and scale the files hold.
    Decimal,
    /// `decimal(p,s)`: pinned precision and scale.
    DecimalPs(u8, i8),
    Boolean,
    Date,
    Timestamp,
}

/// Timestamps are instants: exposed as microseconds in UTC whatever unit the files use.
pub const TIMESTAMP_TZ: &str = "UTC";

impl ColumnType {
    /// The Arrow type the product exposes. `None` for a bare `decimal`, whose precision and
    /// scale come from the files.
    pub fn arrow_type(&self) -> Option<DataType> {
        Some(match self {
            ColumnType::String => DataType::Utf8,
            ColumnType::Integer => DataType::Int32,
            ColumnType::Long => DataType::Int64,
            ColumnType::Double => DataType::Float64,
            ColumnType::Decimal => return None,
            ColumnType::DecimalPs(p, s) if *p > 38 => DataType::Decimal256(*p, *s),
            ColumnType::DecimalPs(p, s) => DataType::Decimal128(*p, *s),
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Date => DataType::Date32,
            ColumnType::Timestamp => {
                DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from(TIMESTAMP_TZ)))
            }
        })
    }

    /// The Arrow type a product's column is read and computed in: strings as `Utf8View`,
    /// as DataFusion reads Parquet by default (its string kernels, joins and grouping are
    /// faster over views, and a file written with views is decoded without a copy). What
    /// leaves the gateway is [`ColumnType::arrow_type`]: `Utf8` on the wire and in
    /// published files.
    pub fn scan_type(&self) -> Option<DataType> {
        match self {
            ColumnType::String => Some(DataType::Utf8View),
            other => other.arrow_type(),
        }
    }

    /// Whether values stored in a file as `file` can be served as this type without loss.
    /// Anything else makes the product non-conforming.
    pub fn accepts(&self, file: &DataType) -> bool {
        use DataType as D;
        match self {
            ColumnType::String => matches!(file, D::Utf8 | D::LargeUtf8 | D::Utf8View),
            ColumnType::Integer => {
                matches!(file, D::Int8 | D::Int16 | D::Int32 | D::UInt8 | D::UInt16)
            }
            ColumnType::Long => matches!(
                file,
                D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32
            ),
            ColumnType::Double => matches!(file, D::Float16 | D::Float32 | D::Float64),
            ColumnType::Decimal => matches!(file, D::Decimal128(..) | D::Decimal256(..)),
            ColumnType::DecimalPs(p, s) => match file {
                // Widening only: no digit lost on either side of the point.
                D::Decimal32(fp, fs)
                | D::Decimal64(fp, fs)
                | D::Decimal128(fp, fs)
                | D::Decimal256(fp, fs) => {
                    *fs <= *s && (*fp as i16 - *fs as i16) <= (*p as i16 - *s as i16)
                }
                D::Int8 | D::Int16 | D::Int32 | D::Int64 => *p as i16 - *s as i16 >= 19,
                _ => false,
            },
            ColumnType::Boolean => matches!(file, D::Boolean),
            ColumnType::Date => matches!(file, D::Date32 | D::Date64),
            ColumnType::Timestamp => matches!(file, D::Timestamp(..)),
        }
    }

    pub fn is_numeric(&self) -> bool {
        matches!(
            self,
            ColumnType::Integer
                | ColumnType::Long
                | ColumnType::Double
                | ColumnType::Decimal
                | ColumnType::DecimalPs(..)
        )
    }

    pub fn is_temporal(&self) -> bool {
        matches!(self, ColumnType::Date | ColumnType::Timestamp)
    }
}

impl FromStr for ColumnType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        Ok(match t.as_str() {
            "string" => ColumnType::String,
            "integer" => ColumnType::Integer,
            "long" => ColumnType::Long,
            "double" => ColumnType::Double,
            "decimal" => ColumnType::Decimal,
            "boolean" => ColumnType::Boolean,
            "date" => ColumnType::Date,
            "timestamp" => ColumnType::Timestamp,
            _ => {
                return parse_decimal(&t).ok_or_else(|| {
                    format!(
                        "unknown type {s:?}, expected one of string, integer, long, double, \
                     decimal, decimal(p,s), boolean, date, timestamp"
                    )
                })?;
            }
        })
    }
}

/// `decimal(p,s)` with 1 ≤ p ≤ 76 and 0 ≤ s ≤ p; `Err` for a decimal with bad bounds.
fn parse_decimal(t: &str) -> Option<Result<ColumnType, String>> {
    let inner = t.strip_prefix("decimal(")?.strip_suffix(')')?;
    let (p, s) = inner.split_once(',')?;
    let (p, s) = (p.trim().parse::<u8>().ok()?, s.trim().parse::<i8>().ok()?);
    Some(if (1..=76).contains(&p) && s >= 0 && (s as u8) <= p {
        Ok(ColumnType::DecimalPs(p, s))
    } else {
        Err(format!(
            "invalid decimal({p},{s}): precision must be 1..=76 and scale 0..=precision"
        ))
    })
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::String => f.write_str("string"),
            ColumnType::Integer => f.write_str("integer"),
            ColumnType::Long => f.write_str("long"),
            ColumnType::Double => f.write_str("double"),
            ColumnType::Decimal => f.write_str("decimal"),
            ColumnType::DecimalPs(p, s) => write!(f, "decimal({p},{s})"),
            ColumnType::Boolean => f.write_str("boolean"),
            ColumnType::Date => f.write_str("date"),
            ColumnType::Timestamp => f.write_str("timestamp"),
        }
    }
}

crate::model::serde_via_str!(ColumnType);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_type() {
        for (text, ty) in [
            ("string", ColumnType::String),
            ("integer", ColumnType::Integer),
            ("long", ColumnType::Long),
            ("double", ColumnType::Double),
            ("decimal", ColumnType::Decimal),
            ("decimal(12, 2)", ColumnType::DecimalPs(12, 2)),
            ("boolean", ColumnType::Boolean),
            ("date", ColumnType::Date),
            ("timestamp", ColumnType::Timestamp),
        ] {
            assert_eq!(text.parse::<ColumnType>().unwrap(), ty, "{text}");
        }
        assert!(
            "strin"
                .parse::<ColumnType>()
                .unwrap_err()
                .contains("unknown type")
        );
        assert!(
            "decimal(3,5)"
                .parse::<ColumnType>()
                .unwrap_err()
                .contains("scale")
        );
    }

    #[test]
    fn conformance_allows_widening_only() {
        let d = ColumnType::DecimalPs(12, 2);
        assert!(d.accepts(&DataType::Decimal128(10, 2)));
        assert!(!d.accepts(&DataType::Decimal128(12, 3)), "scale narrowed");
        assert!(
            !d.accepts(&DataType::Decimal128(14, 2)),
            "integer digits narrowed"
        );
        assert!(ColumnType::Long.accepts(&DataType::Int32));
        assert!(!ColumnType::Integer.accepts(&DataType::Int64));
        assert!(!ColumnType::String.accepts(&DataType::Int64));
        assert!(ColumnType::Decimal.accepts(&DataType::Decimal128(38, 10)));
    }
}
