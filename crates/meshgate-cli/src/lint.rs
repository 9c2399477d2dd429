//! `meshgate lint`: the contract format and the mesh's governance rules, with
//! editor-friendly `file:line:column` output (or JSON lines for CI annotations).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use meshgate_contract::{Diagnostic, Governance, load_governed_contract};

#[derive(Args)]
pub(crate) struct LintArgs {
    /// Contract files or folders (default: contracts/).
    paths: Vec<PathBuf>,
    /// The governance rules; default: the nearest governance.yaml in a contract's folder
    /// or above it.
    #[arg(long)]
    governance: Option<PathBuf>,
    /// Print diagnostics as JSON lines.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: LintArgs) -> anyhow::Result<ExitCode> {
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from("contracts")]
    } else {
        args.paths
    };
    let mut files = Vec::new();
    for p in &paths {
        collect(p, &mut files)?;
    }
    files.sort();
    let mut diagnostics = Vec::new();
    let mut rules: Vec<(PathBuf, Option<Governance>)> = Vec::new();
    for f in &files {
        let gov_file = match &args.governance {
            Some(g) => Some(g.clone()),
            None => nearest_governance(f),
        };
        let governance = match &gov_file {
            None => None,
            Some(g) => match rules.iter().find(|(p, _)| p == g) {
                Some((_, loaded)) => loaded.clone(),
                None => {
                    // A broken rule file is reported once; its contracts are then only
                    // checked against the format.
                    let loaded = Governance::load(g)
                        .map_err(|e| diagnostics.extend(e.diagnostics()))
                        .ok();
                    rules.push((g.clone(), loaded.clone()));
                    loaded
                }
            },
        };
        // The contracts root is where the server finds governance.yaml, whichever rules lint
        // was told to apply.
        let domain = nearest_governance(f).and_then(|g| folder_domain(f, &g));
        if let Err(e) = load_governed_contract(f, governance.as_ref(), domain.as_deref()) {
            diagnostics.extend(e.diagnostics());
        }
    }
    diagnostics.extend(derived_products(&files).await);
    for d in &diagnostics {
        if args.json {
            println!("{}", json(d));
        } else {
            println!("{d}");
        }
    }
    if !args.json {
        let governed = rules.iter().filter(|(_, g)| g.is_some()).count();
        eprintln!(
            "{} contract(s) checked{}, {} error(s)",
            files.len(),
            match governed {
                0 => " against the format only (no governance.yaml)".to_string(),
                _ => " against the format and governance".to_string(),
            },
            diagnostics.len()
        );
    }
    Ok(if diagnostics.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn json(d: &Diagnostic) -> serde_json::Value {
    let rule = d
        .message
        .rsplit_once("(governance: ")
        .and_then(|(_, r)| r.strip_suffix(')'));
    serde_json::json!({
        "file": d.file, "line": d.line, "column": d.column, "field": d.field,
        "message": d.message, "severity": "error", "rule": rule,
    })
}

/// What only the whole mesh can tell of a derived product: whether its SQL plans over the
/// other contracts, returns the declared columns, keeps every PII source PII, and does
/// not read itself. The mesh is the contracts folder each file sits in
/// (`<contracts>/<domain>/<file>`).
async fn derived_products(files: &[PathBuf]) -> Vec<Diagnostic> {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let linted: std::collections::HashSet<PathBuf> = files.iter().map(|f| canonical(f)).collect();
    let mut roots: Vec<PathBuf> = files
        .iter()
        .filter_map(|f| canonical(f).parent()?.parent().map(Path::to_path_buf))
        .collect();
    roots.sort();
    roots.dedup();
    let mut out = Vec::new();
    for root in roots {
        let Ok(lineage) = meshgate_mesh::lineage::Lineage::of_folder(&root).await else {
            continue;
        };
        for d in lineage.derivations() {
            if !linted.contains(&canonical(&d.contract_file)) {
                continue;
            }
            let line = std::fs::read_to_string(&d.contract_file)
                .ok()
                .and_then(|t| t.lines().position(|l| l.starts_with("source:")))
                .map_or(1, |i| i + 1);
            out.extend(d.problems.iter().map(|p| Diagnostic {
                file: d.contract_file.clone(),
                line,
                column: 1,
                field: "source".into(),
                message: p.clone(),
            }));
        }
    }
    out
}

/// The domain the folder layout gives `contract`: the folder under the one holding the
/// governance rules (`contracts/<domain>/x.yaml`), as the server reads it.
fn folder_domain(contract: &Path, governance: &Path) -> Option<String> {
    let root = std::path::absolute(governance.parent()?).ok()?;
    let rel = std::path::absolute(contract).ok()?;
    let mut parts = rel.strip_prefix(&root).ok()?.components();
    let first = parts.next()?;
    parts.next()?;
    first.as_os_str().to_str().map(str::to_string)
}

/// `governance.yaml` in the contract's folder or the closest folder above it.
fn nearest_governance(contract: &Path) -> Option<PathBuf> {
    let start = std::path::absolute(contract).ok()?;
    start
        .ancestors()
        .skip(1)
        .map(|dir| dir.join("governance.yaml"))
        .find(|g| g.is_file())
}

/// A folder is linted the way the server discovers it; a file is linted as named.
fn collect(p: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if p.is_dir() {
        out.extend(meshgate_mesh::contract_files(p)?);
    } else {
        out.push(p.to_path_buf());
    }
    Ok(())
}
