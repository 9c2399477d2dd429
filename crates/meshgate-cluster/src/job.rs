//! The gateway's side of a distributed query: the physical plan it has planned and
//! checked is encoded with [`ClusterCodec`] and submitted to the scheduler as is, so the
//! plan that runs is the one the policy rule produced; results are fetched from the
//! executors and counted against what the executors reported writing.

use std::fmt;

use meshgate_policy::ErrorClass;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballista_core::client::BallistaClient;
use ballista_core::extension::BallistaConfigGrpcEndpoint;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::serde::protobuf::{
    CancelJobParams, ExecuteQueryParams, GetJobStatusParams, KeyValuePair, PartitionLocation,
    SuccessfulJob, execute_query_params::Query, execute_query_result, job_status,
};
use ballista_core::version::insert_version_header;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SessionState, SessionStateBuilder, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use datafusion_proto::physical_plan::AsExecutionPlan;
use datafusion_proto::protobuf::PhysicalPlanNode;
use futures::{StreamExt, TryStreamExt};
use http_body_util::BodyExt;
use prost::Message;
use tonic::transport::{Channel, Endpoint};
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::codec::ClusterCodec;
use crate::tls::ClusterTls;

/// Where the cluster is and how to talk to it; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    /// `http://127.0.0.1:50060`, or `https://…` with `tls`.
    scheduler: String,
    /// Mutual TLS to the scheduler and the executors, when the cluster has it.
    tls: Option<ClusterTls>,
    codec: ClusterCodec,
    /// One scheduler session for the gateway; its settings are sent with every job.
    session_id: String,
    max_message_size: usize,
    health: Mutex<Option<(Instant, Health)>>,
}

/// What the scheduler said about itself, cached briefly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ready(String),
    Unavailable(String),
}

/// How long a health answer is reused: routing must not cost a round trip per query.
const HEALTH_TTL: Duration = Duration::from_secs(2);

impl Cluster {
    pub fn new(scheduler: &str, codec: ClusterCodec, tls: Option<ClusterTls>) -> Cluster {
        Cluster {
            inner: Arc::new(Inner {
                scheduler: scheduler.trim_end_matches('/').to_string(),
                tls,
                codec,
                session_id: format!("meshgate-{}", uuid::Uuid::new_v4()),
                max_message_size: 64 << 20,
                health: Mutex::new(None),
            }),
        }
    }

    /// Ready when the scheduler answers `/readyz` with at least one executor registered.
    pub async fn health(&self) -> Health {
        if let Some((at, h)) = self
            .inner
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            && at.elapsed() < HEALTH_TTL
        {
            return h;
        }
        let health = self.probe().await;
        *self.inner.health.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), health.clone()));
        health
    }

    /// Forgets the cached health (a job could not be submitted).
    pub fn invalidate(&self) {
        *self.inner.health.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// `plan`, to be run on the cluster when executed.
    pub fn exec(&self, plan: Arc<dyn ExecutionPlan>) -> Arc<DistributedExec> {
        Arc::new(DistributedExec::new(self.clone(), plan))
    }

    /// Why `plan` cannot run on the cluster, if it cannot: operators Ballista 55 cannot
    /// split into stages, or that do not encode.
    pub fn refuses(&self, plan: &Arc<dyn ExecutionPlan>) -> Option<String> {
        let mut stack = vec![Arc::clone(plan)];
        while let Some(node) = stack.pop() {
            // Its subquery results live in this process only (datafusion-ballista#1909).
            if node.name() == "ScalarSubqueryExec" {
                return Some(
                    "an uncorrelated scalar subquery (ScalarSubqueryExec) runs in one process"
                        .into(),
                );
            }
            stack.extend(node.children().into_iter().cloned());
        }
        self.encode(Arc::clone(plan))
            .err()
            .map(|e| format!("the plan does not encode: {e}"))
    }

    /// The bytes the scheduler receives for `plan`.
    pub fn encode(&self, plan: Arc<dyn ExecutionPlan>) -> Result<Vec<u8>> {
        let node = PhysicalPlanNode::try_from_physical_plan(plan, &self.inner.codec)?;
        Ok(node.encode_to_vec())
    }

    /// A connection to the scheduler, over TLS when the cluster has it.
    async fn scheduler(&self) -> Result<Channel, tonic::transport::Error> {
        let endpoint = Endpoint::from_shared(self.inner.scheduler.clone())?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        match &self.inner.tls {
            Some(tls) => tls.secure(endpoint)?,
            None => endpoint,
        }
        .connect()
        .await
    }

    /// `/readyz` over the scheduler's gRPC connection (HTTP/2, and TLS when configured),
    /// so health is checked on the very path jobs take.
    async fn probe(&self) -> Health {
        let scheduler = &self.inner.scheduler;
        let answer = async {
            let channel = self.scheduler().await.map_err(|e| format!("{e:?}"))?;
            let request = http::Request::get(format!("{scheduler}/readyz"))
                .body(tonic::body::Body::empty())
                .map_err(|e| e.to_string())?;
            let response = channel
                .oneshot(request)
                .await
                .map_err(|e| format!("{e:?}"))?;
            let ok = response.status().is_success();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((ok, String::from_utf8_lossy(&body).trim().to_string()))
        };
        match tokio::time::timeout(Duration::from_secs(2), answer).await {
            Ok(Ok((true, body))) => Health::Ready(body),
            Ok(Ok((false, body))) => {
                Health::Unavailable(format!("scheduler at {scheduler}: {body}"))
            }
            Ok(Err(e)) => Health::Unavailable(format!("scheduler at {scheduler} unreachable: {e}")),
            Err(_) => {
                Health::Unavailable(format!("scheduler at {scheduler}: no answer within 2 s"))
            }
        }
    }
}

