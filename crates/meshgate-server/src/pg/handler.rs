//! Statements on the Postgres port: the simple and the extended protocol, both through the
//! query path (plan as the caller, verify, route, execute under the limits, audit).
//!
//! A statement is first rewritten by datafusion-pg-catalog's parser (Postgres idioms that
//! clients' catalog queries use: `::regclass`, `OPERATOR(pg_catalog.~)`…), then either
//! answered by the session (`SET`, `SHOW`, `BEGIN`…) or planned as a query. Parse plans it
//! once to describe its parameters and columns; without parameters that plan is the one
//! Execute runs. Rows are encoded by arrow-pg, text or binary as the portal asks, batch by
//! batch as the engine produces them; pgwire suspends a portal at its row limit.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema, SchemaRef, TimeUnit};
use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type};
use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use futures::{Sink, StreamExt, stream};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DataRowEncoder, DescribePortalResponse, DescribeStatementResponse, FieldFormat, FieldInfo,
    QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::data::DataRow;
use pgwire::types::format::FormatOptions;
use sqlparser::ast::Statement;

use super::session::{Outcome, Session};
use super::{PgService, error};
use crate::audit::{AuditRecord, redact_sql};
use crate::query::{ErrorKind, QueryError};

/// A statement as Parse left it.
#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    /// The SQL the query path plans (after the rewrite).
    sql: String,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// Answered by the session.
    Session(Box<Statement>),
    Query {
        params: Vec<DataType>,
        schema: SchemaRef,
        /// Names the plan Parse made, kept for Execute (see the query path's handoff).
        handle: [u8; 16],
    },
}

fn parser() -> &'static PostgresCompatibilityParser {
    static PARSER: std::sync::LazyLock<PostgresCompatibilityParser> =
        std::sync::LazyLock::new(PostgresCompatibilityParser::new);
    &PARSER
}

/// The statements of `sql` as the Postgres parser reads and rewrites them (and psql's
/// describe idioms, see `describe.rs`); `None` when that parser does not know the text,
/// which then goes to the query path as it came, to be planned or refused exactly as on
/// Flight (DataFusion's own syntax, several statements where one is expected).
fn parse(sql: &str) -> Option<Vec<Statement>> {
    let mut statements = parser().parse(sql).ok()?;
    statements.iter_mut().for_each(super::describe::rewrite);
    Some(statements)
}

/// The session of a logged-in connection.
fn session<C: ClientInfo>(client: &C) -> PgWireResult<Arc<Session>> {
    client.session_extensions().get::<Session>().ok_or_else(|| {
        error(&QueryError::new(
            ErrorKind::Unauthenticated,
            "not logged in",
        ))
    })
}

impl PgService {
    fn record<C: ClientInfo>(
        &self,
        client: &C,
        principal: &meshgate_policy::Principal,
        kind: &str,
        sql: &str,
    ) -> AuditRecord {
        AuditRecord {
            sql: Some(redact_sql(sql)),
            catalog_epoch: Some(self.gateway.mesh().epoch().to_string()),
            ..AuditRecord::new(
                principal,
                &client.socket_addr().to_string(),
                kind,
                "postgres",
            )
        }
    }

    /// Plans and starts one query; its rows stream as the client reads them. The audit
    /// line is written when the stream ends, or here if it never starts.
    async fn query<C: ClientInfo>(
        &self,
        client: &C,
        sql: &str,
        kind: &str,
        prepared: Option<(&[u8], Option<ParamValues>)>,
        format: &Format,
    ) -> Result<Response, QueryError> {
        let started = Instant::now();
        let session = session(client)
            .map_err(|_| QueryError::new(ErrorKind::Unauthenticated, "not logged in"))?;
        let principal = session.current(&self.gateway.users())?;
        let record = self.record(client, &principal, kind, sql);
        let engine = &self.gateway.query;
        let execution = session.execution();
        let cancel = session.start_statement();
        let result = async {
            let permit = engine.slot(&principal).await?;
            let planned = match prepared {
                Some((handle, None)) => {
                    engine
                        .plan_prepared(&principal, handle, sql, None, execution)
                        .await?
                }
                Some((_, Some(values))) => {
                    engine
                        .plan_with(&principal, sql, Some(values), execution)
                        .await?
                }
                None => engine.plan(&principal, sql, None, execution).await?,
            };
            // Postgres has one text type: string views are encoded as they are, without
            // the copy to classic strings that Flight's older clients need.
            let mut planned = planned;
            planned.wire_schema = planned.physical.schema();
            let fields = Arc::new(fields(
                &planned.wire_schema,
                format,
                session.format_options(),
            )?);
            let batches = engine.execute(planned, permit, record.clone(), started)?;
            Ok::<_, QueryError>((fields, batches))
        }
        .await;
        let (fields, batches) = match result {
            Ok(r) => r,
            Err(e) => {
                self.gateway.audit_now(record, started, Err(&e));
                return Err(e);
            }
        };
        let rows = rows(batches, Arc::clone(&fields), session.iso_dates(), cancel);
        Ok(Response::Query(QueryResponse::new(fields, rows)))
    }

