//! The analyzer rules that enforce contracts on every plan (docs/DESIGN.md §4).

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, Result, TableReference};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::logical_expr::{
    Extension, Filter, LogicalPlan, LogicalPlanBuilder, TableScan, TableScanBuilder, col,
};
use datafusion::optimizer::AnalyzerRule;
use meshgate_mesh::{ContractTable, Product};

use crate::node::{AppliedPolicy, PolicyScope};
use crate::udf::MaskUdf;
use crate::verify::allowed_non_product;
use crate::view::CallerTable;
use crate::{Access, Policy, PolicyError};

/// Rewrites every scan of a contract table, in subqueries too, into the product's policy
/// for this session's principal: masks for `read_masked`, the row filter, and the
/// `MeshPolicy` node over both. Any other table source is refused.
///
/// It runs before type coercion, so that everything above a scan, the user's predicates
/// included, is typed against the masked columns.
#[derive(Debug)]
pub struct MeshPolicyRule {
    policy: Arc<Policy>,
}

impl MeshPolicyRule {
    pub fn new(policy: Arc<Policy>) -> Self {
        MeshPolicyRule { policy }
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        types_changed: &mut bool,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::TableScan(scan) = plan else {
            // A mask that changes a column's type (hash of a number) changes the schema of
            // every node above it.
            return if *types_changed {
                Ok(Transformed::yes(plan.recompute_schema()?))
            } else {
                Ok(Transformed::no(plan))
            };
        };
        let mut provider = source_as_provider(&scan.source)?;
        let planned_as = Arc::clone(&scan.projected_schema);
        let mut scan = scan;
        // The caller's typed view of a product (crate::view) is read as the product itself,
        // under the masks that give it those types.
        if let Some(view) = CallerTable::from_provider(provider.as_ref()) {
            provider = Arc::clone(view.product_table());
            scan =
                TableScanBuilder::new(scan.table_name, provider_as_source(Arc::clone(&provider)))
                    .with_projection(scan.projection)
                    .with_filters(scan.filters)
                    .with_fetch(scan.fetch)
                    .with_statistics_requests(scan.statistics_requests)
                    .build()?;
        }
        let Some(table) = ContractTable::from_provider(provider.as_ref()) else {
            return if allowed_non_product(&scan, provider.as_ref()) {
                Ok(Transformed::no(LogicalPlan::TableScan(scan)))
            } else {
                Err(PolicyError::NotAProduct(scan.table_name.to_string()).into())
            };
        };
        let product = Arc::clone(table.product());
        let plan = self.enforce(&product, scan)?;
        // Planned over the caller's view, the types already are the masks'; a product
        // scanned directly (a plan built outside the session's catalog) changes them.
        *types_changed |= planned_as
            .fields()
            .iter()
            .zip(plan.schema().fields())
            .any(|(a, b)| a.data_type() != b.data_type());
        Ok(Transformed::yes(plan))
    }

    /// `MeshPolicy → [Projection(masks)] → [Filter(row filter)] → scan`.
    fn enforce(&self, product: &Product, scan: TableScan) -> Result<LogicalPlan> {
        let principal = &self.policy.principal;
        let access = Access::resolve(product, principal);
        if !access.needs_policy() {
            // Nothing to hide: the scan stays as DataFusion planned it, so plain reads
            // plan exactly as they would without meshgate. The verifier re-derives this.
            return Ok(LogicalPlan::TableScan(scan));
        }
        let (permission, masks, row_filter) = match access {
            Access::Denied => {
                return Err(PolicyError::PermissionDenied {
                    product: product.display_name(),
                    owner: product.owner().to_string(),
                    principal: principal.name.clone(),
                }
                .into());
            }
            Access::Granted {
                permission,
                masks,
                row_filter,
            } => (permission, masks, row_filter),
        };
        let qualifier = scan.table_name.clone();
        let scan_schema = Arc::clone(&scan.projected_schema);
        let mut plan = LogicalPlan::TableScan(scan);
        let mut applied = AppliedPolicy {
            product: product.display_name(),
            permission,
            masks: vec![],
            row_filter: row_filter.is_some(),
        };

        let row_filter = row_filter.map(|f| qualify(f, &qualifier)).transpose()?;
        if let Some(filter) = &row_filter {
            plan = LogicalPlan::Filter(Filter::try_new(filter.clone(), Arc::new(plan))?);
        }

        if !masks.is_empty() {
            let exprs = scan_schema
                .iter()
                .map(|(q, field)| {
                    let column = col(Column::new(q.cloned(), field.name()));
                    match masks.get(field.name()) {
                        None => column,
                        Some(kind) => MaskUdf::call(*kind, &self.policy.key, column)
                            .alias_qualified(q.cloned(), field.name()),
                    }
                })
                .collect::<Vec<_>>();
            plan = LogicalPlanBuilder::from(plan).project(exprs)?.build()?;
            // In contract order, as before governance could add masks.
            applied.masks = product
                .contract
                .schema
                .iter()
                .filter_map(|c| {
                    masks
                        .get(c.name.as_str())
                        .map(|k| format!("{}:{k}", c.name))
                })
                .collect();
        }
        let scope = PolicyScope::new(applied, row_filter, plan);
        Ok(LogicalPlan::Extension(Extension {
            node: Arc::new(scope),
        }))
    }
}

