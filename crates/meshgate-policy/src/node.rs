//! The plan node that marks where a product's policy is applied, and the query planner.
//!
//! Every scan of a contract table ends up as `MeshPolicy → [Projection(masks)] →
//! [Filter(row filter)] → TableScan`. The node lets the verifier find each policy subtree,
//! shows the policy in EXPLAIN, and, when a row filter is present, is a barrier in the
//! logical plan: no user predicate is pushed below it. Physically the node is nothing: the
//! product's scan ([`meshgate_mesh::ProductScanExec`]) applies the row filter itself and
//! accepts no predicate from above, which is the physical barrier (docs/MEASURED.md §1: a logical
//! barrier alone is undone by physical filter pushdown).

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchemaRef, Result, internal_err};
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    Expr, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use meshgate_contract::Permission;
use meshgate_mesh::ProductScanExec;

use crate::Policy;
use crate::verify::verify_physical;

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
    /// The row filter as the rule placed it (qualified), for the verifier.
    pub(crate) row_filter: Option<Expr>,
    pub(crate) input: LogicalPlan,
}

impl PolicyScope {
    pub(crate) fn new(
        applied: AppliedPolicy,
        row_filter: Option<Expr>,
        input: LogicalPlan,
    ) -> Self {
        PolicyScope {
            applied,
            row_filter,
            input,
        }
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
        Ok(PolicyScope::new(
            self.applied.clone(),
            self.row_filter.clone(),
            input,
        ))
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

/// Plans `MeshPolicy` nodes as their input: the scan below enforces the row filter.
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
        if PolicyScope::from_node(node).is_none() {
            return Ok(None);
        }
        let [input] = physical_inputs else {
            return internal_err!("MeshPolicy takes one input");
        };
        Ok(Some(without_second_row_filter(input)?))
    }
}

/// The scan applies the row filter; the logical plan's own copy of it, planned as a
/// `FilterExec` right above, would only filter the same rows again.
fn without_second_row_filter(plan: &Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let input = without_second_row_filter(projection.input())?;
        if Arc::ptr_eq(&input, projection.input()) {
            return Ok(Arc::clone(plan));
        }
        return Arc::clone(plan).replace_children(
            vec![input],
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        );
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>()
        && filter.projection().is_none()
        && let Some(scan) = filter.input().downcast_ref::<ProductScanExec>()
        && scan.row_filter() == Some(filter.predicate())
    {
        return Ok(Arc::clone(filter.input()));
    }
    Ok(Arc::clone(plan))
}

/// The query planner of a policy-enforcing session: DataFusion's, with the policy node
/// planned, and every plan it returns verified ([`crate::verify::verify_physical`]).
#[derive(Debug)]
pub struct MeshQueryPlanner {
    policy: Arc<Policy>,
}

impl MeshQueryPlanner {
    pub fn new(policy: Arc<Policy>) -> Self {
        MeshQueryPlanner { policy }
    }
}

#[async_trait]
impl QueryPlanner for MeshQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let planner =
            DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(PolicyPlanner)]);
        // EXPLAIN shows the plans of a statement it does not run: they are checked as if
        // it ran.
        if let LogicalPlan::Explain(explain) = logical_plan
            && explain.logical_optimization_succeeded
        {
            let statement = planner.create_physical_plan(&explain.plan, session).await?;
            verify_physical(&statement, &self.policy)?;
        }
        let plan = planner.create_physical_plan(logical_plan, session).await?;
        verify_physical(&plan, &self.policy)?;
        Ok(plan)
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
                    && let Some(t) = meshgate_mesh::ContractTable::from_provider(provider.as_ref())
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
