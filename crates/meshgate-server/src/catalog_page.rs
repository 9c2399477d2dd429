//! The catalog as a page a person can browse on the HTTP port: products by domain, a search,
//! each product's schema with PII and masks, SLA status at a glance, and who may read what.
//! Contract metadata only (the same the contracts folder holds); never a row of data.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use meshgate_mesh::checks::ProductReport;
use serde::Deserialize;

use crate::catalog::matches;
use crate::gateway::Gateway;
use meshgate_mesh::Entry;
use meshgate_mesh::lineage::ProductRef;

#[derive(Deserialize)]
pub(crate) struct Search {
    #[serde(default)]
    q: String,
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem}\
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}\
.ok{color:#137333}.bad{color:#b3261e;font-weight:bold}.pii{background:#fdecea}.muted{color:#666}";

fn page(title: &str, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    title { (title) " · meshgate catalog" }
                    style { (maud::PreEscaped(STYLE)) }
                }
                body { (body) }
            }
        }
        .into_string(),
    )
}

fn sla_badge(report: Option<&ProductReport>) -> Markup {
    match report {
        None => html! { span.muted data-sla="unknown" { "not evaluated yet" } },
        Some(r) if r.sla_ok() => html! { span.ok data-sla="ok" { "SLA met" } },
        Some(r) => html! {
            span.bad data-sla="breached" {
                "SLA breached:"
                @if !r.freshness_ok() { " stale" }
                @if !r.quality_ok() { " quality" }
                @if !r.refresh_ok() { " refresh failing" }
            }
        },
    }
}

