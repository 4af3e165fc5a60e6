//! [`PgIndex`]: the name index in PostgreSQL, for a cluster. Nodes talk to
//! the database directly (no index member); its streaming replication to a
//! synchronous standby is what keeps every acknowledged name when a machine
//! is lost.
//!
//! Schema (created and migrated by [`PgIndex::connect`], see
//! docs/formats.md):
//! - `strata_blobs(key text COLLATE "C" PRIMARY KEY, id, version, meta jsonb)`:
//!   keys compare as bytes whatever the database's locale, so listings and
//!   cursors agree with the redb backend;
//! - `strata_blob_tags(tag, key)`: the by-tag view, changed in the same
//!   transaction as the key;
//! - `strata_counters('next_id')`: the next unallocated blob id. Id leases
//!   are committed (and so on the synchronous standby) before an id is
//!   handed out, so no store ever receives an id a failover could reissue;
//!   a sequence would not do, since `nextval` outside a committed
//!   transaction is not replicated synchronously;
//! - `strata_commit_seq`: commit numbers. They are taken inside the
//!   writing transaction after the key's advisory lock, so they grow per
//!   key in commit order; a number lost with a rolled-back transaction is
//!   never seen by anyone.
//!
//! Writes are one call each (`strata_put`, `strata_delete`: PL/pgSQL, one
//! round trip, autocommit). A put whose answer was lost is retried by
//! [`pg::Db::retry`]; the function sees its own blob id already under the
//! key and answers with that commit instead of writing twice.

use std::sync::Arc;

use async_trait::async_trait;

use crate::backend::Index;
use crate::meta::check_count;
use crate::meta::{BlobMeta, Committed, Entry, Listing, MAX_LIST_LIMIT};
use crate::{Error, IndexMetrics, Result};

pub use pg::PgOptions;

/// Schema steps, in order; the index of a step is its version minus one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE strata_blobs (
    key text COLLATE "C" PRIMARY KEY,
    id bigint NOT NULL,
    version bigint NOT NULL,
    meta jsonb NOT NULL
);
CREATE TABLE strata_blob_tags (
    tag text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    PRIMARY KEY (tag, key)
);
CREATE TABLE strata_counters (name text PRIMARY KEY, value bigint NOT NULL);
INSERT INTO strata_counters VALUES ('next_id', 1);
CREATE SEQUENCE strata_commit_seq;

CREATE FUNCTION strata_put(k text, new_id bigint, m jsonb, new_tags text[])
RETURNS TABLE (o_version bigint, o_previous jsonb, o_prev_version bigint)
LANGUAGE plpgsql AS $$
DECLARE p_id bigint; p_meta jsonb; p_version bigint; v bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(k, 0));
    SELECT b.id, b.meta, b.version INTO p_id, p_meta, p_version
        FROM strata_blobs b WHERE b.key = k;
    IF p_id = new_id THEN
        -- The retry of a put whose answer was lost: it committed.
        RETURN QUERY SELECT p_version, NULL::jsonb, NULL::bigint;
        RETURN;
    END IF;
    v := nextval('strata_commit_seq');
    INSERT INTO strata_blobs AS b (key, id, version, meta) VALUES (k, new_id, v, m)
        ON CONFLICT (key) DO UPDATE
        SET id = EXCLUDED.id, version = EXCLUDED.version, meta = EXCLUDED.meta;
    IF p_id IS NOT NULL THEN
        DELETE FROM strata_blob_tags t WHERE t.key = k;
    END IF;
    INSERT INTO strata_blob_tags (tag, key)
        SELECT DISTINCT x, k FROM unnest(new_tags) AS x;
    RETURN QUERY SELECT v, p_meta, p_version;
END $$;

CREATE FUNCTION strata_delete(k text)
RETURNS TABLE (o_version bigint, o_previous jsonb, o_prev_version bigint)
LANGUAGE plpgsql AS $$
DECLARE p_meta jsonb; p_version bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(k, 0));
    DELETE FROM strata_blobs b WHERE b.key = k RETURNING b.meta, b.version
        INTO p_meta, p_version;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 0::bigint, NULL::jsonb, NULL::bigint;
        RETURN;
    END IF;
    DELETE FROM strata_blob_tags t WHERE t.key = k;
    RETURN QUERY SELECT nextval('strata_commit_seq'), p_meta, p_version;
