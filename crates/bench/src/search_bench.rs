//! `search`: query latency of the page index at 1M pages, one shard vs
//! four, through the node's real scatter-gather over HTTP shard servers.
//!
//! Pages are synthetic and deterministic: `words` words each, drawn from a
//! `vocab`-word vocabulary with Zipf(`s`) frequencies (as natural text
//! is), `pages_per_book` pages per book. The same pages are loaded once
//! into a single shard and once into four shards placed by book on the
//! ring, as a cluster places them. Then, for each layout, the same query
//! list runs one query at a time: one-term, two-term (all words must
//! match) and two-word phrase queries, terms drawn with the same Zipf law
//! but skipping the 50 most frequent words (stop words, which no one
//! searches for alone). A phrase is two consecutive words of a generated
//! page, so it exists. Reported: p50/p99 per kind and layout, the ratio
//! four/one, and index bytes per page.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use node::search::{SearchTier, ShardHandle, ShardMember};
use search::{PageOp, Query, Shard, ShardOptions};

use crate::dist::{Rng, Zipf};

/// Options of `search`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Pages indexed.
    #[arg(long, default_value_t = 1_000_000)]
    pages: u64,
    /// Words per page.
    #[arg(long, default_value_t = 120)]
    words: usize,
    /// Vocabulary size.
    #[arg(long, default_value_t = 50_000)]
    vocab: usize,
    /// Zipf exponent of word frequencies.
    #[arg(long, default_value_t = 1.0)]
    s: f64,
    /// Pages per book.
    #[arg(long, default_value_t = 300)]
    pages_per_book: u64,
    /// Queries per kind and layout.
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    /// Working directory (indexes are built here; several GB at 1M pages).
    #[arg(long, default_value = "target/bench/search")]
    out: PathBuf,
    /// Reuse indexes already built in --out with the same settings.
    #[arg(long)]
    reuse: bool,
}

/// The word of rank `r`: letters only, so the tokenizer keeps it whole.
fn word(r: usize) -> String {
    let mut n = r + 27;
    let mut w = Vec::new();
    while n > 0 {
        w.push(b'a' + (n % 26) as u8);
        n /= 26;
    }
    String::from_utf8(w).unwrap_or_default()
}

struct Corpus {
    words: Vec<String>,
    zipf: Zipf,
    per_page: usize,
    pages_per_book: u64,
}