pub(crate) async fn index(
    State(gw): State<Arc<Gateway>>,
    Query(search): Query<Search>,
) -> Html<String> {
    let mesh = gw.mesh();
    let reports = gw.reports();
    let all = mesh.entries();
    let shown: Vec<&Entry> = all.iter().filter(|e| matches(e, &search.q)).collect();
    let mut domains: Vec<String> = shown.iter().map(|e| e.key().0).collect();
    domains.dedup();
    page(
        "Data products",
        html! {
            h1 { "Data products" }
            form method="get" action="/catalog" {
                input #search type="search" name="q" value=(search.q)
                    placeholder="name, owner, description or column" autofocus;
                button type="submit" { "Search" }
            }
            p.muted { (shown.len()) " of " (all.len()) " products" }
            @for domain in &domains {
                section.domain data-domain=(domain) {
                    h2 { (domain) }
                    table {
                        tr { th { "product" } th { "owner" } th { "status" } th { "description" } }
                        @for e in shown.iter().filter(|e| &e.key().0 == domain) {
                            @match e {
                                Entry::Served(t) => {
                                    @let p = t.product();
                                    tr.product data-name=(format!("{}.{}", p.domain, p.dataset())) {
                                        td { a href=(format!("/catalog/{}/{}_v{}", p.domain, p.dataset(), p.version())) { (p.dataset()) " v" (p.version()) } }
                                        td { (p.owner()) }
                                        td { (sla_badge(reports.get(&p.display_name()))) }
                                        td { (p.contract.description.as_deref().unwrap_or("")) }
                                    }
                                }
                                Entry::Quarantined(q) => tr.product data-name=(format!("{}.{}", q.domain, q.dataset)) {
                                    td { (q.dataset) @if let Some(v) = q.version { " v" (v) } }
                                    td { (q.owner.as_deref().unwrap_or("")) }
                                    td { span.bad data-sla="quarantined" { "quarantined" } }
                                    td { (q.reasons.join("; ")) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

pub(crate) async fn product(
    State(gw): State<Arc<Gateway>>,
    Path((domain, name)): Path<(String, String)>,
) -> Response {
    let mesh = gw.mesh();
    let reports = gw.reports();
    let found = mesh
        .products()
        .iter()
        .find(|p| p.domain == domain && format!("{}_v{}", p.dataset(), p.version()) == name);
    let Some(p) = found else {
        return (
            StatusCode::NOT_FOUND,
            page(
                "Not found",
                html! { h1 { "No data product " (domain) "." (name) } },
            ),
        )
            .into_response();
    };
    let report = reports.get(&p.display_name());
    let c = &p.contract;
    let me = ProductRef {
        domain: p.domain.clone(),
        dataset: p.dataset().to_string(),
        version: p.version(),
    };
    let lineage = mesh.lineage();
    let upstream = lineage.upstream(&me).map(crate::catalog::derivation);
    let downstream = crate::catalog::downstream(lineage, &me);
    let title = format!("{}.{} v{}", p.domain, p.dataset(), p.version());
    page(
        &title,
        html! {
            p { a href="/catalog" { "← all products" } }
            h1 { (title) }
            p { (c.description.as_deref().unwrap_or("")) }
            p { "Owner: " a href=(format!("mailto:{}", p.owner())) { (p.owner()) }
                " · SQL: " code { (format!("{}.{}_v{}", p.domain, p.dataset(), p.version())) } }
            h2 { "Service levels" }
            p #sla { (sla_badge(report)) }
            // The page needs no login, so it shows what any employee may see: the targets
            // and whether they are met, not measurements over rows some roles cannot read
            // (those are in the catalog API, for callers who read every row).
            table {
                tr { th { "" } th { "SLA" } }
                tr { td { "freshness (age of newest data)" }
                     td { (c.sla.as_ref().and_then(|s| s.freshness.as_ref()).map_or("none".into(), |f| f.to_string())) } }
                tr { td { "quality (rows passing every check)" }
                     td { (c.sla.as_ref().and_then(|s| s.quality).map_or("none".into(), |q| q.to_string())) } }
            }
            h2 { "Schema" }
            table #schema {
                tr { th { "column" } th { "type" } th { "unit" } th { "PII" } th { "tags" } th { "contract mask" } th { "checks" } th { "description" } }
                @for col in &c.schema {
                    tr class=@if col.is_pii() { "pii" } @else { "" } data-column=(col.name.as_str()) {
                        td { (col.name.as_str()) }
                        td { (col.data_type.to_string()) }
                        td.unit { (col.unit.as_deref().unwrap_or("")) }
                        td { @if col.is_pii() { "yes" } @else { "no" } }
                        td.tags { (col.tags.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")) }
                        td { (col.effective_mask().map(|m| m.to_string()).unwrap_or_default()) }
                        td { (checks(col)) }
                        td { (col.description.as_deref().unwrap_or("")) }
                    }
                }
            }
            // What the codes mean, where a column declares it, and how SQL reaches them.
            @for col in c.schema.iter().filter(|col| col.values.is_some()) {
                h3 { "Values of " code { (col.name.as_str()) } }
                p { "In SQL: " code { (format!(
                    "JOIN value_labels('{}.{}', '{}') l ON l.value = {}",
                    p.domain, p.dataset(), col.name.as_str(), col.name.as_str()
                )) } }
                table.values data-column=(col.name.as_str()) {
                    tr { th { "value" } th { "label" } th { "meaning" } }
                    @for v in col.values.iter().flatten() {
                        tr data-value=(v.value.to_string()) {
                            td { code { (v.value.to_string()) } }
                            td.label { (v.label) }
                            td { (v.description.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
            @if upstream.is_some() || !downstream.is_empty() {
                h2 { "Lineage" }
                // Upstream → this product → downstream, left to right, each linked.
                table #lineage {
                    tr { th { "built from" } th { "" } th { "this product" } th { "" } th { "read by" } }
                    tr {
                        td.upstream {
                            @for i in upstream.iter().flat_map(|d| d.inputs.iter()) {
                                div data-product=(i) { a href=(product_link(i)) { (i) } }
                            }
                        }
                        td { "→" }
                        td { strong { (title) } }
                        td { "→" }
                        td.downstream {
                            @for d in &downstream {
                                div data-product=(d.product) { a href=(product_link(&d.product)) { (d.product) } " (" (d.owner) ")" }
                            }
                        }
                    }
                }
            }
            @if let Some(d) = &upstream {
                h3 { "How it is computed" }
                p { "Every " (humantime::format_duration(std::time::Duration::from_secs(d.refresh_secs)))
                    ", as the " code { (p.domain) } " domain's service principal, so its inputs are read \
                    masked and filtered exactly as that principal reads them:" }
                pre #source { code { (d.sql.trim()) } }
                p #refresh {
                    @match &d.last_refresh {
                        None => span.muted data-refresh="never" { "not refreshed yet" },
                        Some(r) if r.error.is_empty() => span.ok data-refresh="ok" {
                            "last refreshed " (r.attempted_at) " in " (r.duration_ms) " ms" },
                        Some(r) => span.bad data-refresh="failed" {
                            // The page needs no login: the reason is in the catalog API.
                            "last refresh failed at " (r.attempted_at)
                            @if !r.succeeded_at.is_empty() { " — the data served was computed " (r.succeeded_at) } },
                    }
                }
                table #column-lineage {
                    tr { th { "column" } th { "comes from" } }
                    @for c in &d.columns {
                        tr data-column=(c.column) {
                            td { (c.column) }
                            td { @if c.from.is_empty() { span.muted { "no column (computed)" } } @else { (c.from.join(", ")) } }
                        }
                    }
                }
            }
            @if !downstream.is_empty() {
                h3 { "Columns other products derive from this one" }
                table #downstream-columns {
                    tr { th { "product" } th { "its column" } th { "from this product's" } }
                    @for d in &downstream {
                        @for c in &d.columns {
                            tr { td { (d.product) } td { (c.column) } td { (c.from.join(", ")) } }
                        }
                    }
                }
            }
            h2 { "Who may read what" }
            table #grants {
                tr { th { "role" } th { "sees" } th { "rows" } }
                // The effective policy: the contract's grants under governance policies.
                @for (role, rp) in &p.policy.roles {
                    tr data-role=(role) {
                        td { (role) }
                        td {
                            @if rp.masks.is_empty() { "everything in the clear" } @else {
                                "masked: "
                                @for (i, (column, rule)) in rp.masks.iter().enumerate() {
                                    @if i > 0 { ", " }
                                    code { (column) } " " (rule.mask)
                                    " (" (rule.sources.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")) ")"
                                }
                            }
                        }
                        td {
                            @if rp.row_filters.is_empty() { "all" } @else {
                                "where "
                                @for (i, (source, f)) in rp.row_filters.iter().enumerate() {
                                    @if i > 0 { " and " }
                                    code { (f) } " (" (source) ")"
                                }
                            }
                        }
                    }
                }
                @for (role, policy) in &p.policy.denied {
                    tr data-role=(role) {
                        td { (role) }
                        td { "nothing: denied by governance policy " (policy) }
                        td { "" }
                    }
                }
                tr { td { "anyone else" } td { "nothing (metadata only)" } td { "" } }
            }
        },
    )
    .into_response()
}

/// `domain.dataset vN` → its page.
fn product_link(name: &str) -> String {
    match name.split_once(' ') {
        Some((product, version)) => match product.split_once('.') {
            Some((domain, dataset)) => format!("/catalog/{domain}/{dataset}_{version}"),
            None => "/catalog".into(),
        },
        None => "/catalog".into(),
    }
}

fn checks(col: &meshgate_contract::Column) -> String {
    let mut out = Vec::new();
    if col.required {
        out.push("required".to_string());
    }
    if col.unique {
        out.push("unique".into());
    }
    if col.values.is_some() {
        out.push("one of the values below".to_string());
    }
    if let Some(v) = &col.allowed {
        out.push(format!(
            "one of {}",
            v.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(v) = &col.min {
        out.push(format!("≥ {v}"));
    }
    if let Some(v) = &col.max {
        out.push(format!("≤ {v}"));
    }
    if let Some(p) = &col.pattern {
        out.push(format!("matches {p}"));
    }
    out.join(", ")
}
