//! One role's connection to the gateway and its oracle: runs a statement both ways, checks
//! every byte the gateway answered, compares the answers, and shrinks what fails.

use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use arrow::util::pretty::pretty_format_batches;
use arrow_flight::FlightInfo;
use arrow_flight::sql::{
    CommandGetDbSchemas, CommandGetPrimaryKeys, CommandGetTables, CommandGetXdbcTypeInfo,
};
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use meshgate_proto::catalog::catalog_service_client::CatalogServiceClient;
use meshgate_proto::catalog::{DescribeProductRequest, ListProductsRequest};
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use tonic::Code;

use crate::common::oracle::RoleView;
use crate::common::server::{Client, TestServer};
use crate::grammar::{Statement, Table};

/// Statements that passed, by how.
pub(crate) enum Outcome {
    /// Both answered, with the same rows.
    Same,
    /// Both refused (a product the role may not read, a type error…).
    BothFailed,
    /// The gateway refused for policy or resources; plain DataFusion answered.
    Refused,
    /// EXPLAIN: checked for leaks only.
    Explained,
    /// Too big to compare within the time limit (a join on a mask that makes every key
    /// equal); checked for leaks only.
    TooBig,
    /// One side failed a cast on a value the other side's plan never cast (SQL leaves the
    /// order of evaluation open: a filter may or may not run before a projection's cast).
    CastOrder,
    /// Plain DataFusion failed its own plan check (SanityCheckPlan: an ordering it lost
    /// track of over constant columns, a DataFusion 55 bug); the gateway's plan, built
    /// differently, answered. Nothing to compare with; leaks are still checked.
    OracleUnplannable,
}

/// A cast that failed on a value: data-dependent, so it depends on the plan's order.
fn is_cast_failure(message: &str) -> bool {
    message.contains("Cast error") || message.contains("Cannot cast")
}

/// How long either side may take by default (`--time-limit`): the gateway's query timeout,
/// and the oracle's.
pub(crate) const TIME_LIMIT_SECS: u64 = 5;

/// What the fuzzer reports.
#[derive(Debug, Clone)]
pub(crate) enum Finding {
    /// A forbidden value, count or path on an output channel.
    Leak {
        channel: &'static str,
        found: String,
        context: String,
    },
    /// The gateway's rows differ from plain DataFusion's over the role's tables.
    Differs { gateway: String, oracle: String },
    /// The gateway answered what the role's tables cannot answer.
    Answered { oracle: String },
    /// The gateway failed where plain DataFusion answered, not for policy or resources.
    Failed { code: Code, message: String },
    /// The Postgres port answered otherwise than Flight SQL.
    Protocols { flight: String, postgres: String },
}

impl Finding {
    pub(crate) fn leak(channel: &'static str, found: String, text: &str) -> Finding {
        let at = text.find(&found).unwrap_or(0);
        let context = text
            .get(at.saturating_sub(120)..(at + found.len() + 120).min(text.len()))
            .unwrap_or(text)
            .to_string();
        Finding::Leak {
            channel,
            found,
            context,
        }
    }

    /// Whether `other` is the same kind of failure (what shrinking must keep).
    fn same_kind(&self, other: &Finding) -> bool {
        match (self, other) {
            (Finding::Leak { channel: a, .. }, Finding::Leak { channel: b, .. }) => a == b,
            (Finding::Failed { code: a, .. }, Finding::Failed { code: b, .. }) => a == b,
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Leak {
                channel,
                found,
                context,
            } => write!(f, "{channel} shows {found:?}: …{context}…"),
            Finding::Differs { gateway, oracle } => {
                write!(f, "answers differ\ngateway:\n{gateway}\noracle:\n{oracle}")
            }
            Finding::Answered { oracle } => {
                write!(f, "the gateway answered; the role's tables say: {oracle}")
            }
            Finding::Failed { code, message } => {
                write!(
                    f,
                    "the gateway failed ({code:?}) where the oracle answered: {message}"
                )
            }
            Finding::Protocols { flight, postgres } => {
                write!(
                    f,
                    "the protocols differ\nflight:\n{flight}\npostgres:\n{postgres}"
                )
            }
        }
    }
}

/// An answer, reduced to what is compared: column names and rows as sorted text.
#[derive(PartialEq)]
struct Answer {
    names: Vec<String>,
    rows: Vec<String>,
}