/// Runs its input on the cluster: the one partition it yields is the job's result.
pub struct DistributedExec {
    cluster: Cluster,
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
    job_id: Arc<Mutex<Option<String>>>,
    /// What EXPLAIN ANALYZE shows for the job: the rows it returned (the stages' own
    /// metrics stay on the executors).
    metrics: ExecutionPlanMetricsSet,
}

impl DistributedExec {
    fn new(cluster: Cluster, input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(input.schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        DistributedExec {
            cluster,
            input,
            properties,
            job_id: Arc::default(),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The scheduler's job id, once the job is accepted; shared with clones of this node.
    pub fn job_id_handle(&self) -> Arc<Mutex<Option<String>>> {
        Arc::clone(&self.job_id)
    }
}

impl fmt::Debug for DistributedExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DistributedExec")
            .field("scheduler", &self.cluster.inner.scheduler)
            .finish()
    }
}

impl DisplayAs for DistributedExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "DistributedExec: engine=ballista, scheduler={}",
            self.cluster.inner.scheduler
        )?;
        if let Some(id) = self
            .job_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            write!(f, ", job={id}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for DistributedExec {
    fn name(&self) -> &str {
        "DistributedExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (Some(input), true) = (children.pop(), children.is_empty()) else {
            return Err(DataFusionError::Internal(
                "DistributedExec has one input".into(),
            ));
        };
        let mut exec = DistributedExec::new(self.cluster.clone(), input);
        exec.job_id = Arc::clone(&self.job_id);
        Ok(Arc::new(exec))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "DistributedExec has one partition, not {partition}"
            )));
        }
        let plan = self.cluster.encode(Arc::clone(&self.input))?;
        let settings = context
            .session_config()
            .options()
            .entries()
            .into_iter()
            .map(|e| KeyValuePair {
                key: e.key,
                value: e.value,
            })
            .collect();
        let job = Job {
            cluster: self.cluster.clone(),
            job_id: Arc::clone(&self.job_id),
            done: false,
        };
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let stream = futures::stream::once(job.run(plan, settings))
            .try_flatten()
            .inspect_ok(move |batch| baseline.record_output(batch.num_rows()));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            stream,
        )))
    }
}

/// One submitted job; cancelled on the scheduler if dropped before it finished.
struct Job {
    cluster: Cluster,
    job_id: Arc<Mutex<Option<String>>>,
    done: bool,
}

/// How a distributed query failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The cluster could not run it (scheduler or executor gone, result lost): the
    /// gateway answers UNAVAILABLE.
    #[error("cluster: {0}")]
    Unavailable(String),
    /// The query itself failed on an executor; `error` is worded as DataFusion words it
    /// in this process and `class` is what the same error is here, so a caller sees the
    /// same answer local or distributed (an internal error as an id only).
    #[error("{error}")]
    Query {
        job_id: String,
        error: String,
        class: ErrorClass,
    },
}

impl JobError {
    pub fn find(e: &DataFusionError) -> Option<&JobError> {
        match e.find_root() {
            DataFusionError::External(inner) => inner.downcast_ref(),
            _ => None,
        }
    }
}

fn cluster_err(what: &str, e: impl fmt::Display) -> DataFusionError {
    DataFusionError::External(Box::new(JobError::Unavailable(format!("{what}: {e}"))))
}