impl AnalyzerRule for MeshPolicyRule {
    fn name(&self) -> &str {
        "meshgate_policy"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        let mut types_changed = false;
        plan.transform_up_with_subqueries(|p| self.rewrite(p, &mut types_changed))
            .map(|t| t.data)
    }
}

/// Row filters are planned unqualified; a scan may be named `t`, `d.t` or `mesh.d.t`.
fn qualify(
    expr: datafusion::logical_expr::Expr,
    q: &TableReference,
) -> Result<datafusion::logical_expr::Expr> {
    use datafusion::logical_expr::Expr;
    expr.transform(|e| match e {
        Expr::Column(c) => Ok(Transformed::yes(Expr::Column(Column::new(
            Some(q.clone()),
            c.name,
        )))),
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use meshgate_mesh::{Mesh, MeshConfig};

    use super::*;
    use crate::{HashKey, MeshSession, Principal};

    /// The sample mesh, analyzed as `principal`: what the rule (and the analyzer after it)
    /// made of `sql`.
    async fn analyzed(roles: &[&str], sql: &str) -> String {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mesh = Mesh::load(MeshConfig::at(repo)).await.unwrap();
        let key = Arc::new(HashKey::new(b"rule-unit-test-key-0123456789").unwrap());
        let session =
            MeshSession::new(&mesh, Policy::new(Principal::new("u", roles.to_vec()), key));
        let df = session.sql(sql).await.unwrap();
        let state = session.context().state();
        state
            .analyzer()
            .execute_and_check(df.logical_plan().clone(), state.config_options(), |_, _| {})
            .unwrap()
            .display_indent()
            .to_string()
    }

    #[tokio::test]
    async fn a_masked_reader_gets_masks_over_the_scan_under_the_policy_node() {
        let plan = analyzed(
            &["marketing"],
            "SELECT user_email FROM checkout.checkout_orders_summary WHERE total_amount > 10",
        )
        .await;
        insta::assert_snapshot!(plan, @r"
        Projection: checkout.checkout_orders_summary.user_email
          Filter: CAST(checkout.checkout_orders_summary.total_amount AS Decimal128(22, 2)) > CAST(Int64(10) AS Decimal128(22, 2))
            MeshPolicy: checkout.checkout_orders_summary v1 read_masked masks=[user_email:hash]
              Projection: checkout.checkout_orders_summary.order_id, checkout.checkout_orders_summary.total_amount, mask_hash(checkout.checkout_orders_summary.user_email) AS user_email, checkout.checkout_orders_summary.status_id
                TableScan: checkout.checkout_orders_summary
        ");
    }

    #[tokio::test]
    async fn a_row_filter_is_applied_in_subqueries_too() {
        let plan = analyzed(
            &["eu_support"],
            "SELECT count(*) FROM customers.customer_profiles WHERE country IN \
             (SELECT country FROM web.web_sessions)",
        )
        .await;
        insta::assert_snapshot!(plan, @r#"
        Projection: count(Int64(1)) AS count(*)
          Aggregate: groupBy=[[]], aggr=[[count(Int64(1))]]
            Filter: customers.customer_profiles.country IN (<subquery>)
              Subquery:
                Projection: web.web_sessions.country
                  MeshPolicy: web.web_sessions v1 read_masked row_filter masks=[user_email:email, ip_address:hash]
                    Projection: web.web_sessions.session_id, mask_email(web.web_sessions.user_email) AS user_email, mask_hash(web.web_sessions.ip_address) AS ip_address, web.web_sessions.user_agent, web.web_sessions.country, web.web_sessions.started_at, web.web_sessions.page_views, web.web_sessions.bounced
                      Filter: web.web_sessions.country IN ([Utf8View("DE"), Utf8View("FR"), Utf8View("IT"), Utf8View("ES"), Utf8View("NL"), Utf8View("PL")])
                        TableScan: web.web_sessions
              MeshPolicy: customers.customer_profiles v2 read row_filter masks=[email:hash, street_address:null]
                Projection: customers.customer_profiles.customer_id, mask_hash(customers.customer_profiles.email) AS email, customers.customer_profiles.first_name, customers.customer_profiles.last_name, customers.customer_profiles.phone, customers.customer_profiles.birth_date, mask_null(customers.customer_profiles.street_address) AS street_address, customers.customer_profiles.region, customers.customer_profiles.country, customers.customer_profiles.signup_at, customers.customer_profiles.loyalty_tier
                  Filter: customers.customer_profiles.region = Utf8View("EU")
                    TableScan: customers.customer_profiles
        "#);
    }

    #[tokio::test]
    async fn a_clear_unfiltered_reader_gets_the_scan_as_it_was() {
        let plan = analyzed(&["data_analyst"], "SELECT sku FROM inventory.stock_levels").await;
        insta::assert_snapshot!(plan, @r"
        Projection: inventory.stock_levels.sku
          TableScan: inventory.stock_levels
        ");
    }
}