    /// A query after the first of a multi-statement string: described now, since its
    /// row description is part of the answer pgwire is handed, but admitted and run only
    /// when the client has read the statements before it. A string of many statements so
    /// holds one slot at a time, as PostgreSQL runs them one after another. The plan the
    /// description made is the one that runs (the handoff, as for Parse then Execute).
    async fn deferred<C: ClientInfo>(&self, client: &C, sql: &str) -> Result<Response, QueryError> {
        let started = Instant::now();
        let session = session(client)
            .map_err(|_| QueryError::new(ErrorKind::Unauthenticated, "not logged in"))?;
        let principal = session.current(&self.gateway.users())?;
        let record = self.record(client, &principal, "statement", sql);
        let engine = Arc::clone(&self.gateway.query);
        // Settings the string changed before this statement apply to it, not later ones.
        let execution = session.execution();
        let handle: [u8; 16] = rand::random();
        let described = async {
            let (schema, params) = engine.describe(&principal, sql, Some(&handle)).await?;
            if !params.fields().is_empty() {
                return Err(QueryError::invalid(format!(
                    "there is no parameter {}: a simple query has no values to bind",
                    params.field(0).name()
                )));
            }
            fields(&schema, &Format::UnifiedText, session.format_options())
        }
        .await;
        let fields = match described {
            Ok(fields) => Arc::new(fields),
            Err(e) => {
                self.gateway.audit_now(record, started, Err(&e));
                return Err(e);
            }
        };
        let gateway = Arc::clone(&self.gateway);
        let sql = sql.to_string();
        let iso = session.iso_dates();
        let (encode, expected) = (Arc::clone(&fields), Arc::clone(&fields));
        let run = async move {
            let cancel = session.start_statement();
            let result = async {
                let permit = engine.slot(&principal).await?;
                let mut planned = engine
                    .plan_prepared(&principal, &handle, &sql, None, execution)
                    .await?;
                planned.wire_schema = planned.physical.schema();
                // Re-planned (the kept plan expired, or the catalog changed meanwhile):
                // the columns must still be the ones described.
                let now = self::fields(&planned.wire_schema, &Format::UnifiedText, FormatOptions::default())?;
                if now.len() != expected.len()
                    || now
                        .iter()
                        .zip(expected.iter())
                        .any(|(a, b)| a.name() != b.name() || a.datatype() != b.datatype())
                {
                    return Err(QueryError::new(
                        ErrorKind::FailedPrecondition,
                        "the catalog changed while the statement waited: its columns are no longer the ones described; run it again",
                    ));
                }
                engine.execute(planned, permit, record.clone(), started)
            }
            .await;
            match result {
                Ok(batches) => rows(batches, encode, iso, cancel).left_stream(),
                Err(e) => {
                    gateway.audit_now(record, started, Err(&e));
                    stream::iter([Err(error(&e))]).right_stream()
                }
            }
        };
        Ok(Response::Query(QueryResponse::new(
            fields,
            stream::once(run).flatten(),
        )))
    }
}

/// One batch's rows, whichever way they were encoded.
enum Rows<T, E> {
    Text(T),
    Encoded(E),
    Failed(Option<PgWireResult<DataRow>>),
}

impl<T, E> Iterator for Rows<T, E>
where
    T: Iterator<Item = PgWireResult<DataRow>>,
    E: Iterator<Item = PgWireResult<DataRow>>,
{
    type Item = PgWireResult<DataRow>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Rows::Text(t) => t.next(),
            Rows::Encoded(e) => e.next(),
            Rows::Failed(f) => f.take(),
        }
    }
}

