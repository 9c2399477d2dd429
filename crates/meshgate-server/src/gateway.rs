//! The gateway's shared state and the query path every protocol route goes through:
//! plan as the caller, check, execute, stream, audit.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use datafusion::common::ParamValues;
use datafusion::error::DataFusionError;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream, execute_stream};
use datafusion::prelude::SessionConfig;
use datafusion::scalar::ScalarValue;
use futures::{FutureExt, StreamExt};
use meshgate_catalog::Mesh;
use meshgate_catalog::checks::ProductReport;
use meshgate_policy::{
    AppliedPolicy, ErrorClass, HashKey, MeshSession, Policy, Principal, SessionOptions,
    applied_policies, classify,
};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tracing::{error, warn};

use crate::audit::{AuditLog, AuditRecord, redact_text};
use crate::auth::{Envelope, LoginThrottle, Signer, Users, now};
use crate::config::{Secrets, ServerConfig};
use crate::metrics::{CodeLabel, KindLabel, Metrics};
use crate::routing::{Engine, Execution, Route, route};

pub struct Gateway {
    /// Swapped whole by the reloader; each request plans against one snapshot.
    mesh: std::sync::RwLock<Arc<Mesh>>,
    /// The last data-check report of each product, by display name.
    reports: std::sync::RwLock<std::collections::HashMap<String, ProductReport>>,
    pub(crate) config: ServerConfig,
    pub(crate) key: Arc<HashKey>,
    pub(crate) signer: Signer,
    /// Swapped whole when meshgate.yaml changes, like the mesh.
    users: std::sync::RwLock<Arc<Users>>,
    pub(crate) throttle: LoginThrottle,
    runtime: Arc<RuntimeEnv>,
    slots: Arc<Semaphore>,
    pub(crate) audit: AuditLog,
    pub(crate) metrics: Arc<Metrics>,
    /// Parameters bound through DoPut, by the hash of the handle they were bound to, for
    /// clients that keep using the old handle (flightsql-dbapi). Bounded; clients that use
    /// the updated handle never need it.
    bound: Mutex<BoundParams>,
    /// The Ballista cluster of `distributed:`, if any.
    cluster: Option<meshgate_cluster::Cluster>,
}

/// A statement planned as its caller, ready to execute.
pub(crate) struct Planned {
    pub(crate) physical: Arc<dyn ExecutionPlan>,
    /// What the client is told and sent (view types replaced unless configured).
    pub(crate) wire_schema: SchemaRef,
    pub(crate) applied: Vec<AppliedPolicy>,
    pub(crate) task: Arc<datafusion::execution::TaskContext>,
    pub(crate) route: Route,
    /// The cluster's job id, once a distributed query is accepted.
    pub(crate) job_id: Option<Arc<Mutex<Option<String>>>>,
}

impl Gateway {
    pub fn new(
        mesh: Arc<Mesh>,
        config: ServerConfig,
        secrets: Secrets,
    ) -> std::io::Result<Gateway> {
        let limits = &config.limits;
        let runtime = RuntimeEnvBuilder::new()
            // The mesh's stores (local, S3): they come from meshgate.yaml, which a contract
            // reload does not change.
            .with_object_store_registry(mesh.object_stores())
            .with_memory_pool(Arc::new(FairSpillPool::new(limits.memory_limit_mb << 20)))
            // DataFusion caches directory listings forever by default: published data
            // would stay invisible until a restart. Listing a product's folder is cheap.
            .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
            .build_arc()
            .map_err(std::io::Error::other)?;
        let key = Arc::new(secrets.hash_key);
        let cluster = config
            .distributed
            .as_ref()
            .map(|d| d.cluster(Arc::clone(&key)))
            .transpose()
            .map_err(|e| std::io::Error::other(format!("distributed: {e}")))?;
        Ok(Gateway {
            cluster,
            signer: Signer::with_previous(&secrets.token_key, &secrets.previous_token_keys),
            users: std::sync::RwLock::new(Arc::new(Users::new(&config.users))),
            throttle: LoginThrottle::new(config.limits.max_failed_logins_per_minute),
            key,
            slots: Arc::new(Semaphore::new(limits.max_concurrent_queries.max(1))),
            audit: AuditLog::open(config.audit_file.as_deref())?,
            metrics: Arc::new(Metrics::default()),
            bound: Mutex::new(BoundParams::default()),
            runtime,
            mesh: std::sync::RwLock::new(mesh),
            reports: Default::default(),
            config,
        })
    }