/// The error of a failed job. Ballista reports a task's error as the `Debug` form of
/// DataFusion's error; this gives it back its `Display` form where it can.
fn job_failed(job_id: &str, ballista: &str) -> DataFusionError {
    // The cluster's own failures, not the query's: a task no executor would take (it
    // could not decode the plan: another key, no meshgate codec), executors gone.
    let lost = [
        "executor lost",
        "Executor lost",
        "FetchFailed",
        "fetch partition",
        "IoError",
        "could not be prepared or was rejected",
    ];
    if lost.iter().any(|l| ballista.contains(l)) {
        return cluster_err(&format!("job {job_id} failed"), ballista);
    }
    // What cannot be read back into one of DataFusion's errors is internal, as it would be
    // here.
    let (error, class) =
        reword(ballista).unwrap_or_else(|| (ballista.to_string(), ErrorClass::Internal));
    DataFusionError::External(Box::new(JobError::Query {
        job_id: job_id.to_string(),
        error,
        class,
    }))
}

/// `…: DataFusionError(Shared(ArrowError(CastError("x"), None)))` → `Arrow error: Cast error: x`,
/// with the class `meshgate_policy::classify` gives the same error in this process.
fn reword(ballista: &str) -> Option<(String, ErrorClass)> {
    use ErrorClass::{Internal, InvalidQuery, ResourcesExhausted};
    const WRAPPERS: [(&str, &str, Option<ErrorClass>); 14] = [
        ("DataFusionError(", "", None),
        ("Shared(", "", None),
        ("External(", "", None),
        ("Context(", "", None),
        ("ArrowError(", "Arrow error: ", Some(InvalidQuery)),
        ("CastError(", "Cast error: ", None),
        ("ComputeError(", "Compute error: ", None),
        ("InvalidArgumentError(", "Invalid argument error: ", None),
        ("DivideByZero", "Divide by zero error", None),
        ("Execution(", "Execution error: ", Some(InvalidQuery)),
        ("Plan(", "Error during planning: ", Some(InvalidQuery)),
        (
            "ResourcesExhausted(",
            "Resources exhausted: ",
            Some(ResourcesExhausted),
        ),
        (
            "NotImplemented(",
            "This feature is not implemented: ",
            Some(InvalidQuery),
        ),
        ("Internal(", "Internal error: ", Some(Internal)),
    ];
    let mut rest = &ballista[ballista.find("DataFusionError(")?..];
    let mut out = String::new();
    let mut class = Internal;
    loop {
        if let Some(literal) = rest.strip_prefix('"') {
            let mut chars = literal.chars();
            while let Some(c) = chars.next() {
                match c {
                    '"' => return Some((out, class)),
                    '\\' => out.push(match chars.next()? {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    }),
                    c => out.push(c),
                }
            }
            return None;
        }
        let (prefix, words, is) = WRAPPERS.iter().find(|(p, ..)| rest.starts_with(p))?;
        out.push_str(words);
        if let Some(is) = is {
            class = *is;
        }
        if *prefix == "DivideByZero" {
            return Some((out, class));
        }
        rest = &rest[prefix.len()..];
    }
}

impl Job {
    async fn run(
        mut self,
        plan: Vec<u8>,
        settings: Vec<KeyValuePair>,
    ) -> Result<impl futures::Stream<Item = Result<arrow::array::RecordBatch>> + Send> {
        let inner = &self.cluster.inner;
        let mut scheduler = self
            .cluster
            .scheduler()
            .await
            .map(SchedulerGrpcClient::new)
            .map_err(|e| {
                self.cluster.invalidate();
                cluster_err(
                    &format!("cannot reach the scheduler at {}", inner.scheduler),
                    e,
                )
            })?
            .max_encoding_message_size(inner.max_message_size)
            .max_decoding_message_size(inner.max_message_size);
        let mut request = tonic::Request::new(ExecuteQueryParams {
            query: Some(Query::PhysicalPlan(plan)),
            settings,
            session_id: inner.session_id.clone(),
            operation_id: uuid::Uuid::now_v7().to_string(),
        });
        insert_version_header(request.metadata_mut());
        let response = scheduler
            .execute_query(request)
            .await
            .map_err(|e| cluster_err("job refused", e.message()))?
            .into_inner();
        let job_id = match response.result {
            Some(execute_query_result::Result::Success(s)) => s.job_id,
            Some(execute_query_result::Result::Failure(f)) => {
                return Err(cluster_err("job refused", format!("{:?}", f.failure)));
            }
            None => return Err(cluster_err("job refused", "empty answer")),
        };
        *self.job_id.lock().unwrap_or_else(|e| e.into_inner()) = Some(job_id.clone());
        debug!(%job_id, "job submitted");
        let done = self.wait(&mut scheduler, &job_id).await?;
        self.done = true;
        let max = inner.max_message_size;
        let tls = inner.tls.clone();
        let mut locations = done.partition_location;
        locations.sort_by_key(|l| l.partition_id.as_ref().map(|p| p.partition_id));
        let streams = locations
            .into_iter()
            .map(move |l| futures::stream::once(fetch(l, max, tls.clone())).try_flatten());
        Ok(futures::stream::iter(streams).flatten())
    }

