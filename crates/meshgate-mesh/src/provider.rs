//! The SQL names of docs/DESIGN.md §5: catalog `mesh`, schema = domain, table = dataset (newest
//! version) or `dataset_vN` (pinned).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result};

use crate::{CatalogError, ContractTable, Quarantine};

/// The one catalog meshgate serves.
pub const CATALOG: &str = "mesh";

/// A product as the mesh lists it: served, or quarantined (then only what its contract
/// said). SQL names, the catalog API and the catalog page list the same entries.
#[derive(Clone)]
pub enum Entry {
    Served(Arc<ContractTable>),
    Quarantined(Arc<Quarantine>),
}

impl Entry {
    /// `(domain, dataset, major version)`; 0 for a quarantined contract without a version.
    pub fn key(&self) -> (String, String, u32) {
        match self {
            Entry::Served(t) => {
                let p = t.product();
                (p.domain.clone(), p.dataset().to_string(), p.version())
            }
            Entry::Quarantined(q) => (q.domain.clone(), q.dataset.clone(), q.version.unwrap_or(0)),
        }
    }
}

/// A read-only catalog built from one [`crate::Mesh`] snapshot.
#[derive(Default)]
pub struct MeshCatalogProvider {
    domains: BTreeMap<String, Arc<DomainSchema>>,
}

impl MeshCatalogProvider {
    pub(crate) fn new(entries: BTreeMap<String, BTreeMap<String, Entry>>) -> Self {
        MeshCatalogProvider {
            domains: entries
                .into_iter()
                .map(|(d, tables)| (d, Arc::new(DomainSchema { tables })))
                .collect(),
        }
    }
}

impl MeshCatalogProvider {
    /// This catalog with the tables keyed by their old allocation replaced by tables of
    /// the same product (domain and name): only their domains are copied.
    pub(crate) fn replaced(
        &self,
        tables: &std::collections::HashMap<usize, Arc<ContractTable>>,
    ) -> Self {
        let mut domains = self.domains.clone();
        for new in tables.values() {
            let Some(schema) = domains.get_mut(&new.product().domain) else {
                continue;
            };
            let swapped = schema
                .tables
                .iter()
                .map(|(name, e)| {
                    let e = match e {
                        Entry::Served(t) => match tables.get(&(Arc::as_ptr(t) as usize)) {
                            Some(new) => Entry::Served(Arc::clone(new)),
                            None => e.clone(),
                        },
                        Entry::Quarantined(_) => e.clone(),
                    };
                    (name.clone(), e)
                })
                .collect();
            *schema = Arc::new(DomainSchema { tables: swapped });
        }
        MeshCatalogProvider { domains }
    }

    /// A served product by its SQL name, without the async of [`SchemaProvider::table`]
    /// (for table functions, which resolve while the statement is planned).
    pub fn served(&self, domain: &str, table: &str) -> Option<Arc<ContractTable>> {
        match self.domains.get(domain)?.tables.get(table)? {
            Entry::Served(t) => Some(Arc::clone(t)),
            Entry::Quarantined(_) => None,
        }
    }
}

impl CatalogProvider for MeshCatalogProvider {
    fn schema_names(&self) -> Vec<String> {
        self.domains.keys().cloned().collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        self.domains
            .get(name)
            .map(|s| Arc::clone(s) as Arc<dyn SchemaProvider>)
    }
}

/// One domain's products. Quarantined products are not listed (listings must not fail
/// because one product is broken) but naming one in a query says why it is not served.
pub(crate) struct DomainSchema {
    tables: BTreeMap<String, Entry>,
}

impl fmt::Debug for DomainSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.tables.keys()).finish()
    }
}

impl fmt::Debug for MeshCatalogProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.domains.iter()).finish()
    }
}

#[async_trait]
impl SchemaProvider for DomainSchema {
    fn table_names(&self) -> Vec<String> {
        self.tables
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Served(_)))
            .map(|(n, _)| n.clone())
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        match self.tables.get(name) {
            None => Ok(None),
            Some(Entry::Served(t)) => Ok(Some(Arc::clone(t) as Arc<dyn TableProvider>)),
            Some(Entry::Quarantined(q)) => Err(DataFusionError::External(Box::new(
                CatalogError::Quarantined(Arc::clone(q)),
            ))),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        matches!(self.tables.get(name), Some(Entry::Served(_)))
    }
}
