//! Contracts and users changed on disk are served without a restart: the reloader watches
//! the contracts folder and swaps in a new mesh snapshot, and watches meshgate.yaml and
//! swaps in its users (a removed user or role loses access on every replica within one
//! interval; other settings take effect at the next start). A contract edited into an invalid one
//! keeps its last good version served (see `Mesh::reload_with`); unreadable governance
//! rules keep the whole previous snapshot. Each interval stamps every contract file; a
//! reload reads only the files whose stamp moved and binds only their products again (and
//! those a conflict now involves; see `Mesh::reload_files`). New data needs no
//! reload (listings are not cached), but a product whose files changed is evaluated again
//! at once for its SLA metrics, and one whose location now links elsewhere (a publish) is
//! bound again: where a location resolves is checked against its domain's root.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{error, info};

use crate::gateway::Gateway;

/// Where a served product's files are now: the folder a published location links to, and
/// the folder's modification time (files added or removed in place).
type DataStamp = (Option<PathBuf>, Option<SystemTime>);

/// Each served product's [`DataStamp`], by location, with its contract file.
fn data_fingerprint(gateway: &Gateway) -> HashMap<String, (PathBuf, DataStamp)> {
    gateway
        .mesh()
        .products()
        .iter()
        .map(|p| {
            (
                p.location.clone(),
                (p.contract_file.clone(), data_stamp(&p.location)),
            )
        })
        .collect()
}

/// [`data_fingerprint`] after a reload: locations already stamped keep their stamp (taken
/// this interval), only new ones are read, so an edit costs what it changed.
fn data_fingerprint_again(
    gateway: &Gateway,
    mut last: HashMap<String, (PathBuf, DataStamp)>,
) -> HashMap<String, (PathBuf, DataStamp)> {
    gateway
        .mesh()
        .products()
        .iter()
        .map(|p| {
            let stamp = match last.remove(&p.location) {
                Some((_, stamp)) => stamp,
                None => data_stamp(&p.location),
            };
            (p.location.clone(), (p.contract_file.clone(), stamp))
        })
        .collect()
}

fn data_stamp(location: &str) -> DataStamp {
    let dir = Path::new(location.trim_end_matches('/'));
    (
        std::fs::read_link(dir).ok(),
        std::fs::metadata(dir).and_then(|m| m.modified()).ok(),
    )
}

/// Each derived product's refresh status file, by contract: a refresher in another
/// process that publishes (or first creates) a product changes it.
fn refresh_fingerprint(gateway: &Gateway) -> HashMap<PathBuf, Option<SystemTime>> {
    gateway
        .mesh()
        .lineage()
        .derivations()
        .map(|d| {
            let stamp = d
                .location
                .as_deref()
                .and_then(meshgate_mesh::publish::RefreshStatus::file)
                .and_then(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok());
            (d.contract_file.clone(), stamp)
        })
        .collect()
}

/// The configuration file's content, by digest (an edit within the same second and of the
/// same size still counts).
fn config_digest(path: Option<&Path>) -> Option<[u8; 32]> {
    use sha2::{Digest, Sha256};
    std::fs::read(path?).ok().map(|b| Sha256::digest(b).into())
}

fn reload_users(gateway: &Gateway, path: &Path) {
    match crate::ServerConfig::load(path) {
        Ok(config) => {
            let users = crate::auth::Users::new(&config.users);
            info!(
                users = users.len(),
                "{} changed: users reloaded",
                path.display()
            );
            gateway.set_users(users);
        }
        Err(e) => error!("{e}; still serving the previous users"),
    }
}

pub(crate) async fn run(gateway: Arc<Gateway>, interval: Duration) {
    let config = gateway.mesh().config().clone();
    let mut last = meshgate_mesh::contract_stamps(&config);
    let mut last_data = data_fingerprint(&gateway);
    let mut last_refresh = refresh_fingerprint(&gateway);
    let source = gateway.config.source.clone();
    let mut last_config = config_digest(source.as_deref());
    loop {
        tokio::time::sleep(interval).await;
        if let Some(path) = &source {
            let digest = config_digest(Some(path));
            if digest != last_config && digest.is_some() {
                last_config = digest;
                reload_users(&gateway, path);
            }
        }
        let now = meshgate_mesh::contract_stamps(&config);
        let data = data_fingerprint(&gateway);
        // Contracts whose location now links elsewhere (bound again, then evaluated), and
        // locations whose files changed in place (evaluated).
        let mut relinked = HashSet::new();
        let mut moved = HashSet::new();
        for (location, (file, stamp)) in &data {
            match last_data.get(location) {
                Some((_, was)) if was.0 != stamp.0 => {
                    relinked.insert(file.clone());
                }
                Some((_, was)) if was.1 != stamp.1 => {
                    moved.insert(location.clone());
                }
                _ => {}
            }
        }
        last_data = data;
        let refreshed = refresh_fingerprint(&gateway);
        for (file, stamp) in &refreshed {
            if last_refresh.get(file).is_some_and(|was| was != stamp) {
                relinked.insert(file.clone());
            }
        }
        last_refresh = refreshed;
        let changed = meshgate_mesh::changed_files(&last, &now);
        if changed.is_empty() && relinked.is_empty() {
            if !moved.is_empty() {
                info!(
                    products = moved.len(),
                    "product files changed: evaluating their SLAs"
                );
                crate::sla::evaluate_locations(&gateway, &moved).await;
            }
            continue;
        }
        last = now;
        let before = gateway.mesh();
        match before.reload_files(&changed, &relinked).await {
            Ok(mesh) => {
                info!(
                    products = mesh.products().len(),
                    quarantined = mesh.quarantined().len(),
                    invalid_changes = mesh.kept().len(),
                    changed = changed.len(),
                    relinked = relinked.len(),
                    "contracts or locations changed: mesh reloaded"
                );
                gateway.set_mesh(Arc::new(mesh));
                last_data = data_fingerprint_again(&gateway, last_data);
                last_refresh = refresh_fingerprint(&gateway);
                crate::sla::evaluate_changed(&gateway, &before).await;
                crate::sla::evaluate_locations(&gateway, &moved).await;
            }
            Err(e) => error!(
                "contracts changed but cannot be loaded; still serving the previous mesh: {e}"
            ),
        }
    }
}
