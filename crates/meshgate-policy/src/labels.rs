//! `value_labels('domain.dataset', 'column')`: what a column's codes mean, as a relation a
//! query joins, so a report turns `status_id` into "shipped" without leaving the gateway.
//!
//! The labels are contract metadata, not rows: they are the same for every reader and
//! cost no scan. They are still answered only for a product the caller has a grant on,
//! as the product itself would be.

use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::datasource::MemTable;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use meshgate_contract::Scalar;
use meshgate_mesh::MeshCatalogProvider;

use crate::{Access, Policy, PolicyError};

/// The function's SQL name.
pub const VALUE_LABELS: &str = "value_labels";

/// The table function, bound to one mesh snapshot and one caller.
pub(crate) struct ValueLabels {
    pub(crate) catalog: Arc<MeshCatalogProvider>,
    pub(crate) policy: Arc<Policy>,
}

impl fmt::Debug for ValueLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(VALUE_LABELS)
    }
}

fn text_arg(e: &Expr, what: &str) -> Result<String> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)),
            _,
        ) => Ok(s.clone()),
        other => plan_err!("{VALUE_LABELS}: the {what} must be a string literal, not {other}"),
    }
}

impl TableFunctionImpl for ValueLabels {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let [product, column] = args.exprs() else {
            return plan_err!(
                "{VALUE_LABELS} takes a product and a column: \
                 {VALUE_LABELS}('checkout.checkout_orders_summary', 'status_id')"
            );
        };
        let name = text_arg(product, "product")?;
        let column = text_arg(column, "column")?;
        let parts: Vec<&str> = name.split('.').collect();
        let (domain, table) = match parts.as_slice() {
            [domain, table] | [meshgate_mesh::CATALOG, domain, table] => (*domain, *table),
            _ => {
                return plan_err!(
                    "{VALUE_LABELS}: name the product as domain.dataset, not {name:?}"
                );
            }
        };
        let Some(served) = self.catalog.served(domain, table) else {
            return plan_err!("{VALUE_LABELS}: no data product {name:?} is served");
        };
        let product = served.product();
        if let Access::Denied = Access::resolve(product, &self.policy.principal) {
            return Err(PolicyError::PermissionDenied {
                product: product.display_name(),
                owner: product.owner().to_string(),
                principal: self.policy.principal.name.clone(),
            }
            .into());
        }
        let Some(col) = product.contract.column(&column) else {
            return plan_err!("{VALUE_LABELS}: {name} has no column {column:?}");
        };
        let Some(values) = &col.values else {
            return plan_err!(
                "{VALUE_LABELS}: the contract of {name} gives no labels for {column} \
                 (a column's `values:` does)"
            );
        };
        // The codes in the column's own type, so they join to it without a cast.
        let value_type = product.schema.field_with_name(&column)?.data_type().clone();
        let codes = values
            .iter()
            .map(|v| scalar(&v.value).cast_to(&value_type))
            .collect::<Result<Vec<_>>>()?;
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("value", value_type, false),
            Field::new("label", DataType::Utf8, false),
            Field::new("description", DataType::Utf8, true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            ScalarValue::iter_to_array(codes)?,
            Arc::new(StringArray::from_iter_values(
                values.iter().map(|v| v.label.as_str()),
            )),
            Arc::new(StringArray::from_iter(
                values.iter().map(|v| v.description.as_deref()),
            )),
        ];
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
        Ok(Arc::new(LabelsTable(MemTable::try_new(
            schema,
            vec![vec![batch]],
        )?)))
    }
}

fn scalar(v: &Scalar) -> ScalarValue {
    match v {
        Scalar::Bool(b) => ScalarValue::Boolean(Some(*b)),
        Scalar::Int(i) => ScalarValue::Int64(Some(*i)),
        Scalar::Float(x) => ScalarValue::Float64(Some(*x)),
        Scalar::String(s) => ScalarValue::Utf8(Some(s.clone())),
    }
}

/// The labels of one column: contract metadata in memory, which the verifier lets a plan
/// read because it is this type (not any in-memory table).
#[derive(Debug)]
pub(crate) struct LabelsTable(MemTable);

#[async_trait]
impl TableProvider for LabelsTable {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.0.scan(state, projection, filters, limit).await
    }
}
