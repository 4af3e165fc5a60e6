//! The `strata_jobs` table: its migrations (the table, its indexes and
//! the backoff function), the column list every query reads, and a row
//! read back as a [`Job`].

use bytes::Bytes;

use crate::job::{Job, State};

pub(super) const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE strata_jobs (
    id bigserial PRIMARY KEY,
    queue text COLLATE "C" NOT NULL,
    payload bytea NOT NULL,
    priority bigint NOT NULL,
    ttr_ms bigint NOT NULL,
    max_attempts bigint NOT NULL,
    idem_key text COLLATE "C",
    state text NOT NULL,
    created_ms bigint NOT NULL,
    at_ms bigint NOT NULL,
    attempts bigint NOT NULL DEFAULT 0,
    result bytea,
    error text,
    timeouts bigint NOT NULL DEFAULT 0,
    releases bigint NOT NULL DEFAULT 0,
    buries bigint NOT NULL DEFAULT 0,
    kicks bigint NOT NULL DEFAULT 0,
    holder bigint NOT NULL DEFAULT 0,
    dead_seq bigint NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX strata_jobs_idem ON strata_jobs (queue, idem_key) WHERE idem_key IS NOT NULL;
CREATE INDEX strata_jobs_ready ON strata_jobs (queue, priority, id) WHERE state = 'ready';
CREATE INDEX strata_jobs_timed ON strata_jobs (state, at_ms)
    WHERE state IN ('delayed', 'retrying', 'reserved', 'succeeded');
CREATE INDEX strata_jobs_dead ON strata_jobs (queue, dead_seq) WHERE state = 'dead';
CREATE TABLE strata_queues (name text COLLATE "C" PRIMARY KEY);
CREATE SEQUENCE strata_dead_seq;

CREATE FUNCTION strata_job_put(q text, p bytea, prio bigint, ttr bigint, maxa bigint,
                               ik text, st text, now_ms bigint, at bigint)
RETURNS TABLE (o_id bigint, o_new bool) LANGUAGE plpgsql AS $$
DECLARE new_id bigint;
BEGIN
    INSERT INTO strata_queues (name) VALUES (q) ON CONFLICT DO NOTHING;
    INSERT INTO strata_jobs (queue, payload, priority, ttr_ms, max_attempts, idem_key,
                             state, created_ms, at_ms)
        VALUES (q, p, prio, ttr, maxa, ik, st, now_ms, at)
        ON CONFLICT (queue, idem_key) WHERE idem_key IS NOT NULL DO NOTHING
        RETURNING id INTO new_id;
    IF new_id IS NULL THEN
        RETURN QUERY SELECT j.id, false FROM strata_jobs j WHERE j.queue = q AND j.idem_key = ik;
        RETURN;
    END IF;
    RETURN QUERY SELECT new_id, true;
END $$;

-- A claim of the most urgent ready job. Its commit waits for nothing (as
-- the built-in broker writes reservations lazily): a claim lost to a crash
-- or a failover leaves the job ready, to be run again (at least once).
CREATE FUNCTION strata_job_claim(qs text[], now_ms bigint, h bigint)
RETURNS SETOF strata_jobs LANGUAGE plpgsql AS $$
DECLARE picked bigint;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    IF array_length(qs, 1) = 1 THEN
        SELECT s.id INTO picked FROM strata_jobs s
            WHERE s.state = 'ready' AND s.queue = qs[1]
            ORDER BY s.priority, s.id LIMIT 1 FOR UPDATE SKIP LOCKED;
    ELSE
        SELECT s.id INTO picked FROM strata_jobs s
            WHERE s.state = 'ready' AND s.queue = ANY(qs)
            ORDER BY s.priority, s.id LIMIT 1 FOR UPDATE SKIP LOCKED;
    END IF;
    IF picked IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY UPDATE strata_jobs j
        SET state = 'reserved', attempts = j.attempts + 1, holder = h, at_ms = now_ms + j.ttr_ms
        WHERE j.id = picked RETURNING j.*;
END $$;

-- base * 2^(attempts-1), capped, times a random factor in [0.5, 1.5).
CREATE FUNCTION strata_backoff(attempts bigint, base bigint, cap bigint)
RETURNS bigint LANGUAGE sql VOLATILE AS $$
    SELECT e / 2 + e * floor(random() * 1000)::bigint / 1000
    FROM (SELECT LEAST(base * (1::bigint << LEAST(GREATEST(attempts - 1, 0), 30)::int), cap) AS e) x
$$;
"#];

pub(super) const COLS: &str = "id, queue, payload, priority, ttr_ms, max_attempts, idem_key, state, created_ms, at_ms, attempts, result, error, timeouts, releases, buries, kicks, holder, dead_seq";

/// `$2` = holder, `$3` = lease token or -1.
pub(super) const LEASED: &str =
    "state = 'reserved' AND (($3::bigint < 0 AND holder = $2::bigint) OR ($3::bigint >= 0 AND attempts = $3::bigint))";
pub(super) const OUT_OF_ATTEMPTS: &str = "(max_attempts > 0 AND attempts >= max_attempts)";

pub(super) fn state_name(s: State) -> &'static str {
    match s {
        State::Pending => "pending",
        State::Ready => "ready",
        State::Delayed => "delayed",
        State::Reserved => "reserved",
        State::Succeeded => "succeeded",
        State::Retrying => "retrying",
        State::Dead => "dead",
    }
}

pub(super) fn parse_state(s: &str) -> State {
    match s {
        "ready" => State::Ready,
        "delayed" => State::Delayed,
        "reserved" => State::Reserved,
        "succeeded" => State::Succeeded,
        "retrying" => State::Retrying,
        "dead" => State::Dead,
        _ => State::Pending,
    }
}

pub(super) fn job(row: &pg::Row) -> Job {
    let n = |i: usize| row.get::<_, i64>(i) as u64;
    Job {
        id: n(0),
        queue: row.get(1),
        payload: Bytes::from(row.get::<_, Vec<u8>>(2)),
        priority: n(3) as u32,
        ttr_ms: n(4),
        max_attempts: n(5) as u32,
        idempotency_key: row.get(6),
        state: parse_state(row.get(7)),
        created_ms: n(8),
        at_ms: n(9),
        attempts: n(10) as u32,
        result: row.get::<_, Option<Vec<u8>>>(11).map(Bytes::from),
        error: row.get(12),
        timeouts: n(13) as u32,
        releases: n(14) as u32,
        buries: n(15) as u32,
        kicks: n(16) as u32,
        holder: n(17),
        dead_seq: n(18),
    }
}
