//! `meshgate diff OLD NEW`: what a contract change means for consumers, for a producer's CI.
//! Either side is a file or `REV:PATH` (read with `git show`), so `meshgate diff
//! origin/main:contracts/x.yaml contracts/x.yaml` checks a branch before it merges.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use meshgate_contract::{Contract, Impact, diff, parse_contract};

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
}

#[derive(Clone, Copy, ValueEnum)]
enum FailOn {
    /// Security-relevant changes: more visibility of PII, looser row filters, new grants.
    Security,
    /// Any change at all.
    Any,
}

pub(crate) fn run(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let old = load(&args.old)?;
    let new = load(&args.new)?;
    let d = diff(&old, &new);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        for c in &d.changes {
            println!("{c}");
        }
        if d.changes.is_empty() {
            println!("no change");
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
