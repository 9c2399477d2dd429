//! A Postgres driver's view of the gateway (tokio-postgres): connecting as a test user, and
//! rows decoded back into the Arrow types they left as, so that answers from both
//! protocols compare and format alike.

use std::net::SocketAddr;
use std::sync::Arc;

use arrow::array::RecordBatch;

/// A connection to the Postgres port as `user` (password = name).
pub async fn connect(
    addr: SocketAddr,
    user: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::Config::new()
        .host(addr.ip().to_string())
        .port(addr.port())
        .user(user)
        .password(user)
        .dbname("mesh")
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Rows as a Postgres driver decodes them (binary format), back into the Arrow types they
/// left as, so that they format exactly as the engine's batches do.
pub fn rows_to_batch(
    columns: &[tokio_postgres::Column],
    rows: &[tokio_postgres::Row],
) -> Result<RecordBatch, String> {
    use arrow::array::*;
    use arrow::datatypes::{Field, Schema};
    use tokio_postgres::types::Type;
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (i, c) in columns.iter().enumerate() {
        macro_rules! column {
            ($t:ty, $array:ty) => {{
                let values = rows
                    .iter()
                    .map(|r| r.try_get::<_, Option<$t>>(i))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("column {}: {e}", c.name()))?;
                Arc::new(<$array>::from(values)) as ArrayRef
            }};
        }
        let t = c.type_();
        let array = match *t {
            Type::BOOL => column!(bool, BooleanArray),
            Type::INT2 => column!(i16, Int16Array),
            Type::INT4 => column!(i32, Int32Array),
            Type::INT8 => column!(i64, Int64Array),
            Type::FLOAT4 => column!(f32, Float32Array),
            Type::FLOAT8 => column!(f64, Float64Array),
            Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR | Type::UNKNOWN => {
                column!(String, StringArray)
            }
            Type::BYTEA => {
                let values = rows
                    .iter()
                    .map(|r| r.try_get::<_, Option<Vec<u8>>>(i))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("column {}: {e}", c.name()))?;
                Arc::new(BinaryArray::from_iter(values)) as ArrayRef
            }
            Type::DATE => {
                let values = rows
                    .iter()
                    .map(|r| r.try_get::<_, Option<chrono::NaiveDate>>(i))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("column {}: {e}", c.name()))?;
                Arc::new(Date32Array::from_iter(
                    values
                        .into_iter()
                        .map(|d| d.map(arrow::datatypes::Date32Type::from_naive_date)),
                )) as ArrayRef
            }
            Type::TIMESTAMP => {
                let values = rows
                    .iter()
                    .map(|r| r.try_get::<_, Option<chrono::NaiveDateTime>>(i))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("column {}: {e}", c.name()))?;
                Arc::new(TimestampMicrosecondArray::from_iter(
                    values
                        .into_iter()
                        .map(|d| d.map(|d| d.and_utc().timestamp_micros())),
                )) as ArrayRef
            }
            Type::TIMESTAMPTZ => {
                let values = rows
                    .iter()
                    .map(|r| r.try_get::<_, Option<chrono::DateTime<chrono::Utc>>>(i))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("column {}: {e}", c.name()))?;
                Arc::new(
                    TimestampMicrosecondArray::from_iter(
                        values.into_iter().map(|d| d.map(|d| d.timestamp_micros())),
                    )
                    .with_timezone(meshgate_contract::TIMESTAMP_TZ),
                ) as ArrayRef
            }
            Type::NUMERIC => {
                let values = rows
                    .iter()
                    .map(|r| r.try_get::<_, Option<rust_decimal::Decimal>>(i))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("column {}: {e}", c.name()))?;
                let scale = values
                    .iter()
                    .flatten()
                    .map(|d| d.scale())
                    .max()
                    .unwrap_or(0);
                let array = Decimal128Array::from_iter(values.into_iter().map(|d| {
                    d.map(|mut d| {
                        d.rescale(scale);
                        d.mantissa()
                    })
                }))
                .with_precision_and_scale(38, scale as i8)
                .map_err(|e| e.to_string())?;
                Arc::new(array) as ArrayRef
            }
            ref other => return Err(format!("column {}: no decoding of {other} here", c.name())),
        };
        fields.push(Field::new(c.name(), array.data_type().clone(), true));
        arrays.push(array);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(|e| e.to_string())
}
