//! `meshgate diff OLD NEW`: what a contract change means for consumers, for a producer's CI.
//! Either side is a file or `REV:PATH` (read with `git show`), so `meshgate diff
//! origin/main:contracts/x.yaml contracts/x.yaml` checks a branch before it merges.
//!
//! Given two versions of `governance.yaml`, it lists what the change does to the effective
//! policy of every product under `--contracts` (and which would be refused).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use std::collections::BTreeSet;

use meshgate_contract::{
    Change, Contract, Diff, Governance, Impact, diff, diff_effective, parse_contract,
};
use meshgate_mesh::lineage::{Lineage, ProductRef, Reached};

#[derive(Args)]
pub(crate) struct DiffArgs {
    /// The published contract (or governance.yaml): a file, or REV:PATH from git.
    old: String,
    /// The proposed contract (or governance.yaml): a file, or REV:PATH from git.
    new: String,
    /// Print the changes as JSON.
    #[arg(long)]
    json: bool,
    /// Also fail (exit 1) on changes of this kind, e.g. to require a security review.
    #[arg(long, value_enum)]
    fail_on: Option<FailOn>,
    /// The mesh's contracts: to list the derived products a breaking change reaches, and
    /// the products a governance change affects.
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
    if is_governance(&args.old) || is_governance(&args.new) {
        return governance(&args);
    }
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
    Ok(verdict(d.version_error.clone(), failed))
}

/// The exit status, saying why it fails: a refusal of the change itself, or `--fail-on`.
fn verdict(refusal: Option<String>, failed: bool) -> ExitCode {
    if let Some(e) = &refusal {
        eprintln!("error: {e}");
    } else if failed {
        eprintln!("error: changes that --fail-on refuses");
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
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

fn is_governance(spec: &str) -> bool {
    let path = spec.rsplit_once(':').map_or(spec, |(_, p)| p);
    let path = if Path::new(spec).exists() { spec } else { path };
    Path::new(path)
        .file_stem()
        .is_some_and(|s| s == "governance")
}

/// One product's effective changes under a governance change.
struct ProductChanges {
    product: String,
    changes: Vec<Change>,
    /// Rules of the new governance the product breaks: the gateway would quarantine it.
    refused: Vec<String>,
}

fn governance(args: &DiffArgs) -> anyhow::Result<ExitCode> {
    let read = |spec: &str| -> anyhow::Result<Governance> {
        let (name, text) = read_text(spec)?;
        Governance::parse(&name, &text).map_err(|e| anyhow::anyhow!("{e}"))
    };
    let (old, new) = (read(&args.old)?, read(&args.new)?);
    let root = &args.contracts;
    if !root.is_dir() {
        bail!(
            "{} is not a folder: a governance change is measured on the contracts it governs \
             (--contracts)",
            root.display()
        );
    }
    let files = meshgate_mesh::contract_files(root)?;
    let mut report = Vec::new();
    let mut contracts = 0;
    for f in &files {
        // Alert rules and other files that are not contracts have no policy to compare.
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        let Ok(c) = parse_contract(f, &text) else {
            continue;
        };
        contracts += 1;
        let folder = f
            .strip_prefix(root)
            .ok()
            .filter(|rel| rel.components().count() > 1)
            .and_then(|rel| rel.components().next())
            .and_then(|d| d.as_os_str().to_str())
            .map(str::to_string);
        let Some(domain) = c.domain.as_ref().map(|d| d.to_string()).or(folder) else {
            continue;
        };
        let changes = diff_effective(&old.effective(&c, &domain), &new.effective(&c, &domain));
        let already = old.check(&c, Some(&domain));
        let refused: Vec<String> = new
            .check(&c, Some(&domain))
            .into_iter()
            .filter(|v| !already.contains(v))
            .map(|v| format!("{}: {} (governance: {})", v.field, v.message, v.rule))
            .collect();
        if changes.is_empty() && refused.is_empty() {
            continue;
        }
        report.push(ProductChanges {
            product: format!("{domain}.{} {}", c.dataset, c.version),
            changes,
            refused,
        });
    }
    let count = |i| {
        report
            .iter()
            .flat_map(|p| &p.changes)
            .filter(|c| c.impact == i)
            .count()
    };
    if args.json {
        let json: Vec<serde_json::Value> = report
            .iter()
            .map(|p| {
                serde_json::json!({
                    "product": p.product,
                    "changes": p.changes,
                    "refused": p.refused,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        for p in &report {
            println!("{}", p.product);
            for c in &p.changes {
                println!("  {c}");
            }
            for r in &p.refused {
                println!("  {:<12} {r}", "refused");
            }
        }
        if report.is_empty() {
            println!("no change to any product's effective policy");
        }
        eprintln!(
            "governance change over {} contract(s): {} product(s) affected, {} security-relevant, \
             {} breaking, {} refused",
            contracts,
            report.len(),
            count(Impact::Security),
            count(Impact::Breaking),
            report.iter().filter(|p| !p.refused.is_empty()).count()
        );
    }
    // A product the new rules refuse goes offline for every consumer: never a silent pass.
    let refused = report.iter().any(|p| !p.refused.is_empty());
    let failed = refused
        || match args.fail_on {
            Some(FailOn::Security) => count(Impact::Security) > 0,
            Some(FailOn::Any) => !report.is_empty(),
            None => false,
        };
    let refusal = refused.then(|| {
        "the new rules refuse some contracts: the gateway would quarantine those products \
         until their contracts comply"
            .to_string()
    });
    Ok(verdict(refusal, failed))
}

fn load(spec: &str) -> anyhow::Result<Contract> {
    let (name, text) = read_text(spec)?;
    parse_contract(&name, &text).map_err(|e| anyhow::anyhow!("{e}"))
}

/// A file's text, or `REV:PATH`'s from git.
fn read_text(spec: &str) -> anyhow::Result<(PathBuf, String)> {
    Ok(if Path::new(spec).exists() {
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
    })
}
