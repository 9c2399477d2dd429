//! `meshgate sql`: the analyst's client.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::remote::MeshClient;
use anyhow::{Context, bail};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use clap::{Args, ValueEnum};
use futures::TryStreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use crate::connect::ConnectArgs;

#[derive(Args)]
pub(crate) struct SqlArgs {
    /// The statement to run; without it, an interactive shell starts.
    query: Option<String>,
    #[command(flatten)]
    connect: ConnectArgs,
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Where to write (required for parquet); standard output otherwise.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
    Parquet,
}

pub(crate) async fn run(args: SqlArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.connect.connect().await?;
    if let Some(q) = &args.query {
        return Ok(match one(&mut client, q, &args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        });
    }
    repl(&mut client, &args).await?;
    Ok(ExitCode::SUCCESS)
}

async fn one(client: &mut MeshClient, sql: &str, args: &SqlArgs) -> anyhow::Result<()> {
    let spinner = spinner();
    let result = async {
        let (schema, stream) = client.query(sql).await?;
        let batches: Vec<RecordBatch> = stream.try_collect().await?;
        Ok::<_, crate::remote::ClientError>((schema, batches))
    }
    .await;
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    let (schema, batches) = result.map_err(|e| anyhow::anyhow!("{e}"))?;
    write(&schema, &batches, args)
}

/// Shows a spinner on a terminal once a query takes more than a moment.
fn spinner() -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} running… {elapsed}").ok()?);
    bar.enable_steady_tick(Duration::from_millis(120));
    Some(bar)
}

fn write(schema: &SchemaRef, batches: &[RecordBatch], args: &SqlArgs) -> anyhow::Result<()> {
    if let (Format::Parquet, None) = (args.format, &args.output) {
        bail!("--format parquet needs --output FILE");
    }
    let mut out: Box<dyn Write + Send> = match &args.output {
        Some(p) => Box::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        ),
        None => Box::new(std::io::stdout()),
    };
    match args.format {
        Format::Table => {
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            if batches.is_empty() {
                let empty = RecordBatch::new_empty(Arc::clone(schema));
                writeln!(
                    out,
                    "{}",
                    arrow::util::pretty::pretty_format_batches(&[empty])?
                )?;
            } else {
                writeln!(
                    out,
                    "{}",
                    arrow::util::pretty::pretty_format_batches(batches)?
                )?;
            }
            writeln!(out, "{rows} row{}", if rows == 1 { "" } else { "s" })?;
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(out);
            for b in batches {
                w.write(b)?;
            }
        }
        Format::Json => {
            let mut w = arrow::json::LineDelimitedWriter::new(out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        Format::Parquet => {
            let mut w = parquet::arrow::ArrowWriter::try_new(out, Arc::clone(schema), None)?;
            for b in batches {
                w.write(b)?;
            }
            w.close()?;
        }
    }
    Ok(())
}

async fn repl(client: &mut MeshClient, args: &SqlArgs) -> anyhow::Result<()> {
    let mut editor = rustyline::DefaultEditor::new()?;
    let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".meshgate_history"));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    println!("meshgate sql — end statements with ';', \\q to quit");
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "meshgate> "
        } else {
            "      ..> "
        };
        let line = match editor.readline(prompt) {
            Ok(l) => l,
            Err(rustyline::error::ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(_) => break,
        };
        let trimmed = line.trim();
        if buffer.is_empty() && (trimmed == "\\q" || trimmed == "quit" || trimmed == "exit") {
            break;
        }
        buffer.push_str(&line);
        buffer.push('\n');
        if !trimmed.ends_with(';') {
            continue;
        }
        let sql = buffer.trim().trim_end_matches(';').to_string();
        buffer.clear();
        let _ = editor.add_history_entry(&sql);
        if let Err(e) = one(client, &sql, args).await {
            eprintln!("error: {e:#}");
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(())
}
