//! Arrow Flight SQL over the gateway. Every RPC but the handshake starts by checking the
//! caller's token; statements re-plan as the caller in DoGet, so a ticket never carries
//! results, only a signed statement bound to its principal.

use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionBeginSavepointRequest, ActionBeginSavepointResult, ActionBeginTransactionRequest,
    ActionBeginTransactionResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult,
    ActionCreatePreparedSubstraitPlanRequest, ActionEndSavepointRequest,
    ActionEndTransactionRequest, Any, CommandGetCatalogs, CommandGetCrossReference,
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementIngest,
    CommandStatementQuery, CommandStatementSubstraitPlan, CommandStatementUpdate,
    DoPutPreparedStatementResult, Nullable, ProstMessageExt, Searchable, SqlInfo,
    SqlSupportedTransaction, TicketStatementQuery, XdbcDataType,
};
use arrow_flight::{
    Action, ActionType, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, IpcMessage, SchemaAsIpc, Ticket,
};
use futures::{Stream, TryStreamExt};
use meshgate_policy::Principal;
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::audit::{AuditRecord, redact_sql};
use crate::auth::now;
use crate::gateway::Gateway;
use crate::query::{ErrorKind, Execution, QueryError, decode_params, encode_params};
use crate::session_options;

/// The Flight SQL service; cheap to clone.
#[derive(Clone)]
pub struct MeshFlightSql {
    gateway: Arc<Gateway>,
}