/// A result's rows for pgwire, encoded batch by batch; a cancelled statement ends with
/// PostgreSQL's error for it.
fn rows(
    batches: impl futures::Stream<Item = Result<RecordBatch, QueryError>> + Send + 'static,
    encode: Arc<Vec<FieldInfo>>,
    iso: bool,
    cancel: tokio_util::sync::CancellationToken,
) -> impl futures::Stream<Item = PgWireResult<DataRow>> + Send + 'static {
    batches
        .take_until(cancel.clone().cancelled_owned())
        .map(move |batch| {
            let batch = match batch {
                Ok(batch) => batch,
                Err(e) => return stream::iter(Rows::Failed(Some(Err(error(&e))))),
            };
            if let Some(rows) = text_rows(&batch, &encode, iso) {
                return stream::iter(Rows::Text(rows.into_iter().map(Ok)));
            }
            match as_text(batch, &encode, iso) {
                Ok(batch) => stream::iter(Rows::Encoded(encode_recordbatch(
                    Arc::clone(&encode),
                    batch,
                ))),
                Err(e) => stream::iter(Rows::Failed(Some(Err(error(&e))))),
            }
        })
        .flatten()
        .chain(stream::iter([()]).filter_map(move |()| {
            let cancelled = cancel.is_cancelled();
            async move {
                cancelled.then(|| {
                    Err(error(&QueryError::new(
                        ErrorKind::Cancelled,
                        "canceling statement due to user request",
                    )))
                })
            }
        }))
}

/// Dates, decimals and integers sent as text, written by Arrow's vectorized casts instead
/// of value by value (pgwire formats each date through strftime after parsing DateStyle
/// again): the same text (`1996-03-13`, `17954.55`, `-42`), the column still typed `date`
/// / `numeric` / `int8`. Only for columns the client reads as text, and dates only in ISO
/// DateStyle.
fn as_text(
    batch: RecordBatch,
    fields: &[FieldInfo],
    iso_dates: bool,
) -> Result<RecordBatch, QueryError> {
    let text = |i: usize, t: &DataType| {
        fields[i].format() == FieldFormat::Text
            && match t {
                DataType::Date32 => iso_dates,
                DataType::Decimal128(..) => true,
                t => t.is_integer(),
            }
    };
    let schema = batch.schema();
    if !schema
        .fields()
        .iter()
        .enumerate()
        .any(|(i, f)| text(i, f.data_type()))
    {
        return Ok(batch);
    }
    let mut out_fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (i, (f, c)) in schema.fields().iter().zip(batch.columns()).enumerate() {
        if text(i, f.data_type()) {
            let cast = arrow::compute::cast(c, &DataType::Utf8)
                .map_err(|e| QueryError::internal(&format!("text of {}: {e}", f.name())))?;
            out_fields.push(f.as_ref().clone().with_data_type(DataType::Utf8));
            columns.push(cast);
        } else {
            out_fields.push(f.as_ref().clone());
            columns.push(Arc::clone(c));
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(out_fields)), columns)
        .map_err(|e| QueryError::internal(&format!("a result batch: {e}")))
}