impl Corpus {
    fn page_text(&self, page: u64) -> String {
        let mut rng = Rng(page.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut t = String::with_capacity(self.per_page * 7);
        for i in 0..self.per_page {
            if i > 0 {
                t.push(' ');
            }
            t.push_str(&self.words[self.zipf.sample(&mut rng)]);
        }
        t
    }

    fn op(&self, page: u64) -> PageOp {
        let book = page / self.pages_per_book;
        PageOp::Upsert {
            key: format!("books/{book}/{page}.png"),
            book: format!("book {book}"),
            page: page % self.pages_per_book,
            text: self.page_text(page),
            version: 1,
        }
    }
}

fn shard_opts() -> ShardOptions {
    ShardOptions {
        writer_threads: 2,
        writer_bytes: 512 << 20,
        max_batch: 50_000,
    }
}

/// Loads all pages into `shards`, each page on the shard that owns its
/// book (the same ring the node uses).
async fn load(shards: &[Arc<Shard>], c: &Corpus, pages: u64) -> anyhow::Result<Duration> {
    let names: Vec<String> = (0..shards.len()).map(|i| format!("search-{i}")).collect();
    let ring = cluster::Ring::new(&names, 160);
    let t0 = Instant::now();
    let batch = 20_000u64;
    let mut start = 0;
    while start < pages {
        let end = (start + batch).min(pages);
        let mut per: Vec<Vec<PageOp>> = vec![Vec::new(); shards.len()];
        for p in start..end {
            let op = c.op(p);
            let PageOp::Upsert { book, .. } = &op else {
                unreachable!()
            };
            per[ring.owner(book.as_bytes()).unwrap_or(0)].push(op);
        }
        let mut waits = Vec::new();
        for (s, ops) in shards.iter().zip(per) {
            if !ops.is_empty() {
                let s = s.clone();
                waits.push(tokio::spawn(async move { s.apply(ops).await }));
            }
        }
        for w in waits {
            w.await??;
        }
        start = end;
        if start % 200_000 == 0 || start == pages {
            eprintln!(
                "  {} shard(s): {start} pages indexed ({:.0} pages/s)",
                shards.len(),
                start as f64 / t0.elapsed().as_secs_f64()
            );
        }
    }
    Ok(t0.elapsed())
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// The query list: (kind, text).
fn queries(c: &Corpus, n: usize) -> Vec<(&'static str, String)> {
    let mut rng = Rng(0xC0FFEE);
    let term = |rng: &mut Rng| loop {
        let r = c.zipf.sample(rng);
        if r >= 50 {
            return c.words[r].clone();
        }
    };
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(("one-term", term(&mut rng)));
    }
    for _ in 0..n {
        let (a, b) = (term(&mut rng), term(&mut rng));
        out.push(("two-term", format!("{a} {b}")));
    }
    for _ in 0..n {
        let text = c.page_text(rng.next() % 1_000_000_000);
        let w: Vec<&str> = text.split(' ').collect();
        let i = (rng.next() as usize) % (w.len() - 1);
        out.push(("phrase", format!("\"{} {}\"", w[i], w[i + 1])));
    }
    out
}

/// Serves `shards` over HTTP on loopback; the tier the node would build.
async fn tier_over_http(shards: &[Arc<Shard>]) -> anyhow::Result<SearchTier> {
    let mut members = Vec::new();
    for (i, s) in shards.iter().enumerate() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", l.local_addr()?);
        tokio::spawn(search::server::serve(l, s.clone(), std::future::pending()));
        members.push(ShardMember {
            name: format!("search-{i}"),
            handle: ShardHandle::Remote(search::client::ShardClient::new(
                base,
                Duration::from_secs(30),
            )),
        });
    }
    Ok(SearchTier::new(members, Duration::from_secs(30), 1))
}

struct Measured {
    kind: &'static str,
    p50: f64,
    p99: f64,
    books: f64,
}

