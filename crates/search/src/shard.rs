//! [`Shard`]: one tantivy index of pages plus the version table that makes
//! out-of-order changes converge, written by one thread in group commits.
//!
//! Files under the shard's directory:
//! - tantivy's segment files and `meta.json` (the pages);
//! - `versions.redb`: key -> version of the last change applied to it,
//!   deletes included (a tombstone), so a late, older upsert of a deleted
//!   page cannot bring it back.
//!
//! A batch of changes is applied to tantivy and committed (tantivy fsyncs),
//! then the version table is committed, then readers are reloaded, and only
//! then are the callers answered: an acknowledged change is durable and
//! already visible to searches. If the process dies between the two
//! commits, the version table is behind tantivy; the unanswered change is
//! sent again by its queue job and re-applying it gives the same pages.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use prom::IntCounter;
use redb::{Database, ReadableTable, TableDefinition};
use tantivy::collector::TopDocs;
use tantivy::columnar::Column;
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, QueryParser, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Schema, Value, FAST, STORED, STRING, TEXT};
use tantivy::snippet::SnippetGenerator;
use tantivy::{DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};
use tokio::sync::{mpsc, oneshot};

use crate::model::{Applied, BookHit, PageHit, PageOp, Query, Results};
use crate::{Error, Result};

const VERSIONS: TableDefinition<&str, u64> = TableDefinition::new("versions");

/// Most pages looked at to fill one answer. The top pages are grouped by
/// book; if they hold too few books, the query runs again with four times
/// as many, up to this many.
const MAX_FETCH: usize = 20_000;

/// Characters of page text in a snippet.
const SNIPPET_CHARS: usize = 200;

/// Settings of one shard.
#[derive(Debug, Clone)]
pub struct ShardOptions {
    /// Indexing threads.
    pub writer_threads: usize,
    /// Indexing memory, bytes (at least 15 MB per thread).
    pub writer_bytes: usize,
    /// Most changes committed together.
    pub max_batch: usize,
}

impl Default for ShardOptions {
    fn default() -> Self {
        ShardOptions {
            writer_threads: 1,
            writer_bytes: 64 << 20,
            max_batch: 10_000,
        }
    }
}

/// Counters exported on `/metrics` (the `prometheus` library's own).
#[derive(Debug, Clone)]
pub struct ShardMetrics {
    /// Queries answered.
    pub queries: IntCounter,
    /// Changes applied.
    pub applied: IntCounter,
    /// Changes dropped because a newer one was applied.
    pub stale: IntCounter,
    /// Commits (one per batch).
    pub commits: IntCounter,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        ShardMetrics {
            queries: prom::counter(
                "strata_search_queries_total",
                "Queries answered by this shard.",
            ),
            applied: prom::counter("strata_search_applied_total", "Page changes applied."),
            stale: prom::counter(
                "strata_search_stale_total",
                "Page changes dropped as older than the applied one.",
            ),
            commits: prom::counter("strata_search_commits_total", "Index commits."),
        }
    }
}

#[derive(Clone, Copy)]
struct Fields {
    key: Field,
    book: Field,
    book_id: Field,
    page: Field,
    text: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let f = Fields {
        key: b.add_text_field("key", STRING | STORED),
        book: b.add_text_field("book", STRING | STORED),
        book_id: b.add_u64_field("book_id", FAST),
        page: b.add_u64_field("page", STORED | FAST),
        text: b.add_text_field("text", TEXT | STORED),
    };
    (b.build(), f)
}

/// Hash of a book name: what pages are grouped by (a fast field, so
/// grouping reads no stored document).
pub fn book_id(book: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(book.as_bytes())
}

type Batch = (Vec<PageOp>, oneshot::Sender<Result<Vec<Applied>>>);

/// One shard of the page index.
pub struct Shard {
    index: Index,
    reader: IndexReader,
    fields: Fields,
    dir: std::path::PathBuf,
    /// `None` only while dropping.
    tx: Option<mpsc::Sender<Batch>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Counters.
    pub metrics: Arc<ShardMetrics>,
}