END $$;
"#,
    r#"
-- Step 2: a put brings its commit number, taken before its needles were
-- written (they carry it), or 0 for the next one; the key keeps the change
-- with the highest (number, blob id) whatever order they commit in, and a
-- delete's number is kept until a later put, so a put numbered before it
-- does not bring the key back.
CREATE TABLE strata_deleted (key text COLLATE "C" PRIMARY KEY, version bigint NOT NULL);
DROP FUNCTION strata_put(text, bigint, jsonb, text[]);
DROP FUNCTION strata_delete(text);
CREATE FUNCTION strata_put(k text, new_id bigint, m jsonb, new_tags text[], given bigint)
RETURNS TABLE (o_version bigint, o_previous jsonb, o_prev_version bigint, o_superseded boolean)
LANGUAGE plpgsql AS $$
DECLARE p_id bigint; p_meta jsonb; p_version bigint; d bigint; v bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(k, 0));
    SELECT b.id, b.meta, b.version INTO p_id, p_meta, p_version
        FROM strata_blobs b WHERE b.key = k;
    IF p_id = new_id THEN
        -- The retry of a put whose answer was lost: it committed.
        RETURN QUERY SELECT p_version, NULL::jsonb, NULL::bigint, false;
        RETURN;
    END IF;
    IF given > 0 THEN
        IF p_id IS NOT NULL AND (p_version, p_id) > (given, new_id) THEN
            RETURN QUERY SELECT given, NULL::jsonb, NULL::bigint, true;
            RETURN;
        END IF;
        SELECT x.version INTO d FROM strata_deleted x WHERE x.key = k;
        IF p_id IS NULL AND d > given THEN
            RETURN QUERY SELECT given, NULL::jsonb, NULL::bigint, true;
            RETURN;
        END IF;
        -- An entry rebuilt by recover-index brings a number a new
        -- database's sequence has not reached: later puts go above it.
        PERFORM setval('strata_commit_seq', given)
            FROM strata_commit_seq s WHERE s.last_value < given;
        v := given;
    ELSE
        v := nextval('strata_commit_seq');
    END IF;
    INSERT INTO strata_blobs AS b (key, id, version, meta) VALUES (k, new_id, v, m)
        ON CONFLICT (key) DO UPDATE
        SET id = EXCLUDED.id, version = EXCLUDED.version, meta = EXCLUDED.meta;
    DELETE FROM strata_deleted x WHERE x.key = k;
    IF p_id IS NOT NULL THEN
        DELETE FROM strata_blob_tags t WHERE t.key = k;
    END IF;
    INSERT INTO strata_blob_tags (tag, key)
        SELECT DISTINCT x, k FROM unnest(new_tags) AS x;
    RETURN QUERY SELECT v, p_meta, p_version, false;
END $$;
CREATE FUNCTION strata_delete(k text)
RETURNS TABLE (o_version bigint, o_previous jsonb, o_prev_version bigint, o_superseded boolean)
LANGUAGE plpgsql AS $$
DECLARE p_meta jsonb; p_version bigint; v bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(k, 0));
    DELETE FROM strata_blobs b WHERE b.key = k RETURNING b.meta, b.version
        INTO p_meta, p_version;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 0::bigint, NULL::jsonb, NULL::bigint, false;
        RETURN;
    END IF;
    DELETE FROM strata_blob_tags t WHERE t.key = k;
    v := nextval('strata_commit_seq');
    INSERT INTO strata_deleted AS x (key, version) VALUES (k, v)
        ON CONFLICT (key) DO UPDATE SET version = EXCLUDED.version;
    RETURN QUERY SELECT v, p_meta, p_version, false;
END $$;
"#,
];

