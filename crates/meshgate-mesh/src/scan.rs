//! How a product's files are read for one caller: [`ProductScanExec`], the only physical
//! operator that touches a product's files, shows a caller nothing the caller may not see.
//!
//! Everything a plan says about a scan besides its rows is an output channel: EXPLAIN in
//! every form prints statistics (Parquet footers hold the min and max of every column),
//! file paths and byte ranges, and EXPLAIN ANALYZE prints how many rows each operator
//! read. DataFusion renders all of that from the plan's operators, so the scan is one
//! opaque leaf that decides what it discloses:
//!
//! - to a caller who reads the product in the clear and unfiltered, everything but the
//!   server's paths (files are named relative to the product's location);
//! - to a caller who reads some columns masked, no statistics of those columns;
//! - to a caller a row filter applies to, no statistics, no files, no sizes and no counts
//!   but the rows it returns. The row filter is applied *inside* the operator, so no
//!   operator above it, and no pushed predicate, ever sees a hidden row; it accepts no
//!   filter from above, and that makes it the barrier of docs/MEASURED.md §1.
//!
//! The physical optimizer still works on the files: the operator hands projections,
//! filters, limits, repartitioning and sort requests to the Parquet scan it wraps
//! (except where that would let something see a hidden row or a raw masked value).

use std::any::Any;
use std::collections::BTreeSet;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::config::ConfigOptions;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ColumnStatistics, Result, Statistics, internal_err};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr_common::sort_expr::PhysicalSortExpr;
use datafusion::physical_plan::execution_plan::{
    ChildrenPropertiesMode, ReplaceChildrenOptions, reset_plan_states,
};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::filter_pushdown::{
    ChildPushdownResult, FilterPushdownPhase, FilterPushdownPropagation, PushedDown,
};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, ExecutionPlanMetricsSet, Label, Metric, MetricsSet,
};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sort_pushdown::SortOrderPushdownResult;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, StatisticsArgs, StatisticsContext,
};
use datafusion::scalar::ScalarValue;
use futures::Stream;

use crate::Product;

/// What a caller may learn of one product beyond the rows it reads; the policy derives it
/// from the caller's grant, the same way it derives masks and row filters.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScanView {
    /// Columns the caller reads masked: their statistics stay hidden.
    pub masked: BTreeSet<String>,
    /// The caller's row filter, over the product's columns (unqualified). With one, the
    /// scan applies it itself and discloses nothing about the rows it removed.
    pub row_filter: Option<Expr>,
}

impl ScanView {
    /// Everything: a caller who reads the product in the clear and unfiltered, or the
    /// platform's own checks.
    pub fn full() -> ScanView {
        ScanView::default()
    }
}

/// Whether `f` is `row_filter` or one of its conjuncts: what the optimizer may push into a
/// filtered scan (it splits `a AND b` into `a` and `b`), all of which the scan applies.
pub fn part_of_row_filter(row_filter: &Expr, f: &Expr) -> bool {
    same_predicate(row_filter, f)
        || datafusion::logical_expr::utils::split_conjunction(row_filter)
            .into_iter()
            .any(|c| same_predicate(c, f))
}

/// Whether two predicates are the same row filter, whatever qualifiers and casts planning
/// added to one of them (the rule qualifies it, type coercion may cast its operands, the
/// simplifier folds a cast literal into a literal of the column's string type, and the
/// optimizer copies it into the scan).
pub fn same_predicate(a: &Expr, b: &Expr) -> bool {
    fn canonical(e: &Expr) -> Expr {
        use datafusion::common::tree_node::{Transformed, TreeNode};
        e.clone()
            .transform(|e| {
                Ok(match e {
                    Expr::Cast(c) => Transformed::yes(*c.expr),
                    Expr::TryCast(c) => Transformed::yes(*c.expr),
                    // The same text, whichever string type it is held in.
                    Expr::Literal(
                        ScalarValue::Utf8View(v) | ScalarValue::LargeUtf8(v),
                        metadata,
                    ) => Transformed::yes(Expr::Literal(ScalarValue::Utf8(v), metadata)),
                    Expr::Column(c) if c.relation.is_some() => Transformed::yes(Expr::Column(
                        datafusion::common::Column::new_unqualified(c.name),
                    )),
                    other => Transformed::no(other),
                })
            })
            .map(|t| t.data)
            .unwrap_or_else(|_| e.clone())
    }
    canonical(a) == canonical(b)
}

