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
    std::fs::create_dir_all(dir.join("contracts")).unwrap();
    let mesh = Mesh::load(MeshConfig::at(dir)).await.unwrap();
    let key = HashKey::new(b"gateway-unit-test-key-0123").unwrap();
    let audit = AuditLog::open(Some(&dir.join("audit.log"))).unwrap();
    Arc::new(
        QueryEngine::new(
            Arc::new(mesh),
            EngineOptions::default(),
            Arc::new(key),
            None,
            audit,
        )
        .unwrap(),
    )
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
    assert!(gw.slot().await.is_ok());
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