const GET: &str = "SELECT version, meta::text FROM strata_blobs WHERE key = $1";
const PUT: &str = "SELECT o_version, o_previous::text, o_prev_version, o_superseded FROM strata_put($1, $2, $3::text::jsonb, $4, $5)";
const NEXT_VERSION: &str = "SELECT nextval('strata_commit_seq')";
const DELETE: &str =
    "SELECT o_version, o_previous::text, o_prev_version, o_superseded FROM strata_delete($1)";
const ALLOC: &str =
    "UPDATE strata_counters SET value = value + $1 WHERE name = 'next_id' RETURNING value - $1";
const SET_REPLICAS: &str = "UPDATE strata_blobs SET meta = jsonb_set(meta, '{replicas}', $3::text::jsonb) WHERE key = $1 AND id = $2 RETURNING 1";
const TAGGED: &str = "SELECT b.key, b.version, b.meta::text FROM strata_blob_tags t
     JOIN strata_blobs b ON b.key = t.key
     WHERE t.tag = $1 AND t.key > $2 ORDER BY t.key LIMIT $3";

/// The name index in PostgreSQL.
pub struct PgIndex {
    db: pg::Db,
    metrics: Arc<IndexMetrics>,
}

fn decode(key: &str, version: i64, raw: &str) -> Result<BlobMeta> {
    let mut m: BlobMeta = serde_json::from_str(raw).map_err(|e| Error::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })?;
    m.version = version as u64;
    Ok(m)
}

/// The smallest string above every string that starts with `prefix`, in
/// byte order (= code point order for UTF-8); `None` when there is none.
fn successor(prefix: &str) -> Option<String> {
    let mut s: Vec<char> = prefix.chars().collect();
    while let Some(c) = s.pop() {
        let next = match c {
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(c as u32 + 1),
        };
        if let Some(n) = next {
            s.push(n);
            return Some(s.into_iter().collect());
        }
    }
    None
}

impl PgIndex {
    /// Connects, creates or migrates the schema (refusing a newer one),
    /// and returns the index.
    pub async fn connect(opts: PgOptions) -> Result<Arc<PgIndex>> {
        let db = pg::Db::new(opts)?;
        db.migrate("index", MIGRATIONS).await?;
        db.warm_up().await;
        Ok(Arc::new(PgIndex {
            db,
            metrics: Arc::new(IndexMetrics::default()),
        }))
    }

    /// One statement with retries across connection failures.
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<pg::Row>> {
        Ok(self.db.query(sql, params).await?)
    }

    fn committed(&self, key: &str, rows: &[pg::Row]) -> Result<Committed> {
        let row = rows
            .first()
            .ok_or_else(|| Error::Invalid("the write function returned no row".into()))?;
        let version: i64 = row.get(0);
        let previous: Option<String> = row.get(1);
        let prev_version: Option<i64> = row.get(2);
        let previous = match (previous, prev_version) {
            (Some(raw), Some(v)) => Some(decode(key, v, &raw)?),
            _ => None,
        };
        Ok(Committed {
            version: version as u64,
            previous,
            superseded: row.get(3),
        })
    }

    fn listing(&self, rows: Vec<pg::Row>, limit: usize) -> Result<Listing> {
        let more = rows.len() > limit;
        let mut items = Vec::with_capacity(rows.len().min(limit));
        for row in rows.into_iter().take(limit) {
            let key: String = row.get(0);
            let meta = decode(&key, row.get(1), row.get::<_, &str>(2))?;
            items.push(Entry { key, meta });
        }
        let next = if more {
            items.last().map(|e| e.key.clone())
        } else {
            None
        };
        Ok(Listing { items, next })
    }
}

#[async_trait]
impl Index for PgIndex {
    async fn get(&self, key: &str) -> Result<Option<BlobMeta>> {
        self.metrics.lookups.inc();
        let rows = self.query(GET, &[&key]).await?;
        rows.first()
            .map(|row| decode(key, row.get(0), row.get::<_, &str>(1)))
            .transpose()
    }