    /// The users as of now.
    pub(crate) fn users(&self) -> Arc<Users> {
        Arc::clone(&self.users.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn set_users(&self, users: Users) {
        *self.users.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(users);
    }

    /// The caller of an RPC, under the users configured now (see [`crate::auth::caller`]).
    pub(crate) fn caller(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Principal, Status> {
        crate::auth::caller(&self.signer, &self.users(), metadata)
    }

    /// The mesh as of now.
    pub(crate) fn mesh(&self) -> Arc<Mesh> {
        Arc::clone(&self.mesh.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn reports(&self) -> std::collections::HashMap<String, ProductReport> {
        self.reports
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_report(&self, report: ProductReport) {
        self.reports
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(report.product.clone(), report);
    }

    pub(crate) fn set_mesh(&self, mesh: Arc<Mesh>) {
        *self.mesh.write().unwrap_or_else(|e| e.into_inner()) = mesh;
    }

    pub(crate) fn session(&self, principal: &Principal) -> MeshSession {
        let mut config = SessionConfig::new();
        if let Some(n) = self.config.limits.target_partitions {
            config = config.with_target_partitions(n);
        }
        let options = SessionOptions {
            config,
            runtime: Arc::clone(&self.runtime),
        };
        MeshSession::with_options(
            &self.mesh(),
            Policy::new(principal.clone(), Arc::clone(&self.key)),
            options,
        )
    }

    /// Plans `sql` as `principal`, parameters bound, and builds the physical plan it will
    /// run, on the engine the routing rule picks: the schema announced is the schema of
    /// the plan that executes.
    pub(crate) async fn plan(
        &self,
        principal: &Principal,
        sql: &str,
        params: Option<&RecordBatch>,
        execution: Option<Execution>,
    ) -> Result<Planned, Status> {
        unwinding(self.plan_inner(principal, sql, params, execution)).await
    }

    async fn plan_inner(
        &self,
        principal: &Principal,
        sql: &str,
        params: Option<&RecordBatch>,
        execution: Option<Execution>,
    ) -> Result<Planned, Status> {
        let session = self.session(principal);
        let mut df = session.sql(sql).await.map_err(|e| self.status(&e))?;
        if let Some(params) = params {
            df = df
                .with_param_values(param_values(params)?)
                .map_err(|e| self.status(&e))?;
        }
        self.build(df, execution).await
    }

    /// Where `physical` runs. An EXPLAIN runs here, and says where its statement would.
    async fn route(
        &self,
        execution: Option<Execution>,
        physical: &Arc<dyn ExecutionPlan>,
    ) -> Result<Route, Status> {
        route(
            self.config.distributed.as_ref(),
            self.cluster.as_ref(),
            execution,
            physical,
        )
        .await
    }

    /// Analyzes, optimizes and physically plans a parsed statement, and routes it.
    async fn build(
        &self,
        df: datafusion::dataframe::DataFrame,
        execution: Option<Execution>,
    ) -> Result<Planned, Status> {
        let (state, plan) = df.into_parts();
        let optimized = state.optimize(&plan).map_err(|e| self.status(&e))?;
        let applied = applied_policies(&optimized);
        let mut physical = state
            .query_planner()
            .create_physical_plan(&optimized, &state)
            .await
            .map_err(|e| self.status(&e))?;
        let route = match &optimized {
            datafusion::logical_expr::LogicalPlan::Explain(explain) => {
                let inner = state
                    .query_planner()
                    .create_physical_plan(&explain.plan, &state)
                    .await
                    .map_err(|e| self.status(&e))?;
                let would = self.route(execution, &inner).await?;
                physical = explain_with_route(&physical, &would);
                Route {
                    engine: Engine::Local,
                    reason: "EXPLAIN".into(),
                }
            }
            // EXPLAIN ANALYZE runs its statement where the statement would run.
            datafusion::logical_expr::LogicalPlan::Analyze(_) => {
                self.route(execution, physical.children()[0]).await?
            }
            _ => self.route(execution, &physical).await?,
        };
        let mut task = state.task_ctx();
        let mut job_id = None;
        if route.engine == Engine::Distributed
            && let Some(cluster) = &self.cluster
        {
            // For EXPLAIN ANALYZE the statement goes to the cluster and the report is made
            // here, where the DistributedExec line names the job.
            let (statement, analyze) = match &optimized {
                datafusion::logical_expr::LogicalPlan::Analyze(a) => {
                    (a.input.as_ref(), Some(Arc::clone(&physical)))
                }
                other => (other, None),
            };
            let (for_cluster, cluster_task) = meshgate_cluster::plan_for_cluster(&state, statement)
                .await
                .map_err(|e| self.status(&e))?;
            let exec = cluster.exec(for_cluster);
            job_id = Some(exec.job_id_handle());
            let exec: Arc<dyn ExecutionPlan> = exec;
            physical = match analyze {
                Some(analyze) => {
                    use datafusion::physical_plan::execution_plan::{
                        ChildrenPropertiesMode, ReplaceChildrenOptions,
                    };
                    let recompute = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
                    analyze
                        .replace_children(vec![exec], recompute)
                        .map_err(|e| self.status(&e))?
                }
                None => exec,
            };
            task = cluster_task;
        }
        let wire_schema = self.wire_schema(&physical.schema());
        Ok(Planned {
            physical,
            wire_schema,
            applied,
            task,
            route,
            job_id,
        })
    }

    /// The schema a prepared statement announces before its parameters are bound.
    pub(crate) async fn describe(
        &self,
        principal: &Principal,
        sql: &str,
    ) -> Result<(SchemaRef, Schema), Status> {
        unwinding(self.describe_inner(principal, sql)).await
    }

    async fn describe_inner(
        &self,
        principal: &Principal,
        sql: &str,
    ) -> Result<(SchemaRef, Schema), Status> {
        let session = self.session(principal);
        let df = session.sql(sql).await.map_err(|e| self.status(&e))?;
        let params = df
            .logical_plan()
            .get_parameter_types()
            .map_err(|e| self.status(&e))?;
        if params.is_empty() {
            // Parsed once: the same statement is planned through to its physical schema.
            let planned = self.build(df, Some(Execution::Local)).await?;
            return Ok((planned.wire_schema, Schema::empty()));
        }
        let (state, plan) = df.into_parts();
        let analyzed = state.optimize(&plan).map_err(|e| self.status(&e))?;
        let schema = self.wire_schema(&Arc::new(analyzed.schema().as_arrow().clone()));
        let mut names: Vec<_> = params.into_iter().collect();
        // $1, $2, … in order.
        names.sort_by_key(|(n, _)| {
            n.trim_start_matches('$')
                .parse::<usize>()
                .unwrap_or(usize::MAX)
        });
        let fields: Vec<Field> = names
            .into_iter()
            .map(|(n, t)| Field::new(n, t.unwrap_or(DataType::Utf8), true))
            .collect();
        Ok((schema, Schema::new(fields)))
    }

    fn wire_schema(&self, schema: &SchemaRef) -> SchemaRef {
        if self.config.view_types {
            return Arc::clone(schema);
        }
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_data_type(classic(f.data_type())))
            .collect();
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
    }

    /// A gRPC status for a query error, local or from the cluster: one mapping, so the same
    /// failure reads the same wherever it ran. Internal errors reach the caller as an id.
    pub(crate) fn status(&self, e: &DataFusionError) -> Status {
        let (class, message) = match meshgate_cluster::JobError::find(e) {
            Some(meshgate_cluster::JobError::Unavailable(why)) => {
                let id = uuid::Uuid::new_v4();
                warn!(error_id = %id, "the cluster failed a query: {}", redact_text(why));
                return Status::unavailable(format!(
                    "the cluster could not run this query (id {id}): try again, or run it \
                     here with x-meshgate-execution: local"
                ));
            }
            // A job that failed because of the query reads as it would here.
            Some(meshgate_cluster::JobError::Query { error, class, .. }) => (*class, error.clone()),
            None => classify(e),
        };
        match class {
            ErrorClass::PermissionDenied | ErrorClass::Refused => {
                Status::permission_denied(message)
            }
            ErrorClass::Quarantined => Status::failed_precondition(message),
            ErrorClass::InvalidQuery => Status::invalid_argument(message),
            ErrorClass::ResourcesExhausted => Status::resource_exhausted(message),
            ErrorClass::Internal => internal(&message),
        }
    }

    pub(crate) fn envelope(
        &self,
        principal: &Principal,
        sql: &str,
        params: Option<String>,
        execution: Option<Execution>,
    ) -> Vec<u8> {
        self.signer.seal_envelope(&Envelope {
            sub: principal.name.clone(),
            roles: principal.roles.iter().cloned().collect(),
            sql: sql.to_string(),
            params,
            epoch: self.mesh().epoch().to_string(),
            exp: now() + self.config.token_ttl_secs,
            exec: execution.map(|e| e.to_string()),
        })
    }

    pub(crate) fn remember_params(&self, handle: &[u8], params: &str) {
        let mut bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
        bound.insert(handle, params.to_string());
    }

    pub(crate) fn recall_params(&self, handle: &[u8]) -> Option<String> {
        let bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
        bound.get(handle)
    }

    pub(crate) fn forget_params(&self, handle: &[u8]) {
        let mut bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
        bound.remove(handle);
    }

    /// Waits for a query slot; RESOURCE_EXHAUSTED when none frees up in time.
    pub(crate) async fn slot(&self) -> Result<OwnedSemaphorePermit, Status> {
        let wait = self.config.limits.queue_timeout();
        match tokio::time::timeout(wait, Arc::clone(&self.slots).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Status::resource_exhausted(format!(
                "too many concurrent queries: no slot freed up within {}s",
                wait.as_secs()
            ))),
        }
    }

    /// Executes a planned query as a stream of batches in the wire schema, under the
    /// query timeout; the audit record is written when the stream ends or is dropped
    /// (client gone: the query is cancelled with it).
    pub(crate) fn execute(
        self: &Arc<Self>,
        planned: Planned,
        permit: OwnedSemaphorePermit,
        mut record: AuditRecord,
        started: Instant,
    ) -> Result<impl futures::Stream<Item = Result<RecordBatch, Status>> + Send + 'static, Status>
    {
        let stream: SendableRecordBatchStream =
            execute_stream(Arc::clone(&planned.physical), planned.task)
                .map_err(|e| self.status(&e))?;
        fill_policies(&mut record, &planned.applied);
        record.engine = Some(planned.route.engine.to_string());
        record.route = Some(planned.route.reason.clone());
        self.metrics.active_queries.inc();
        let guard = QueryGuard {
            gateway: Arc::clone(self),
            job_id: planned.job_id,
            record,
            started,
            outcome: None,
            _permit: permit,
        };
        let deadline = tokio::time::Instant::now() + self.config.limits.query_timeout();
        let wire = planned.wire_schema;
        let state = (stream, guard, false);
        Ok(futures::stream::unfold(
            state,
            move |(mut stream, mut guard, done)| {
                let wire = Arc::clone(&wire);
                async move {
                    if done {
                        return None;
                    }
                    let next = tokio::select! {
                        next = std::panic::AssertUnwindSafe(stream.next()).catch_unwind() => match next {
                            Ok(next) => next,
                            Err(panic) => {
                                let s = panicked(panic);
                                guard.finish(Err(&s));
                                return Some((Err(s), (stream, guard, true)));
                            }
                        },
                        _ = tokio::time::sleep_until(deadline) => {
                            let s = Status::deadline_exceeded("query timeout reached");
                            guard.finish(Err(&s));
                            return Some((Err(s), (stream, guard, true)));
                        }
                    };
                    match next {
                        None => {
                            guard.finish(Ok(()));
                            None
                        }
                        Some(Ok(batch)) => match to_wire(&batch, &wire) {
                            Ok(batch) => {
                                guard.record.rows += batch.num_rows() as u64;
                                guard.record.bytes += batch.get_array_memory_size() as u64;
                                Some((Ok(batch), (stream, guard, false)))
                            }
                            Err(e) => {
                                let s = guard.gateway.status(&e);
                                guard.finish(Err(&s));
                                Some((Err(s), (stream, guard, true)))
                            }
                        },
                        Some(Err(e)) => {
                            let s = guard.gateway.status(&e);
                            guard.finish(Err(&s));
                            Some((Err(s), (stream, guard, true)))
                        }
                    }
                }
            },
        ))
    }

    /// Audits and counts a request that ended before streaming.
    pub(crate) fn audit_now(
        &self,
        mut record: AuditRecord,
        started: Instant,
        result: Result<(), &Status>,
    ) {
        record.duration_ms = started.elapsed().as_millis() as u64;
        self.count(&record.kind, started, result);
        set_outcome(&mut record, result);
        self.audit.record(&record);
    }

    fn count(&self, kind: &str, started: Instant, result: Result<(), &Status>) {
        let kind = KindLabel {
            kind: kind.to_string(),
        };
        self.metrics.requests.get_or_create(&kind).inc();
        self.metrics
            .latency
            .get_or_create(&kind)
            .observe(started.elapsed().as_secs_f64());
        if let Err(s) = result {
            self.metrics
                .errors
                .get_or_create(&CodeLabel {
                    code: format!("{:?}", s.code()),
                })
                .inc();
        }
    }
}

fn set_outcome(record: &mut AuditRecord, result: Result<(), &Status>) {
    match result {
        Ok(()) => record.outcome = "ok".into(),
        Err(s) => {
            record.outcome = format!("{:?}", s.code());
            // What failed, without the values the caller's error may quote; internal and
            // cluster failures are already only an id.
            record.error = Some(match s.code() {
                tonic::Code::Internal | tonic::Code::Unavailable => s.message().to_string(),
                _ => redact_text(s.message()),
            });
        }
    }
}

pub(crate) fn fill_policies(record: &mut AuditRecord, applied: &[AppliedPolicy]) {
    for a in applied {
        record
            .datasets
            .push(format!("{} {}", a.product, a.permission));
        record
            .masked_columns
            .extend(a.masks.iter().map(|m| format!("{}:{m}", a.product)));
    }
    record.datasets.sort();
    record.datasets.dedup();
    record.masked_columns.sort();
    record.masked_columns.dedup();
}

/// Writes the audit record once, however the stream ends.
struct QueryGuard {
    gateway: Arc<Gateway>,
    job_id: Option<Arc<Mutex<Option<String>>>>,
    record: AuditRecord,
    started: Instant,
    outcome: Option<Result<(), Status>>,
    _permit: OwnedSemaphorePermit,
}

impl QueryGuard {
    fn finish(&mut self, result: Result<(), &Status>) {
        self.outcome = Some(result.map_err(Clone::clone));
    }
}

impl Drop for QueryGuard {
    fn drop(&mut self) {
        let gw = &self.gateway;
        gw.metrics.active_queries.dec();
        gw.metrics.rows.inc_by(self.record.rows);
        gw.metrics.bytes.inc_by(self.record.bytes);
        if let Some(job) = &self.job_id {
            self.record.job_id = job.lock().unwrap_or_else(|e| e.into_inner()).clone();
        }
        let cancelled = Status::cancelled("the client went away before the end of the result");
        let outcome = match &self.outcome {
            Some(Ok(())) => Ok(()),
            Some(Err(s)) => Err(s),
            None => {
                warn!(principal = %self.record.principal, "query cancelled by the client");
                Err(&cancelled)
            }
        };
        gw.audit_now(std::mem::take(&mut self.record), self.started, outcome);
    }
}

/// An internal error as the caller sees it: an id. The log has what failed, without values.
pub(crate) fn internal(what: &str) -> Status {
    let id = uuid::Uuid::new_v4();
    error!(error_id = %id, "internal error: {}", redact_text(what));
    Status::internal(format!("internal error (id {id})"))
}

/// A panic inside the engine (DataFusion, arrow) as an internal error, not a dropped call.
pub(crate) fn panicked(panic: Box<dyn std::any::Any + Send>) -> Status {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into());
    internal(&format!("panic: {what}"))
}

/// Runs `f` so that a panic in it is an internal error with an id.
pub(crate) async fn unwinding<T>(
    f: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    std::panic::AssertUnwindSafe(f)
        .catch_unwind()
        .await
        .unwrap_or_else(|p| Err(panicked(p)))
}

/// The EXPLAIN of a statement, with a last line saying which engine would run it.
fn explain_with_route(physical: &Arc<dyn ExecutionPlan>, route: &Route) -> Arc<dyn ExecutionPlan> {
    use datafusion::common::display::{PlanType, StringifiedPlan};
    use datafusion::physical_plan::explain::ExplainExec;
    let Some(explain) = physical.downcast_ref::<ExplainExec>() else {
        return Arc::clone(physical);
    };
    let plans = explain
        .stringified_plans()
        .iter()
        .map(|p| match p.plan_type {
            PlanType::FinalPhysicalPlan => StringifiedPlan::new(
                p.plan_type.clone(),
                format!("{}meshgate: {route}\n", p.plan),
            ),
            _ => p.clone(),
        })
        .collect();
    Arc::new(ExplainExec::new(
        physical.schema(),
        plans,
        explain.verbose(),
    ))
}

/// View types become their classic forms on the wire (docs/FLIGHT-SQL.md: older drivers).
fn classic(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        other => other.clone(),
    }
}

fn to_wire(batch: &RecordBatch, wire: &SchemaRef) -> Result<RecordBatch, DataFusionError> {
    if batch.schema().fields() == wire.fields() {
        return Ok(batch.clone());
    }
    let columns = batch
        .columns()
        .iter()
        .zip(wire.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(Arc::clone(c))
            } else {
                cast(c, f.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(Arc::clone(wire), columns)?)
}

fn param_values(params: &RecordBatch) -> Result<ParamValues, Status> {
    if params.num_rows() != 1 {
        return Err(Status::invalid_argument(format!(
            "bind exactly one row of parameters, got {}",
            params.num_rows()
        )));
    }
    let values = params
        .columns()
        .iter()
        .map(|c| ScalarValue::try_from_array(c, 0))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Status::invalid_argument(format!("unreadable parameter: {e}")))?;
    Ok(values.into())
}

/// One row of parameters as base64 Arrow IPC, to travel in a handle or ticket.
pub(crate) fn encode_params(batch: &RecordBatch) -> Result<String, Status> {
    let mut buf = Vec::new();
    {
        let mut w = StreamWriter::try_new(&mut buf, &batch.schema())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        w.write(batch)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        w.finish()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
    }
    Ok(STANDARD.encode(buf))
}

pub(crate) fn decode_params(text: &str) -> Result<RecordBatch, Status> {
    let bytes = STANDARD
        .decode(text)
        .map_err(|_| Status::invalid_argument("malformed parameters"))?;
    let mut reader = StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|_| Status::invalid_argument("malformed parameters"))?;
    reader
        .next()
        .transpose()
        .map_err(|_| Status::invalid_argument("malformed parameters"))?
        .ok_or_else(|| Status::invalid_argument("no parameter row"))
}

pub(crate) fn client(addr: Option<SocketAddr>) -> String {
    addr.map(|a| a.to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// A bounded map from handle digest to bound parameters, oldest evicted first.
#[derive(Default)]
struct BoundParams {
    map: HashMap<[u8; 32], String>,
    order: VecDeque<[u8; 32]>,
}

const MAX_BOUND: usize = 10_000;

impl BoundParams {
    fn key(handle: &[u8]) -> [u8; 32] {
        Sha256::digest(handle).into()
    }

    fn insert(&mut self, handle: &[u8], params: String) {
        let k = Self::key(handle);
        if self.map.insert(k, params).is_none() {
            self.order.push_back(k);
        }
        while self.order.len() > MAX_BOUND {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    fn get(&self, handle: &[u8]) -> Option<String> {
        self.map.get(&Self::key(handle)).cloned()
    }

    fn remove(&mut self, handle: &[u8]) {
        self.map.remove(&Self::key(handle));
    }
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::execution::TaskContext;
    use datafusion::physical_expr::EquivalenceProperties;
    use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use datafusion::physical_plan::{DisplayAs, DisplayFormatType, Partitioning, PlanProperties};

    use super::*;

    /// An operator whose stream panics when polled: what an engine bug looks like.
    #[derive(Debug)]
    struct Panics(Arc<PlanProperties>);

    impl Panics {
        fn new() -> Self {
            let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
            Panics(Arc::new(PlanProperties::new(
                EquivalenceProperties::new(schema),
                Partitioning::UnknownPartitioning(1),
                EmissionType::Incremental,
                Boundedness::Bounded,
            )))
        }
    }

    impl DisplayAs for Panics {
        fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("Panics")
        }
    }

    impl ExecutionPlan for Panics {
        fn name(&self) -> &str {
            "Panics"
        }
        fn properties(&self) -> &Arc<PlanProperties> {
            &self.0
        }
        fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
            vec![]
        }
        fn apply_expressions(
            &self,
            _f: &mut dyn FnMut(
                &Arc<dyn datafusion::physical_plan::PhysicalExpr>,
            ) -> datafusion::common::Result<
                datafusion::common::tree_node::TreeNodeRecursion,
            >,
        ) -> datafusion::common::Result<datafusion::common::tree_node::TreeNodeRecursion> {
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        }
        fn with_new_children(
            self: Arc<Self>,
            _children: Vec<Arc<dyn ExecutionPlan>>,
        ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
            Ok(self)
        }
        fn execute(
            &self,
            _partition: usize,
            _context: Arc<TaskContext>,
        ) -> datafusion::common::Result<SendableRecordBatchStream> {
            let schema = self.schema();
            Ok(Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::once(async { panic!("offsets must be monotonically increasing") }),
            )))
        }
    }

    async fn gateway(dir: &std::path::Path) -> Arc<Gateway> {
        std::fs::create_dir_all(dir.join("contracts")).unwrap();
        let mut config = ServerConfig {
            audit_file: Some(dir.join("audit.log")),
            ..Default::default()
        };
        config.mesh.root = dir.to_path_buf();
        let mesh = Mesh::load(config.mesh.clone()).await.unwrap();
        let secrets = Secrets {
            hash_key: HashKey::new(b"gateway-unit-test-key-0123").unwrap(),
            token_key: b"gateway-unit-test-token-key".to_vec(),
            previous_token_keys: vec![],
        };
        Arc::new(Gateway::new(Arc::new(mesh), config, secrets).unwrap())
    }

    #[tokio::test]
    async fn a_panic_while_planning_is_an_internal_error_with_an_id() {
        let status = unwinding(async {
            if true {
                panic!("boom");
            }
            Ok::<(), Status>(())
        })
        .await
        .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(
            status.message().starts_with("internal error (id "),
            "{status:?}"
        );
    }

    #[tokio::test]
    async fn a_panic_while_streaming_is_an_audited_internal_error() {
        let dir = tempfile::tempdir().unwrap();
        let gw = gateway(dir.path()).await;
        let plan: Arc<dyn ExecutionPlan> = Arc::new(Panics::new());
        let planned = Planned {
            wire_schema: plan.schema(),
            physical: plan,
            applied: vec![],
            task: Arc::new(TaskContext::default()),
            route: Route {
                engine: Engine::Local,
                reason: "test".into(),
            },
            job_id: None,
        };
        let permit = gw.slot().await.unwrap();
        let record = AuditRecord {
            principal: "guest".into(),
            kind: "statement".into(),
            ..Default::default()
        };
        let results: Vec<_> = gw
            .execute(planned, permit, record, Instant::now())
            .unwrap()
            .collect()
            .await;
        let [Err(status)] = results.as_slice() else {
            panic!("{results:?}");
        };
        assert_eq!(status.code(), tonic::Code::Internal);
        let audit = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
        let id = status
            .message()
            .trim_start_matches("internal error (id ")
            .trim_end_matches(')');
        assert!(
            audit.contains("\"outcome\":\"Internal\"") && audit.contains(id),
            "{audit}"
        );
        // The slot is given back: the server goes on serving.
        assert!(gw.slot().await.is_ok());
    }

    /// A job that failed on the cluster answers as the same failure does here: a query
    /// error with its words, anything internal as an id only (never Ballista's text).
    #[tokio::test]
    async fn cluster_failures_read_as_local_ones() {
        let dir = tempfile::tempdir().unwrap();
        let gw = gateway(dir.path()).await;
        let job = |class, error: &str| {
            DataFusionError::External(Box::new(meshgate_cluster::JobError::Query {
                job_id: "j1".into(),
                error: error.into(),
                class,
            }))
        };
        let cast = gw.status(&job(
            ErrorClass::InvalidQuery,
            "Arrow error: Cast error: Cannot cast string 'x' to value of Int32 type",
        ));
        let local = gw.status(&DataFusionError::ArrowError(
            Box::new(arrow::error::ArrowError::CastError(
                "Cannot cast string 'x' to value of Int32 type".into(),
            )),
            None,
        ));
        assert_eq!(
            (cast.code(), cast.message()),
            (local.code(), local.message())
        );
        let ballista =
            "Job failed: Task failed: executor panicked reading /srv/data/secret.parquet";
        let internal = gw.status(&job(ErrorClass::Internal, ballista));
        let local = gw.status(&DataFusionError::Internal("bug".into()));
        assert_eq!(internal.code(), local.code());
        for s in [&internal, &local] {
            assert!(s.message().starts_with("internal error (id "), "{s:?}");
        }
        let lost = gw.status(&DataFusionError::External(Box::new(
            meshgate_cluster::JobError::Unavailable(format!("executor 10.0.0.7 lost: {ballista}")),
        )));
        assert_eq!(lost.code(), tonic::Code::Unavailable);
        assert!(
            !lost.message().contains("10.0.0.7") && lost.message().contains("(id "),
            "{lost:?}"
        );
    }
}
