//! The server's own evaluation of every product's data checks and SLA, exported on
//! `/metrics` so that Prometheus pages the owning team (rules in contracts/alerts/).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshgate_mesh::checks::check_product;
use meshgate_mesh::{ContractTable, Mesh};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::gateway::Gateway;
use crate::metrics::ProductLabels;

/// Evaluates every product at start, one after the other, then each product once per
/// `interval`, the checks evenly spaced over it: a mesh of thousands of products costs a
/// steady trickle of reads, not a burst every interval. Products a reload adds or changes
/// are evaluated by the reloader at once ([`evaluate_changed`]).
pub(crate) async fn run(gateway: Arc<Gateway>, interval: Duration) {
    let mut round = Instant::now();
    let mut first = true;
    loop {
        let count = {
            let mesh = gateway.mesh();
            mark_quarantined(&gateway, &mesh);
            mesh.tables().len()
        };
        let gap = if first {
            Duration::ZERO
        } else {
            interval / count.max(1) as u32
        };
        // By position in the snapshot of the moment: a reload during the round changes
        // what the rest of the round evaluates, and keeps no old snapshot alive.
        for i in 0..count {
            {
                let mesh = gateway.mesh();
                let Some(table) = mesh.tables().get(i).map(Arc::clone) else {
                    break;
                };
                evaluate_table(&gateway, &mesh, table).await;
            }
            tokio::time::sleep_until(round + gap * (i as u32 + 1)).await;
        }
        if first || count == 0 {
            tokio::time::sleep_until(round + interval).await;
        }
        first = false;
        round = Instant::now();
    }
}

/// The products of the current snapshot that `before` did not serve as they are (new,
/// edited, bound again), and every quarantined one.
pub(crate) async fn evaluate_changed(gateway: &Gateway, before: &Mesh) {
    let mesh = gateway.mesh();
    mark_quarantined(gateway, &mesh);
    // By address: a table kept by the reload is the same allocation.
    let address = |t: &Arc<ContractTable>| Arc::as_ptr(t) as usize;
    let known: HashSet<usize> = before.tables().iter().map(address).collect();
    for table in mesh.tables() {
        if !known.contains(&address(table)) {
            evaluate_table(gateway, &mesh, Arc::clone(table)).await;
        }
    }
}

/// The products at these locations (their files changed).
pub(crate) async fn evaluate_locations(gateway: &Gateway, locations: &HashSet<String>) {
    let mesh = gateway.mesh();
    for table in mesh.tables() {
        if locations.contains(&table.product().location) {
            evaluate_table(gateway, &mesh, Arc::clone(table)).await;
        }
    }
}

fn mark_quarantined(gateway: &Gateway, mesh: &Mesh) {
    let m = &gateway.query.metrics.products;
    let now_secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    for q in mesh.quarantined() {
        let labels = ProductLabels {
            product: format!("{}.{}", q.domain, q.dataset),
            version: q.version.map_or("unknown".into(), |v| format!("v{v}")),
            domain: q.domain.clone(),
            owner: q.owner.clone().unwrap_or_else(|| "unknown".into()),
        };
        m.conformant.get_or_create(&labels).set(0);
        m.checked_at.get_or_create(&labels).set(now_secs);
    }
}

async fn evaluate_table(gateway: &Gateway, mesh: &Mesh, table: Arc<ContractTable>) {
    let m = &gateway.query.metrics.products;
    let now = SystemTime::now();
    let now_secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let p = Arc::clone(table.product());
    let labels = ProductLabels {
        product: format!("{}.{}", p.domain, p.dataset()),
        version: format!("v{}", p.version()),
        domain: p.domain.clone(),
        owner: p.owner().to_string(),
    };
    match check_product(mesh, table, now).await {
        Ok(r) => {
            m.conformant.get_or_create(&labels).set(1);
            m.rows.get_or_create(&labels).set(r.rows as i64);
            m.quality.get_or_create(&labels).set(r.quality);
            m.pii_findings
                .get_or_create(&labels)
                .set(r.pii_findings.len() as i64);
            if let Some(s) = r.quality_sla {
                m.quality_sla.get_or_create(&labels).set(s);
            }
            if let Some(s) = r.freshness_sla_secs {
                m.freshness_sla.get_or_create(&labels).set(s);
            }
            // An age that cannot be measured is reported as infinitely old.
            let age = r.freshness_age_secs.unwrap_or(f64::INFINITY);
            m.freshness_age.get_or_create(&labels).set(age);
            m.checked_at.get_or_create(&labels).set(now_secs);
            if let Some(refresh) = &r.refresh {
                m.refresh_failed
                    .get_or_create(&labels)
                    .set(i64::from(refresh.error.is_some()));
            }
            if r.sla_ok() {
                info!(product = %r.product, quality = r.quality, "SLA met");
            } else {
                warn!(product = %r.product, owner = %r.owner, quality = r.quality,
                    freshness_age_secs = ?r.freshness_age_secs,
                    refresh_error = ?r.refresh.as_ref().and_then(|s| s.error.as_deref()),
                    "SLA breached");
            }
            gateway.set_report(r);
        }
        Err(e) => {
            // Files that stopped conforming since load (deleted, rewritten badly).
            m.conformant.get_or_create(&labels).set(0);
            warn!(product = %p.display_name(), "cannot evaluate: {e}");
        }
    }
}
