//! Contracts changed on disk are served without a restart: the reloader watches the
//! contracts folder and swaps in a new mesh snapshot. A contract edited into an invalid one
//! keeps its last good version served (see `Mesh::reload`); unreadable governance rules
//! keep the whole previous snapshot. New data needs no reload: listings are not cached.

use std::path::Path;
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

pub(crate) async fn run(gateway: Arc<Gateway>, interval: Duration) {
    let config = gateway.mesh().config().clone();
    let dir = config.contracts_dir();
    let gov = config.governance_file();
    let mut last = fingerprint(&dir, gov.as_deref());
    loop {
        tokio::time::sleep(interval).await;
        let gov = config.governance_file();
        let now = fingerprint(&dir, gov.as_deref());
        if now == last {
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
                crate::sla::evaluate(&gateway).await;
            }
            Err(e) => error!(
                "contracts changed but cannot be loaded; still serving the previous mesh: {e}"
            ),
        }
    }
}
