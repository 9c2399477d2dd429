//! `meshgate init` and `meshgate publish`: a producer's first contract, and data published
//! only once it keeps that contract.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use meshgate_contract::Identifier;
use meshgate_mesh::publish::{FAILPOINT_ENV, Failpoint, Source, publish_with};

#[derive(Args)]
pub(crate) struct InitArgs {
    domain: Identifier,
    dataset: Identifier,
    /// The owning team's address.
    #[arg(long, default_value = "team-DOMAIN@company.com")]
    owner: String,
    /// Where contracts live.
    #[arg(long, default_value = "contracts")]
    contracts: PathBuf,
}

pub(crate) fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    let owner = args.owner.replace("DOMAIN", args.domain.as_str());
    let dir = args.contracts.join(args.domain.as_str());
    let file = dir.join(format!("{}.yaml", args.dataset.as_str()));
    if file.exists() {
        bail!(
            "{} exists already; edit it, or diff a new version against it",
            file.display()
        );
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let text = format!(
        r#"# The contract of {domain}.{dataset}: what consumers may rely on. Check it with
# `meshgate lint`, its data with `meshgate check`, and publish with `meshgate publish`.
dataset: {dataset}
version: v1
owner: {owner}
description: "TODO: one row per …"
sla:
  freshness: "1 day"          # max age of the newest data
  # freshness_column: updated_at
  quality: "99%"              # min share of rows passing the column checks
schema:
  - name: id
    type: long                # string|integer|long|double|decimal(p,s)|boolean|date|timestamp
    description: "Stable key"
    required: true
    unique: true
    pii: false
  # - name: email
  #   type: string
  #   pii: true
  #   mask: hash              # hash|redact|null|email|last4|year
access_policy:
  - role: data_analyst
    permission: read
  - role: marketing
    permission: read_masked
"#,
        domain = args.domain.as_str(),
        dataset = args.dataset.as_str(),
    );
    std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
    println!("{}", file.display());
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub(crate) struct PublishArgs {
    /// The product's contract.
    contract: PathBuf,
    /// The data: a Parquet or CSV file.
    #[arg(long, required_unless_present = "derived", conflicts_with = "derived")]
    from: Option<PathBuf>,
    /// The contract is a derived product's: compute it from its `source.sql` now, as its
    /// domain's service principal, and publish the result.
    #[arg(long)]
    derived: bool,
    /// Transform it first: a query over the table `input`.
    #[arg(long)]
    sql: Option<String>,
    /// How the product is stored, as its contract's `format:` says (`parquet`, `delta`):
    /// given, it must agree, so a script cannot publish a product the wrong way.
    #[arg(long, value_parser = ["parquet", "delta"])]
    format: Option<String>,
    /// The deployment's configuration (where the contracts and data are).
    #[arg(long, env = "MESHGATE_CONFIG", default_value = "meshgate.yaml")]
    config: PathBuf,
}

pub(crate) async fn publish_cmd(args: PublishArgs) -> anyhow::Result<ExitCode> {
    if args.derived {
        return crate::refresh::publish_derived(&args.config, &args.contract).await;
    }
    let config = crate::load_config(&args.config)?;
    if let Some(format) = &args.format {
        let contract =
            meshgate_contract::load_contract(&args.contract).map_err(|e| anyhow::anyhow!("{e}"))?;
        if contract.format.as_str() != format {
            bail!(
                "{} says format: {}; --format {format} would publish it the wrong way",
                args.contract.display(),
                contract.format
            );
        }
    }
    let from = args.from.expect("clap requires --from without --derived");
    let source = match args.sql {
        Some(sql) => Source::Query { from, sql },
        None => Source::File(from),
    };
    let failpoint = std::env::var(FAILPOINT_ENV)
        .ok()
        .and_then(|v| Failpoint::parse(&v))
        .unwrap_or_default();
    match publish_with(&config.mesh, &args.contract, source, failpoint).await {
        Ok(p) => {
            let served = match p.delta_version {
                Some(v) => format!("Delta version {v} of {}", p.location),
                None => p.location,
            };
            println!(
                "published {}: {} rows, quality {:.3}%, now served from {served}",
                p.product,
                p.report.rows,
                p.report.quality * 100.0,
            );
            if !p.dropped_columns.is_empty() {
                println!(
                    "note: columns not in the contract were not published: {}",
                    p.dropped_columns.join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
