use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{ScanArgs, ScanResult, Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::ListingTable;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use meshgate_contract::Contract;

/// A served data product: one major version of one dataset, bound to its files.
#[derive(Debug)]
pub struct Product {
    pub contract: Contract,
    pub domain: String,
    pub contract_file: PathBuf,
    /// The resolved location (an absolute path or URL, ending in `/`).
    pub location: String,
    /// What SQL sees: the contract's columns, in contract order, typed as the contract says.
    pub schema: SchemaRef,
    /// Each grant's row filter, planned against `schema` (role → unqualified predicate).
    pub row_filters: BTreeMap<String, Expr>,
}

impl Product {
    pub fn dataset(&self) -> &str {
        self.contract.dataset.as_str()
    }

    pub fn version(&self) -> u32 {
        self.contract.version.0
    }

    pub fn owner(&self) -> &str {
        self.contract.owner.as_str()
    }

    /// `domain.dataset vN`, the way people name a product in messages.
    pub fn display_name(&self) -> String {
        format!("{}.{} v{}", self.domain, self.dataset(), self.version())
    }
}

/// A contract table: scans read only the contract's columns of the product's Parquet files,
/// cast to the contract's types; undeclared columns in the files are unreachable.
///
/// This type does no masking itself: the policy rule recognises scans of it by downcasting
/// and wraps them. Any other table provider is refused by that rule.
pub struct ContractTable {
    product: Arc<Product>,
    files: ListingTable,
}

impl ContractTable {
    pub(crate) fn new(product: Arc<Product>, files: ListingTable) -> Self {
        ContractTable { product, files }
    }

    pub fn product(&self) -> &Arc<Product> {
        &self.product
    }

    /// The contract table behind a provider, if it is one.
    pub fn from_provider(provider: &dyn TableProvider) -> Option<&ContractTable> {
        let any: &dyn std::any::Any = provider;
        any.downcast_ref()
    }
}

impl fmt::Debug for ContractTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContractTable")
            .field("product", &self.product.display_name())
            .finish()
    }
}

#[async_trait]
impl TableProvider for ContractTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.product.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_column_default(&self, _column: &str) -> Option<&Expr> {
        None
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.files.scan(state, projection, filters, limit).await
    }

    async fn scan_with_args<'a>(
        &self,
        state: &dyn Session,
        args: ScanArgs<'a>,
    ) -> Result<ScanResult> {
        self.files.scan_with_args(state, args).await
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.files.supports_filters_pushdown(filters)
    }
}