async fn measure(
    tier: &SearchTier,
    qs: &[(&'static str, String)],
) -> anyhow::Result<Vec<Measured>> {
    // Warm-up: page the index in, open pooled connections.
    for (_, q) in qs.iter().step_by(10) {
        tier.search(Query::new(q.clone())).await?;
    }
    let mut out = Vec::new();
    for kind in ["one-term", "two-term", "phrase"] {
        let mut lat = Vec::new();
        let mut books = 0usize;
        for (_, q) in qs.iter().filter(|(k, _)| *k == kind) {
            let t0 = Instant::now();
            let r = tier.search(Query::new(q.clone())).await?;
            lat.push(t0.elapsed().as_secs_f64() * 1e3);
            books += r.books.len();
        }
        lat.sort_by(f64::total_cmp);
        out.push(Measured {
            kind,
            p50: pct(&lat, 0.50),
            p99: pct(&lat, 0.99),
            books: books as f64 / lat.len() as f64,
        });
    }
    Ok(out)
}

/// Prints one table row per query kind, one shard against four, and adds
/// them to `json` (kinds suffixed with `tag`).
fn print_rows(one: &[Measured], four: &[Measured], tag: &str, json: &mut Vec<serde_json::Value>) {
    for (one, four) in one.iter().zip(four) {
        println!(
            "{:<10} {:>9.2} ms {:>9.2} ms {:>9.2} ms {:>9.2} ms {:>7.2}x {:>7.2}x",
            one.kind,
            one.p50,
            one.p99,
            four.p50,
            four.p99,
            four.p50 / one.p50,
            four.p99 / one.p99
        );
        json.push(serde_json::json!({
            "kind": format!("{}{tag}", one.kind),
            "one": {"p50_ms": one.p50, "p99_ms": one.p99, "books": one.books},
            "four": {"p50_ms": four.p50, "p99_ms": four.p99, "books": four.books},
        }));
    }
}

/// Runs the scenario.
pub fn run(a: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_async(a))
}

async fn run_async(a: Args) -> anyhow::Result<()> {
    let corpus = Corpus {
        words: (0..a.vocab).map(word).collect(),
        zipf: Zipf::new(a.vocab, a.s),
        per_page: a.words,
        pages_per_book: a.pages_per_book.max(1),
    };
    let tag = format!(
        "p{}-w{}-v{}-s{}-b{}",
        a.pages, a.words, a.vocab, a.s, a.pages_per_book
    );
    let root = a.out.join(&tag);
    let mut layouts = Vec::new();
    for n in [1usize, 4] {
        let dir = root.join(format!("{n}-shards"));
        let done = dir.join("complete");
        if !(a.reuse && done.exists()) {
            let _ = std::fs::remove_dir_all(&dir);
        }
        let shards = (0..n)
            .map(|i| Shard::open(&dir.join(i.to_string()), shard_opts()))
            .collect::<Result<Vec<_>, _>>()?;
        let build = if done.exists() {
            None
        } else {
            eprintln!(
                "building {n} shard(s) of {} pages in {}",
                a.pages,
                dir.display()
            );
            let t = load(&shards, &corpus, a.pages).await?;
            std::fs::write(&done, "")?;
            Some(t)
        };
        layouts.push((n, shards, build));
    }
    let qs = queries(&corpus, a.queries);
    let mut results = Vec::new();
    let mut local = Vec::new();
    for (n, shards, build) in &layouts {
        let tier = tier_over_http(shards).await?;
        let m = measure(&tier, &qs).await?;
        // The same scatter-gather with in-process shards (as in `serve`):
        // what the shards' work costs without the HTTP round trips.
        let members = shards
            .iter()
            .enumerate()
            .map(|(i, s)| ShardMember {
                name: format!("search-{i}"),
                handle: ShardHandle::Local(s.clone()),
            })
            .collect();
        local.push(measure(&SearchTier::new(members, Duration::from_secs(30), 1), &qs).await?);
        let pages: u64 = shards.iter().map(|s| s.num_pages()).sum();
        let bytes: u64 = shards.iter().map(|s| s.disk_bytes()).sum();
        results.push((*n, m, pages, bytes, *build));
    }

    println!(
        "\nsearch: {} pages x {} words, vocab {} Zipf s={}, {} pages/book; {} queries per kind, one at a time, through HTTP shards + node scatter-gather",
        a.pages, a.words, a.vocab, a.s, a.pages_per_book, a.queries
    );
    println!(
        "{:<10} {:>12} {:>12} {:>12} {:>12} {:>8} {:>8}",
        "query", "1 shard p50", "1 shard p99", "4 shards p50", "4 shards p99", "p50 4/1", "p99 4/1"
    );
    let mut json_rows = Vec::new();
    print_rows(&results[0].1, &results[1].1, "", &mut json_rows);
    println!("same queries, shards in-process (no HTTP):");
    print_rows(&local[0], &local[1], " (in-process)", &mut json_rows);
    for (n, _, pages, bytes, build) in &results {
        println!(
            "{n} shard(s): {pages} pages, {:.0} index bytes per page ({:.2} GB){}",
            *bytes as f64 / (*pages).max(1) as f64,
            *bytes as f64 / 1e9,
            build.map_or(String::new(), |t| format!(
                ", built in {:.0} s ({:.0} pages/s)",
                t.as_secs_f64(),
                *pages as f64 / t.as_secs_f64()
            ))
        );
    }
    std::fs::create_dir_all(&a.out)?;
    let json = serde_json::json!({
        "pages": a.pages, "words": a.words, "vocab": a.vocab, "s": a.s,
        "rows": json_rows,
        "bytes_per_page": results.iter().map(|r| r.3 as f64 / r.2.max(1) as f64).collect::<Vec<_>>(),
    });
    std::fs::write(
        a.out.join("search.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    crate::plots_of::after_run(&a.out, "search", &json);
    Ok(())
}