    async fn wait(
        &self,
        scheduler: &mut SchedulerGrpcClient<Channel>,
        job_id: &str,
    ) -> Result<SuccessfulJob> {
        let mut pause = Duration::from_millis(5);
        loop {
            let status = scheduler
                .get_job_status(GetJobStatusParams {
                    job_id: job_id.to_string(),
                })
                .await
                .map_err(|e| {
                    cluster_err(&format!("job {job_id}: lost the scheduler"), e.message())
                })?
                .into_inner()
                .status
                .and_then(|s| s.status);
            match status {
                Some(job_status::Status::Successful(done)) => return Ok(done),
                Some(job_status::Status::Failed(f)) => return Err(job_failed(job_id, &f.error)),
                _ => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
            }
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Some(job_id) = self
            .job_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return;
        };
        let cluster = self.cluster.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Ok(mut s) = cluster.scheduler().await.map(SchedulerGrpcClient::new)
                    && let Err(e) = s
                        .cancel_job(CancelJobParams {
                            job_id: job_id.clone(),
                        })
                        .await
                {
                    warn!(%job_id, "cannot cancel the job: {}", e.message());
                }
            });
        }
    }
}

/// One result partition, checked against the row count its writer reported: an
/// executor that vanishes mid-transfer gives an error, never a short answer.
async fn fetch(
    location: PartitionLocation,
    max_message_size: usize,
    tls: Option<ClusterTls>,
) -> Result<impl futures::Stream<Item = Result<arrow::array::RecordBatch>> + Send> {
    let layout = location.layout();
    let expected = location
        .partition_stats
        .as_ref()
        .map(|s| s.num_rows)
        .filter(|n| *n >= 0);
    let meta = location
        .executor_meta
        .ok_or_else(|| cluster_err("result", "a partition without its executor"))?;
    let id = location
        .partition_id
        .ok_or_else(|| cluster_err("result", "a partition without its id"))?;
    let partition = id.partition_id;
    // An executor that advertises a routable name without TLS would hand over result rows
    // in the clear; cluster processes refuse to, and the gateway does not dial one.
    if tls.is_none() && !crate::is_loopback_host(&meta.host) {
        return Err(cluster_err(
            &format!("executor {}", meta.id),
            format!(
                "it is at {}, off this machine, and the cluster has no TLS",
                meta.host
            ),
        ));
    }
    let mut client = BallistaClient::try_new(
        &meta.host,
        meta.port as u16,
        max_message_size,
        tls.is_some(),
        tls.map(|t| Arc::new(BallistaConfigGrpcEndpoint::new(t.endpoint_override()))),
        3,
        50,
        0,
        0,
    )
    .await
    .map_err(|e| cluster_err(&format!("executor {} unreachable", meta.id), e))?;
    let stream = client
        .fetch_partition(&meta.id, &id.into(), location.file_id, layout, true)
        .await
        .map_err(|e| cluster_err(&format!("executor {}", meta.id), e))?;
    let executor = meta.id;
    let counted = futures::stream::unfold(
        (stream, 0i64, false),
        move |(mut stream, seen, finished)| {
            let executor = executor.clone();
            async move {
                if finished {
                    return None;
                }
                match stream.next().await {
                    Some(Ok(batch)) => {
                        let seen = seen + batch.num_rows() as i64;
                        Some((Ok(batch), (stream, seen, false)))
                    }
                    Some(Err(e)) => Some((Err(e), (stream, seen, true))),
                    None => match expected {
                        Some(n) if n != seen => Some((
                            Err(cluster_err(
                                "short result",
                                format!(
                                    "partition {partition} from executor {executor}: \
                                     {seen} rows of {n}"
                                ),
                            )),
                            (stream, seen, true),
                        )),
                        _ => None,
                    },
                }
            }
        },
    );
    Ok(counted)
}

