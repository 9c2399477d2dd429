//! The mesh as one principal sees it: each product with the types its masks yield.
//!
//! A hash of a `long` is a hex string. SQL is typed while it is planned, before the policy
//! rule runs, so a session that showed the contract's types would refuse `lower(account_id)`
//! for a role that reads hex strings, and DESCRIBE, `information_schema` and Flight's
//! `GetTables` would promise a type that no answer has. The session's catalog therefore
//! wraps every product whose masks change a type in a [`CallerTable`] that shows the caller's
//! types; the policy rule replaces it by the product itself, under its masks, so the plan's
//! schema does not change. A `CallerTable` cannot be scanned.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use arrow::datatypes::{Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, Session, TableProvider};
use datafusion::common::{DFSchema, Result};
use datafusion::datasource::TableType;
use datafusion::logical_expr::{Expr, ExprSchemable, col};
use datafusion::physical_plan::ExecutionPlan;
use meshgate_mesh::{ContractTable, Product};

use crate::udf::MaskUdf;
use crate::{Access, Policy, PolicyError};

impl Policy {
    /// The schema this principal reads `product` with, if its masks change a type
    /// (`None`: the contract's own schema).
    pub fn caller_schema(&self, product: &Product) -> Result<Option<SchemaRef>> {
        let Access::Granted { masks, .. } = Access::resolve(product, &self.principal) else {
            return Ok(None);
        };
        if masks.is_empty() {
            return Ok(None);
        }
        let raw = Arc::clone(&product.schema);
        let df_schema = DFSchema::try_from(Arc::clone(&raw))?;
        let fields = raw
            .fields()
            .iter()
            .map(|f| match masks.get(f.name()) {
                None => Ok(Arc::clone(f)),
                // The field the rule's mask expression yields, so the two never disagree.
                Some(kind) => {
                    let (_, field) =
                        MaskUdf::call(*kind, &self.key, col(f.name())).to_field(&df_schema)?;
                    Ok(Arc::new(
                        field
                            .as_ref()
                            .clone()
                            .with_name(f.name())
                            .with_metadata(f.metadata().clone()),
                    ))
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let schema = Schema::new_with_metadata(fields, raw.metadata().clone());
        Ok((schema != *raw).then(|| Arc::new(schema)))
    }
}

/// A product as one principal reads it (see the module documentation).
pub struct CallerTable {
    table: Arc<dyn TableProvider>,
    schema: SchemaRef,
}

impl CallerTable {
    /// The caller's view behind a provider, if it is one.
    pub fn from_provider(provider: &dyn TableProvider) -> Option<&CallerTable> {
        let any: &dyn Any = provider;
        any.downcast_ref()
    }

    /// The product table itself, with the contract's types.
    pub fn product_table(&self) -> &Arc<dyn TableProvider> {
        &self.table
    }

    fn product_name(&self) -> String {
        ContractTable::from_provider(self.table.as_ref())
            .map(|t| t.product().display_name())
            .unwrap_or_default()
    }
}

impl fmt::Debug for CallerTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallerTable")
            .field("product", &self.product_name())
            .finish()
    }
}

#[async_trait]
impl TableProvider for CallerTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_column_default(&self, _column: &str) -> Option<&Expr> {
        None
    }

    /// Only the policy rule's replacement is ever scanned; reaching this is a bug.
    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Err(PolicyError::Unenforced(self.product_name()).into())
    }
}

/// The session's `mesh` catalog: the mesh's, with each product in the caller's types.
///
/// A protocol may register metadata schemas beside the domains (Postgres clients need
/// `pg_catalog`). They are looked up before the domains, so no domain can stand in for
/// one, and they are not listed among the schemas, so catalog listings (`information_schema`,
/// Flight's `GetTables`) stay the mesh's. Only names in [`METADATA_SCHEMAS`] are accepted,
/// and the verifier lets a plan read them only because they are not products.
pub(crate) struct CallerCatalog {
    inner: Arc<dyn CatalogProvider>,
    policy: Arc<Policy>,
    metadata: RwLock<HashMap<String, Arc<dyn SchemaProvider>>>,
}

/// The schemas a session may hold besides the mesh's domains: metadata, never data.
pub const METADATA_SCHEMAS: &[&str] = &["information_schema", "pg_catalog"];

impl CallerCatalog {
    pub(crate) fn new(inner: Arc<dyn CatalogProvider>, policy: Arc<Policy>) -> Self {
        CallerCatalog {
            inner,
            policy,
            metadata: RwLock::new(HashMap::new()),
        }
    }
}

impl fmt::Debug for CallerCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallerCatalog({:?})", self.policy.principal.name)
    }
}

impl CatalogProvider for CallerCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.inner.schema_names()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if let Some(metadata) = self
            .metadata
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Some(Arc::clone(metadata));
        }
        self.inner.schema(name).map(|inner| {
            Arc::new(CallerSchema {
                inner,
                policy: Arc::clone(&self.policy),
            }) as Arc<dyn SchemaProvider>
        })
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        if !METADATA_SCHEMAS.contains(&name) || name == "information_schema" {
            return datafusion::common::plan_err!(
                "the mesh catalog holds only domains and pg_catalog, not {name}"
            );
        }
        Ok(self
            .metadata
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), schema))
    }
}

struct CallerSchema {
    inner: Arc<dyn SchemaProvider>,
    policy: Arc<Policy>,
}

impl fmt::Debug for CallerSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

#[async_trait]
impl SchemaProvider for CallerSchema {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(table) = self.inner.table(name).await? else {
            return Ok(None);
        };
        let Some(product) = ContractTable::from_provider(table.as_ref()).map(|t| t.product())
        else {
            return Ok(Some(table));
        };
        Ok(Some(match self.policy.caller_schema(product)? {
            None => table,
            Some(schema) => Arc::new(CallerTable { table, schema }),
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}