/// Who is asking, as every session that may scan a product must say: the policy installs
/// one per principal, the platform's own sessions [`CallerView::trusted`]. A session
/// without one cannot scan a product at all.
#[derive(Clone)]
pub struct CallerView(Arc<dyn Fn(&Product) -> ScanView + Send + Sync>);

impl CallerView {
    pub fn new(view: impl Fn(&Product) -> ScanView + Send + Sync + 'static) -> Self {
        CallerView(Arc::new(view))
    }

    /// The platform itself (data checks, publishing, benchmarks' baselines).
    pub fn trusted() -> Self {
        CallerView::new(|_| ScanView::full())
    }

    pub fn view(&self, product: &Product) -> ScanView {
        (self.0)(product)
    }
}

impl fmt::Debug for CallerView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CallerView")
    }
}

/// What a [`ProductScanExec`] discloses besides its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disclosure {
    /// Statistics, files (relative to the product), pushed predicates and metrics.
    Full,
    /// As `Full`, without the statistics of these columns.
    Masked(BTreeSet<String>),
    /// A row filter hides rows: only the operator's own output.
    RowsHidden,
}

/// The scan of one product's files, as one caller may see it (see the module docs).
#[derive(Debug)]
pub struct ProductScanExec {
    /// `domain.dataset vN`.
    product: String,
    /// The object-store path of the product's location: files are shown relative to it.
    location: String,
    disclosure: Disclosure,
    /// A Parquet `DataSourceExec`; with hidden rows, a `FilterExec` (the row filter) over
    /// one. Not a child where a plan is planned and shown (the gateway): nothing walks
    /// into it there.
    inner: Arc<dyn ExecutionPlan>,
    /// Inside a cluster the inner plan is the child, see [`ProductScanExec::in_cluster`].
    in_cluster: bool,
    /// This operator's own output, reported instead of the inner metrics when rows are
    /// hidden.
    metrics: ExecutionPlanMetricsSet,
    /// The contract, where the scan was planned (the verifier checks against it); absent
    /// in a plan decoded by another process.
    contract: Option<Arc<Product>>,
}

impl ProductScanExec {
    pub fn new(
        product: String,
        location: String,
        disclosure: Disclosure,
        inner: Arc<dyn ExecutionPlan>,
        contract: Option<Arc<Product>>,
    ) -> Result<Self> {
        if disclosure == Disclosure::RowsHidden && !inner.is::<FilterExec>() {
            return internal_err!("a scan that hides rows of {product} must filter them");
        }
        Ok(ProductScanExec {
            product,
            location,
            disclosure,
            inner,
            in_cluster: false,
            metrics: ExecutionPlanMetricsSet::new(),
            contract,
        })
    }

    /// The same scan as a process of a Ballista cluster runs it: its inner plan becomes
    /// its child. The scheduler gives each task its share of a stage by restricting the
    /// leaves it knows (a `DataSourceExec` to the task's file groups); an opaque leaf would
    /// be read whole by every task, duplicating rows under a UNION or a semi-join. Inside
    /// the cluster no plan is shown to a caller, and the row filter stays in the inner
    /// plan, so nothing is pushed beneath it (this operator accepts no pushed filters).
    pub fn in_cluster(mut self) -> Self {
        self.in_cluster = true;
        self
    }

    fn rewrap(&self, inner: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
        Arc::new(ProductScanExec {
            product: self.product.clone(),
            location: self.location.clone(),
            disclosure: self.disclosure.clone(),
            inner,
            in_cluster: self.in_cluster,
            metrics: ExecutionPlanMetricsSet::new(),
            contract: self.contract.clone(),
        })
    }