impl Shard {
    /// Opens or creates the shard in `dir` and starts its writer thread.
    pub fn open(dir: &Path, opts: ShardOptions) -> Result<Arc<Shard>> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Invalid(format!("{dir:?}: {e}")))?;
        let (schema, fields) = schema();
        let mdir = MmapDirectory::open(dir).map_err(|e| Error::Invalid(e.to_string()))?;
        let index = Index::open_or_create(mdir, schema)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let threads = opts.writer_threads.max(1);
        let bytes = opts.writer_bytes.max((threads * 16) << 20);
        let writer: IndexWriter = index.writer_with_num_threads(threads, bytes)?;
        let versions = Database::create(dir.join("versions.redb"))?;
        {
            let w = versions.begin_write()?;
            w.open_table(VERSIONS)?;
            w.commit()?;
        }
        let metrics = Arc::new(ShardMetrics::default());
        let (tx, rx) = mpsc::channel(1024);
        let w = Writer {
            writer,
            versions,
            reader: reader.clone(),
            fields,
            metrics: metrics.clone(),
            max_batch: opts.max_batch.max(1),
        };
        let handle = std::thread::Builder::new()
            .name("search-writer".into())
            .spawn(move || w.run(rx))
            .map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(Arc::new(Shard {
            index,
            reader,
            fields,
            dir: dir.to_owned(),
            tx: Some(tx),
            writer: Some(handle),
            metrics,
        }))
    }

    /// Applies `ops` in order; returns once they are durable and visible.
    pub async fn apply(&self, ops: Vec<PageOp>) -> Result<Vec<Applied>> {
        for op in &ops {
            if op.key().is_empty() {
                return Err(Error::Invalid("a page needs a key".into()));
            }
            if op.version() == 0 {
                return Err(Error::Invalid("versions start at 1".into()));
            }
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .as_ref()
            .ok_or(Error::Closed)?
            .send((ops, reply))
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Pages in the shard.
    pub fn num_pages(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Bytes the shard's files take on disk.
    pub fn disk_bytes(&self) -> u64 {
        std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Runs `q` (blocking: call it off the async threads). Books are ranked
    /// by their best page's BM25 score; each carries its best pages with
    /// snippets.
    pub fn search(&self, q: &Query) -> Result<Results> {
        q.check()?;
        let t0 = Instant::now();
        self.metrics.queries.inc();
        let f = self.fields;
        let searcher = self.reader.searcher();
        let mut parser = QueryParser::for_index(&self.index, vec![f.text]);
        // Every word must match, as users of a search box expect.
        parser.set_conjunction_by_default();
        let words = parser
            .parse_query(&q.q)
            .map_err(|e| Error::BadQuery(e.to_string()))?;
        let query: Box<dyn tantivy::query::Query> = match &q.book {
            None => words,
            Some(b) => {
                // The book filter must not change scores: boost 0.
                let only =
                    TermQuery::new(Term::from_field_text(f.book, b), IndexRecordOption::Basic);
                Box::new(BooleanQuery::new(vec![
                    (Occur::Must, words),
                    (Occur::Must, Box::new(BoostQuery::new(Box::new(only), 0.0))),
                ]))
            }
        };

        // Top pages, grouped by book in score order; fetch more if too few
        // books came out and more pages matched.
        let mut want = (q.limit * q.pages * 4).max(64);
        let groups = loop {
            let top = searcher.search(&query, &TopDocs::with_limit(want).order_by_score())?;
            let groups = group_by_book(&searcher, &top, q)?;
            if groups.len() >= q.limit || top.len() < want || want >= MAX_FETCH {
                break groups;
            }
            want = (want * 4).min(MAX_FETCH);
        };

        let mut snippets = SnippetGenerator::create(&searcher, &*query, f.text)?;
        snippets.set_max_num_chars(SNIPPET_CHARS);
        let mut books = Vec::with_capacity(groups.len());
        for g in groups.into_iter().take(q.limit) {
            let mut book = BookHit {
                book: String::new(),
                score: g[0].0,
                pages: Vec::with_capacity(g.len()),
            };
            for (score, addr) in g {
                let doc: TantivyDocument = searcher.doc(addr)?;
                let str_of = |fl: Field| {
                    doc.get_first(fl)
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                        .to_owned()
                };
                if book.book.is_empty() {
                    book.book = str_of(f.book);
                }
                book.pages.push(PageHit {
                    page: doc.get_first(f.page).and_then(|v| v.as_u64()).unwrap_or(0),
                    key: str_of(f.key),
                    score,
                    snippet: snippets.snippet_from_doc(&doc).to_html(),
                });
            }
            books.push(book);
        }
        Ok(Results {
            books,
            partial: false,
            took_ms: t0.elapsed().as_secs_f64() * 1e3,
        })
    }
}

/// Groups `top` (best first) by book: books in the order of their best
/// page, each with at most `q.pages` pages.
fn group_by_book(
    searcher: &tantivy::Searcher,
    top: &[(f32, DocAddress)],
    q: &Query,
) -> Result<Vec<Vec<(f32, DocAddress)>>> {
    let mut columns: HashMap<u32, Column<u64>> = HashMap::new();
    let mut slot: HashMap<u64, usize> = HashMap::new();
    let mut groups: Vec<Vec<(f32, DocAddress)>> = Vec::new();
    for &(score, addr) in top {
        let col = match columns.get(&addr.segment_ord) {
            Some(c) => c,
            None => {
                let c = searcher
                    .segment_reader(addr.segment_ord)
                    .fast_fields()
                    .u64("book_id")?;
                columns.entry(addr.segment_ord).or_insert(c)
            }
        };
        let id = col.first(addr.doc_id).unwrap_or(0);
        let i = *slot.entry(id).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        if groups[i].len() < q.pages {
            groups[i].push((score, addr));
        }
    }
    Ok(groups)
}

impl Drop for Shard {
    /// Closes the queue and waits for the writer's last batch, so the
    /// directory can be opened again at once.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
    }
}

/// The writer thread's state.
struct Writer {
    writer: IndexWriter,
    versions: Database,
    reader: IndexReader,
    fields: Fields,
    metrics: Arc<ShardMetrics>,
    max_batch: usize,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Batch>) {
        while let Some(first) = rx.blocking_recv() {
            let mut n = first.0.len();
            let mut batch = vec![first];
            while n < self.max_batch {
                match rx.try_recv() {
                    Ok(b) => {
                        n += b.0.len();
                        batch.push(b);
                    }
                    Err(_) => break,
                }
            }
            match self.commit(&batch) {
                Ok(outcomes) => {
                    for ((_, reply), o) in batch.into_iter().zip(outcomes) {
                        let _ = reply.send(Ok(o));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "search shard commit failed");
                    // Nothing of the batch may stay half-applied.
                    let _ = self.writer.rollback();
                    let msg = e.to_string();
                    for (_, reply) in batch {
                        let _ = reply.send(Err(Error::Versions(msg.clone())));
                    }
                }
            }
        }
    }

    /// Applies every op of `batch`, commits tantivy then the version table,
    /// reloads readers.
    fn commit(&mut self, batch: &[Batch]) -> Result<Vec<Vec<Applied>>> {
        let f = self.fields;
        let w = self.versions.begin_write()?;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut changed = false;
        {
            let mut table = w.open_table(VERSIONS)?;
            for (ops, _) in batch {
                let mut out = Vec::with_capacity(ops.len());
                for op in ops {
                    let last = table.get(op.key())?.map_or(0, |v| v.value());
                    if op.version() <= last {
                        self.metrics.stale.inc();
                        out.push(Applied::Stale);
                        continue;
                    }
                    self.writer
                        .delete_term(Term::from_field_text(f.key, op.key()));
                    if let PageOp::Upsert {
                        key,
                        book,
                        page,
                        text,
                        ..
                    } = op
                    {
                        let mut doc = TantivyDocument::default();
                        doc.add_text(f.key, key);
                        doc.add_text(f.book, book);
                        doc.add_u64(f.book_id, book_id(book));
                        doc.add_u64(f.page, *page);
                        doc.add_text(f.text, text);
                        self.writer.add_document(doc)?;
                    }
                    table.insert(op.key(), op.version())?;
                    self.metrics.applied.inc();
                    changed = true;
                    out.push(Applied::Applied);
                }
                outcomes.push(out);
            }
        }
        if changed {
            // tantivy first: if we die before the version table commits,
            // the retried change is applied again (same result); the other
            // order could drop it as stale with its pages never written.
            self.writer.commit()?;
            w.commit()?;
            self.reader.reload()?;
            self.metrics.commits.inc();
        } else {
            w.abort()?;
        }
        Ok(outcomes)
    }
}
