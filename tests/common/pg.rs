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

/// The rows of a simple query, as text (`None` for NULL).
pub async fn simple_rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

/// Rows as a Postgres driver decodes them (binary format), back into the Arrow types they
/// left as, so that they format exactly as the engine's batches do.
pub fn rows_to_batch(
    columns: &[tokio_postgres::Column],
    rows: &[tokio_postgres::Row],
) -> Result<RecordBatch, String> {
    use arrow::array::*;
    use arrow::datatypes::{Date32Type, Field, Schema};
    use tokio_postgres::types::Type;
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (i, c) in columns.iter().enumerate() {
        let array: ArrayRef = match *c.type_() {
            Type::BOOL => Arc::new(BooleanArray::from(values::<bool>(rows, c, i)?)),
            Type::INT2 => Arc::new(Int16Array::from(values::<i16>(rows, c, i)?)),
            Type::INT4 => Arc::new(Int32Array::from(values::<i32>(rows, c, i)?)),
            Type::INT8 => Arc::new(Int64Array::from(values::<i64>(rows, c, i)?)),
            Type::FLOAT4 => Arc::new(Float32Array::from(values::<f32>(rows, c, i)?)),
            Type::FLOAT8 => Arc::new(Float64Array::from(values::<f64>(rows, c, i)?)),
            Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR | Type::UNKNOWN => {
                Arc::new(StringArray::from(values::<String>(rows, c, i)?))
            }
            Type::BYTEA => Arc::new(BinaryArray::from_iter(values::<Vec<u8>>(rows, c, i)?)),
            Type::DATE => Arc::new(Date32Array::from_iter(
                values::<chrono::NaiveDate>(rows, c, i)?
                    .into_iter()
                    .map(|d| d.map(Date32Type::from_naive_date)),
            )),
            Type::TIMESTAMP => Arc::new(TimestampMicrosecondArray::from_iter(
                values::<chrono::NaiveDateTime>(rows, c, i)?
                    .into_iter()
                    .map(|d| d.map(|d| d.and_utc().timestamp_micros())),
            )),
            Type::TIMESTAMPTZ => Arc::new(
                TimestampMicrosecondArray::from_iter(
                    values::<chrono::DateTime<chrono::Utc>>(rows, c, i)?
                        .into_iter()
                        .map(|d| d.map(|d| d.timestamp_micros())),
                )
                .with_timezone(meshgate_contract::TIMESTAMP_TZ),
            ),
            Type::NUMERIC => {
                let values = values::<rust_decimal::Decimal>(rows, c, i)?;
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
                Arc::new(array)
            }
            ref other => return Err(format!("column {}: no decoding of {other} here", c.name())),
        };
        fields.push(Field::new(c.name(), array.data_type().clone(), true));
        arrays.push(array);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(|e| e.to_string())
}

/// Column `i` of every row, as the driver decodes `T`.
fn values<T>(
    rows: &[tokio_postgres::Row],
    column: &tokio_postgres::Column,
    i: usize,
) -> Result<Vec<Option<T>>, String>
where
    for<'a> T: tokio_postgres::types::FromSql<'a>,
{
    rows.iter()
        .map(|r| r.try_get::<_, Option<T>>(i))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("column {}: {e}", column.name()))
}