    /// `domain.dataset vN`.
    pub fn product(&self) -> &str {
        &self.product
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    /// The product's contract, when this process planned the scan.
    pub fn contract_product(&self) -> Option<&Arc<Product>> {
        self.contract.as_ref()
    }

    pub fn disclosure(&self) -> &Disclosure {
        &self.disclosure
    }

    /// The operator it wraps: for the codec, the verifier and the routing rule, never for
    /// display.
    pub fn inner(&self) -> &Arc<dyn ExecutionPlan> {
        &self.inner
    }

    /// The row filter, when this scan hides rows.
    pub fn row_filter(&self) -> Option<&Arc<dyn PhysicalExpr>> {
        self.inner
            .downcast_ref::<FilterExec>()
            .map(|f| f.predicate())
    }

    /// The Parquet scan inside.
    pub fn files(&self) -> Option<&FileScanConfig> {
        let mut node = &self.inner;
        if let Some(filter) = node.downcast_ref::<FilterExec>() {
            node = filter.input();
        }
        node.downcast_ref::<DataSourceExec>()?
            .data_source()
            .downcast_ref::<FileScanConfig>()
    }

    /// The bytes it will read, after pruning (for the routing rule).
    pub fn scan_bytes(&self) -> u64 {
        self.files()
            .map(|files| {
                files
                    .file_groups
                    .iter()
                    .flat_map(|g| g.files())
                    .map(|f| match &f.range {
                        Some(r) => (r.end - r.start).max(0) as u64,
                        None => f.object_meta.size,
                    })
                    .sum()
            })
            .unwrap_or(0)
    }

    fn hides_rows(&self) -> bool {
        self.disclosure == Disclosure::RowsHidden
    }

    /// The Parquet scan with its files named relative to the product, for display only.
    fn displayed_files(&self) -> Option<FileScanConfig> {
        let files = self.files()?;
        let prefix = format!("{}/", self.location.trim_end_matches('/'));
        let groups = files
            .file_groups
            .iter()
            .map(|g| {
                FileGroup::new(
                    g.files()
                        .iter()
                        .map(|f| {
                            let mut f = f.clone();
                            let path = f.object_meta.location.as_ref();
                            let relative = path
                                .strip_prefix(&prefix)
                                .unwrap_or_else(|| path.rsplit('/').next().unwrap_or_default());
                            f.object_meta.location = relative.into();
                            f.statistics = None;
                            f
                        })
                        .collect(),
                )
            })
            .collect();
        Some(
            FileScanConfigBuilder::from(files.clone())
                .with_file_groups(groups)
                .build(),
        )
    }
}

impl DisplayAs for ProductScanExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let columns: Vec<String> = self
            .schema()
            .fields()
            .iter()
            .map(|c| c.name().clone())
            .collect();
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => {
                write!(f, "ProductScanExec: product={}", self.product)?;
                match (self.hides_rows(), self.displayed_files()) {
                    (false, Some(files)) => {
                        write!(f, ", ")?;
                        datafusion::datasource::source::DataSource::fmt_as(&files, t, f)
                    }
                    _ => {
                        if let Some(filter) = self.row_filter() {
                            write!(f, ", row_filter={filter}")?;
                        }
                        write!(f, ", projection=[{}]", columns.join(", "))
                    }
                }
            }
            DisplayFormatType::TreeRender => {
                writeln!(f, "product={}", self.product)?;
                if self.hides_rows() {
                    if let Some(filter) = self.row_filter() {
                        writeln!(f, "row_filter={filter}")?;
                    }
                    Ok(())
                } else {
                    match self.displayed_files() {
                        Some(files) => {
                            datafusion::datasource::source::DataSource::fmt_as(&files, t, f)
                        }
                        None => Ok(()),
                    }
                }
            }
        }
    }
}

