//! The verifier: checks, independently of how a plan was made, that every product is read
//! under its policy. It runs three times, because every stage after analysis moves things:
//!
//! 1. on the analyzed plan ([`VerifyPolicy`], the last analyzer rule): each policy subtree
//!    is exactly what the rule builds;
//! 2. on the optimized plan ([`VerifyOptimized`], the last optimizer rule): optimizer rules
//!    push limits, predicates and projections into policy subtrees (DataFusion's leaf
//!    extraction moves `file_row_index()` below a row filter, for one). What they may leave
//!    there is checked by meaning: a raw masked column is used only as the argument of its
//!    own mask, nothing but the row filter runs below it, and no raw value leaves;
//! 3. on the physical plan ([`verify_physical`], in the query planner): every product is
//!    read by a [`ProductScanExec`] that discloses what the caller may see and filters the
//!    rows it must, no Parquet scan stands outside one, and no operator but their mask
//!    computes on raw masked columns (sorts, limits and exchanges carry them through).
//!
//! A failure is [`PolicyError::Unenforced`]: a bug, reported to the caller as an internal
//! error, never a plan that runs.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::catalog::cte_worktable::CteWorkTable;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, Result};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::{Expr, LogicalPlan, TableScan};
use datafusion::optimizer::{AnalyzerRule, OptimizerConfig, OptimizerRule};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::expressions::Column as PhysicalColumn;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::limit::{GlobalLimitExec, LocalLimitExec};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use meshgate_contract::MaskKind;
use meshgate_mesh::{
    ContractTable, Disclosure, Product, ProductScanExec, part_of_row_filter, same_predicate,
};

use crate::node::PolicyScope;
use crate::udf::MaskUdf;
use crate::{Access, Policy, PolicyError};

/// Functions that reveal where rows come from (server paths, row positions in files, and
/// through their gaps, where hidden rows are). Never callable; the session does not
/// register them, and the verifier refuses them should one appear.
pub(crate) const LAYOUT_FUNCTIONS: [&str; 2] = ["input_file_name", "file_row_index"];

fn unenforced(what: impl Into<String>) -> datafusion::error::DataFusionError {
    PolicyError::Unenforced(what.into()).into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Analyzed,
    Optimized,
}

/// Checks the final analyzed plan (the last analyzer rule).
#[derive(Debug)]
pub struct VerifyPolicy {
    policy: Arc<Policy>,
}

impl VerifyPolicy {
    pub fn new(policy: Arc<Policy>) -> Self {
        VerifyPolicy { policy }
    }
}

impl AnalyzerRule for VerifyPolicy {
    fn name(&self) -> &str {
        "meshgate_verify_policy"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        verify_logical(&plan, &self.policy, Stage::Analyzed)?;
        Ok(plan)
    }
}

/// Checks the optimized plan (the last optimizer rule, so after every pass).
#[derive(Debug)]
pub struct VerifyOptimized {
    policy: Arc<Policy>,
}

impl VerifyOptimized {
    pub fn new(policy: Arc<Policy>) -> Self {
        VerifyOptimized { policy }
    }
}

impl OptimizerRule for VerifyOptimized {
    fn name(&self) -> &str {
        "meshgate_verify_optimized"
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        verify_logical(&plan, &self.policy, Stage::Optimized)?;
        Ok(Transformed::no(plan))
    }
}

/// Reading metadata (catalog schemas, a contract's value labels) and a recursive CTE's own
/// rows is not reading data. (A product is recognised before this is asked, whatever
/// schema it is named in.)
pub(crate) fn allowed_non_product(scan: &TableScan, provider: &dyn TableProvider) -> bool {
    let any: &dyn std::any::Any = provider;
    scan.table_name
        .schema()
        .is_some_and(|s| crate::view::METADATA_SCHEMAS.contains(&s))
        || any.is::<CteWorkTable>()
        || any.is::<crate::labels::LabelsTable>()
}

