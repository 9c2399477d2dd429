//! `meshgate catalog [NAME]`: browse the data products through the catalog API.

use std::process::ExitCode;

use crate::connect::ConnectArgs;
use clap::Args;

#[derive(Args)]
pub(crate) struct CatalogArgs {
    /// A product to describe (`domain.dataset` or `domain.dataset_vN`); all when omitted.
    name: Option<String>,
    /// Only this domain.
    #[arg(long)]
    domain: Option<String>,
    /// Case-insensitive search in names, owners, descriptions and columns.
    #[arg(long, short)]
    search: Option<String>,
    #[command(flatten)]
    connect: ConnectArgs,
}

const ACCESS: [&str; 4] = ["?", "none", "read_masked", "read"];

pub(crate) async fn run(args: CatalogArgs) -> anyhow::Result<ExitCode> {
    let client = args.connect.connect().await?;
    let access = |a: i32| ACCESS.get(a as usize).copied().unwrap_or("?");
    if let Some(name) = &args.name {
        let d = client
            .describe_product(name)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let s = d.summary.unwrap_or_default();
        println!("{}.{} v{} ({})", s.domain, s.dataset, s.version, s.sql_name);
        println!("owner        {}", s.owner);
        println!("description  {}", s.description);
        println!("your access  {}", access(s.access));
        if let Some(v) = s.delta_version {
            match s.delta_pin.as_str() {
                "" => println!("storage      Delta table, version {v} (the latest commit)"),
                pin => println!("storage      Delta table, version {v} (pinned: {pin})"),
            }
        }
        if !s.served {
            println!("QUARANTINED  {}", s.quarantine_reasons.join("; "));
        }
        if let Some(h) = s.health.filter(|h| h.evaluated) {
            let ok = |b: bool| if b { "ok" } else { "BREACHED" };
            if h.withheld {
                println!(
                    "health       quality {}, freshness {} (measurements withheld: your role does not read every row)",
                    ok(h.quality_ok),
                    ok(h.freshness_ok)
                );
            } else {
                println!(
                    "health       {} rows, quality {:.2}% ({}), freshness {}",
                    h.rows,
                    h.quality * 100.0,
                    ok(h.quality_ok),
                    ok(h.freshness_ok)
                );
            }
        }
        println!(
            "\n{:<20} {:<14} {:<5} {:<8} {:<10} description",
            "column", "type", "pii", "mask", "you see"
        );
        for c in &d.columns {
            println!(
                "{:<20} {:<14} {:<5} {:<8} {:<10} {}",
                c.name, c.r#type, c.pii, c.mask, c.caller_sees, c.description
            );
        }
        // Where governance changes what a role reads, say so column by column.
        let governed: Vec<String> = d
            .columns
            .iter()
            .flat_map(|c| {
                c.policy
                    .iter()
                    .filter(|p| p.sources.iter().any(|s| s != "contract"))
                    .map(move |p| {
                        format!(
                            "  {:<20} {:<18} {} ({})",
                            c.name,
                            p.role,
                            p.mask,
                            p.sources.join(", ")
                        )
                    })
            })
            .collect();
        if !governed.is_empty() {
            println!("\nmasks from governance");
            for line in governed {
                println!("{line}");
            }
        }
        println!("\nwho may read");
        for g in &d.grants {
            let mut filters: Vec<String> = Vec::new();
            if !g.row_filter.is_empty() {
                filters.push(g.row_filter.clone());
            }
            filters.extend(g.policy_row_filters.iter().cloned());
            let filter = if filters.is_empty() {
                String::new()
            } else {
                format!(" where {}", filters.join(" and "))
            };
            println!("  {:<14} {}{filter}", g.role, g.permission);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let products = client
        .list_products(
            args.domain.as_deref().unwrap_or(""),
            args.search.as_deref().unwrap_or(""),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "{:<40} {:<12} {:<28} status",
        "product", "your access", "owner"
    );
    for p in products {
        let status = if !p.served {
            "QUARANTINED".to_string()
        } else {
            match p.health {
                Some(h) if h.evaluated && h.quality_ok && h.freshness_ok => "SLA ok".into(),
                Some(h) if h.evaluated => "SLA BREACHED".into(),
                _ => "served".into(),
            }
        };
        println!(
            "{:<40} {:<12} {:<28} {status}",
            format!("{}.{} v{}", p.domain, p.dataset, p.version),
            access(p.access),
            p.owner
        );
    }
    Ok(ExitCode::SUCCESS)
}