impl ExecutionPlan for ProductScanExec {
    fn name(&self) -> &str {
        "ProductScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        if self.in_cluster {
            vec![&self.inner]
        } else {
            vec![]
        }
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.inner.apply_expressions(f)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (self.in_cluster, children.as_slice()) {
            (true, [inner]) => Ok(self.rewrap(Arc::clone(inner))),
            (false, []) => Ok(self),
            _ => internal_err!(
                "ProductScanExec {} was given the wrong number of children",
                self.product
            ),
        }
    }

    fn reset_state(self: Arc<Self>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self.rewrap(reset_plan_states(Arc::clone(&self.inner))?))
    }

    fn repartitioned(
        &self,
        target_partitions: usize,
        config: &ConfigOptions,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        // With a row filter the files are split under the filter, which stays inside.
        if let Some(filter) = self.inner.downcast_ref::<FilterExec>() {
            let Some(files) = filter.input().repartitioned(target_partitions, config)? else {
                return Ok(None);
            };
            let inner = Arc::clone(&self.inner).replace_children(
                vec![files],
                ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
            )?;
            return Ok(Some(self.rewrap(inner)));
        }
        Ok(self
            .inner
            .repartitioned(target_partitions, config)?
            .map(|inner| self.rewrap(inner)))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let stream = self.inner.execute(partition, context)?;
        if !self.hides_rows() {
            return Ok(stream);
        }
        Ok(Box::pin(Counted {
            inner: stream,
            metrics: BaselineMetrics::new(&self.metrics, partition),
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        if self.hides_rows() {
            return Some(self.metrics.clone_inner());
        }
        // The Parquet reader labels per-file metrics with the file's path.
        let prefix = format!("{}/", self.location.trim_end_matches('/'));
        let mut out = MetricsSet::new();
        for m in self.inner.metrics()?.iter() {
            if !m.labels().iter().any(|l| l.value().starts_with(&prefix)) {
                out.push(Arc::clone(m));
                continue;
            }
            let labels = m
                .labels()
                .iter()
                .map(|l| {
                    let value = l.value();
                    Label::new(
                        l.name().to_string(),
                        value.strip_prefix(&prefix).unwrap_or(value).to_string(),
                    )
                })
                .collect();
            let mut relabelled = Metric::new_with_labels(m.value().clone(), m.partition(), labels)
                .with_type(m.metric_type());
            if let Some(c) = m.metric_category() {
                relabelled = relabelled.with_category(c);
            }
            out.push(Arc::new(relabelled));
        }
        Some(out)
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        let schema = self.schema();
        let inner = || StatisticsContext::new().compute(self.inner.as_ref(), args);
        match &self.disclosure {
            Disclosure::RowsHidden => Ok(Arc::new(Statistics::new_unknown(&schema))),
            Disclosure::Full => inner(),
            Disclosure::Masked(columns) => {
                let mut stats = inner()?.as_ref().clone();
                for (field, column) in schema.fields().iter().zip(&mut stats.column_statistics) {
                    if columns.contains(field.name()) {
                        *column = ColumnStatistics::new_unknown();
                    }
                }
                // Sizes of raw values are not the caller's either.
                stats.total_byte_size = Precision::Absent;
                Ok(Arc::new(stats))
            }
        }
    }

    /// A limit is taken here; `supports_limit_pushdown` stays false, since it means "push
    /// the limit past me" and a leaf would drop it (a fuzzer finding: `ORDER BY` a
    /// constant `LIMIT n` returned every row).
    fn with_fetch(&self, limit: Option<usize>) -> Option<Arc<dyn ExecutionPlan>> {
        self.inner.with_fetch(limit).map(|inner| self.rewrap(inner))
    }

    fn fetch(&self) -> Option<usize> {
        self.inner.fetch()
    }

    /// Column projections go into the Parquet scan; anything computed stays above, where
    /// the policy's own projection is (a mask is never folded into the scan).
    fn try_swapping_with_projection(
        &self,
        projection: &ProjectionExec,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        if self.hides_rows()
            || !projection
                .expr()
                .iter()
                .all(|e| e.expr.downcast_ref::<Column>().is_some())
        {
            return Ok(None);
        }
        Ok(self
            .inner
            .try_swapping_with_projection(projection)?
            .map(|inner| self.rewrap(inner)))
    }

    /// Filters from above reach the Parquet scan, unless rows are hidden: then none does,
    /// so no user expression ever runs on a hidden row.
    fn handle_child_pushdown_result(
        &self,
        phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        if self.hides_rows() {
            return Ok(FilterPushdownPropagation::with_parent_pushdown_result(
                vec![PushedDown::No; child_pushdown_result.parent_filters.len()],
            ));
        }
        let result =
            self.inner
                .handle_child_pushdown_result(phase, child_pushdown_result, config)?;
        Ok(FilterPushdownPropagation {
            filters: result.filters,
            updated_node: result.updated_node.map(|inner| self.rewrap(inner)),
        })
    }

    fn try_pushdown_sort(
        &self,
        order: &[PhysicalSortExpr],
    ) -> Result<SortOrderPushdownResult<Arc<dyn ExecutionPlan>>> {
        if self.hides_rows() {
            return Ok(SortOrderPushdownResult::Unsupported);
        }
        self.inner
            .try_pushdown_sort(order)?
            .try_map(|inner| Ok(self.rewrap(inner)))
    }

    fn with_preserve_order(&self, preserve_order: bool) -> Option<Arc<dyn ExecutionPlan>> {
        self.inner
            .with_preserve_order(preserve_order)
            .map(|inner| self.rewrap(inner))
    }

    fn with_new_state(&self, state: Arc<dyn Any + Send + Sync>) -> Option<Arc<dyn ExecutionPlan>> {
        self.inner
            .with_new_state(state)
            .map(|inner| self.rewrap(inner))
    }
}

/// Counts what a scan that hides rows returns: its only metric.
struct Counted {
    inner: SendableRecordBatchStream,
    metrics: BaselineMetrics,
}

impl Stream for Counted {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let poll = self.inner.as_mut().poll_next(cx);
        self.metrics.record_poll(poll)
    }
}

impl RecordBatchStream for Counted {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}