impl Answer {
    fn of(schema: &Schema, batches: &[RecordBatch]) -> Answer {
        let mut rows = Vec::new();
        let options = FormatOptions::default().with_null("NULL");
        for b in batches {
            let columns: Vec<(ArrayFormatter<'_>, bool)> = b
                .columns()
                .iter()
                .map(|c| {
                    let float = matches!(c.data_type(), DataType::Float32 | DataType::Float64);
                    (
                        ArrayFormatter::try_new(c.as_ref(), &options).unwrap(),
                        float,
                    )
                })
                .collect();
            for r in 0..b.num_rows() {
                let row: Vec<String> = columns
                    .iter()
                    .map(|(f, float)| {
                        let v = f.value(r).to_string();
                        // Sums of floats differ in the last bits with the order of rows.
                        match v.parse::<f64>() {
                            Ok(x) if *float => format!("{x:.6e}"),
                            _ => v,
                        }
                    })
                    .collect();
                rows.push(row.join(" | "));
            }
        }
        rows.sort();
        Answer {
            names: schema.fields().iter().map(|f| f.name().clone()).collect(),
            rows,
        }
    }

    fn show(&self) -> String {
        let mut s = format!("{} ({} rows)", self.names.join(" | "), self.rows.len());
        for r in self.rows.iter().take(8) {
            s.push_str("\n  ");
            s.push_str(r);
        }
        s
    }
}

pub(crate) struct Probe<'a> {
    server: &'a TestServer,
    client: Client,
    /// The same user on the Postgres port: every statement runs on both doors.
    pg: tokio_postgres::Client,
    /// Statements whose Postgres answer was compared with Flight's, and those the test
    /// client could not decode (a type it has no Arrow mapping for).
    pub(crate) pg_compared: usize,
    pub(crate) pg_undecodable: usize,
    view: &'a RoleView,
    oracle: SessionContext,
    time_limit: std::time::Duration,
}

