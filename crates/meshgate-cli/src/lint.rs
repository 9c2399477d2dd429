//! `meshgate lint`: the contract format, with editor-friendly `file:line:column` output.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use meshgate_contract::load_contract;

#[derive(Args)]
pub(crate) struct LintArgs {
    /// Contract files or folders (default: contracts/).
    paths: Vec<PathBuf>,
    /// Print diagnostics as JSON lines.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: LintArgs) -> anyhow::Result<ExitCode> {
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
    let mut errors = 0;
    for f in &files {
        if let Err(e) = load_contract(f) {
            for d in e.diagnostics() {
                errors += 1;
                if args.json {
                    let v = serde_json::json!({
                        "file": d.file, "line": d.line, "column": d.column,
                        "field": d.field, "message": d.message, "severity": "error",
                    });
                    println!("{v}");
                } else {
                    println!("{d}");
                }
            }
        }
    }
    if !args.json {
        eprintln!("{} contract(s) checked, {errors} error(s)", files.len());
    }
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A folder is linted the way the server discovers it; a file is linted as named.
fn collect(p: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if p.is_dir() {
        out.extend(meshgate_catalog::contract_files(p)?);
    } else {
        out.push(p.to_path_buf());
    }
    Ok(())
}
