//! The server's own evaluation of every product's data checks and SLA, exported on
//! `/metrics` so that Prometheus pages the owning team (rules in contracts/alerts/).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshgate_catalog::checks::check_product;
use tracing::{info, warn};

use crate::gateway::Gateway;
use crate::metrics::ProductLabels;

/// Evaluates now, then every `interval`, until the task is aborted.
pub(crate) async fn run(gateway: Arc<Gateway>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        evaluate(&gateway).await;
    }
}

pub(crate) async fn evaluate(gateway: &Gateway) {
    let m = &gateway.query.metrics.products;
    let now = SystemTime::now();
    let now_secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let mesh = gateway.mesh();
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
    for table in mesh.tables() {
        let p = table.product();
        let labels = ProductLabels {
            product: format!("{}.{}", p.domain, p.dataset()),
            version: format!("v{}", p.version()),
            domain: p.domain.clone(),
            owner: p.owner().to_string(),
        };
        match check_product(&mesh, Arc::clone(table), now).await {
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
                if r.sla_ok() {
                    info!(product = %r.product, quality = r.quality, "SLA met");
                } else {
                    warn!(product = %r.product, owner = %r.owner, quality = r.quality,
                        freshness_age_secs = ?r.freshness_age_secs, "SLA breached");
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
}