/// Plans `optimized` (an optimized logical plan) for the cluster: as `state` would, but
/// with the settings Ballista 55 needs. Dynamic filters are produced by one operator and
/// read by another in the same process; split into stages, the scan would wait forever
/// (datafusion-ballista#1375) or the scheduler's join selection fails on them. The
/// policy is in the logical plan and in the session's planner, so it is all there.
pub async fn plan_for_cluster(
    state: &SessionState,
    optimized: &LogicalPlan,
) -> Result<(Arc<dyn ExecutionPlan>, Arc<TaskContext>)> {
    let mut config = state.config().clone();
    // Through `set`: it also turns off the join, TopK and aggregate filters it governs.
    config.options_mut().set(
        "datafusion.optimizer.enable_dynamic_filter_pushdown",
        "false",
    )?;
    let state = SessionStateBuilder::new_from_existing(state.clone())
        .with_config(config)
        .build();
    let physical = state
        .query_planner()
        .create_physical_plan(optimized, &state)
        .await?;
    Ok((physical, state.task_ctx()))
}

/// The bytes a plan will read, after pruning: the sizes of the files its scans list.
pub fn scan_bytes(plan: &Arc<dyn ExecutionPlan>) -> Option<u64> {
    let mut total = None;
    let mut stack = vec![Arc::clone(plan)];
    while let Some(node) = stack.pop() {
        if let Some(scan) = node.downcast_ref::<meshgate_mesh::ProductScanExec>() {
            total = Some(total.unwrap_or(0) + scan.scan_bytes());
        }
        stack.extend(node.children().into_iter().cloned());
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_errors_are_worded_as_datafusion_words_them() {
        let ballista = "Job failed due to stage 1 failed: Task failed due to runtime execution \
            error: DataFusionError(Shared(External(ArrowError(CastError(\"Cannot cast string \
            'x\\\"y' to value of Int64 type\")))))";
        assert_eq!(
            reword(ballista).unwrap(),
            (
                "Arrow error: Cast error: Cannot cast string 'x\"y' to value of Int64 type"
                    .to_string(),
                ErrorClass::InvalidQuery
            )
        );
        assert_eq!(
            reword("DataFusionError(Execution(\"boom\"))").unwrap(),
            (
                "Execution error: boom".to_string(),
                ErrorClass::InvalidQuery
            )
        );
        assert_eq!(
            reword("DataFusionError(Internal(\"bug\"))").unwrap().1,
            ErrorClass::Internal
        );
        // Anything else stays as Ballista said it.
        assert_eq!(reword("DataFusionError(SomethingNew(\"x\"))"), None);
        assert_eq!(reword("no error here"), None);
    }

    #[test]
    fn lost_executors_are_unavailable_and_query_errors_are_not() {
        let lost = job_failed("j", "Task failed due to executor lost: e1");
        assert!(matches!(
            JobError::find(&lost),
            Some(JobError::Unavailable(_))
        ));
        let query = job_failed("j", "DataFusionError(ResourcesExhausted(\"pool\"))");
        let Some(JobError::Query { error, class, .. }) = JobError::find(&query) else {
            panic!("{query}");
        };
        assert_eq!(error, "Resources exhausted: pool");
        assert_eq!(*class, ErrorClass::ResourcesExhausted);
        // What is not one of DataFusion's errors is internal, as it would be here.
        let odd = job_failed("j", "Task failed: something Ballista says");
        let Some(JobError::Query { class, .. }) = JobError::find(&odd) else {
            panic!("{odd}");
        };
        assert_eq!(*class, ErrorClass::Internal);
    }

    /// Result rows are not fetched in the clear from an executor off this machine, even
    /// if one registers with such an address.
    #[tokio::test]
    async fn no_result_is_fetched_in_the_clear_across_the_network() {
        let location = |host: &str| PartitionLocation {
            executor_meta: Some(ballista_core::serde::protobuf::ExecutorMetadata {
                id: "e1".into(),
                host: host.into(),
                // Nothing listens there: a refusal that is not about the address would
                // be a connection error instead.
                port: 9,
                ..Default::default()
            }),
            partition_id: Some(Default::default()),
            ..Default::default()
        };
        let Err(e) = fetch(location("10.0.0.9"), 1 << 20, None).await else {
            panic!("fetched from 10.0.0.9 in the clear");
        };
        assert!(e.to_string().contains("off this machine"), "{e}");
        let Err(e) = fetch(location("127.0.0.1"), 1 << 20, None).await else {
            panic!("port 9 answered");
        };
        assert!(!e.to_string().contains("off this machine"), "{e}");
    }
}
