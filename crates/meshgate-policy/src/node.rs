//! The plan node that marks where a product's policy is applied, and its physical form.
//!
//! Every scan of a contract table ends up as `MeshPolicy → [Projection(masks)] →
//! [Filter(row filter)] → TableScan`. The node lets the verifier find each policy subtree,
//! shows the policy in EXPLAIN, and, when a row filter is present, is a barrier in both
//! plans: no user predicate is pushed below it, so none is ever evaluated on a hidden row
//! (MEASURED §1: a logical barrier alone is undone by physical filter pushdown).

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchemaRef, Result, internal_err};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    Expr, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::physical_plan::execution_plan::CardinalityEffect;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PhysicalExpr, PlanProperties,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use meshgate_contract::Permission;

/// What the policy did to one scan; EXPLAIN shows it as
/// `MeshPolicy: checkout.orders v1 read_masked masks=[user_email:hash] row_filter`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub struct AppliedPolicy {
    /// `domain.dataset vN`.
    pub product: String,
    pub permission: Permission,
    /// `column:mask` for every masked column.
    pub masks: Vec<String>,
    /// True when a row filter hides rows: the node is then a predicate barrier.
    pub row_filter: bool,
}

impl fmt::Display for AppliedPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.product, self.permission)?;
        if self.row_filter {
            write!(f, " row_filter")?;
        }
        if !self.masks.is_empty() {
            write!(f, " masks=[{}]", self.masks.join(", "))?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PolicyScope {
    pub(crate) applied: AppliedPolicy,
    pub(crate) input: LogicalPlan,
}

impl PolicyScope {
    pub(crate) fn new(applied: AppliedPolicy, input: LogicalPlan) -> Self {
        PolicyScope { applied, input }
    }

    fn barrier(&self) -> bool {
        self.applied.row_filter
    }

    pub(crate) fn from_node(node: &dyn UserDefinedLogicalNode) -> Option<&PolicyScope> {
        node.as_any().downcast_ref()
    }
}

impl PartialOrd for PolicyScope {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.applied.partial_cmp(&other.applied)
    }
}

impl UserDefinedLogicalNodeCore for PolicyScope {
    fn name(&self) -> &str {
        "MeshPolicy"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        self.input.schema()
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    fn prevent_predicate_push_down_columns(&self) -> HashSet<String> {
        if self.barrier() {
            UserDefinedLogicalNodeCore::schema(self)
                .columns()
                .into_iter()
                .map(|c| c.flat_name())
                .chain(
                    UserDefinedLogicalNodeCore::schema(self)
                        .fields()
                        .iter()
                        .map(|f| f.name().clone()),
                )
                .collect()
        } else {
            HashSet::new()
        }
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "MeshPolicy: {}", self.applied)
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        let Some(input) = inputs.pop() else {
            return internal_err!("MeshPolicy takes one input");
        };
        Ok(PolicyScope::new(self.applied.clone(), input))
    }

    /// Projection pushdown passes through: the node outputs its input's columns as they are.
    fn necessary_children_exprs(&self, output_columns: &[usize]) -> Option<Vec<Vec<usize>>> {
        Some(vec![output_columns.to_vec()])
    }

    /// A limit only cuts rows that passed the policy already.
    fn supports_limit_pushdown(&self) -> bool {
        true
    }
}

/// Plans `MeshPolicy` nodes: nothing at all without a row filter, a barrier with one.
#[derive(Debug, Default)]
pub(crate) struct PolicyPlanner;

#[async_trait]
impl ExtensionPlanner for PolicyPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn Session,
        _ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(scope) = PolicyScope::from_node(node) else {
            return Ok(None);
        };
        let [input] = physical_inputs else {
            return internal_err!("MeshPolicy takes one input");
        };
        Ok(Some(if scope.barrier() {
            Arc::new(PolicyBarrierExec::new(
                Arc::clone(input),
                scope.applied.to_string(),
            ))
        } else {
            Arc::clone(input)
        }))
    }
}

/// The query planner of a policy-enforcing session.
#[derive(Debug, Default)]
pub struct MeshQueryPlanner;

#[async_trait]
impl QueryPlanner for MeshQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(PolicyPlanner)])
            .create_physical_plan(logical_plan, session)
            .await
    }
}

/// A pass-through operator that refuses every filter pushed from above (the default of
/// `gather_filters_for_pushdown`), reports no statistics, and does not take projections.
#[derive(Debug)]
pub struct PolicyBarrierExec {
    input: Arc<dyn ExecutionPlan>,
    label: String,
    properties: Arc<PlanProperties>,
}

impl PolicyBarrierExec {
    pub fn new(input: Arc<dyn ExecutionPlan>, label: String) -> Self {
        let properties = Arc::clone(input.properties());
        PolicyBarrierExec {
            input,
            label,
            properties,
        }
    }
}

impl PolicyBarrierExec {
    /// Which product's policy this barrier closes.
    pub fn label(&self) -> &str {
        &self.label
    }
}

impl DisplayAs for PolicyBarrierExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "PolicyBarrierExec: {}", self.label)
    }
}

impl ExecutionPlan for PolicyBarrierExec {
    fn name(&self) -> &str {
        "PolicyBarrierExec"
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

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(PolicyBarrierExec::new(input, self.label.clone()))),
            _ => internal_err!("PolicyBarrierExec takes one child"),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }

    fn supports_limit_pushdown(&self) -> bool {
        true
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        CardinalityEffect::Equal
    }
}

/// The policies applied in an analyzed plan, subqueries included, for the audit. A bare
/// contract scan (the verifier has checked it needs no policy) counts as a plain read.
pub fn applied_policies(plan: &LogicalPlan) -> Vec<AppliedPolicy> {
    let mut out = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::Extension(ext) => {
                if let Some(scope) = PolicyScope::from_node(ext.node.as_ref()) {
                    out.push(scope.applied.clone());
                    return Ok(TreeNodeRecursion::Jump);
                }
            }
            LogicalPlan::TableScan(scan) => {
                if let Ok(provider) = datafusion::datasource::source_as_provider(&scan.source)
                    && let Some(t) =
                        meshgate_catalog::ContractTable::from_provider(provider.as_ref())
                {
                    out.push(AppliedPolicy {
                        product: t.product().display_name(),
                        permission: Permission::Read,
                        masks: vec![],
                        row_filter: false,
                    });
                }
            }
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out
}
