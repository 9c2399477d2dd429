//! `meshgate check [PRODUCT…]`: the products' data against their contracts and SLAs, the
//! same evaluation the server exports on /metrics. Exits 1 on a breach or a quarantine.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context, bail};
use clap::Args;
use meshgate_mesh::Mesh;
use meshgate_mesh::checks::{ProductReport, check_product};

#[derive(Args)]
pub(crate) struct CheckArgs {
    /// Products as `domain.dataset` (every major) or `domain.dataset_vN`; default: all.
    products: Vec<String>,
    /// The deployment's configuration (where the contracts and data are).
    #[arg(long, env = "MESHGATE_CONFIG", default_value = "meshgate.yaml")]
    config: PathBuf,
    /// Print one JSON object per product.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let config = crate::load_config(&args.config)?;
    let mesh = Mesh::load(config.mesh.clone())
        .await
        .context("cannot load the mesh")?;
    let wanted = |domain: &str, dataset: &str, version: Option<u32>| {
        args.products.is_empty()
            || args.products.iter().any(|p| {
                let full = format!("{domain}.{dataset}");
                p == &full || version.is_some_and(|v| p == &format!("{full}_v{v}"))
            })
    };
    let mut failed = false;
    let mut seen = 0;
    for q in mesh.quarantined() {
        if !wanted(&q.domain, &q.dataset, q.version) {
            continue;
        }
        seen += 1;
        failed = true;
        if args.json {
            let v = serde_json::json!({
                "product": format!("{}.{}", q.domain, q.dataset), "version": q.version,
                "owner": q.owner, "conformant": false, "reasons": q.reasons,
            });
            println!("{v}");
        } else {
            println!("{q}\n");
        }
    }
    for table in mesh.tables() {
        let p = table.product();
        if !wanted(&p.domain, p.dataset(), Some(p.version())) {
            continue;
        }
        seen += 1;
        let report = check_product(&mesh, std::sync::Arc::clone(table), SystemTime::now())
            .await
            .with_context(|| format!("cannot check {}", p.display_name()))?;
        failed |= !report.sla_ok();
        if args.json {
            let mut v = serde_json::to_value(&report)?;
            v["conformant"] = true.into();
            v["quality_ok"] = report.quality_ok().into();
            v["freshness_ok"] = report.freshness_ok().into();
            println!("{v}");
        } else {
            print!("{}", human(&report));
        }
    }
    if seen == 0 {
        bail!("no product matches {}", args.products.join(", "));
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn human(r: &ProductReport) -> String {
    let verdict = |ok: bool| if ok { "ok" } else { "BREACHED" };
    let mut out = format!("{} (owner {}): {} rows\n", r.product, r.owner, r.rows);
    let sla = r
        .quality_sla
        .map_or("no SLA".to_string(), |s| format!("SLA {:.2}%", s * 100.0));
    out += &format!(
        "  quality    {:.3}% of rows pass every check ({sla}) {}\n",
        r.quality * 100.0,
        verdict(r.quality_ok())
    );
    let age = r.freshness_age_secs.map_or("unknown".to_string(), |s| {
        humantime::format_duration(std::time::Duration::from_secs(s.max(0.0) as u64)).to_string()
    });
    let sla = r.freshness_sla_secs.map_or("no SLA".to_string(), |s| {
        format!(
            "SLA {}",
            humantime::format_duration(std::time::Duration::from_secs(s as u64))
        )
    });
    out += &format!(
        "  freshness  newest data is {age} old, by {} ({sla}) {}\n",
        r.freshness_source,
        verdict(r.freshness_ok())
    );
    for c in r.checks.iter().filter(|c| c.failing_rows > 0) {
        out += &format!(
            "  check      {} {}: {} failing rows\n",
            c.column, c.check, c.failing_rows
        );
    }
    for f in &r.pii_findings {
        out += &format!(
            "  governance {} is not PII but {} rows look like {}\n",
            f.column, f.rows, f.looks_like
        );
    }
    out + "\n"
}
