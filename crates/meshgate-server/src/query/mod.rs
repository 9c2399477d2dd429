//! The one query path, whatever protocol a statement came in by: plan as the caller
//! (policy rule and verifier inside the session), build the physical plan, route it
//! (here or on the cluster), execute it as a stream under the limits, and account for it
//! (audit line, metrics). It knows no wire protocol: Flight SQL and the SQL logic tests
//! call it alike, and its failures are [`QueryError`]s that each protocol maps once.

mod error;
mod handoff;
mod params;
mod placeholders;
mod quota;
mod route;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ParamValues;
use datafusion::dataframe::DataFrame;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{SessionState, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;
use meshgate_cluster::Cluster;
use meshgate_mesh::Mesh;
use meshgate_policy::{
    AppliedPolicy, HashKey, MeshSession, Policy, Principal, SessionOptions, applied_policies,
};
use tokio::sync::Semaphore;

pub use quota::Slot;

use crate::audit::{AuditLog, AuditRecord, redact_text};
use crate::config::{DistributedConfig, Limits};
use crate::metrics::{CodeLabel, KindLabel, Metrics};

pub(crate) use error::unwinding;
pub use error::{ErrorKind, QueryError};
pub(crate) use params::{BoundParams, decode_params, encode_params};
pub use route::{Engine, Execution, Route};

/// What the query path is configured with (from meshgate.yaml).
#[derive(Clone, Default)]
pub struct EngineOptions {
    pub limits: Limits,
    /// Send view types as they are (see `ServerConfig::view_types`).
    pub view_types: bool,
    /// The routing rule's settings; `None` runs everything here.
    pub distributed: Option<DistributedConfig>,
    /// What a protocol adds to every session once it is built (metadata schemas and the
    /// functions its clients call, e.g. Postgres's `pg_catalog`); the policy rule and the
    /// verifier are already in place and cannot be removed.
    pub session_setup: Vec<Arc<dyn SessionSetup>>,
}

/// See [`EngineOptions::session_setup`].
pub trait SessionSetup: Send + Sync {
    fn setup(&self, session: &MeshSession) -> Result<(), QueryError>;
}

/// The query path's state, common to every request: the mesh snapshot, the sessions built on it, the
/// engine's resources and limits, the cluster, and the accounting.
pub struct QueryEngine {
    /// Swapped whole by the reloader; each statement plans against one snapshot.
    mesh: RwLock<Arc<Mesh>>,
    /// One session per principal (name and roles in effect) on the current snapshot:
    /// building one registers every function and rule, which a small query should not
    /// pay for. Cleared when the mesh is swapped.
    sessions: Mutex<HashMap<Principal, Arc<MeshSession>>>,
    key: Arc<HashKey>,
    options: EngineOptions,
    runtime: Arc<RuntimeEnv>,
    slots: Arc<Semaphore>,
    quotas: quota::Quotas,
    cluster: Option<Cluster>,
    /// Plans waiting for the next call of their statement (see `handoff.rs`).
    handoff: handoff::HandOff,
    pub(crate) audit: AuditLog,
    pub(crate) metrics: Arc<Metrics>,
}

/// A statement optimized and physically planned as its caller, not yet routed.
pub(crate) struct Prepared {
    state: SessionState,
    optimized: LogicalPlan,
    physical: Arc<dyn ExecutionPlan>,
    applied: Vec<AppliedPolicy>,
}

/// Principals whose sessions are kept; past this the cache starts over (a session is
/// cheap to rebuild, a map of every principal ever seen is not).
const MAX_SESSIONS: usize = 4096;

/// A statement planned as its caller, ready to execute.
pub struct Planned {
    pub(crate) physical: Arc<dyn ExecutionPlan>,
    /// What the client is told and sent (view types replaced unless configured).
    pub wire_schema: SchemaRef,
    pub(crate) applied: Vec<AppliedPolicy>,
    pub(crate) task: Arc<TaskContext>,
    pub route: Route,
    /// The cluster's job id, once a distributed query is accepted.
    pub(crate) job_id: Option<Arc<Mutex<Option<String>>>>,
}

impl QueryEngine {
    /// `cluster` is the job client for `options.distributed`, built by the caller (it
    /// reads TLS files).
    pub fn new(
        mesh: Arc<Mesh>,
        options: EngineOptions,
        key: Arc<HashKey>,
        cluster: Option<Cluster>,
        audit: AuditLog,
    ) -> Result<QueryEngine, QueryError> {
        let limits = &options.limits;
        let runtime = RuntimeEnvBuilder::new()
            // The mesh's stores (local, S3): they come from meshgate.yaml, which a contract
            // reload does not change.
            .with_object_store_registry(mesh.object_stores())
            .with_memory_pool(Arc::new(FairSpillPool::new(limits.memory_limit_mb << 20)))
            // DataFusion caches directory listings forever by default: published data
            // would stay invisible until a restart. Listing a product's folder is cheap.
            .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
            .build_arc()
            .map_err(|e| QueryError::internal(&format!("the query runtime: {e}")))?;
        let quotas = quota::Quotas::new(limits, &runtime)
            .map_err(|e| QueryError::internal(&format!("the roles' quotas: {e}")))?;
        Ok(QueryEngine {
            slots: Arc::new(Semaphore::new(limits.max_concurrent_queries.max(1))),
            quotas,
            mesh: RwLock::new(mesh),
            sessions: Mutex::new(HashMap::new()),
            key,
            options,
            runtime,
            cluster,
            handoff: handoff::HandOff::default(),
            audit,
            metrics: Arc::new(Metrics::default()),
        })
    }

    /// The mesh as of now.
    pub fn mesh(&self) -> Arc<Mesh> {
        Arc::clone(&self.mesh.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Serves `mesh` from now on; statements already planned finish on the old one.
    pub fn set_mesh(&self, mesh: Arc<Mesh>) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        *self.mesh.write().unwrap_or_else(|e| e.into_inner()) = mesh;
        sessions.clear();
        self.handoff.clear();
    }

    pub fn limits(&self) -> &Limits {
        &self.options.limits
    }

    /// The policy-enforcing session of `principal` on the current mesh.
    pub fn session(&self, principal: &Principal) -> Arc<MeshSession> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = sessions.get(principal) {
            return Arc::clone(s);
        }
        if sessions.len() >= MAX_SESSIONS {
            sessions.clear();
        }
        let mut config = SessionConfig::new();
        if let Some(n) = self.options.limits.target_partitions {
            config = config.with_target_partitions(n);
        }
        // A role with a memory quota plans and runs in its capped runtime.
        let runtime = self
            .quotas
            .of(principal)
            .and_then(|q| q.runtime.clone())
            .unwrap_or_else(|| Arc::clone(&self.runtime));
        let options = SessionOptions { config, runtime };
        let session = Arc::new(MeshSession::with_options(
            &self.mesh(),
            Policy::new(principal.clone(), Arc::clone(&self.key)),
            options,
        ));
        for setup in &self.options.session_setup {
            if let Err(e) = setup.setup(&session) {
                // The session still serves every product; only that protocol's
                // metadata is missing, and its queries say so.
                tracing::error!("cannot set up a session: {e}");
            }
        }
        sessions.insert(principal.clone(), Arc::clone(&session));
        session
    }

    /// Plans `sql` as `principal`, parameters bound, and builds the physical plan it will
    /// run, on the engine the routing rule picks: the schema announced is the schema of
    /// the plan that executes.
    pub async fn plan(
        &self,
        principal: &Principal,
        sql: &str,
        params: Option<&RecordBatch>,
        execution: Option<Execution>,
    ) -> Result<Planned, QueryError> {
        let values = params.map(params::param_values).transpose()?;
        self.plan_with(principal, sql, values, execution).await
    }

    /// [`QueryEngine::plan`] with parameter values already decoded (Postgres's Bind).
    pub async fn plan_with(
        &self,
        principal: &Principal,
        sql: &str,
        params: Option<ParamValues>,
        execution: Option<Execution>,
    ) -> Result<Planned, QueryError> {
        unwinding(async {
            let session = self.session(principal);
            let mut df = session.sql(&placeholders::number(sql)?).await?;
            if let Some(params) = params {
                df = df.with_param_values(params)?;
            }
            self.build(df, execution).await
        })
        .await
    }

    /// [`QueryEngine::plan`] for a prepared statement's `handle`: without parameters, the
    /// plan its description made is routed instead of planning again.
    pub async fn plan_prepared(
        &self,
        principal: &Principal,
        handle: &[u8],
        sql: &str,
        params: Option<&RecordBatch>,
        execution: Option<Execution>,
    ) -> Result<Planned, QueryError> {
        if params.is_none()
            && let Some(handoff::Kept::Prepared(prepared)) = self.handoff.take(&handoff::key(
                handoff::Stage::Prepared,
                handle,
                principal,
                None,
            ))
        {
            return unwinding(self.finish(*prepared, execution)).await;
        }
        self.plan(principal, sql, params, execution).await
    }

    /// Keeps `planned` for the call that redeems `ticket` (see `handoff.rs`).
    pub fn keep(
        &self,
        ticket: &[u8],
        principal: &Principal,
        execution: Option<Execution>,
        planned: Planned,
    ) {
        let key = handoff::key(handoff::Stage::Planned, ticket, principal, execution);
        self.handoff.keep(key, handoff::Kept::Planned(planned));
    }

    /// The plan kept for `ticket`, if this replica made it for the same caller and choice.
    pub fn take(
        &self,
        ticket: &[u8],
        principal: &Principal,
        execution: Option<Execution>,
    ) -> Option<Planned> {
        match self.handoff.take(&handoff::key(
            handoff::Stage::Planned,
            ticket,
            principal,
            execution,
        ))? {
            handoff::Kept::Planned(planned) => Some(planned),
            handoff::Kept::Prepared(_) => None,
        }
    }

    /// The schema a prepared statement announces before its parameters are bound, and
    /// its parameters' schema.
    ///
    /// Without parameters the statement is planned through to its physical schema, and
    /// that plan is kept for the next call that names `handle` (see `handoff.rs`).
    pub async fn describe(
        &self,
        principal: &Principal,
        sql: &str,
        handle: Option<&[u8]>,
    ) -> Result<(SchemaRef, Schema), QueryError> {
        unwinding(async {
            let session = self.session(principal);
            let df = session.sql(&placeholders::number(sql)?).await?;
            let params = df.logical_plan().get_parameter_types()?;
            if params.is_empty() {
                let prepared = self.prepare(df).await?;
                let schema = self.wire_schema(&prepared.physical.schema());
                if let Some(handle) = handle {
                    let key = handoff::key(handoff::Stage::Prepared, handle, principal, None);
                    self.handoff
                        .keep(key, handoff::Kept::Prepared(Box::new(prepared)));
                }
                return Ok((schema, Schema::empty()));
            }
            let (state, plan) = df.into_parts();
            let analyzed = state.optimize(&plan)?;
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
        })
        .await
    }

    /// Where `physical` runs. An EXPLAIN runs here, and says where its statement would.
    async fn route(
        &self,
        execution: Option<Execution>,
        physical: &Arc<dyn ExecutionPlan>,
    ) -> Result<Route, QueryError> {
        route::route(
            self.options.distributed.as_ref(),
            self.cluster.as_ref(),
            execution,
            physical,
        )
        .await
    }

    /// Optimizes and physically plans a parsed statement, and routes it.
    async fn build(
        &self,
        df: DataFrame,
        execution: Option<Execution>,
    ) -> Result<Planned, QueryError> {
        let prepared = self.prepare(df).await?;
        self.finish(prepared, execution).await
    }

    /// Optimizes and physically plans a parsed statement (the verifier runs on both).
    async fn prepare(&self, df: DataFrame) -> Result<Prepared, QueryError> {
        let (mut state, plan) = df.into_parts();
        let optimized = state.optimize(&plan)?;
        let applied = applied_policies(&optimized);
        let physical = match state
            .query_planner()
            .create_physical_plan(&optimized, &state)
            .await
        {
            // DataFusion 55 can lose track of columns a filter made constant once rows are
            // repartitioned, and then refuses its own plan (SanityCheckPlan: "does not
            // satisfy order requirements"; found by the policy fuzzer). In one partition
            // there is nothing to merge: the same statement, planned so, answers.
            Err(e) if lost_ordering(&e) => {
                state.config_mut().options_mut().execution.target_partitions = 1;
                state
                    .query_planner()
                    .create_physical_plan(&optimized, &state)
                    .await?
            }
            other => other?,
        };
        Ok(Prepared {
            state,
            optimized,
            physical,
            applied,
        })
    }

    /// Routes a planned statement, and plans it for the cluster when it goes there.
    async fn finish(
        &self,
        prepared: Prepared,
        execution: Option<Execution>,
    ) -> Result<Planned, QueryError> {
        let Prepared {
            state,
            optimized,
            mut physical,
            applied,
        } = prepared;
        let route = match &optimized {
            LogicalPlan::Explain(explain) => {
                let inner = state
                    .query_planner()
                    .create_physical_plan(&explain.plan, &state)
                    .await?;
                let would = self.route(execution, &inner).await?;
                physical = route::explain_with_route(&physical, &would);
                Route {
                    engine: Engine::Local,
                    reason: "EXPLAIN".into(),
                }
            }
            // EXPLAIN ANALYZE runs its statement where the statement would run.
            LogicalPlan::Analyze(_) => self.route(execution, physical.children()[0]).await?,
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
                LogicalPlan::Analyze(a) => (a.input.as_ref(), Some(Arc::clone(&physical))),
                other => (other, None),
            };
            let (for_cluster, cluster_task) =
                meshgate_cluster::plan_for_cluster(&state, statement).await?;
            let exec = cluster.exec(for_cluster);
            job_id = Some(exec.job_id_handle());
            let exec: Arc<dyn ExecutionPlan> = exec;
            physical = match analyze {
                Some(analyze) => {
                    use datafusion::physical_plan::execution_plan::{
                        ChildrenPropertiesMode, ReplaceChildrenOptions,
                    };
                    let recompute = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
                    analyze.replace_children(vec![exec], recompute)?
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

    /// `schema` as it leaves the gateway: view types in their classic forms unless the
    /// configuration turns them on (results and catalog answers alike).
    pub fn wire_schema(&self, schema: &SchemaRef) -> SchemaRef {
        if self.options.view_types {
            return Arc::clone(schema);
        }
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_data_type(classic(f.data_type())))
            .collect();
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
    }

    /// Admits a statement of `principal` under the global limits and its role's quota
    /// (waiting for a slot at most `queue_timeout_secs`); ResourceExhausted, with when to
    /// retry, otherwise.
    pub async fn slot(&self, principal: &Principal) -> Result<Slot, QueryError> {
        self.quotas
            .admit(principal, &self.slots, &self.options.limits)
            .await
    }

    /// Audits and counts a request that ended before streaming.
    pub fn audit_now(
        &self,
        mut record: AuditRecord,
        started: Instant,
        result: Result<(), &QueryError>,
    ) {
        record.duration_ms = started.elapsed().as_millis() as u64;
        self.count(&record.kind, started, result);
        set_outcome(&mut record, result);
        self.audit.record(&record);
    }

    fn count(&self, kind: &str, started: Instant, result: Result<(), &QueryError>) {
        let kind = KindLabel {
            kind: kind.to_string(),
        };
        self.metrics.requests.get_or_create(&kind).inc();
        self.metrics
            .latency
            .get_or_create(&kind)
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = result {
            self.metrics
                .errors
                .get_or_create(&CodeLabel {
                    code: e.kind.name().to_string(),
                })
                .inc();
        }
    }
}

fn set_outcome(record: &mut AuditRecord, result: Result<(), &QueryError>) {
    match result {
        Ok(()) => record.outcome = "ok".into(),
        Err(e) => {
            record.outcome = e.kind.name().to_string();
            // What failed, without the values the caller's error may quote; internal and
            // cluster failures are already only an id.
            record.error = Some(match e.kind {
                ErrorKind::Internal | ErrorKind::Unavailable => e.message.clone(),
                _ => redact_text(&e.message),
            });
        }
    }
}

/// DataFusion's physical plan check refusing an ordering its own optimizer produced.
fn lost_ordering(e: &datafusion::error::DataFusionError) -> bool {
    matches!(
        e.find_root(),
        datafusion::error::DataFusionError::Plan(m) if m.contains("does not satisfy order requirements")
    )
}

/// The products a statement read and the masks it applied, in its audit line.
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

/// View types become their classic forms on the wire: older JDBC drivers and flightsql-dbapi
/// fail to decode them.
fn classic(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        other => other.clone(),
    }
}
