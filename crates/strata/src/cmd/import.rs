//! `strata import`: bulk load of a directory of books.

use std::path::PathBuf;

/// Bulk-load a directory of books: DIR/<book>/<page>.png (or .jpg, ...)
/// with DIR/<book>/<page>.txt; returns once every page is searchable.
#[derive(clap::Args)]
pub struct Import {
    /// The directory of books.
    pub dir: PathBuf,
    /// The public API to upload through (gateway or node).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Bearer token for writes (auth.write_token).
    #[arg(long)]
    pub token: Option<String>,
    /// Uploads in flight.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `strata import`.
pub async fn run(a: Import) -> anyhow::Result<()> {
    let Import {
        dir,
        url,
        token,
        concurrency,
        quiet,
    } = a;
    let t0 = std::time::Instant::now();
    let r = strata::import::run(&dir, &url, token.as_deref(), concurrency, quiet).await?;
    println!(
        "imported {} pages ({} bytes) in {:.1} s; {} indexing jobs failed",
        r.pages,
        r.bytes,
        t0.elapsed().as_secs_f64(),
        r.failed_jobs
    );
    if r.failed_jobs > 0 {
        anyhow::bail!(
            "{} pages are not searchable (dead indexing jobs)",
            r.failed_jobs
        );
    }
    Ok(())
}