impl MeshFlightSql {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        MeshFlightSql { gateway }
    }

    fn caller<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        self.gateway.caller(request.metadata())
    }

    fn record<T>(&self, request: &Request<T>, principal: &Principal, kind: &str) -> AuditRecord {
        AuditRecord::new(principal, &peer(request.remote_addr()), kind, "flight")
    }

    /// A statement refused at planning is audited here; one that plans is audited when it
    /// runs, in DoGet.
    fn audit_refusal<T, R>(
        &self,
        request: &Request<T>,
        principal: &Principal,
        kind: &str,
        sql: &str,
        started: Instant,
        result: &Result<R, Status>,
    ) {
        if let Err(s) = result {
            let mut record = self.record(request, principal, kind);
            record.sql = Some(redact_sql(sql));
            self.gateway
                .audit_now(record, started, Err(&query_error(s)));
        }
    }

    /// Plans and returns the FlightInfo of a statement (of the prepared statement
    /// `prepared`, if given); nothing runs. The plan is kept for the DoGet of its ticket.
    async fn statement_info(
        &self,
        principal: &Principal,
        sql: &str,
        params: Option<String>,
        descriptor: FlightDescriptor,
        execution: Option<Execution>,
        prepared: Option<&[u8]>,
    ) -> Result<FlightInfo, Status> {
        let batch = decode(params.as_deref())?;
        let engine = &self.gateway.query;
        let planned = match prepared {
            Some(handle) => {
                engine
                    .plan_prepared(principal, handle, sql, batch.as_ref(), execution)
                    .await
            }
            None => engine.plan(principal, sql, batch.as_ref(), execution).await,
        }
        .map_err(status)?;
        let handle = self.gateway.envelope(principal, sql, params, execution);
        let schema = Arc::clone(&planned.wire_schema);
        engine.keep(&handle, principal, execution, planned);
        let ticket = TicketStatementQuery {
            statement_handle: handle.into(),
        };
        let endpoint =
            FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec()));
        FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(e.to_string()))
            .map(|i| {
                i.with_endpoint(endpoint)
                    .with_descriptor(descriptor)
                    .with_total_records(-1)
                    .with_ordered(true)
            })
    }

    /// Re-plans a sealed statement as the caller and streams its result.
    async fn run_sealed(
        &self,
        request_meta: (Principal, AuditRecord),
        handle: &[u8],
        fallback_params: Option<String>,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let (principal, mut record) = request_meta;
        let started = Instant::now();
        let result = async {
            let envelope = self.gateway.signer.open_envelope(handle, &principal)?;
            let execution = session_options::execution(metadata, envelope.exec.as_deref())?;
            record.sql = Some(redact_sql(&envelope.sql));
            let epoch = self.gateway.mesh().epoch().to_string();
            if envelope.epoch != epoch {
                record.ticket_epoch = Some(envelope.epoch.clone());
            }
            record.catalog_epoch = Some(epoch);
            let engine = &self.gateway.query;
            let permit = engine.slot(&principal).await.map_err(status)?;
            let planned = match engine.take(handle, &principal, execution) {
                Some(planned) => planned,
                None => {
                    let params = envelope.params.or(fallback_params);
                    let batch = decode(params.as_deref())?;
                    engine
                        .plan(&principal, &envelope.sql, batch.as_ref(), execution)
                        .await
                        .map_err(status)?
                }
            };
            let schema = Arc::clone(&planned.wire_schema);
            let batches = engine
                .execute(planned, permit, record.clone(), started)
                .map_err(status)?
                .map_err(status);
            Ok::<_, Status>((schema, batches))
        }
        .await;
        match result {
            Ok((schema, batches)) => Ok(Response::new(encode(schema, batches))),
            Err(s) => {
                self.gateway
                    .audit_now(record, started, Err(&query_error(&s)));
                Err(s)
            }
        }
    }

    fn metadata_info<M: ProstMessageExt>(
        &self,
        command: &M,
        schema: &Schema,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let endpoint =
            FlightEndpoint::new().with_ticket(Ticket::new(command.as_any().encode_to_vec()));
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_endpoint(endpoint)
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }

    /// Audits a metadata request and streams its one batch.
    fn metadata_batch<T>(
        &self,
        request: &Request<T>,
        principal: &Principal,
        kind: &str,
        batch: Result<RecordBatch, impl std::fmt::Display>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let started = Instant::now();
        let mut record = self.record(request, principal, kind);
        let batch = batch.map_err(|e| Status::internal(e.to_string()));
        match &batch {
            Ok(b) => {
                record.rows = b.num_rows() as u64;
                self.gateway.audit_now(record, started, Ok(()));
            }
            Err(s) => self
                .gateway
                .audit_now(record, started, Err(&query_error(s))),
        }
        let batch = batch?;
        let schema = batch.schema();
        Ok(Response::new(encode(
            schema,
            futures::stream::once(async { Ok(batch) }),
        )))
    }

    /// Keys are not part of a contract: every key RPC answers empty but well-formed.
    fn no_keys<T>(
        &self,
        request: &Request<T>,
        kind: &str,
        primary: bool,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let principal = self.caller(request)?;
        let batch = RecordBatch::new_empty(Arc::new(keys_schema(primary)));
        self.metadata_batch(request, &principal, kind, Ok::<_, Status>(batch))
    }

    /// Every table of the mesh as (domain, name, schema), in name order, each schema in
    /// the types `principal` reads (a hashed number is a string), as its queries answer.
    async fn tables(&self, principal: &Principal) -> Vec<(String, String, SchemaRef)> {
        let session = self.gateway.session(principal);
        let Some(catalog) = session.context().catalog(meshgate_mesh::CATALOG) else {
            return vec![];
        };
        let mut out = Vec::new();
        for domain in catalog.schema_names() {
            let Some(schema) = catalog.schema(&domain) else {
                continue;
            };
            let mut names = schema.table_names();
            names.sort();
            for name in names {
                if let Ok(Some(t)) = schema.table(&name).await {
                    let schema = self.gateway.query.wire_schema(&with_remarks(t.as_ref()));
                    out.push((domain.clone(), name, schema));
                }
            }
        }
        out
    }
}