impl<'a> Probe<'a> {
    pub(crate) async fn new(
        server: &'a TestServer,
        user: &str,
        view: &'a RoleView,
        time_limit_secs: u64,
    ) -> Probe<'a> {
        Probe {
            server,
            client: server.client(user).await,
            pg: crate::common::pg::connect(server.server.pg_addr.unwrap(), user)
                .await
                .unwrap(),
            pg_compared: 0,
            pg_undecodable: 0,
            view,
            oracle: view.plain_context(),
            time_limit: std::time::Duration::from_secs(time_limit_secs),
        }
    }

    fn leak(
        &self,
        asked: &str,
        channel: &'static str,
        text: &str,
        rows: bool,
    ) -> Result<(), Finding> {
        match self.view.forbidden.in_answer_to(asked, text, rows) {
            None => Ok(()),
            Some(found) => Err(Finding::leak(channel, found, text)),
        }
    }

    /// Runs `s` through the gateway and the oracle; checks and compares.
    pub(crate) async fn check(&mut self, s: &Statement) -> Result<Outcome, Finding> {
        let sql = s.sql();
        let gateway = self.gateway(s, &sql).await?;
        let postgres = self.postgres(s, &sql).await?;
        if s.explain.is_none() {
            self.same_on_both_doors(&gateway, &postgres)?;
            match &postgres {
                Err((state, _)) if state == "undecodable" => self.pg_undecodable += 1,
                _ => self.pg_compared += 1,
            }
        }
        if s.explain.is_some() {
            return Ok(Outcome::Explained);
        }
        if let Err((Code::DeadlineExceeded, _)) = gateway {
            return Ok(Outcome::TooBig);
        }
        let oracle = match self.oracle.sql(&s.inline_sql()).await {
            Ok(df) => {
                let schema = df.schema().as_arrow().clone();
                match tokio::time::timeout(self.time_limit, df.collect()).await {
                    Ok(collected) => collected.map(|b| Answer::of(&schema, &b)),
                    Err(_) => return Ok(Outcome::TooBig),
                }
            }
            Err(e) => Err(e),
        };
        match (gateway, oracle) {
            (Ok(g), Ok(o)) if g == o => Ok(Outcome::Same),
            (Ok(g), Ok(o)) => Err(Finding::Differs {
                gateway: g.show(),
                oracle: o.show(),
            }),
            (Err(g), Err(o)) => {
                if std::env::var_os("MESHGATE_FUZZ_VERBOSE").is_some() {
                    eprintln!("  gateway: {}\n  oracle:  {o}", g.1);
                }
                Ok(Outcome::BothFailed)
            }
            (Ok(_), Err(e)) if is_cast_failure(&e.to_string()) => Ok(Outcome::CastOrder),
            (Ok(_), Err(e)) if e.to_string().starts_with("SanityCheckPlan") => {
                Ok(Outcome::OracleUnplannable)
            }
            (Err((_, message)), Ok(_)) if is_cast_failure(&message) => Ok(Outcome::CastOrder),
            (Ok(_), Err(e)) => Err(Finding::Answered {
                oracle: e.to_string(),
            }),
            (Err((Code::PermissionDenied | Code::ResourceExhausted, _)), Ok(_)) => {
                Ok(Outcome::Refused)
            }
            (Err((code, message)), Ok(_)) => Err(Finding::Failed { code, message }),
        }
    }

    /// The gateway's answer; every byte of it checked on the way.
    async fn gateway(
        &mut self,
        s: &Statement,
        sql: &str,
    ) -> Result<Result<Answer, (Code, String)>, Finding> {
        // What the caller sent: the statement and the values it bound.
        let asked = format!("{sql} {}", s.params.join(" "));
        let asked = asked.as_str();
        let info = if s.params.is_empty() {
            self.client.execute(sql.to_string(), None).await
        } else {
            match self.client.prepare(sql.to_string(), None).await {
                Err(e) => Err(e),
                Ok(mut prepared) => {
                    for schema in [prepared.dataset_schema(), prepared.parameter_schema()]
                        .into_iter()
                        .flatten()
                    {
                        self.leak(
                            sql,
                            "prepared statement schema",
                            &format!("{schema:?}"),
                            false,
                        )?;
                    }
                    let values: Vec<String> = s
                        .params
                        .iter()
                        .map(|p| p.trim_matches('\'').replace("''", "'"))
                        .collect();
                    let fields: Vec<Field> = (1..=values.len())
                        .map(|i| Field::new(format!("${i}"), DataType::Utf8, true))
                        .collect();
                    let columns: Vec<ArrayRef> = values
                        .iter()
                        .map(|v| Arc::new(StringArray::from(vec![v.as_str()])) as ArrayRef)
                        .collect();
                    let batch =
                        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
                    match prepared.set_parameters(batch) {
                        Err(e) => Err(e),
                        Ok(()) => prepared.execute().await,
                    }
                }
            }
        };
        let info = match info {
            Ok(info) => info,
            Err(e) => return self.error(asked, &e).map(Err),
        };
        let (schema, batches) = match self.fetch(asked, info).await? {
            Ok(answer) => answer,
            Err(failed) => return Ok(Err(failed)),
        };
        let text = pretty_format_batches(&batches)
            .map(|t| t.to_string())
            .unwrap_or_default();
        // EXPLAIN text is metadata (counts are facts there); rows may show visible counts.
        let channel = if s.explain.is_some() {
            "EXPLAIN"
        } else {
            "rows"
        };
        self.leak(asked, channel, &text, s.explain.is_none())?;
        Ok(Ok(Answer::of(&schema, &batches)))
    }

    /// Flight's answer and the Postgres port's: the same rows, or both refused with the
    /// same kind of error.
    fn same_on_both_doors(
        &self,
        flight: &Result<Answer, (Code, String)>,
        postgres: &Result<Answer, (String, String)>,
    ) -> Result<(), Finding> {
        let differs =
            |flight: String, postgres: String| Err(Finding::Protocols { flight, postgres });
        // A timeout depends on the moment; what the test client cannot decode, on it.
        if matches!(flight, Err((Code::DeadlineExceeded, _)))
            || matches!(postgres, Err((s, _)) if s == "57014" || s == "undecodable")
        {
            return Ok(());
        }
        match (flight, postgres) {
            (Ok(f), Ok(p)) if f == p => Ok(()),
            (Ok(f), Ok(p)) => differs(f.show(), p.show()),
            (Err((code, m)), Err((state, pm))) => {
                let refused = |c: &Code| matches!(c, Code::PermissionDenied);
                if refused(code) != (state == "42501") {
                    return differs(format!("{code:?}: {m}"), format!("{state}: {pm}"));
                }
                Ok(())
            }
            (Ok(f), Err((state, m))) => differs(f.show(), format!("{state}: {m}")),
            (Err((code, m)), Ok(p)) => differs(format!("{code:?}: {m}"), p.show()),
        }
    }

    /// The statement through the Postgres port (extended protocol, parameters sent as
    /// text as Flight's are, binary rows); every byte checked as on Flight.
    async fn postgres(
        &mut self,
        s: &Statement,
        sql: &str,
    ) -> Result<Result<Answer, (String, String)>, Finding> {
        use tokio_postgres::types::{ToSql, Type};
        let asked = format!("{sql} {}", s.params.join(" "));
        let values: Vec<String> = s
            .params
            .iter()
            .map(|p| p.trim_matches('\'').replace("''", "'"))
            .collect();
        let types = vec![Type::TEXT; values.len()];
        let run = async {
            let statement = self.pg.prepare_typed(sql, &types).await?;
            let params: Vec<&(dyn ToSql + Sync)> =
                values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            let rows = self.pg.query(&statement, &params).await?;
            Ok::<_, tokio_postgres::Error>((statement, rows))
        };
        let (statement, rows) = match run.await {
            Ok(r) => r,
            Err(e) => {
                self.leak(&asked, "postgres error", &format!("{e} {e:?}"), false)?;
                let (state, message) = match e.as_db_error() {
                    Some(db) => (db.code().code().to_string(), db.message().to_string()),
                    None => ("connection".to_string(), e.to_string()),
                };
                return Ok(Err((state, message)));
            }
        };
        self.leak(
            &asked,
            "postgres row description",
            &format!("{:?}", statement.columns()),
            false,
        )?;
        let batch = match crate::common::pg::rows_to_batch(statement.columns(), &rows) {
            Ok(b) => b,
            Err(why) => return Ok(Err(("undecodable".into(), why))),
        };
        let text = pretty_format_batches(std::slice::from_ref(&batch))
            .map(|t| t.to_string())
            .unwrap_or_default();
        let channel = if s.explain.is_some() {
            "postgres EXPLAIN"
        } else {
            "postgres rows"
        };
        self.leak(&asked, channel, &text, s.explain.is_none())?;
        Ok(Ok(Answer::of(&batch.schema(), &[batch])))
    }

    fn error(
        &self,
        asked: &str,
        e: &arrow_flight::error::FlightError,
    ) -> Result<(Code, String), Finding> {
        let text = format!("{e} {e:?}");
        self.leak(asked, "error", &text, false)?;
        let code = match e {
            arrow_flight::error::FlightError::Tonic(s) => s.code(),
            _ => Code::Unknown,
        };
        Ok((code, e.to_string()))
    }

    /// Every endpoint of `info`: the FlightInfo, announced and streamed schemas, batches.
    async fn fetch(
        &mut self,
        asked: &str,
        info: FlightInfo,
    ) -> Result<Result<(Schema, Vec<RecordBatch>), (Code, String)>, Finding> {
        let mut shown = info.clone();
        shown.endpoint.iter_mut().for_each(|e| e.ticket = None);
        self.leak(asked, "FlightInfo", &format!("{shown:?}"), false)?;
        let announced = info.clone().try_decode_schema().unwrap();
        self.leak(asked, "schema", &format!("{announced:?}"), false)?;
        let mut batches = Vec::new();
        for ep in info.endpoint {
            let mut stream = match self.client.do_get(ep.ticket.unwrap()).await {
                Ok(s) => s,
                Err(e) => return self.error(asked, &e).map(Err),
            };
            loop {
                match stream.try_next().await {
                    Ok(Some(b)) => {
                        self.leak(asked, "batch schema", &format!("{:?}", b.schema()), false)?;
                        batches.push(b);
                    }
                    Ok(None) => break,
                    Err(e) => return self.error(asked, &e).map(Err),
                }
            }
        }
        Ok(Ok((announced, batches)))
    }

    /// Smaller statements that fail the same way, greedily, as far as they go.
    pub(crate) async fn shrink(&mut self, mut s: Statement, finding: &Finding) -> Statement {
        let mut budget = 300;
        'outer: while budget > 0 {
            for candidate in s.shrinks() {
                budget -= 1;
                if budget == 0 {
                    break 'outer;
                }
                if let Err(f) = self.check(&candidate).await
                    && f.same_kind(finding)
                {
                    s = candidate;
                    continue 'outer;
                }
            }
            break;
        }
        s
    }

    /// One metadata call (Flight SQL's catalog RPCs, meshgate's catalog API), checked.
    pub(crate) async fn metadata(&mut self, rng: &mut StdRng, table: &str) -> Result<(), Finding> {
        let (schema, name) = table.split_once('.').unwrap();
        let pattern = |rng: &mut StdRng| {
            let p = *["%", "cust%", "%_v1", "accounts", "web%", "%o%"]
                .choose(rng)
                .unwrap();
            rng.random_bool(0.7).then(|| p.to_string())
        };
        let info = match rng.random_range(0..8) {
            0 => self.client.get_catalogs().await,
            1 => {
                self.client
                    .get_db_schemas(CommandGetDbSchemas {
                        catalog: None,
                        db_schema_filter_pattern: pattern(rng),
                    })
                    .await
            }
            2 | 3 => {
                self.client
                    .get_tables(CommandGetTables {
                        catalog: None,
                        db_schema_filter_pattern: pattern(rng),
                        table_name_filter_pattern: pattern(rng),
                        table_types: vec![],
                        include_schema: true,
                    })
                    .await
            }
            4 => self.client.get_table_types().await,
            5 => self.client.get_sql_info(vec![]).await,
            6 => {
                self.client
                    .get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None })
                    .await
            }
            _ => {
                self.client
                    .get_primary_keys(CommandGetPrimaryKeys {
                        catalog: None,
                        db_schema: Some(schema.to_string()),
                        table: name.to_string(),
                    })
                    .await
            }
        };
        match info {
            Err(e) => {
                self.error("", &e)?;
            }
            Ok(info) => {
                if let Ok((_, batches)) = self.fetch("", info).await? {
                    let text = pretty_format_batches(&batches)
                        .map(|t| t.to_string())
                        .unwrap_or_default();
                    self.leak("", "metadata rows", &text, false)?;
                    // GetTables' schemas travel as IPC bytes: decoded, field metadata too.
                    for b in &batches {
                        let Some(column) = b.column_by_name("table_schema") else {
                            continue;
                        };
                        let Some(ipc) = column.as_binary_opt::<i32>() else {
                            continue;
                        };
                        for bytes in ipc.iter().flatten() {
                            let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(bytes)
                                .expect("GetTables answers a decodable schema");
                            self.leak("", "table schema", &format!("{schema:?}"), false)?;
                        }
                    }
                }
            }
        }
        self.catalog_api(table).await
    }

    /// meshgate's catalog API: the product list and one product's description.
    async fn catalog_api(&mut self, table: &str) -> Result<(), Finding> {
        fn authed<T>(token: &str, r: T) -> tonic::Request<T> {
            let mut req = tonic::Request::new(r);
            req.metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            req
        }
        let token = self.client.token().cloned().unwrap_or_default();
        let mut catalog = CatalogServiceClient::new(self.server.channel().await);
        let list = catalog
            .list_products(authed(&token, ListProductsRequest::default()))
            .await;
        self.leak("", "catalog list", &format!("{list:?}"), false)?;
        let described = catalog
            .describe_product(authed(
                &token,
                DescribeProductRequest {
                    name: table.to_string(),
                },
            ))
            .await;
        self.leak("", "catalog describe", &format!("{described:?}"), false)
    }
}

/// The catalog page (no login) checked against what a guest may see.
pub(crate) async fn catalog_pages(
    server: &TestServer,
    guest: &RoleView,
    tables: &[Table],
) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut paths = vec!["/catalog".to_string()];
    for t in tables {
        let (domain, name) = t.name.split_once('.').unwrap();
        paths.push(format!("/catalog/{domain}/{name}"));
    }
    for path in paths {
        let page = crate::common::http_get(server.server.http_addr, &path).await;
        if let Some(found) = guest.forbidden.in_answer_to("", &page, false) {
            out.push(Finding::leak("catalog page", found, &page));
        }
    }
    out
}
