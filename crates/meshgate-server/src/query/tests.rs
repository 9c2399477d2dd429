//! The query path's failure modes: panics, and cluster failures read as local ones.
use std::fmt;

use arrow::datatypes::{DataType, Field, Schema};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, Partitioning, PlanProperties};

use std::sync::Arc;
use std::time::Instant;

use datafusion::error::DataFusionError;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use futures::StreamExt;
use meshgate_mesh::{Mesh, MeshConfig};
use meshgate_policy::{ErrorClass, HashKey};

use super::*;
use crate::audit::{AuditLog, AuditRecord};

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

async fn engine(dir: &std::path::Path) -> Arc<QueryEngine> {
    let audit = AuditLog::open(Some(&dir.join("audit.log"))).unwrap();
    Arc::new(engine_with(dir, Limits::default(), audit).await)
}

/// An engine over an empty mesh in `dir`, under `limits`.
async fn engine_with(dir: &std::path::Path, limits: Limits, audit: AuditLog) -> QueryEngine {
    std::fs::create_dir_all(dir.join("contracts")).unwrap();
    let mesh = Mesh::load(MeshConfig::at(dir)).await.unwrap();
    QueryEngine::new(
        Arc::new(mesh),
        EngineOptions {
            limits,
            ..EngineOptions::default()
        },
        Arc::new(HashKey::new(b"gateway-unit-test-key-0123").unwrap()),
        None,
        audit,
    )
    .unwrap()
}

#[tokio::test]
async fn a_panic_while_planning_is_an_internal_error_with_an_id() {
    let status = unwinding(async {
        if true {
            panic!("boom");
        }
        Ok::<(), QueryError>(())
    })
    .await
    .unwrap_err();
    assert_eq!(status.kind, ErrorKind::Internal);
    assert!(
        status.message.starts_with("internal error (id "),
        "{status:?}"
    );
}

#[tokio::test]
async fn a_panic_while_streaming_is_an_audited_internal_error() {
    let dir = tempfile::tempdir().unwrap();
    let gw = engine(dir.path()).await;
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
    let permit = gw
        .slot(&Principal::new("guest", Vec::<String>::new()))
        .await
        .unwrap();
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
    assert_eq!(status.kind, ErrorKind::Internal);
    let audit = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    let id = status
        .message
        .trim_start_matches("internal error (id ")
        .trim_end_matches(')');
    assert!(
        audit.contains("\"outcome\":\"Internal\"") && audit.contains(id),
        "{audit}"
    );
    // The slot is given back: the server goes on serving.
    assert!(
        gw.slot(&Principal::new("guest", Vec::<String>::new()))
            .await
            .is_ok()
    );
}

/// A job that failed on the cluster answers as the same failure does here: a query
/// error with its words, anything internal as an id only (never Ballista's text).
#[test]
fn cluster_failures_read_as_local_ones() {
    let job = |class, error: &str| {
        DataFusionError::External(Box::new(meshgate_cluster::JobError::Query {
            job_id: "j1".into(),
            error: error.into(),
            class,
        }))
    };
    let cast = QueryError::from_datafusion(&job(
        ErrorClass::InvalidQuery,
        "Arrow error: Cast error: Cannot cast string 'x' to value of Int32 type",
    ));
    let local = QueryError::from_datafusion(&DataFusionError::ArrowError(
        Box::new(arrow::error::ArrowError::CastError(
            "Cannot cast string 'x' to value of Int32 type".into(),
        )),
        None,
    ));
    assert_eq!((cast.kind, &cast.message), (local.kind, &local.message));
    let ballista = "Job failed: Task failed: executor panicked reading /srv/data/secret.parquet";
    let internal = QueryError::from_datafusion(&job(ErrorClass::Internal, ballista));
    let local = QueryError::from_datafusion(&DataFusionError::Internal("bug".into()));
    assert_eq!(internal.kind, local.kind);
    for s in [&internal, &local] {
        assert!(s.message.starts_with("internal error (id "), "{s:?}");
    }
    let lost = QueryError::from_datafusion(&DataFusionError::External(Box::new(
        meshgate_cluster::JobError::Unavailable(format!("executor 10.0.0.7 lost: {ballista}")),
    )));
    assert_eq!(lost.kind, ErrorKind::Unavailable);
    assert!(
        !lost.message.contains("10.0.0.7") && lost.message.contains("(id "),
        "{lost:?}"
    );
}

async fn quota_engine(roles: &[(&str, crate::config::RoleLimits)]) -> QueryEngine {
    let limits = Limits {
        queue_timeout_secs: 0,
        roles: roles
            .iter()
            .map(|(r, l)| (r.to_string(), l.clone()))
            .collect(),
        ..Limits::default()
    };
    let dir = tempfile::tempdir().unwrap();
    engine_with(dir.path(), limits, AuditLog::open(None).unwrap()).await
}

