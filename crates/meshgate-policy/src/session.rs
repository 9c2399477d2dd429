//! A DataFusion session that can only read data products, as one principal.

use std::sync::Arc;

use datafusion::dataframe::DataFrame;
use datafusion::error::Result;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::logical_expr::ScalarUDF;
use datafusion::optimizer::{Analyzer, AnalyzerRule};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use meshgate_mesh::{CATALOG, CallerView, Mesh};

use crate::labels::ValueLabels;
use crate::node::MeshQueryPlanner;
use crate::rule::MeshPolicyRule;
use crate::udf::RefusedUdf;
use crate::verify::{LAYOUT_FUNCTIONS, VerifyOptimized, VerifyPolicy};
use crate::view::CallerCatalog;
use crate::{Policy, PolicyError};

/// What a deployment tunes for every session; the policy parts are not tunable.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub config: SessionConfig,
    /// Shared by all sessions: memory pool, object stores, file metadata caches.
    pub runtime: Arc<RuntimeEnv>,
}

impl SessionOptions {
    /// Default settings over `mesh`'s object stores (a runtime without them cannot read
    /// products on S3).
    pub fn for_mesh(mesh: &Mesh) -> Self {
        let runtime = RuntimeEnvBuilder::new()
            .with_object_store_registry(mesh.object_stores())
            .build_arc()
            .expect("a runtime with default settings");
        SessionOptions {
            config: SessionConfig::new(),
            runtime,
        }
    }
}

/// A policy-enforcing session for one principal over one mesh snapshot.
pub struct MeshSession {
    ctx: SessionContext,
    policy: Arc<Policy>,
}

impl MeshSession {
    pub fn new(mesh: &Mesh, policy: Policy) -> Self {
        Self::with_options(mesh, policy, SessionOptions::for_mesh(mesh))
    }

    pub fn with_options(mesh: &Mesh, policy: Policy, options: SessionOptions) -> Self {
        let policy = Arc::new(policy);
        let viewer = Arc::clone(&policy);
        let mut config = options
            .config
            .with_extension(Arc::new(CallerView::new(move |p| viewer.view(p))))
            .with_information_schema(true)
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(CATALOG, "default");
        // A rule that fails must fail the query (the verifier is one).
        config.options_mut().optimizer.skip_failed_rules = false;
        // DataFusion 55 builds an aggregate's dynamic filter from its plain-column min/max
        // alone and prunes rows that another aggregate still needs: `max(f(a)), max(b)`
        // answers wrong (apache/datafusion#24816, fixed after 55; found by the fuzzer).
        config
            .options_mut()
            .optimizer
            .enable_aggregate_dynamic_filter_pushdown = false;
        // The policy rule runs first, so that type coercion and every later rule see the
        // masked plan; the verifier runs last, on the final analyzed plan.
        let mut rules: Vec<Arc<dyn AnalyzerRule + Send + Sync>> =
            vec![Arc::new(MeshPolicyRule::new(Arc::clone(&policy)))];
        rules.extend(Analyzer::new().rules);
        rules.push(Arc::new(VerifyPolicy::new(Arc::clone(&policy))));
        let pool = Arc::clone(&options.runtime.memory_pool);
        let mut builder = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(options.runtime)
            .with_default_features()
            .with_analyzer_rules(rules)
            .with_optimizer_rule(Arc::new(VerifyOptimized::new(Arc::clone(&policy))))
            .with_query_planner(Arc::new(MeshQueryPlanner::new(Arc::clone(&policy))));
        // Functions that reveal the files behind a product are replaced by refusals, and
        // those whose results can dwarf their arguments count against the memory limit,
        // also when the planner folds them.
        if let Some(functions) = builder.scalar_functions() {
            for f in functions.iter_mut() {
                if LAYOUT_FUNCTIONS.contains(&f.name()) {
                    *f = Arc::new(ScalarUDF::new_from_impl(RefusedUdf::new(f.name())));
                }
            }
            crate::bounded::bound(functions, &pool);
        }
        let state = builder.build();
        let ctx = SessionContext::new_with_state(state);
        // Products in the caller's types (crate::view), so SQL is typed as its answers are.
        ctx.register_catalog(
            CATALOG,
            Arc::new(CallerCatalog::new(mesh.catalog(), Arc::clone(&policy))),
        );
        ctx.register_udtf(
            crate::labels::VALUE_LABELS,
            Arc::new(ValueLabels {
                catalog: mesh.catalog(),
                policy: Arc::clone(&policy),
            }),
        );
        MeshSession { ctx, policy }
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// The underlying context, for execution. Plan through [`MeshSession::sql`].
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Plans one read-only statement. Anything that would change state (DDL, DML, `COPY`,
    /// `SET`, `PREPARE`, transactions) is refused before it runs.
    pub async fn sql(&self, sql: &str) -> Result<DataFrame> {
        let state = self.ctx.state();
        let plan = state.create_logical_plan(sql).await?;
        read_only()
            .verify_plan(&plan)
            .map_err(|e| PolicyError::NotAQuery(e.strip_backtrace()))?;
        // DataFusion reports analyzer errors of an EXPLAIN inside its output; a policy
        // refusal must be an error whatever the statement, so the plan is checked first.
        if let LogicalPlan::Explain(explain) = &plan {
            state.optimize(&explain.plan)?;
        }
        self.ctx.execute_logical_plan(plan).await
    }
}

fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}
