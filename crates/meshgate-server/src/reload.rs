//! Contracts changed on disk are served without a restart: the reloader watches the
//! contracts folder and swaps in a new mesh snapshot. A contract edited into an invalid one
//! keeps its last good version served (see `Mesh::reload`); unreadable governance rules
//! keep the whole previous snapshot. New data needs no reload (listings are not cached),
//! but a product whose files changed is evaluated again at once for its SLA metrics.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{error, info};

use crate::gateway::Gateway;

/// Every contract file (and governance.yaml) with its size and modification time.
fn fingerprint(dir: &Path, governance: Option<&Path>) -> Vec<(String, u64, Option<SystemTime>)> {
    let mut files = meshgate_catalog::contract_files(dir).unwrap_or_default();
    files.extend(governance.map(Path::to_path_buf));
    files
        .into_iter()
        .map(|f| {
            let meta = std::fs::metadata(&f).ok();
            (
                f.display().to_string(),
                meta.as_ref().map_or(0, |m| m.len()),
                meta.and_then(|m| m.modified().ok()),
            )
        })
        .collect()
}

/// Where each served product's files are now: the folder a published location links to,
/// and the folder's modification time (files added or removed in place).
fn data_fingerprint(gateway: &Gateway) -> Vec<(String, Option<PathBuf>, Option<SystemTime>)> {
    gateway
        .mesh()
        .products()
        .iter()
        .map(|p| {
            let dir = Path::new(p.location.trim_end_matches('/'));
            (
                p.location.clone(),
                std::fs::read_link(dir).ok(),
                std::fs::metadata(dir).and_then(|m| m.modified()).ok(),
            )
        })
        .collect()
}

pub(crate) async fn run(gateway: Arc<Gateway>, interval: Duration) {
    let config = gateway.mesh().config().clone();
    let dir = config.contracts_dir();
    let gov = config.governance_file();
    let mut last = fingerprint(&dir, gov.as_deref());
    let mut last_data = data_fingerprint(&gateway);
    loop {
        tokio::time::sleep(interval).await;
        let gov = config.governance_file();
        let now = fingerprint(&dir, gov.as_deref());
        if now == last {
            let data = data_fingerprint(&gateway);
            if data != last_data {
                last_data = data;
                info!("product files changed: evaluating SLAs");
                crate::sla::evaluate(&gateway).await;
            }
            continue;
        }
        last = now;
        match gateway.mesh().reload().await {
            Ok(mesh) => {
                info!(
                    products = mesh.products().len(),
                    quarantined = mesh.quarantined().len(),
                    invalid_changes = mesh.kept().len(),
                    "contracts changed: mesh reloaded"
                );
                gateway.set_mesh(Arc::new(mesh));
                last_data = data_fingerprint(&gateway);
                crate::sla::evaluate(&gateway).await;
            }
            Err(e) => error!(
                "contracts changed but cannot be loaded; still serving the previous mesh: {e}"
            ),
        }
    }
}
