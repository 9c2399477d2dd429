//! `meshgate refresh`: the refresher of derived products, as its own process (one per
//! mesh; the gateway replicas serve what it publishes), and `publish --derived`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use meshgate_mesh::Mesh;
use meshgate_server::ServerConfig;
use meshgate_server::refresh::{RefreshError, Refreshed, Refresher};

use crate::keys;

#[derive(Args)]
pub(crate) struct RefreshArgs {
    /// Refresh these products now (`domain.dataset` or `domain.dataset_vN`) and exit;
    /// without any, refresh what is due, for ever (or once, with `--once`).
    products: Vec<String>,
    /// Refresh what is due once, then exit.
    #[arg(long)]
    once: bool,
    /// The deployment's configuration.
    #[arg(long, env = "MESHGATE_CONFIG", default_value = "meshgate.yaml")]
    config: PathBuf,
    /// The hash mask's key: the gateway's, so that hashed inputs still join.
    #[arg(long, env = "MESHGATE_HASH_KEY", hide_env_values = true)]
    hash_key: Option<String>,
    /// Where this process audits; default: the gateway's audit file with `.refresh`
    /// before its extension (each process keeps its own chain).
    #[arg(long)]
    audit_file: Option<PathBuf>,
}

pub(crate) async fn run(args: RefreshArgs) -> anyhow::Result<ExitCode> {
    crate::serve::init_tracing();
    let config = crate::load_config(&args.config)?;
    let refresher = refresher(&config, args.hash_key, args.audit_file).await?;
    if !args.products.is_empty() {
        let mut ok = true;
        for name in &args.products {
            ok &= report(name, refresher.refresh_named(name).await);
        }
        return Ok(exit(ok));
    }
    if args.once {
        let mut ok = true;
        for (product, result) in refresher.refresh_due().await {
            ok &= report(&product.to_string(), result);
        }
        return Ok(exit(ok));
    }
    let tick = Duration::from_secs(config.refresh_check_secs.max(1));
    tokio::select! {
        _ = refresher.run(tick) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// `meshgate publish --derived CONTRACT`.
pub(crate) async fn publish_derived(
    config_file: &Path,
    contract: &Path,
) -> anyhow::Result<ExitCode> {
    let config = crate::load_config(config_file)?;
    let refresher = refresher(&config, std::env::var("MESHGATE_HASH_KEY").ok(), None).await?;
    let ok = report(
        &contract.display().to_string(),
        refresher.refresh_contract(contract).await,
    );
    Ok(exit(ok))
}

async fn refresher(
    config: &ServerConfig,
    hash_key: Option<String>,
    audit_file: Option<PathBuf>,
) -> anyhow::Result<Refresher> {
    let (key, _) = keys::hash_key(hash_key, Some(&config.hash_key_path()), true)?;
    let mesh = Mesh::load(config.mesh.clone())
        .await
        .context("cannot load the mesh")?;
    let audit_file = audit_file.or_else(|| config.audit_file.as_deref().map(own_audit_file));
    Ok(Refresher::standalone(
        Arc::new(mesh),
        config,
        key,
        audit_file.as_deref(),
    )?)
}

/// `meshgate-audit.log` → `meshgate-audit.refresh.log`.
fn own_audit_file(gateway: &Path) -> PathBuf {
    let stem = gateway.file_stem().unwrap_or_default().to_string_lossy();
    let name = match gateway.extension() {
        Some(ext) => format!("{stem}.refresh.{}", ext.to_string_lossy()),
        None => format!("{stem}.refresh"),
    };
    gateway.with_file_name(name)
}

fn report(name: &str, result: Result<Refreshed, RefreshError>) -> bool {
    match result {
        Ok(r) => {
            println!(
                "refreshed {}: {} rows in {} ms, now served from {}",
                r.product,
                r.rows,
                r.duration.as_millis(),
                r.folder.display()
            );
            true
        }
        Err(e) => {
            eprintln!("error: {name}: {e}");
            false
        }
    }
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