/// Descriptions from the contract, as Flight SQL remarks: on each column (the key JDBC's
/// `getColumns` reads), and on the schema itself for the table, with its owner and version,
/// since `GetTables` has no column of its own for them.
fn with_remarks(table: &dyn datafusion::catalog::TableProvider) -> SchemaRef {
    let schema = table.schema();
    let product_table = meshgate_policy::CallerTable::from_provider(table)
        .map_or(table, |view| view.product_table().as_ref());
    let Some(ct) = meshgate_mesh::ContractTable::from_provider(product_table) else {
        return schema;
    };
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let mut f = f.as_ref().clone();
            if let Some(c) = ct.product().contract.column(f.name()) {
                let mut md = f.metadata().clone();
                md.extend(meaning_metadata(c));
                f = f.with_metadata(md);
            }
            f
        })
        .collect();
    let contract = &ct.product().contract;
    let mut md = std::collections::HashMap::from([
        ("meshgate:owner".to_string(), contract.owner.to_string()),
        ("meshgate:version".to_string(), contract.version.to_string()),
    ]);
    if let Some(d) = &contract.description {
        md.insert("ARROW:FLIGHT:SQL:REMARKS".into(), d.clone());
    }
    Arc::new(Schema::new_with_metadata(fields, md))
}

/// A column's meaning as field metadata: the remark tools show (description, unit and
/// labels in one text), and the unit and labels apart for programs
/// (`meshgate:values` is a JSON list of `{value, label, description}`).
pub(crate) fn meaning_metadata(c: &meshgate_contract::Column) -> Vec<(String, String)> {
    let mut md = Vec::new();
    if let Some(remark) = c.comment() {
        md.push(("ARROW:FLIGHT:SQL:REMARKS".to_string(), remark));
    }
    if let Some(unit) = &c.unit {
        md.push(("meshgate:unit".to_string(), unit.clone()));
    }
    if let Some(values) = &c.values {
        let json = serde_json::to_string(values).expect("labels serialize");
        md.push(("meshgate:values".to_string(), json));
    }
    md
}

type DoGetStream =
    Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send + 'static>>;

fn encode(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, Status>> + Send + 'static,
) -> DoGetStream {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches.map_err(|s| FlightError::Tonic(Box::new(s))))
        .map_err(Status::from);
    Box::pin(stream)
}

static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "meshgate");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(SqlInfo::SqlQuotedIdentifierCase, 3i32); // case sensitive
    b.append(SqlInfo::SqlIdentifierCase, 2i32); // lowercase
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.append(SqlInfo::SqlNullOrdering, 2i32); // nulls at end? DataFusion: NULLS LAST asc
    b.append(SqlInfo::SqlSearchStringEscape, "\\");
    b.append(SqlInfo::SqlExtraNameCharacters, "");
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    b.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
    b.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
    b.append(SqlInfo::SqlSupportsNonNullableColumns, true);
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlSchemaTerm, "domain");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.append(SqlInfo::SqlMaxColumnNameLength, 63i64);
    b.build().expect("static SQL info")
});

static XDBC_INFO: LazyLock<XdbcTypeInfoData> = LazyLock::new(|| {
    let mut b = XdbcTypeInfoDataBuilder::new();
    let mut add = |name: &str, data_type: XdbcDataType, size: Option<i32>, literal: bool| {
        b.append(XdbcTypeInfo {
            type_name: name.into(),
            data_type,
            column_size: size,
            literal_prefix: literal.then(|| "'".into()),
            literal_suffix: literal.then(|| "'".into()),
            create_params: None,
            nullable: Nullable::NullabilityNullable,
            case_sensitive: literal,
            searchable: Searchable::Full,
            unsigned_attribute: Some(false),
            fixed_prec_scale: false,
            auto_increment: Some(false),
            local_type_name: Some(name.into()),
            minimum_scale: None,
            maximum_scale: None,
            sql_data_type: data_type,
            datetime_subcode: None,
            num_prec_radix: None,
            interval_precision: None,
        });
    };
    add("VARCHAR", XdbcDataType::XdbcVarchar, Some(i32::MAX), true);
    add("INTEGER", XdbcDataType::XdbcInteger, Some(32), false);
    add("BIGINT", XdbcDataType::XdbcBigint, Some(64), false);
    add("DOUBLE", XdbcDataType::XdbcDouble, Some(53), false);
    add("DECIMAL", XdbcDataType::XdbcDecimal, Some(38), false);
    add("BOOLEAN", XdbcDataType::XdbcBit, Some(1), false);
    add("DATE", XdbcDataType::XdbcDate, None, true);
    add("TIMESTAMP", XdbcDataType::XdbcTimestamp, None, true);
    b.build().expect("static XDBC info")
});