#[tokio::test]
async fn a_roles_concurrency_is_shared_by_its_users_and_given_back() {
    use crate::config::RoleLimits;
    let gw = quota_engine(&[(
        "marketing",
        RoleLimits {
            max_concurrent_queries: Some(1),
            ..RoleLimits::default()
        },
    )])
    .await;
    let ann = Principal::new("ann", ["marketing"]);
    let bob = Principal::new("bob", ["marketing"]);
    let held = gw.slot(&ann).await.unwrap();
    let e = gw.slot(&bob).await.err().unwrap();
    assert_eq!(e.kind, ErrorKind::ResourceExhausted);
    assert!(
        e.message.contains("role marketing: 1 queries at once"),
        "{e:?}"
    );
    assert_eq!(e.retry_after, Some(1));
    // Another role is not held up; nor is a caller who also holds a role without a quota.
    assert!(
        gw.slot(&Principal::new("cy", ["data_analyst"]))
            .await
            .is_ok()
    );
    let lead = Principal::new("lead", ["data_analyst", "marketing"]);
    assert!(gw.slot(&lead).await.is_ok());
    drop(held);
    assert!(gw.slot(&bob).await.is_ok());
}

#[tokio::test]
async fn a_roles_rate_says_when_to_retry_and_the_most_generous_quota_applies() {
    use crate::config::RoleLimits;
    let gw = quota_engine(&[
        (
            "marketing",
            RoleLimits {
                queries_per_minute: Some(2),
                query_timeout_secs: Some(7),
                max_result_rows: Some(10),
                ..RoleLimits::default()
            },
        ),
        (
            "partners",
            RoleLimits {
                queries_per_minute: Some(1),
                ..RoleLimits::default()
            },
        ),
    ])
    .await;
    let ann = Principal::new("ann", ["marketing"]);
    let first = gw.slot(&ann).await.unwrap();
    assert_eq!(first.timeout, std::time::Duration::from_secs(7));
    assert_eq!(first.max_rows, Some(10));
    drop(first);
    assert!(gw.slot(&ann).await.is_ok());
    let e = gw.slot(&ann).await.err().unwrap();
    assert_eq!(e.kind, ErrorKind::ResourceExhausted);
    assert!(e.message.contains("2 queries per minute"), "{e:?}");
    assert!((1..=60).contains(&e.retry_after.unwrap()), "{e:?}");
    // Holding marketing and partners, the more generous (marketing) is charged: it is
    // spent, partners' is not, and the caller is refused with marketing's words.
    let both = Principal::new("dee", ["marketing", "partners"]);
    let e = gw.slot(&both).await.err().unwrap();
    assert!(e.message.contains("role marketing"), "{e:?}");
    // Without a quota role, the global limits only (their timeout).
    let free = gw
        .slot(&Principal::new("cy", ["data_analyst"]))
        .await
        .unwrap();
    assert_eq!(free.timeout, Limits::default().query_timeout());
    assert_eq!(free.max_rows, None);
}

/// A statement that runs past the query timeout ends with DeadlineExceeded, audited so,
/// and its slot is given back.
#[tokio::test]
async fn a_statement_past_the_query_timeout_is_stopped_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        query_timeout_secs: 1,
        max_concurrent_queries: 1,
        queue_timeout_secs: 0,
        ..Limits::default()
    };
    let audit = AuditLog::open(Some(&dir.path().join("audit.log"))).unwrap();
    let gw = Arc::new(engine_with(dir.path(), limits, audit).await);
    let guest = Principal::new("guest", Vec::<String>::new());
    // Without end: only the timeout stops it.
    let planned = gw
        .plan(
            &guest,
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) \
             SELECT count(*) FROM r",
            None,
            None,
        )
        .await
        .unwrap();
    let slot = gw.slot(&guest).await.unwrap();
    let record = AuditRecord {
        principal: "guest".into(),
        kind: "statement".into(),
        ..Default::default()
    };
    let started = Instant::now();
    let results: Vec<_> = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        gw.execute(planned, slot, record, started)
            .unwrap()
            .collect(),
    )
    .await
    .expect("the query timeout stops the statement");
    let [Err(e)] = results.as_slice() else {
        panic!("{results:?}");
    };
    assert_eq!(e.kind, ErrorKind::DeadlineExceeded, "{e:?}");
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    let audit = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    assert!(
        audit.contains("\"outcome\":\"DeadlineExceeded\""),
        "{audit}"
    );
    // The only slot is free again.
    assert!(gw.slot(&guest).await.is_ok());
}
