-- codeyard 0002: worker timings (issue #5), stamped by PostgresWorkerRegistry with now().
-- Applied by codeyard.adapters.postgres.migrate inside a transaction; never edit once shipped.
-- Written to be harmless if re-run by hand (IF [NOT] EXISTS). Nullable columns without a
-- default: existing rows have no recorded timings, and adding them touches only the catalog.

ALTER TABLE codeyard_workers
    -- First time the worker was up (running, idle or busy); never overwritten.
    ADD COLUMN IF NOT EXISTS started_at timestamptz,
    -- When the worker reached a terminal status (stopped or failed); never overwritten.
    ADD COLUMN IF NOT EXISTS ended_at   timestamptz,
    -- Same rule as WorkerRecord's validator: terminal states are final.
    DROP CONSTRAINT IF EXISTS codeyard_workers_ended_is_terminal,
    ADD CONSTRAINT codeyard_workers_ended_is_terminal
        CHECK (ended_at IS NULL OR status IN ('stopped', 'failed'));