fn keys_schema(primary: bool) -> Schema {
    let s = |n: &str, nullable| Field::new(n, DataType::Utf8, nullable);
    if primary {
        return Schema::new(vec![
            s("catalog_name", true),
            s("db_schema_name", true),
            s("table_name", false),
            s("column_name", false),
            s("key_name", true),
            Field::new("key_sequence", DataType::Int32, false),
        ]);
    }
    Schema::new(vec![
        s("pk_catalog_name", true),
        s("pk_db_schema_name", true),
        s("pk_table_name", false),
        s("pk_column_name", false),
        s("fk_catalog_name", true),
        s("fk_db_schema_name", true),
        s("fk_table_name", false),
        s("fk_column_name", false),
        Field::new("key_sequence", DataType::Int32, false),
        s("fk_key_name", true),
        s("pk_key_name", true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ])
}

fn read_only() -> Status {
    Status::permission_denied("meshgate is read-only: updates and ingestion are not accepted")
}

#[tonic::async_trait]
impl FlightSqlService for MeshFlightSql {
    type FlightService = MeshFlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let started = Instant::now();
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        // JDBC's `token=` sends the bearer token it already has to the handshake: a new
        // token, within the same session (refreshing never extends it).
        let ip = request.remote_addr().map(|a| a.ip());
        let bearer = header
            .trim()
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_string());
        let gateway = &self.gateway;
        let result = match bearer {
            // An identity provider's token: a new session, as with a password.
            Some(token) if gateway.is_token(&token) => match gateway.throttle.check(ip) {
                Err(e) => Err(e),
                Ok(()) => gateway.token_login(&token, None).await.map_err(|m| {
                    gateway.throttle.failed(ip);
                    Status::unauthenticated(m)
                }),
            },
            Some(token) => self
                .caller(&request)
                .and_then(|p| Ok((p, gateway.signer.verify_token(&token)?.end))),
            None => match gateway.throttle.check(ip) {
                Err(e) => Err(e),
                Ok(()) => {
                    let verified = match crate::auth::basic_credentials(&header) {
                        // Clients that only send Basic give the provider's token as the
                        // password.
                        Ok((name, password)) if gateway.is_token(&password) => gateway
                            .token_login(&password, Some(&name))
                            .await
                            .map_err(Status::unauthenticated),
                        Ok(_) => gateway
                            .users()
                            .verify_basic(&header)
                            .map(|p| (p, now() + gateway.config.max_session_secs)),
                        Err(e) => Err(e),
                    };
                    if verified.is_err() {
                        gateway.throttle.failed(ip);
                    }
                    verified
                }
            },
        };
        let mut record = AuditRecord {
            time: chrono::Utc::now().to_rfc3339(),
            client: peer(request.remote_addr()),
            kind: "handshake".into(),
            protocol: "flight".into(),
            ..Default::default()
        };
        let (principal, end) = match result {
            Ok(p) => p,
            Err(s) => {
                self.gateway
                    .audit_now(record, started, Err(&query_error(&s)));
                return Err(s);
            }
        };
        record.principal = principal.name.clone();
        record.issuer = principal.issuer.clone();
        record.roles = principal.roles.iter().cloned().collect();
        self.gateway.audit_now(record, started, Ok(()));
        let token =
            self.gateway
                .signer
                .mint_token(&principal, self.gateway.config.token_ttl_secs, end);
        let response = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let stream: Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>> =
            Box::pin(futures::stream::once(async { Ok(response) }));
        let mut response = Response::new(stream);
        let value = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| Status::internal("token is not a valid header"))?;
        response.metadata_mut().insert("authorization", value);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let principal = self.caller(&request)?;
        let execution = session_options::execution(request.metadata(), None)?;
        let descriptor = request.get_ref().clone();
        let started = Instant::now();
        let result = self
            .statement_info(&principal, &query.query, None, descriptor, execution, None)
            .await;
        self.audit_refusal(
            &request,
            &principal,
            "statement",
            &query.query,
            started,
            &result,
        );
        result.map(Response::new)
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let principal = self.caller(&request)?;
        let handle = cmd.prepared_statement_handle.as_ref();
        let envelope = self.gateway.signer.open_envelope(handle, &principal)?;
        let params = envelope
            .params
            .or_else(|| self.gateway.recall_params(handle));
        let execution = session_options::execution(request.metadata(), envelope.exec.as_deref())?;
        let descriptor = request.get_ref().clone();
        let started = Instant::now();
        let result = self
            .statement_info(
                &principal,
                &envelope.sql,
                params,
                descriptor,
                execution,
                Some(handle),
            )
            .await;
        self.audit_refusal(
            &request,
            &principal,
            "prepared",
            &envelope.sql,
            started,
            &result,
        );
        result.map(Response::new)
    }

    async fn get_flight_info_substrait_plan(
        &self,
        _query: CommandStatementSubstraitPlan,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented(
            "meshgate accepts SQL, not Substrait plans",
        ))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let principal = self.caller(&request)?;
        let record = self.record(&request, &principal, "statement");
        self.run_sealed(
            (principal, record),
            &ticket.statement_handle,
            None,
            request.metadata(),
        )
        .await
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let principal = self.caller(&request)?;
        let record = self.record(&request, &principal, "prepared");
        let handle = query.prepared_statement_handle.as_ref();
        let fallback = self.gateway.recall_params(handle);
        self.run_sealed((principal, record), handle, fallback, request.metadata())
            .await
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request)?;
        let schema = query.into_builder().schema();
        self.metadata_info(&query, &schema, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let principal = self.caller(&request)?;
        let mut b = query.into_builder();
        b.append(meshgate_mesh::CATALOG);
        self.metadata_batch(&request, &principal, "get_catalogs", b.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request)?;
        let schema = query.clone().into_builder().schema();
        self.metadata_info(&query, &schema, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        use datafusion::catalog::CatalogProvider;
        let principal = self.caller(&request)?;
        let mut b = query.into_builder();
        for domain in self.gateway.mesh().catalog().schema_names() {
            b.append(meshgate_mesh::CATALOG, domain);
        }
        self.metadata_batch(&request, &principal, "get_db_schemas", b.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request)?;
        let schema = query.clone().into_builder().schema();
        self.metadata_info(&query, &schema, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let principal = self.caller(&request)?;
        let mut b = query.into_builder();
        for (domain, name, schema) in self.tables(&principal).await {
            b.append(meshgate_mesh::CATALOG, domain, name, "TABLE", &schema)
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        self.metadata_batch(&request, &principal, "get_tables", b.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request)?;
        let schema = query.into_builder().schema();
        self.metadata_info(&query, &schema, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let principal = self.caller(&request)?;
        let mut b = query.into_builder();
        b.append("TABLE");
        self.metadata_batch(&request, &principal, "get_table_types", b.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request)?;
        let schema = query.clone().into_builder(&SQL_INFO).schema();
        self.metadata_info(&query, &schema, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let principal = self.caller(&request)?;
        let batch = query.into_builder(&SQL_INFO).build();
        self.metadata_batch(&request, &principal, "get_sql_info", batch)
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request)?;
        let schema = query.into_builder(&XDBC_INFO).schema();
        self.metadata_info(&query, &schema, request.into_inner())
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let principal = self.caller(&request)?;
        let batch = query.into_builder(&XDBC_INFO).build();
        self.metadata_batch(&request, &principal, "get_xdbc_type_info", batch)
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request)?;
        self.metadata_info(&query, &keys_schema(true), request.into_inner())
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.no_keys(&request, "get_primary_keys", true)
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request)?;
        self.metadata_info(&query, &keys_schema(false), request.into_inner())
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.no_keys(&request, "get_imported_keys", false)
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request)?;
        self.metadata_info(&query, &keys_schema(false), request.into_inner())
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.no_keys(&request, "get_exported_keys", false)
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request)?;
        self.metadata_info(&query, &keys_schema(false), request.into_inner())
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.no_keys(&request, "get_cross_reference", false)
    }

    async fn do_put_statement_update(
        &self,
        _ticket: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.caller(&request)?;
        Err(read_only())
    }

    async fn do_put_statement_ingest(
        &self,
        _ticket: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.caller(&request)?;
        Err(read_only())
    }

    async fn do_put_prepared_statement_update(
        &self,
        _query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.caller(&request)?;
        Err(read_only())
    }

    async fn do_put_substrait_plan(
        &self,
        _query: CommandStatementSubstraitPlan,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.caller(&request)?;
        Err(Status::unimplemented(
            "meshgate accepts SQL, not Substrait plans",
        ))
    }

    /// Binds parameters: returns a new handle that carries them (stateless clients) and
    /// remembers them for the old handle (clients that ignore the new one).
    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let principal = self.caller(&request)?;
        let handle = query.prepared_statement_handle.to_vec();
        let envelope = self.gateway.signer.open_envelope(&handle, &principal)?;
        let stream = request
            .into_inner()
            .map_err(|s| FlightError::Tonic(Box::new(s)));
        let batches: Vec<RecordBatch> =
            arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(stream)
                .try_collect()
                .await
                .map_err(|e| Status::invalid_argument(format!("unreadable parameters: {e}")))?;
        let batches: Vec<_> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
        let [params] = batches.as_slice() else {
            return Err(Status::invalid_argument(
                "bind exactly one row of parameters per execution",
            ));
        };
        let encoded = encode_params(params).map_err(status)?;
        self.gateway.remember_params(&handle, &encoded);
        let sealed = envelope.exec.as_deref().map(Execution::parse).transpose();
        let new_handle = self.gateway.envelope(
            &principal,
            &envelope.sql,
            Some(encoded),
            sealed.map_err(status)?,
        );
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(new_handle.into()),
        })
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        self.caller(&request)?;
        let metadata = request.metadata().clone();
        let action = request.into_inner();
        let answer = session_options::answer(&action.r#type, &action.body, &metadata)
            .unwrap_or_else(|| {
                Err(Status::invalid_argument(format!(
                    "unknown action {:?}",
                    action.r#type
                )))
            })?;
        let result = arrow_flight::Result {
            body: answer.body.into(),
        };
        let mut response: Response<<Self as FlightService>::DoActionStream> =
            Response::new(Box::pin(futures::stream::iter([Ok(result)])));
        if let Some(cookie) = answer.set_cookie {
            let value = cookie
                .parse()
                .map_err(|_| Status::internal("a session cookie that is not header text"))?;
            response.metadata_mut().insert("set-cookie", value);
        }
        Ok(response)
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        Some(
            session_options::ACTIONS
                .iter()
                .map(|(kind, description)| {
                    Ok(ActionType {
                        r#type: kind.to_string(),
                        description: description.to_string(),
                    })
                })
                .collect(),
        )
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let principal = self.caller(&request)?;
        let execution = session_options::execution(request.metadata(), None)?;
        let handle = self
            .gateway
            .envelope(&principal, &query.query, None, execution);
        let (dataset, parameters) = self
            .gateway
            .query
            .describe(&principal, &query.query, Some(&handle))
            .await
            .map_err(status)?;
        let ipc = |s: &Schema| -> Result<Vec<u8>, Status> {
            let IpcMessage(bytes) = SchemaAsIpc::new(s, &IpcWriteOptions::default())
                .try_into()
                .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
            Ok(bytes.to_vec())
        };
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into(),
            dataset_schema: ipc(&dataset)?.into(),
            // No parameters: no parameter schema, as clients expect.
            parameter_schema: if parameters.fields().is_empty() {
                Default::default()
            } else {
                ipc(&parameters)?.into()
            },
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let principal = self.caller(&request)?;
        let handle = query.prepared_statement_handle.as_ref();
        self.gateway.signer.open_envelope(handle, &principal)?;
        self.gateway.forget_params(handle);
        Ok(())
    }

    async fn do_action_create_prepared_substrait_plan(
        &self,
        _query: ActionCreatePreparedSubstraitPlanRequest,
        _request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        Err(Status::unimplemented(
            "meshgate accepts SQL, not Substrait plans",
        ))
    }

    async fn do_action_begin_transaction(
        &self,
        _query: ActionBeginTransactionRequest,
        _request: Request<Action>,
    ) -> Result<ActionBeginTransactionResult, Status> {
        Err(Status::unimplemented(
            "meshgate is read-only: no transactions",
        ))
    }

    async fn do_action_end_transaction(
        &self,
        _query: ActionEndTransactionRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        Err(Status::unimplemented(
            "meshgate is read-only: no transactions",
        ))
    }

    async fn do_action_begin_savepoint(
        &self,
        _query: ActionBeginSavepointRequest,
        _request: Request<Action>,
    ) -> Result<ActionBeginSavepointResult, Status> {
        Err(Status::unimplemented(
            "meshgate is read-only: no savepoints",
        ))
    }

    async fn do_action_end_savepoint(
        &self,
        _query: ActionEndSavepointRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        Err(Status::unimplemented(
            "meshgate is read-only: no savepoints",
        ))
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        _message: Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.caller(&request)?;
        Err(Status::invalid_argument("unknown ticket"))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// The parameters a handle or ticket carries, as the row the query path binds.
fn decode(params: Option<&str>) -> Result<Option<RecordBatch>, Status> {
    params.map(decode_params).transpose().map_err(status)
}

/// The one mapping from the query path's failures to gRPC.
pub(crate) fn status(e: QueryError) -> Status {
    let code = match e.kind {
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::Cancelled => Code::Cancelled,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::Internal => Code::Internal,
    };
    let mut status = Status::new(code, e.message);
    if let Some(v) = e.retry_after.and_then(|s| s.to_string().parse().ok()) {
        status.metadata_mut().insert("retry-after", v);
    }
    status
}

/// A failure of the transport's own (authentication, a malformed request) as the audit
/// log records it.
pub(crate) fn query_error(s: &Status) -> QueryError {
    let kind = match s.code() {
        Code::Unauthenticated => ErrorKind::Unauthenticated,
        Code::PermissionDenied => ErrorKind::PermissionDenied,
        Code::FailedPrecondition => ErrorKind::FailedPrecondition,
        Code::ResourceExhausted => ErrorKind::ResourceExhausted,
        Code::DeadlineExceeded => ErrorKind::DeadlineExceeded,
        Code::Cancelled => ErrorKind::Cancelled,
        Code::Unavailable => ErrorKind::Unavailable,
        Code::Internal | Code::Unknown | Code::DataLoss => ErrorKind::Internal,
        Code::Ok
        | Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unimplemented => ErrorKind::InvalidArgument,
    };
    QueryError::new(kind, s.message())
}

/// The client's address, as the audit log names it.
pub(crate) fn peer(addr: Option<std::net::SocketAddr>) -> String {
    addr.map(|a| a.to_string())
        .unwrap_or_else(|| "unknown".into())
}
