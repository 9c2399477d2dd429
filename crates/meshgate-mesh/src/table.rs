use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{ScanArgs, ScanResult, Session, TableProvider};
use datafusion::common::{DFSchema, internal_err};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::ListingTable;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExecBuilder;
use meshgate_contract::{Contract, EffectivePolicy};

use crate::delta::{DeltaFiles, Snapshot as DeltaSnapshot};
use crate::scan::{CallerView, Disclosure, ProductScanExec, part_of_row_filter};

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
    /// What each granted role reads: the contract under the governance policies matching it.
    pub policy: EffectivePolicy,
    /// Each role's row filters (contract and governance, all must hold), planned against
    /// `schema` as one unqualified predicate; a role without any is absent.
    pub row_filters: BTreeMap<String, Expr>,
    /// SHA-256 of the domain and the contract, for the mesh's epoch.
    digest: String,
}

impl Product {
    pub fn new(
        contract: Contract,
        domain: String,
        contract_file: PathBuf,
        location: String,
        schema: SchemaRef,
        policy: EffectivePolicy,
        row_filters: BTreeMap<String, Expr>,
    ) -> Product {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(domain.as_bytes());
        h.update([0]);
        h.update(serde_json::to_vec(&contract).unwrap_or_default());
        // The same contract under other governance policies is another product to a cache.
        h.update(serde_json::to_vec(&policy).unwrap_or_default());
        Product {
            digest: hex::encode(h.finalize()),
            contract,
            domain,
            contract_file,
            location,
            schema,
            policy,
            row_filters,
        }
    }

    /// What the mesh's epoch is made of for this product: equal on every replica serving
    /// the same contract in the same domain.
    pub fn digest(&self) -> &str {
        &self.digest
    }

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
    files: Files,
}

/// Where a product's files come from: every Parquet file under its location, or the files
/// the current snapshot of a Delta table names.
pub(crate) enum Files {
    Listing(Box<ListingTable>),
    Delta(Box<DeltaFiles>),
}

impl Files {
    async fn scan(
        &self,
        name: &str,
        state: &dyn Session,
        projection: Option<&[usize]>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match self {
            Files::Listing(table) => Ok(table
                .scan_with_args(
                    state,
                    ScanArgs::default()
                        .with_projection(projection)
                        .with_filters(Some(filters))
                        .with_limit(limit),
                )
                .await?
                .into_inner()),
            Files::Delta(table) => {
                let snapshot = table.latest(name).await?;
                table.scan(state, &snapshot, projection, limit).await
            }
        }
    }
}

impl ContractTable {
    pub(crate) fn new(product: Arc<Product>, files: Files) -> Self {
        ContractTable { product, files }
    }

    pub fn product(&self) -> &Arc<Product> {
        &self.product
    }

    /// The Delta snapshot being served, for a product stored as a Delta table.
    pub fn delta_snapshot(&self) -> Option<Arc<DeltaSnapshot>> {
        match &self.files {
            Files::Delta(table) => Some(table.snapshot()),
            Files::Listing(_) => None,
        }
    }

    /// Why a Delta product is not served although it was bound: the latest version a
    /// query or a check found breaks the contract (queries fail with this reason).
    pub fn delta_broken(&self) -> Option<String> {
        match &self.files {
            Files::Delta(table) => table.broken(),
            Files::Listing(_) => None,
        }
    }

    /// The Delta snapshot a query would read now (a newer commit is checked and taken).
    pub async fn latest_delta_snapshot(&self) -> Result<Option<Arc<DeltaSnapshot>>> {
        match &self.files {
            Files::Delta(table) => Ok(Some(table.latest(&self.product.display_name()).await?)),
            Files::Listing(_) => Ok(None),
        }
    }

    /// The object-store path of the product's location, the prefix of its files' paths.
    fn location_prefix(&self) -> String {
        match &self.files {
            Files::Listing(table) => table
                .table_paths()
                .first()
                .map(|u| u.prefix().as_ref().to_string())
                .unwrap_or_default(),
            Files::Delta(table) => table.url().prefix().as_ref().to_string(),
        }
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
        let args = ScanArgs::default()
            .with_projection(projection.map(|p| p.as_slice()))
            .with_filters(Some(filters))
            .with_limit(limit);
        Ok(self.scan_with_args(state, args).await?.into_inner())
    }

    /// Every scan is a [`ProductScanExec`] that discloses what the session's caller may
    /// see (see [`crate::scan`]); with a row filter it applies the filter itself.
    async fn scan_with_args<'a>(
        &self,
        state: &dyn Session,
        args: ScanArgs<'a>,
    ) -> Result<ScanResult> {
        let Some(caller) = state.config().get_extension::<CallerView>() else {
            return internal_err!(
                "{} scanned by a session that does not say who is asking",
                self.product.display_name()
            );
        };
        let view = caller.view(&self.product);
        let location = self.location_prefix();
        let name = self.product.display_name();
        let Some(row_filter) = view.row_filter else {
            let inner = self
                .files
                .scan(
                    &name,
                    state,
                    args.projection(),
                    args.filters().unwrap_or_default(),
                    args.limit(),
                )
                .await?;
            let disclosure = if view.masked.is_empty() {
                Disclosure::Full
            } else {
                Disclosure::Masked(view.masked)
            };
            let scan = ProductScanExec::new(
                name,
                location,
                disclosure,
                inner,
                Some(Arc::clone(&self.product)),
            )?;
            return Ok(ScanResult::new(Arc::new(scan)));
        };
        // The optimizer copies the row filter into the scan; the policy keeps every other
        // predicate above it (its verifier checks).
        if let Some(other) = args
            .filters()
            .unwrap_or_default()
            .iter()
            // A filter without columns (`false`, from a contradiction) runs on no row; the
            // scan ignores it, as it may any inexact filter, and the Filter above applies it.
            .find(|f| !part_of_row_filter(&row_filter, f) && !f.column_refs().is_empty())
        {
            return internal_err!("{other} was pushed into the filtered scan of {name}");
        }
        let all: Vec<usize> = (0..self.product.schema.fields().len()).collect();
        let wanted: Vec<usize> = args.projection().map_or(all, <[usize]>::to_vec);
        // Read the filter's columns too, and drop them again after filtering.
        let mut read = wanted.clone();
        for column in row_filter.column_refs() {
            let i = self.product.schema.index_of(&column.name)?;
            if !read.contains(&i) {
                read.push(i);
            }
        }
        let filters = [row_filter.clone()];
        let files = self
            .files
            .scan(&name, state, Some(&read), &filters, None)
            .await?;
        let schema = DFSchema::try_from(files.schema().as_ref().clone())?;
        let predicate = state.create_physical_expr(row_filter, &schema)?;
        let keep = (read.len() > wanted.len()).then(|| (0..wanted.len()).collect());
        let filter = FilterExecBuilder::new(predicate, files)
            .apply_projection(keep)?
            .with_fetch(args.limit())
            .build()?;
        let scan = ProductScanExec::new(
            name,
            location,
            Disclosure::RowsHidden,
            Arc::new(filter),
            Some(Arc::clone(&self.product)),
        )?;
        Ok(ScanResult::new(Arc::new(scan)))
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        match &self.files {
            Files::Listing(table) => table.supports_filters_pushdown(filters),
            // Every filter is applied again above the scan; the Parquet reader may still
            // prune files, row groups and pages with it.
            Files::Delta(_) => Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()]),
        }
    }
}
