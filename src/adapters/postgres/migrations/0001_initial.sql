-- codeyard 0001: the work queue and the worker registry.
-- Applied by codeyard.adapters.postgres.migrate inside a transaction; never edit once shipped.

CREATE TABLE codeyard_jobs (
    id               text        PRIMARY KEY,
    -- Insertion order: the last tie-breaker of the claim order.
    seq              bigint      GENERATED ALWAYS AS IDENTITY,
    queue            text        NOT NULL,
    payload          jsonb       NOT NULL,
    status           text        NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts         integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     integer     NOT NULL CHECK (max_attempts > 0),
    lease_owner      text,
    lease_expires_at timestamptz,
    available_at     timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    result           jsonb,
    -- A lease exists exactly while the job runs.
    CHECK ((status = 'running') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);

-- Claim scans: live jobs of one queue in claim order.
CREATE INDEX codeyard_jobs_claim_idx
    ON codeyard_jobs (queue, available_at, created_at, seq)
    WHERE status IN ('queued', 'running');

-- Wake waiters (PostgresWorkQueue.wait LISTENs on this channel; the payload is the queue).
-- Fired whenever a job becomes queued: on insert and on re-queue after a failed attempt.
CREATE FUNCTION codeyard_jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('codeyard_jobs', NEW.queue);
    RETURN NULL;
END;
$$;

CREATE TRIGGER codeyard_jobs_notify_insert
    AFTER INSERT ON codeyard_jobs
    FOR EACH ROW WHEN (NEW.status = 'queued')
    EXECUTE FUNCTION codeyard_jobs_notify();

CREATE TRIGGER codeyard_jobs_notify_requeue
    AFTER UPDATE OF status ON codeyard_jobs
    FOR EACH ROW WHEN (NEW.status = 'queued' AND OLD.status IS DISTINCT FROM 'queued')
    EXECUTE FUNCTION codeyard_jobs_notify();

CREATE TABLE codeyard_workers (
    worker_id    text        PRIMARY KEY,
    -- Registration order: tie-breaker of list_active.
    seq          bigint      GENERATED ALWAYS AS IDENTITY,
    spec         jsonb       NOT NULL,
    status       text        NOT NULL
        CHECK (status IN ('starting', 'running', 'idle', 'busy', 'unhealthy', 'stopped', 'failed')),
    host         text        NOT NULL DEFAULT '',
    container_id text,
    image        text,
    ip           text,
    task_id      text,
    created_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    error        text
);

CREATE INDEX codeyard_workers_active_idx
    ON codeyard_workers (created_at, seq)
    WHERE status NOT IN ('stopped', 'failed');