/// The masks (by column name) and row filter the caller reads `product` under; no grant
/// is a bug here, since planning refuses an ungranted product before the verifier runs.
fn granted(
    product: &Product,
    policy: &Policy,
) -> Result<(HashMap<String, MaskKind>, Option<Expr>)> {
    match Access::resolve(product, &policy.principal) {
        Access::Granted {
            masks, row_filter, ..
        } => Ok((masks.into_iter().collect(), row_filter)),
        Access::Denied => Err(unenforced(format!(
            "{} read without a grant",
            product.display_name()
        ))),
    }
}

fn verify_logical(plan: &LogicalPlan, policy: &Policy, stage: Stage) -> Result<()> {
    plan.apply_with_subqueries(|node| {
        refuse_layout_functions(node)?;
        match node {
            LogicalPlan::Extension(ext) => {
                if let Some(scope) = PolicyScope::from_node(ext.node.as_ref()) {
                    verify_scope(scope, policy, stage)?;
                    // Its subtree is checked; user plans never sit below a scope.
                    return Ok(TreeNodeRecursion::Jump);
                }
            }
            LogicalPlan::TableScan(scan) => {
                let provider = source_as_provider(&scan.source)?;
                if let Some(table) = ContractTable::from_provider(provider.as_ref()) {
                    let product = table.product();
                    let bare_ok = !Access::resolve(product, &policy.principal).needs_policy();
                    // A clear, unfiltered reader's own predicates may be pushed into the
                    // scan once optimized, never at analysis.
                    if !bare_ok || (stage == Stage::Analyzed && !scan.filters.is_empty()) {
                        return Err(unenforced(scan.table_name.to_string()));
                    }
                } else if !allowed_non_product(scan, provider.as_ref()) {
                    return Err(PolicyError::NotAProduct(scan.table_name.to_string()).into());
                }
            }
            LogicalPlan::Ddl(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::Statement(_) => {
                return Err(PolicyError::NotAQuery(node.display().to_string()).into());
            }
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(())
}

fn refuse_layout_functions(node: &LogicalPlan) -> Result<()> {
    node.apply_expressions(|e| {
        e.apply(|e| {
            if let Expr::ScalarFunction(f) = e
                && LAYOUT_FUNCTIONS.contains(&f.name())
            {
                return Err(unenforced(format!("{} in a plan", f.name())));
            }
            Ok(TreeNodeRecursion::Continue)
        })
    })?;
    Ok(())
}

/// Raw values of masked columns, by the column that carries them, with their mask.
type Taint = HashMap<Column, MaskKind>;

/// Walks a policy subtree from its scan up: what may stand there at each stage, and that
/// no raw masked value leaves it.
fn verify_scope(scope: &PolicyScope, policy: &Policy, stage: Stage) -> Result<()> {
    // From the node under the scope down to the scan.
    let mut path = vec![&scope.input];
    let scan = loop {
        let node = *path.last().expect("not empty");
        let next = match node {
            LogicalPlan::TableScan(scan) => break scan,
            LogicalPlan::Projection(p) => &p.input,
            LogicalPlan::Filter(f) => &f.input,
            LogicalPlan::Limit(l) if stage == Stage::Optimized => &l.input,
            // The optimizer proved the scope empty (`x = 'a' AND x = 'b'`): nothing of the
            // product is read.
            LogicalPlan::EmptyRelation(e) if stage == Stage::Optimized && !e.produce_one_row => {
                return Ok(());
            }
            other => {
                return Err(unenforced(format!(
                    "unexpected {} under the policy of {}",
                    other.display(),
                    scope.applied.product
                )));
            }
        };
        path.push(next.as_ref());
    };
    let provider = source_as_provider(&scan.source)?;
    let Some(table) = ContractTable::from_provider(provider.as_ref()) else {
        return Err(unenforced(format!(
            "{} under the policy of {} is not a product",
            scan.table_name, scope.applied.product
        )));
    };
    let product = table.product();
    let (masks, row_filter) = granted(product, policy)?;
    let filtered = row_filter.is_some();
    if filtered != scope.row_filter.is_some() || product.display_name() != scope.applied.product {
        return Err(unenforced(format!(
            "the policy of {} does not match the caller's grant",
            product.display_name()
        )));
    }

    // The scan: raw values of masked columns, and what was pushed into it.
    let mut taint = Taint::new();
    for (q, field) in scan.projected_schema.iter() {
        if let Some(kind) = masks.get(field.name()) {
            taint.insert(Column::new(q.cloned(), field.name()), *kind);
        }
    }
    // The optimizer may copy the row filter (whole, or split into its conjuncts) into the
    // scan, and push a masked reader's predicates there; nothing else.
    let pushed_row_filter = |f: &Expr| {
        scope
            .row_filter
            .as_ref()
            .is_some_and(|r| part_of_row_filter(r, f))
    };
    let whole_row_filter = |f: &Expr| {
        scope
            .row_filter
            .as_ref()
            .is_some_and(|r| same_predicate(r, f))
    };
    if let Some(f) = scan.filters.iter().find(|f| {
        stage == Stage::Analyzed
            || (filtered && !pushed_row_filter(f) && !f.column_refs().is_empty())
    }) {
        return Err(unenforced(format!(
            "{f} was pushed into the scan of {}",
            product.display_name()
        )));
    }
    if filtered && scan.fetch.is_some() {
        return Err(unenforced(format!(
            "a limit was pushed below the row filter of {}",
            product.display_name()
        )));
    }
    for f in scan.filters.iter().filter(|f| !pushed_row_filter(f)) {
        uses_no_raw(f, &taint, product)?;
    }

    // Upwards from the scan. Nothing of the caller's is computed in a subtree that hides
    // rows (the scan applies the row filter itself; this is the logical plan's side).
    let mut row_filter_seen = false;
    for node in path.iter().rev().skip(1) {
        match node {
            LogicalPlan::Filter(f) => {
                // As analyzed, the rule's own Filter holds the whole row filter.
                let own = match stage {
                    Stage::Analyzed => whole_row_filter(&f.predicate),
                    _ => pushed_row_filter(&f.predicate),
                };
                if own && !row_filter_seen {
                    row_filter_seen = true;
                } else if stage == Stage::Analyzed {
                    return Err(unenforced(format!(
                        "a predicate stands under the policy of {}",
                        product.display_name()
                    )));
                } else {
                    uses_no_raw(&f.predicate, &taint, product)?;
                }
            }
            LogicalPlan::Projection(p) => {
                let mut out = Taint::new();
                for (expr, (q, field)) in p.expr.iter().zip(p.schema.iter()) {
                    let output = Column::new(q.cloned(), field.name());
                    match strip_alias(expr) {
                        Expr::Column(c) => {
                            if let Some(kind) = taint.get(c) {
                                out.insert(output, *kind);
                            }
                        }
                        e if is_own_mask(e, &taint) => {}
                        e if filtered || stage == Stage::Analyzed => {
                            return Err(unenforced(format!(
                                "{e} is computed under the policy of {}",
                                product.display_name()
                            )));
                        }
                        e => uses_no_raw(e, &taint, product)?,
                    }
                }
                taint = out;
            }
            LogicalPlan::Limit(_) => {}
            _ => unreachable!("the path holds projections, filters and limits"),
        }
    }
    if stage == Stage::Analyzed && filtered && !row_filter_seen {
        return Err(unenforced(format!(
            "the row filter of {} is missing",
            product.display_name()
        )));
    }
    if let Some(c) = taint.keys().next() {
        return Err(unenforced(format!(
            "{c} leaves the policy of {} unmasked",
            product.display_name()
        )));
    }
    Ok(())
}

fn strip_alias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => strip_alias(&a.expr),
        other => other,
    }
}

fn mask_of(f: &datafusion::logical_expr::ScalarUDF) -> Option<&MaskUdf> {
    let inner: &dyn std::any::Any = f.inner().as_ref();
    inner.downcast_ref()
}

/// `mask(c)` with `c` tainted by that very mask.
fn is_own_mask(e: &Expr, taint: &Taint) -> bool {
    let Expr::ScalarFunction(f) = e else {
        return false;
    };
    let Some(mask) = mask_of(&f.func) else {
        return false;
    };
    matches!(f.args.as_slice(), [Expr::Column(c)] if taint.get(c) == Some(&mask.kind()))
}

/// Fails if `e` reads a raw masked column other than through its own mask.
fn uses_no_raw(e: &Expr, taint: &Taint, product: &Product) -> Result<()> {
    e.apply(|e| {
        if is_own_mask(e, taint) {
            return Ok(TreeNodeRecursion::Jump);
        }
        if let Expr::Column(c) = e
            && taint.contains_key(c)
        {
            return Err(unenforced(format!(
                "{c} of {} is read unmasked",
                product.display_name()
            )));
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(())
}

/// Raw masked values per output column of a physical operator.
type PhysicalTaint = Vec<Option<MaskKind>>;

/// Checks the plan that will run (see the module docs).
pub fn verify_physical(plan: &Arc<dyn ExecutionPlan>, policy: &Policy) -> Result<()> {
    physical_taint(plan, policy).map(|_| ())
}

fn physical_taint(node: &Arc<dyn ExecutionPlan>, policy: &Policy) -> Result<PhysicalTaint> {
    let width = node.schema().fields().len();
    node.apply_expressions(&mut |e| {
        refuse_physical_layout(e)?;
        Ok(TreeNodeRecursion::Continue)
    })?;
    if let Some(scan) = node.downcast_ref::<ProductScanExec>() {
        return verify_scan(scan, policy);
    }
    if let Some(source) = node.downcast_ref::<DataSourceExec>()
        && source
            .data_source()
            .downcast_ref::<FileScanConfig>()
            .is_some()
    {
        return Err(PolicyError::NotAProduct("files read outside a product scan".into()).into());
    }
    let inputs = node
        .children()
        .into_iter()
        .map(|c| physical_taint(c, policy))
        .collect::<Result<Vec<_>>>()?;
    let tainted = |t: &PhysicalTaint| t.iter().any(Option::is_some);
    if !inputs.iter().any(tainted) {
        return Ok(vec![None; width]);
    }
    let input = &inputs[0];
    let check = |e: &Arc<dyn PhysicalExpr>| physical_uses_no_raw(e, input, node.name());
    if let Some(p) = node.downcast_ref::<ProjectionExec>() {
        let mut out = Vec::with_capacity(width);
        for e in p.expr() {
            if let Some(c) = e.expr.downcast_ref::<PhysicalColumn>() {
                out.push(input[c.index()]);
            } else if is_own_physical_mask(&e.expr, input) {
                out.push(None);
            } else {
                check(&e.expr)?;
                out.push(None);
            }
        }
        return Ok(out);
    }
    if let Some(f) = node.downcast_ref::<FilterExec>() {
        check(f.predicate())?;
        return Ok(match f.projection() {
            Some(p) => p.iter().map(|i| input[*i]).collect(),
            None => input.clone(),
        });
    }
    if let Some(r) = node.downcast_ref::<RepartitionExec>() {
        if let datafusion::physical_plan::Partitioning::Hash(exprs, _) = r.partitioning() {
            exprs.iter().try_for_each(check)?;
        }
        return Ok(input.clone());
    }
    // Sorting carries raw values through unchanged; only its keys compute on them (a
    // TopK also turns its keys into a filter on the scan).
    if let Some(sort) = node.downcast_ref::<SortExec>() {
        sort.expr().iter().try_for_each(|k| check(&k.expr))?;
        return Ok(input.clone());
    }
    if let Some(merge) = node.downcast_ref::<SortPreservingMergeExec>() {
        merge.expr().iter().try_for_each(|k| check(&k.expr))?;
        return Ok(input.clone());
    }
    if node.is::<CoalescePartitionsExec>()
        || node.is::<CooperativeExec>()
        || node.is::<GlobalLimitExec>()
        || node.is::<LocalLimitExec>()
    {
        return Ok(input.clone());
    }
    Err(unenforced(format!(
        "a raw masked column reaches {} before its mask",
        node.name()
    )))
}

fn refuse_physical_layout(e: &Arc<dyn PhysicalExpr>) -> Result<()> {
    e.apply(|e| {
        if let Some(f) = e.downcast_ref::<ScalarFunctionExpr>()
            && LAYOUT_FUNCTIONS.contains(&f.name())
        {
            return Err(unenforced(format!("{} in a plan", f.name())));
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(())
}

/// What a product scan must disclose and filter for this caller, and the raw masked
/// columns it outputs.
fn verify_scan(scan: &ProductScanExec, policy: &Policy) -> Result<PhysicalTaint> {
    let Some(product) = scan.contract_product() else {
        return Err(unenforced(format!(
            "{} scanned without its contract",
            scan.product()
        )));
    };
    let (masks, row_filter) = granted(product, policy)?;
    let expected = if row_filter.is_some() {
        Disclosure::RowsHidden
    } else if masks.is_empty() {
        Disclosure::Full
    } else {
        Disclosure::Masked(masks.keys().cloned().collect::<BTreeSet<_>>())
    };
    if *scan.disclosure() != expected || (row_filter.is_some() != scan.row_filter().is_some()) {
        return Err(unenforced(format!(
            "the scan of {} discloses {:?} to a caller who may see {expected:?}",
            product.display_name(),
            scan.disclosure()
        )));
    }
    // Inside the scan: what was pushed into the Parquet reader sees raw values; it may
    // only be a masked predicate (the row filter of a scan that hides rows is its own).
    if let Some(files) = scan.files() {
        if let Some(predicate) = files.file_source().filter()
            && scan.row_filter().is_none()
        {
            reader_uses_no_raw(&predicate, &masks)?;
        }
        if let Some(projection) = files.file_source().projection() {
            for e in projection.as_ref() {
                refuse_physical_layout(&e.expr)?;
                if e.expr.downcast_ref::<PhysicalColumn>().is_none() {
                    reader_uses_no_raw(&e.expr, &masks)?;
                }
            }
        }
    }
    Ok(scan
        .schema()
        .fields()
        .iter()
        .map(|f| masks.get(f.name()).copied())
        .collect())
}

/// Inside the Parquet reader columns are numbered by the file, so they are named here.
fn reader_uses_no_raw(e: &Arc<dyn PhysicalExpr>, masks: &HashMap<String, MaskKind>) -> Result<()> {
    e.apply(|e| {
        if let Some(f) = e.downcast_ref::<ScalarFunctionExpr>()
            && let Some(mask) = mask_of(f.fun())
            && let [arg] = f.args()
            && let Some(c) = arg.downcast_ref::<PhysicalColumn>()
            && masks.get(c.name()) == Some(&mask.kind())
        {
            return Ok(TreeNodeRecursion::Jump);
        }
        if let Some(c) = e.downcast_ref::<PhysicalColumn>()
            && masks.contains_key(c.name())
        {
            return Err(unenforced(format!(
                "{} reaches the Parquet reader unmasked",
                c.name()
            )));
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(())
}

fn is_own_physical_mask(e: &Arc<dyn PhysicalExpr>, input: &PhysicalTaint) -> bool {
    let Some(f) = e.downcast_ref::<ScalarFunctionExpr>() else {
        return false;
    };
    let Some(mask) = mask_of(f.fun()) else {
        return false;
    };
    match f.args() {
        [arg] => arg
            .downcast_ref::<PhysicalColumn>()
            .is_some_and(|c| input.get(c.index()) == Some(&Some(mask.kind()))),
        _ => false,
    }
}

fn physical_uses_no_raw(
    e: &Arc<dyn PhysicalExpr>,
    input: &PhysicalTaint,
    operator: &str,
) -> Result<()> {
    e.apply(|e| {
        if is_own_physical_mask(e, input) {
            return Ok(TreeNodeRecursion::Jump);
        }
        if let Some(c) = e.downcast_ref::<PhysicalColumn>()
            && input.get(c.index()).is_some_and(Option::is_some)
        {
            return Err(unenforced(format!(
                "{} reaches {operator} unmasked",
                c.name()
            )));
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(())
}
