//! `cargo run -p meshgate-sample -- [DIR] [--scale N]` rewrites the sample mesh's Parquet
//! files (default `sample-data/`, scale 1). The output is deterministic.

fn main() -> anyhow::Result<()> {
    let mut dir = std::path::PathBuf::from("sample-data");
    let mut scale = 1;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--scale" => scale = args.next().and_then(|s| s.parse().ok()).unwrap_or(1),
            other => dir = other.into(),
        }
    }
    meshgate_sample::write_sample_mesh(&dir, scale)?;
    println!(
        "wrote the sample mesh (scale {scale}) under {}",
        dir.display()
    );
    Ok(())
}
