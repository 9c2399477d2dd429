//! meshgate's catalog API (proto/meshgate/catalog/v1): the products, their contracts and
//! health, and what the caller's roles may see of each. Metadata only: no row is read here.

use std::collections::HashMap;
use std::sync::Arc;

use meshgate_contract::{Permission, Source};
use meshgate_mesh::checks::ProductReport;
use meshgate_mesh::lineage::{Lineage, ProductRef};
use meshgate_mesh::publish::RefreshStatus;
use meshgate_mesh::{Entry, Product};
use meshgate_policy::{Access as Resolved, Principal};
use meshgate_proto::catalog::catalog_service_server::CatalogService;
use meshgate_proto::catalog::{
    Access, Column, ColumnLineage, ColumnPolicy, Derivation, DescribeProductRequest, Downstream,
    Grant, Health, ListProductsRequest, ListProductsResponse, ProductDetail, ProductSummary,
    RefreshState, ValueLabel,
};
use tonic::{Request, Response, Status};

use crate::audit::redact_text;
use crate::gateway::Gateway;

pub struct MeshCatalogService {
    gateway: Arc<Gateway>,
}

impl MeshCatalogService {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        MeshCatalogService { gateway }
    }
}

/// `read` only when every column is read in the clear: a governance mask on a reader in
/// the clear makes it `read_masked` for that caller.
fn access(product: &Product, principal: &Principal) -> Access {
    match Resolved::resolve(product, principal) {
        Resolved::Denied => Access::None,
        Resolved::Granted {
            permission: Permission::Read,
            masks,
            ..
        } if masks.is_empty() => Access::Read,
        Resolved::Granted { .. } => Access::ReadMasked,
    }
}

/// A product's health as `principal` may see it: measurements over rows it cannot read
/// (a row filter, or no grant) are withheld; the SLA status is not.
pub(crate) fn health(
    report: Option<&ProductReport>,
    product: &Product,
    principal: &Principal,
) -> Health {
    let Some(r) = report else {
        return Health::default();
    };
    let every_row = matches!(
        Resolved::resolve(product, principal),
        Resolved::Granted {
            row_filter: None,
            ..
        }
    );
    let mut h = Health {
        evaluated: true,
        freshness_age_secs: r.freshness_age_secs,
        freshness_sla_secs: r.freshness_sla_secs,
        freshness_ok: r.freshness_ok(),
        quality: r.quality,
        quality_sla: r.quality_sla,
        quality_ok: r.quality_ok(),
        rows: r.rows,
        withheld: false,
        refresh_ok: r.refresh_ok(),
    };
    if !every_row {
        h.freshness_age_secs = None;
        h.quality = 0.0;
        h.rows = 0;
        h.withheld = true;
    }
    h
}

fn summary(
    e: &Entry,
    principal: &Principal,
    reports: &HashMap<String, ProductReport>,
) -> ProductSummary {
    match e {
        Entry::Served(t) => {
            let p = t.product();
            // A Delta product whose latest commit breaks its contract is bound but not
            // served: queries fail with this reason, and the catalog says so.
            let broken = t.delta_broken();
            ProductSummary {
                domain: p.domain.clone(),
                dataset: p.dataset().to_string(),
                version: p.version(),
                sql_name: format!("{}.{}_v{}", p.domain, p.dataset(), p.version()),
                owner: p.owner().to_string(),
                description: p.contract.description.clone().unwrap_or_default(),
                served: broken.is_none(),
                quarantine_reasons: broken.into_iter().collect(),
                access: access(p, principal) as i32,
                health: Some(health(reports.get(&p.display_name()), p, principal)),
                format: p.contract.format.to_string(),
                delta_version: t.delta_snapshot().map(|s| s.version),
                delta_pin: p
                    .contract
                    .delta
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            }
        }
        Entry::Quarantined(q) => ProductSummary {
            domain: q.domain.clone(),
            dataset: q.dataset.clone(),
            version: q.version.unwrap_or(0),
            sql_name: String::new(),
            owner: q.owner.clone().unwrap_or_default(),
            description: String::new(),
            served: false,
            quarantine_reasons: q.reasons.clone(),
            access: Access::None as i32,
            health: None,
            format: String::new(),
            delta_version: None,
            delta_pin: String::new(),
        },
    }
}

/// How a derived product is computed, as the catalog shows it.
pub(crate) fn derivation(d: &meshgate_mesh::lineage::Derivation) -> Derivation {
    let last_refresh = d
        .location
        .as_deref()
        .and_then(RefreshStatus::read)
        .map(|s| RefreshState {
            attempted_at: s.attempted_at,
            succeeded_at: s.succeeded_at.unwrap_or_default(),
            error: s.error.map(|e| redact_text(&e)).unwrap_or_default(),
            duration_ms: s.duration_ms,
        });
    Derivation {
        sql: d.sql.clone(),
        refresh_secs: d.refresh.as_secs(),
        inputs: d.inputs.keys().map(ToString::to_string).collect(),
        columns: d
            .columns
            .iter()
            .map(|(column, from)| ColumnLineage {
                column: column.clone(),
                from: from.iter().map(ToString::to_string).collect(),
            })
            .collect(),
        problems: d.problems.clone(),
        last_refresh,
    }
}

/// The derived products that read `product`, with their columns that come from it.
pub(crate) fn downstream(lineage: &Lineage, product: &ProductRef) -> Vec<Downstream> {
    lineage
        .downstream(product)
        .into_iter()
        .map(|d| Downstream {
            product: d.product.to_string(),
            owner: d.owner.clone(),
            columns: d
                .columns
                .iter()
                .filter_map(|(column, from)| {
                    let from: Vec<String> = from
                        .iter()
                        .filter(|c| &c.product == product)
                        .map(|c| c.column.clone())
                        .collect();
                    (!from.is_empty()).then(|| ColumnLineage {
                        column: column.clone(),
                        from,
                    })
                })
                .collect(),
        })
        .collect()
}

