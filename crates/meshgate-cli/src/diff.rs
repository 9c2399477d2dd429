//! `meshgate diff OLD NEW`: what a contract change means for consumers, for a producer's CI.
//! Either side is a file or `REV:PATH` (read with `git show`), so `meshgate diff
//! origin/main:contracts/x.yaml contracts/x.yaml` checks a branch before it merges.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use std::collections::BTreeSet;

use meshgate_contract::{Contract, Diff, Impact, diff, parse_contract};
use meshgate_mesh::lineage::{Lineage, ProductRef, Reached};

#[derive(Args)]
pub(crate) struct DiffArgs {
    /// The published contract: a file, or REV:PATH from git.
    old: String,
    /// The proposed contract: a file, or REV:PATH from git.
    new: String,
    /// Print the changes as JSON.
    #[arg(long)]
    json: bool,
    /// Also fail (exit 1) on changes of this kind, e.g. to require a security review.
    #[arg(long, value_enum)]
    fail_on: Option<FailOn>,
    /// The mesh's contracts, to list the derived products a breaking change reaches.
    #[arg(long, default_value = "contracts")]
    contracts: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum FailOn {
    /// Security-relevant changes: more visibility of PII, looser row filters, new grants.
    Security,
    /// Any change at all.
    Any,
}

pub(crate) async fn run(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let old = load(&args.old)?;
    let new = load(&args.new)?;
    let d = diff(&old, &new);
    let reached = impact(&args, &old, &new, &d).await;
    if args.json {
        let mut out = serde_json::to_value(&d)?;
        out["impact"] = serde_json::to_value(&reached)?;
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for c in &d.changes {
            println!("{c}");
        }
        if d.changes.is_empty() {
            println!("no change");
        }
        for r in &reached {
            match &r.column {
                Some((column, from)) => println!(
                    "impact       {} (owner {}): column {column} comes from {from}",
                    r.product, r.owner
                ),
                None => println!(
                    "impact       {} (owner {}): reads this product by its newest name, so \
                     its next refresh reads {}",
                    r.product, r.owner, new.version
                ),
            }
        }
        let count = |i| d.changes.iter().filter(|c| c.impact == i).count();
        eprintln!(
            "{} {} → {}: {} breaking, {} security-relevant, {} non-breaking",
            new.dataset.as_str(),
            old.version,
            new.version,
            count(Impact::Breaking),
            count(Impact::Security),
            count(Impact::NonBreaking)
        );
    }
    let failed = match args.fail_on {
        _ if d.version_error.is_some() => true,
        Some(FailOn::Security) => d.has(Impact::Security),
        Some(FailOn::Any) => !d.changes.is_empty(),
        None => false,
    };
    if let Some(e) = &d.version_error {
        eprintln!("error: {e}");
    } else if failed {
        eprintln!("error: changes that --fail-on refuses");
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The derived products of the mesh under `--contracts` that the breaking changes reach:
/// those whose columns come from a changed column, all of them when the product is
/// renamed, and those reading the newest version by name when a new major comes.
async fn impact(args: &DiffArgs, old: &Contract, new: &Contract, d: &Diff) -> Vec<Reached> {
    if !args.contracts.is_dir() {
        return Vec::new();
    }
    // The domain: the contract's own, or its folder under the contracts folder.
    let folder = Path::new(
        args.old
            .rsplit_once(':')
            .map_or(args.old.as_str(), |(_, p)| p),
    )
    .parent()
    .and_then(|p| p.file_name())
    .and_then(|n| n.to_str())
    .map(str::to_string);
    let Some(domain) = old
        .domain
        .as_ref()
        .map(|d| d.as_str().to_string())
        .or(folder)
    else {
        return Vec::new();
    };
    let Ok(lineage) = Lineage::of_folder(&args.contracts).await else {
        return Vec::new();
    };
    let breaking = d.changes.iter().filter(|c| c.impact == Impact::Breaking);
    let mut columns = BTreeSet::new();
    let mut whole = false;
    for c in breaking {
        match c.field.strip_prefix("schema.") {
            Some(rest) => {
                columns.insert(rest.split('.').next().unwrap_or(rest).to_string());
            }
            None => whole = true,
        }
    }
    let product = ProductRef {
        domain,
        dataset: old.dataset.as_str().to_string(),
        version: old.version.0,
    };
    lineage.impact(&product, &columns, whole, new.version > old.version)
}

fn load(spec: &str) -> anyhow::Result<Contract> {
    let (name, text) = if Path::new(spec).exists() {
        let text = std::fs::read_to_string(spec).with_context(|| format!("cannot read {spec}"))?;
        (PathBuf::from(spec), text)
    } else if let Some((rev, path)) = spec.split_once(':') {
        let out = std::process::Command::new("git")
            .args(["show", &format!("{rev}:{path}")])
            .output()
            .context("cannot run git")?;
        if !out.status.success() {
            bail!(
                "cannot read {spec} from git: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        (PathBuf::from(spec), String::from_utf8(out.stdout)?)
    } else {
        bail!("cannot read {spec}: no such file");
    };
    parse_contract(&name, &text).map_err(|e| anyhow::anyhow!("{e}"))
}
