-- +goose Up
-- Request counters of package ratelimit: one row per key and fixed window,
-- shared by every authd instance. UNLOGGED because a counter is worth nothing
-- after a crash or a failover (the limits just start afresh) and skipping the
-- WAL makes every counted request cheaper. fillfactor leaves room on each page
-- so that bumping a count can be a HOT update that never touches the index.
CREATE UNLOGGED TABLE rate_limits (
    key          text        NOT NULL,
    window_start timestamptz NOT NULL,
    count        bigint      NOT NULL,
    -- window_start plus the window's length: limits with different windows
    -- share the table, so the sweep cannot derive the end from the start.
    -- No index: one sequential scan a minute costs less than an index insert
    -- on every new window.
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (key, window_start)
) WITH (fillfactor = 70);

-- Failed login attempts per account in a row, for the progressive login
-- slow-down (an attempt counts from its admission until a right password
-- resets the row). UNLOGGED for the same reason: a crash forgets some
-- failures, and the worst that does is give a guesser five more free tries.
CREATE UNLOGGED TABLE login_failures (
    account         text        PRIMARY KEY,
    failures        integer     NOT NULL,
    last_failure_at timestamptz NOT NULL
);

-- +goose Down
DROP TABLE login_failures;
DROP TABLE rate_limits;