/// The DataRows of a batch read as text, written straight into one buffer (each value's
/// length and bytes, a row at a time split off it) instead of arrow-pg's per-value type
/// dispatch, and without first casting numbers and dates to string arrays: strings as
/// they are, integers by `itoa`, decimals as their digits with the point placed by the
/// scale, booleans as `t`/`f`, ISO dates and timestamps (zone-less or UTC) of years 1 to
/// 9999.
/// The bytes are the ones pgwire writes. `None`
/// (before or midway) when a column is of another type or read as binary, or a value
/// is outside those cases: the caller encodes the batch the general way.
fn text_rows(batch: &RecordBatch, fields: &[FieldInfo], iso_dates: bool) -> Option<Vec<DataRow>> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Date32Type, Decimal128Type, Int16Type, Int32Type, Int64Type};
    use bytes::BufMut;
    enum Column<'a> {
        Utf8(&'a arrow::array::StringArray),
        Large(&'a arrow::array::LargeStringArray),
        View(&'a arrow::array::StringViewArray),
        I16(&'a arrow::array::Int16Array),
        I32(&'a arrow::array::Int32Array),
        I64(&'a arrow::array::Int64Array),
        Decimal(&'a arrow::array::Decimal128Array, usize),
        Date(&'a arrow::array::Date32Array),
        Bool(&'a arrow::array::BooleanArray),
        /// Timestamps of any unit, as date and time of day; with `+00` after them when
        /// they are in UTC (the contracts' `timestamp`), as PostgreSQL writes a
        /// `timestamptz` in a UTC session.
        Timestamp(&'a dyn Array, TimeUnit, bool),
    }
    let columns = batch
        .columns()
        .iter()
        .zip(fields)
        .map(|(c, f)| {
            if f.format() != FieldFormat::Text {
                return None;
            }
            Some(match c.data_type() {
                DataType::Utf8 => Column::Utf8(c.as_string()),
                DataType::LargeUtf8 => Column::Large(c.as_string()),
                DataType::Utf8View => Column::View(c.as_string_view()),
                DataType::Int16 => Column::I16(c.as_primitive::<Int16Type>()),
                DataType::Int32 => Column::I32(c.as_primitive::<Int32Type>()),
                DataType::Int64 => Column::I64(c.as_primitive::<Int64Type>()),
                DataType::Decimal128(_, scale) if *scale >= 0 => {
                    Column::Decimal(c.as_primitive::<Decimal128Type>(), *scale as usize)
                }
                DataType::Date32 if iso_dates => Column::Date(c.as_primitive::<Date32Type>()),
                DataType::Boolean => Column::Bool(c.as_boolean()),
                DataType::Timestamp(unit, None) if iso_dates => {
                    Column::Timestamp(c.as_ref(), *unit, false)
                }
                DataType::Timestamp(unit, Some(zone))
                    if iso_dates && matches!(zone.as_ref(), "UTC" | "+00:00") =>
                {
                    Column::Timestamp(c.as_ref(), *unit, true)
                }
                _ => return None,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let field_count = i16::try_from(columns.len()).ok()?;
    // Strings' bytes, and a guess of 12 for every other value; the buffer grows if short.
    let bytes: usize = columns
        .iter()
        .map(|c| match c {
            Column::Utf8(a) => (a.value_offsets()[a.len()] - a.value_offsets()[0]) as usize,
            Column::Large(a) => (a.value_offsets()[a.len()] - a.value_offsets()[0]) as usize,
            Column::View(a) => a.views().iter().map(|v| *v as u32 as usize).sum(),
            _ => 12 * batch.num_rows(),
        })
        .sum();
    let mut buffer = bytes::BytesMut::with_capacity(bytes + 4 * columns.len() * batch.num_rows());
    let mut digits = itoa::Buffer::new();
    let mut rows = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        for column in &columns {
            let valid = match column {
                Column::Utf8(a) => a.is_valid(row),
                Column::Large(a) => a.is_valid(row),
                Column::View(a) => a.is_valid(row),
                Column::I16(a) => a.is_valid(row),
                Column::I32(a) => a.is_valid(row),
                Column::I64(a) => a.is_valid(row),
                Column::Decimal(a, _) => a.is_valid(row),
                Column::Date(a) => a.is_valid(row),
                Column::Bool(a) => a.is_valid(row),
                Column::Timestamp(a, ..) => a.is_valid(row),
            };
            if !valid {
                buffer.put_i32(-1);
                continue;
            }
            // The length goes before the value: written once the value is.
            let at = buffer.len();
            buffer.put_i32(0);
            match column {
                Column::Utf8(a) => buffer.put_slice(a.value(row).as_bytes()),
                Column::Large(a) => buffer.put_slice(a.value(row).as_bytes()),
                Column::View(a) => buffer.put_slice(a.value(row).as_bytes()),
                Column::I16(a) => buffer.put_slice(digits.format(a.value(row)).as_bytes()),
                Column::I32(a) => buffer.put_slice(digits.format(a.value(row)).as_bytes()),
                Column::I64(a) => buffer.put_slice(digits.format(a.value(row)).as_bytes()),
                Column::Decimal(a, scale) => {
                    let v = a.value(row);
                    if v < 0 {
                        buffer.put_u8(b'-');
                    }
                    let d = digits.format(v.unsigned_abs()).as_bytes();
                    match *scale {
                        0 => buffer.put_slice(d),
                        s if d.len() > s => {
                            buffer.put_slice(&d[..d.len() - s]);
                            buffer.put_u8(b'.');
                            buffer.put_slice(&d[d.len() - s..]);
                        }
                        s => {
                            buffer.put_slice(b"0.");
                            buffer.put_bytes(b'0', s - d.len());
                            buffer.put_slice(d);
                        }
                    }
                }
                Column::Date(a) => iso_date(&mut buffer, a.value_as_date(row)?)?,
                Column::Bool(a) => buffer.put_u8(if a.value(row) { b't' } else { b'f' }),
                Column::Timestamp(a, unit, utc) => {
                    use chrono::Timelike;
                    let t = timestamp(*a, *unit, row)?;
                    iso_date(&mut buffer, t.date())?;
                    buffer.put_u8(b' ');
                    buffer.put_slice(&two(t.hour()));
                    buffer.put_u8(b':');
                    buffer.put_slice(&two(t.minute()));
                    buffer.put_u8(b':');
                    buffer.put_slice(&two(t.second()));
                    // Always six digits of the second, as pgwire writes them (%.6f).
                    let micros = t.nanosecond() % 1_000_000_000 / 1000;
                    buffer.put_u8(b'.');
                    buffer.put_slice(&two(micros / 10_000));
                    buffer.put_slice(&two(micros / 100 % 100));
                    buffer.put_slice(&two(micros % 100));
                    if *utc {
                        buffer.put_slice(b"+00");
                    }
                }
            }
            let len = (buffer.len() - at - 4) as i32;
            buffer[at..at + 4].copy_from_slice(&len.to_be_bytes());
        }
        rows.push(DataRow::new(buffer.split(), field_count));
    }
    Some(rows)
}

/// Two decimal digits.
fn two(n: u32) -> [u8; 2] {
    [b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8]
}

/// `YYYY-MM-DD` for years 1 to 9999 (PostgreSQL writes others with an era or more digits).
fn iso_date(buffer: &mut bytes::BytesMut, date: chrono::NaiveDate) -> Option<()> {
    use bytes::BufMut;
    use chrono::Datelike;
    let year = u32::try_from(date.year())
        .ok()
        .filter(|y| (1..=9999).contains(y))?;
    buffer.put_slice(&two(year / 100));
    buffer.put_slice(&two(year % 100));
    buffer.put_u8(b'-');
    buffer.put_slice(&two(date.month()));
    buffer.put_u8(b'-');
    buffer.put_slice(&two(date.day()));
    Some(())
}

/// A zone-less timestamp of any unit as chrono's date and time.
fn timestamp(
    a: &dyn arrow::array::Array,
    unit: TimeUnit,
    row: usize,
) -> Option<chrono::NaiveDateTime> {
    use arrow::array::AsArray;
    use arrow::datatypes::{
        TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
        TimestampSecondType,
    };
    match unit {
        TimeUnit::Second => a
            .as_primitive::<TimestampSecondType>()
            .value_as_datetime(row),
        TimeUnit::Millisecond => a
            .as_primitive::<TimestampMillisecondType>()
            .value_as_datetime(row),
        TimeUnit::Microsecond => a
            .as_primitive::<TimestampMicrosecondType>()
            .value_as_datetime(row),
        TimeUnit::Nanosecond => a
            .as_primitive::<TimestampNanosecondType>()
            .value_as_datetime(row),
    }
}

/// The columns of a result, each in the format the client asked for.
fn fields(
    schema: &Schema,
    format: &Format,
    options: FormatOptions,
) -> Result<Vec<FieldInfo>, QueryError> {
    arrow_schema_to_pg_fields(schema, format, Some(Arc::new(options)))
        .map_err(|e| QueryError::new(ErrorKind::InvalidArgument, e.to_string()))
}

/// A session statement's answer.
fn outcome(outcome: Outcome) -> PgWireResult<Response> {
    Ok(match outcome {
        Outcome::Tag(tag) => Response::Execution(Tag::new(tag)),
        Outcome::Begin => Response::TransactionStart(Tag::new("BEGIN")),
        Outcome::End(tag) => Response::TransactionEnd(Tag::new(tag)),
        Outcome::Show(name, value) => {
            let fields = Arc::new(vec![show_field(&name)]);
            let mut row = DataRowEncoder::new(Arc::clone(&fields));
            row.encode_field(&value)?;
            Response::Query(QueryResponse::new(
                fields,
                stream::iter([Ok(row.take_row())]),
            ))
        }
    })
}

fn show_field(name: &str) -> FieldInfo {
    FieldInfo::new(
        name.to_string(),
        None,
        None,
        Type::TEXT,
        pgwire::api::results::FieldFormat::Text,
    )
}

#[async_trait]
impl SimpleQueryHandler for PgService {
    async fn do_query<C>(&self, client: &mut C, sql: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session(client)?;
        let statements: Vec<(String, Option<Statement>)> = match parse(sql) {
            Some(parsed) => parsed
                .into_iter()
                .map(|s| (s.to_string(), Some(s)))
                .collect(),
            None => vec![(sql.to_string(), None)],
        };
        let mut responses = Vec::with_capacity(statements.len());
        let mut first_query = true;
        for (sql, statement) in statements {
            if let Some(result) = statement.as_ref().and_then(|s| session.command(s)) {
                responses.push(match result {
                    Ok(o) => outcome(o)?,
                    Err(e) => Response::Error(Box::new(error(&e).into())),
                });
                continue;
            }
            let response = if first_query {
                first_query = false;
                self.query(client, &sql, "statement", None, &Format::UnifiedText)
                    .await
            } else {
                self.deferred(client, &sql).await
            };
            match response {
                Ok(r) => responses.push(r),
                // Later statements of the string do not run after an error, as in
                // PostgreSQL.
                Err(e) => {
                    responses.push(Response::Error(Box::new(error(&e).into())));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

#[async_trait]
impl QueryParser for PgService {
    type Statement = Parsed;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Parsed>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let session = session(client)?;
        let sql = match parse(sql) {
            Some(mut parsed) if parsed.len() == 1 => {
                let statement = parsed.pop().expect("one statement");
                if is_session_command(&statement) {
                    return Ok(Some(Parsed {
                        sql: statement.to_string(),
                        kind: Kind::Session(Box::new(statement)),
                    }));
                }
                statement.to_string()
            }
            Some(parsed) if parsed.is_empty() => return Ok(None),
            // Several statements, or a syntax only DataFusion knows: planned as sent.
            _ => sql.to_string(),
        };
        let started = Instant::now();
        let principal = session
            .current(&self.gateway.users())
            .map_err(|e| error(&e))?;
        let handle: [u8; 16] = rand::random();
        match self
            .gateway
            .query
            .describe(&principal, &sql, Some(&handle))
            .await
        {
            Ok((schema, params)) => Ok(Some(Parsed {
                sql,
                kind: Kind::Query {
                    params: params
                        .fields()
                        .iter()
                        .map(|f| f.data_type().clone())
                        .collect(),
                    schema,
                    handle,
                },
            })),
            Err(e) => {
                let record = self.record(client, &principal, "prepared", &sql);
                self.gateway.audit_now(record, started, Err(&e));
                Err(error(&e))
            }
        }
    }

    fn get_parameter_types(&self, stmt: &Parsed) -> PgWireResult<Vec<Type>> {
        match &stmt.kind {
            Kind::Session(_) => Ok(vec![]),
            Kind::Query { params, .. } => params.iter().map(into_pg_type).collect(),
        }
    }

    fn get_result_schema(
        &self,
        stmt: &Parsed,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match &stmt.kind {
            Kind::Session(statement) => Ok(match statement.as_ref() {
                Statement::ShowVariable { variable } => vec![show_field(
                    &variable
                        .iter()
                        .map(|i| i.value.clone())
                        .collect::<Vec<_>>()
                        .join(" "),
                )],
                _ => vec![],
            }),
            Kind::Query { schema, .. } => {
                arrow_schema_to_pg_fields(schema, format.unwrap_or(&Format::UnifiedText), None)
            }
        }
    }
}

fn is_session_command(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::Set(_)
            | Statement::ShowVariable { .. }
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Discard { .. }
            | Statement::Deallocate { .. }
    )
}

#[async_trait]
impl ExtendedQueryHandler for PgService {
    type Statement = Parsed;
    type QueryParser = PgService;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.me())
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        target: &StoredStatement<Parsed>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Parsed>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let params = self.get_parameter_types(&target.statement)?;
        // A type the client declared at Parse wins: it encodes the value so.
        let params = params
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                target
                    .parameter_types
                    .get(i)
                    .cloned()
                    .flatten()
                    .unwrap_or(t)
            })
            .collect();
        let fields = self.get_result_schema(&target.statement, None)?;
        Ok(DescribeStatementResponse::new(params, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        client: &mut C,
        target: &Portal<Parsed>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Parsed>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session(client)?;
        let mut fields = self.get_result_schema(
            &target.statement.statement,
            Some(&target.result_column_format),
        )?;
        let options = Arc::new(session.format_options());
        fields = fields
            .into_iter()
            .map(|f| f.with_format_options(Arc::clone(&options)))
            .collect();
        Ok(DescribePortalResponse::new(fields))
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Parsed>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Parsed>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let parsed = &portal.statement.statement;
        match &parsed.kind {
            Kind::Session(statement) => {
                let session = session(client)?;
                match session.command(statement) {
                    Some(Ok(o)) => outcome(o),
                    Some(Err(e)) => Err(error(&e)),
                    None => Err(error(&QueryError::internal(
                        "a query parsed as a session command",
                    ))),
                }
            }
            Kind::Query { params, handle, .. } => {
                let values = if params.is_empty() {
                    None
                } else {
                    Some(bind(portal, params).map_err(|e| error(&e))?)
                };
                self.query(
                    client,
                    &parsed.sql,
                    "prepared",
                    Some((handle, values)),
                    &portal.result_column_format,
                )
                .await
                .map_err(|e| error(&e))
            }
        }
    }
}

/// The portal's parameters, decoded as the client encoded them and cast to the types the
/// statement was planned with.
fn bind(portal: &Portal<Parsed>, types: &[DataType]) -> Result<ParamValues, QueryError> {
    let hints: Vec<Option<&DataType>> = types.iter().map(Some).collect();
    let values = arrow_pg::datatypes::df::deserialize_parameters(portal, &hints)
        .map_err(|e| QueryError::invalid(format!("unreadable parameter: {e}")))?;
    let ParamValues::List(values) = values else {
        return Err(QueryError::invalid("named parameters are not supported"));
    };
    let values = values
        .into_iter()
        .zip(types)
        .enumerate()
        .map(|(i, (v, t))| {
            let value = v.value;
            if value.data_type() == *t {
                Ok(value)
            } else {
                value.cast_to(t).map_err(|e| {
                    QueryError::invalid(format!("parameter ${}: not a {t}: {e}", i + 1))
                })
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(values.into())
}

#[cfg(test)]
mod tests {
    use arrow::array::{
        BooleanArray, Date32Array, Decimal128Array, Int16Array, Int32Array, Int64Array,
        StringArray, StringViewArray, TimestampMicrosecondArray, TimestampNanosecondArray,
        TimestampSecondArray,
    };
    use arrow::datatypes::Field;

    use super::*;

    /// The vectorized text is byte for byte what pgwire writes value by value.
    #[test]
    fn dates_and_decimals_as_text_are_the_rows_pgwire_would_write() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("d", DataType::Date32, true),
            Field::new("n", DataType::Decimal128(15, 2), true),
            Field::new("z", DataType::Decimal128(20, 0), true),
            Field::new("s", DataType::Utf8, true),
            Field::new("i", DataType::Int64, true),
            Field::new("h", DataType::Int16, true),
            Field::new("m", DataType::Int32, true),
            Field::new("b", DataType::Boolean, true),
            Field::new("t", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("tn", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Second, None), true),
            Field::new(
                "tz",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("v", DataType::Utf8View, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                // 1970-01-01, 1996-03-13, 0999-12-31, 9999-12-31, null
                Arc::new(Date32Array::from(vec![
                    Some(0),
                    Some(9568),
                    Some(-354_286),
                    Some(2_932_896),
                    None,
                ])),
                Arc::new(
                    Decimal128Array::from(vec![
                        Some(1_795_455),
                        Some(-300),
                        Some(5),
                        Some(0),
                        None,
                    ])
                    .with_precision_and_scale(15, 2)
                    .unwrap(),
                ),
                Arc::new(
                    Decimal128Array::from(vec![Some(7), Some(-12), Some(0), None, Some(1)])
                        .with_precision_and_scale(20, 0)
                        .unwrap(),
                ),
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    None,
                    Some(""),
                    Some("é"),
                    Some("x"),
                ])),
                Arc::new(Int64Array::from(vec![
                    Some(i64::MIN),
                    Some(-1),
                    Some(0),
                    None,
                    Some(i64::MAX),
                ])),
                Arc::new(Int16Array::from(vec![
                    Some(-32768),
                    None,
                    Some(7),
                    Some(0),
                    Some(32767),
                ])),
                Arc::new(Int32Array::from(vec![
                    Some(i32::MIN),
                    Some(-5),
                    None,
                    Some(0),
                    Some(i32::MAX),
                ])),
                Arc::new(BooleanArray::from(vec![
                    Some(true),
                    Some(false),
                    None,
                    Some(true),
                    Some(false),
                ])),
                // 1970-01-01 00:00:00, 2024-02-29 23:59:59.999999, 0999-12-31 12:00:00.5,
                // null, 1969-12-31 23:59:59.000001
                Arc::new(TimestampMicrosecondArray::from(vec![
                    Some(0),
                    Some(1_709_251_199_999_999),
                    Some(-30_610_267_200_000_000 + 500_000),
                    None,
                    Some(-999_999),
                ])),
                Arc::new(TimestampNanosecondArray::from(vec![
                    Some(1_709_251_199_123_456_789),
                    None,
                    Some(-1),
                    Some(0),
                    Some(1_000),
                ])),
                Arc::new(TimestampSecondArray::from(vec![
                    Some(86_399),
                    None,
                    Some(0),
                    Some(-1),
                    Some(253_402_300_799),
                ])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![
                        Some(1_709_251_199_999_999),
                        None,
                        Some(0),
                        Some(-999_999),
                        Some(-30_610_267_200_000_000),
                    ])
                    .with_timezone("UTC"),
                ),
                Arc::new(StringViewArray::from(vec![
                    Some("a string longer than twelve bytes, out of line"),
                    Some("short"),
                    None,
                    Some(""),
                    Some("ünïcode"),
                ])),
            ],
        )
        .unwrap();
        let options = pgwire::types::format::FormatOptions::default();
        let fields = Arc::new(fields(&schema, &Format::UnifiedText, options).unwrap());
        let rows = |b: RecordBatch| -> Vec<_> {
            encode_recordbatch(Arc::clone(&fields), b)
                .map(|r| r.unwrap())
                .collect()
        };
        let fast = as_text(batch.clone(), &fields, true).unwrap();
        assert_eq!(fast.column(0).data_type(), &DataType::Utf8);
        assert_eq!(rows(fast.clone()), rows(batch.clone()));
        // Written straight into the rows: the same bytes as pgwire's, for a whole batch
        // and for a slice of one (from the batch as it is, and as the casts left it).
        assert_eq!(
            text_rows(&batch, &fields, true).unwrap(),
            rows(batch.clone())
        );
        assert_eq!(
            text_rows(&fast, &fields, true).unwrap(),
            rows(batch.clone())
        );
        assert_eq!(
            text_rows(&batch.slice(1, 3), &fields, true).unwrap(),
            rows(batch.slice(1, 3))
        );
        // Dates in another DateStyle, or of a year PostgreSQL writes otherwise, go the
        // general way.
        assert!(text_rows(&batch, &fields, false).is_none());
        let bc = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("d", DataType::Date32, true)])),
            vec![Arc::new(Date32Array::from(vec![Some(0), Some(-800_000)]))],
        )
        .unwrap();
        let one = Arc::new(
            super::fields(&bc.schema(), &Format::UnifiedText, FormatOptions::default()).unwrap(),
        );
        assert!(text_rows(&bc, &one, true).is_none());
        // Binary columns, and dates in another DateStyle, are left to pgwire.
        let binary = Arc::new(
            super::fields(
                &schema,
                &Format::UnifiedBinary,
                pgwire::types::format::FormatOptions::default(),
            )
            .unwrap(),
        );
        let kept = as_text(batch.clone(), &binary, true).unwrap();
        assert_eq!(kept.schema(), batch.schema());
        assert!(text_rows(&kept, &binary, true).is_none());
        let kept = as_text(batch, &fields, false).unwrap();
        assert_eq!(kept.column(0).data_type(), &DataType::Date32);
    }
}