pub(crate) fn matches(e: &Entry, search: &str) -> bool {
    if search.is_empty() {
        return true;
    }
    let s = search.to_lowercase();
    let hit = |t: &str| t.to_lowercase().contains(&s);
    match e {
        Entry::Served(t) => {
            let p = t.product();
            hit(&p.display_name())
                || hit(p.owner())
                || p.contract.description.as_deref().is_some_and(hit)
                || p.contract.schema.iter().any(|c| hit(c.name.as_str()))
        }
        Entry::Quarantined(q) => hit(&format!("{}.{}", q.domain, q.dataset)),
    }
}

#[tonic::async_trait]
impl CatalogService for MeshCatalogService {
    async fn list_products(
        &self,
        request: Request<ListProductsRequest>,
    ) -> Result<Response<ListProductsResponse>, Status> {
        let principal = self.gateway.caller(request.metadata())?;
        let req = request.into_inner();
        let mesh = self.gateway.mesh();
        let reports = self.gateway.reports();
        let products = mesh
            .entries()
            .iter()
            .filter(|e| req.domain.is_empty() || e.key().0 == req.domain)
            .filter(|e| matches(e, &req.search))
            .map(|e| summary(e, &principal, &reports))
            .collect();
        Ok(Response::new(ListProductsResponse { products }))
    }

    async fn describe_product(
        &self,
        request: Request<DescribeProductRequest>,
    ) -> Result<Response<ProductDetail>, Status> {
        let principal = self.gateway.caller(request.metadata())?;
        let name = request.into_inner().name;
        let mesh = self.gateway.mesh();
        let reports = self.gateway.reports();
        let all = mesh.entries();
        // Newest first, so `domain.dataset` finds the newest major.
        let found = all.iter().find(|e| {
            let (d, s, v) = e.key();
            name == format!("{d}.{s}") || name == format!("{d}.{s}_v{v}")
        });
        let Some(entry) = found else {
            return Err(Status::not_found(format!("no data product {name}")));
        };
        let mut detail = ProductDetail {
            summary: Some(summary(entry, &principal, &reports)),
            ..Default::default()
        };
        let file = match entry {
            Entry::Served(t) => &t.product().contract_file,
            Entry::Quarantined(q) => &q.contract_file,
        };
        detail.contract_yaml = std::fs::read_to_string(file).unwrap_or_default();
        let (domain, dataset, version) = entry.key();
        let product = ProductRef {
            domain,
            dataset,
            version,
        };
        let lineage = mesh.lineage();
        detail.derivation = lineage.upstream(&product).map(derivation);
        // Why a refresh failed is for those who read the product.
        let reads = detail
            .summary
            .as_ref()
            .is_some_and(|s| s.access != Access::None as i32);
        if let Some(r) = detail
            .derivation
            .as_mut()
            .and_then(|d| d.last_refresh.as_mut())
            .filter(|r| !reads && !r.error.is_empty())
        {
            r.error = "failed (the reason is shown to readers of the product)".into();
        }
        detail.downstream = downstream(lineage, &product);
        if let Entry::Served(t) = entry {
            let p = t.product();
            let caller = Resolved::resolve(p, &principal);
            detail.columns = p
                .contract
                .schema
                .iter()
                .map(|c| {
                    let name = c.name.as_str();
                    let mask = c
                        .effective_mask()
                        .map(|m| m.to_string())
                        .unwrap_or_default();
                    let caller_sees = match &caller {
                        Resolved::Denied => "none".to_string(),
                        Resolved::Granted { masks, .. } => masks
                            .get(name)
                            .map_or_else(|| "clear".to_string(), |m| m.to_string()),
                    };
                    Column {
                        name: name.to_string(),
                        r#type: c.data_type.to_string(),
                        description: c.description.clone().unwrap_or_default(),
                        pii: c.is_pii(),
                        mask,
                        caller_sees,
                        unit: c.unit.clone().unwrap_or_default(),
                        values: c
                            .values
                            .iter()
                            .flatten()
                            .map(|v| ValueLabel {
                                value: v.value.to_string(),
                                label: v.label.clone(),
                                description: v.description.clone().unwrap_or_default(),
                            })
                            .collect(),
                        tags: c.tags.iter().map(|t| t.to_string()).collect(),
                        policy: p
                            .policy
                            .roles
                            .iter()
                            .map(|(role, rp)| {
                                let rule = rp.masks.get(name);
                                ColumnPolicy {
                                    role: role.clone(),
                                    mask: rule
                                        .map_or_else(|| "clear".into(), |r| r.mask.to_string()),
                                    sources: rule
                                        .iter()
                                        .flat_map(|r| &r.sources)
                                        .map(|s| s.to_string())
                                        .collect(),
                                }
                            })
                            .collect(),
                    }
                })
                .collect();
            detail.grants = p
                .contract
                .access_policy
                .iter()
                .map(|g| {
                    let role = g.role.as_str();
                    Grant {
                        role: role.to_string(),
                        permission: g.permission.to_string(),
                        row_filter: g.row_filter.clone().unwrap_or_default(),
                        policy_row_filters: p
                            .policy
                            .roles
                            .get(role)
                            .iter()
                            .flat_map(|rp| &rp.row_filters)
                            .filter(|(s, _)| *s != Source::Contract)
                            .map(|(s, sql)| format!("{sql} ({s})"))
                            .collect(),
                    }
                })
                .collect();
        }
        Ok(Response::new(detail))
    }
}