    async fn put(&self, key: &str, meta: &BlobMeta) -> Result<Committed> {
        let raw = serde_json::to_string(meta).map_err(|e| Error::Invalid(e.to_string()))?;
        let id = i64::try_from(meta.id).map_err(|_| Error::Invalid("blob id above 2^63".into()))?;
        let given = i64::try_from(meta.version)
            .map_err(|_| Error::Invalid("commit number above 2^63".into()))?;
        let rows = self
            .query(PUT, &[&key, &id, &raw, &meta.tags, &given])
            .await?;
        self.metrics.writes.inc();
        self.metrics.commits.inc();
        self.committed(key, &rows)
    }

    async fn delete(&self, key: &str) -> Result<Committed> {
        let rows = self.query(DELETE, &[&key]).await?;
        self.metrics.writes.inc();
        self.metrics.commits.inc();
        self.committed(key, &rows)
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Listing> {
        self.metrics.listings.inc();
        let limit = limit.clamp(1, MAX_LIST_LIMIT);
        // Start at the later of the prefix and the cursor (excluding the
        // cursor itself); stop at the prefix's successor, so the scan is
        // one index range whatever follows the prefix.
        let (start, op) = match after {
            Some(a) if a >= prefix => (a, ">"),
            _ => (prefix, ">="),
        };
        let end = successor(prefix);
        let sql = format!(
            "SELECT key, version, meta::text FROM strata_blobs WHERE key {op} $1{} ORDER BY key LIMIT $2",
            if end.is_some() { " AND key < $3" } else { "" }
        );
        let n = limit as i64 + 1;
        let rows = match &end {
            Some(e) => self.query(&sql, &[&start, &n, e]).await?,
            None => self.query(&sql, &[&start, &n]).await?,
        };
        self.listing(rows, limit)
    }

    async fn list_tag(&self, tag: &str, after: Option<&str>, limit: usize) -> Result<Listing> {
        self.metrics.listings.inc();
        let limit = limit.clamp(1, MAX_LIST_LIMIT);
        let n = limit as i64 + 1;
        let rows = self
            .query(TAGGED, &[&tag, &after.unwrap_or(""), &n])
            .await?;
        self.listing(rows, limit)
    }

    async fn alloc_ids(&self, count: u64) -> Result<u64> {
        check_count(count)?;
        let n = count as i64;
        let rows = self.query(ALLOC, &[&n]).await?;
        let first: i64 = rows
            .first()
            .ok_or_else(|| Error::Invalid("strata_counters has no next_id row".into()))?
            .get(0);
        Ok(first as u64)
    }

    async fn next_version(&self) -> Result<u64> {
        // A sequence: no transaction to commit. A number handed out and
        // never used leaves a gap; after a failover the promoted standby's
        // sequence is past every number a committed put used.
        let rows = self.query(NEXT_VERSION, &[]).await?;
        let v: i64 = rows
            .first()
            .ok_or_else(|| Error::Invalid("nextval returned no row".into()))?
            .get(0);
        Ok(v as u64)
    }

    async fn set_replicas(&self, key: &str, id: u64, replicas: &[String]) -> Result<bool> {
        let id = id as i64;
        let raw = serde_json::to_string(replicas).map_err(|e| Error::Invalid(e.to_string()))?;
        let rows = self.query(SET_REPLICAS, &[&key, &id, &raw]).await?;
        self.metrics.writes.inc();
        Ok(!rows.is_empty())
    }

    fn metrics_collector(&self) -> Option<prom::Group> {
        Some(self.metrics.collector())
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}

#[cfg(test)]
mod tests {
    use super::successor;

    #[test]
    fn successor_bounds_every_string_with_the_prefix() {
        assert_eq!(successor(""), None);
        assert_eq!(successor("cats/").as_deref(), Some("cats0"));
        assert_eq!(successor("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(successor("b\u{10FFFF}").as_deref(), Some("c"));
        assert_eq!(successor("\u{10FFFF}"), None);
        let s = successor("é").expect("succ");
        assert!("éa" < s.as_str() && "é\u{10FFFF}" < s.as_str());
    }
}
