-- +goose Up
-- The event log. position orders events inside one transaction and breaks ties;
-- tx_id is the writing transaction, so a reader can tell which rows may still be
-- joined by a transaction that commits late (see eventstore/relay.go).
CREATE TABLE events (
    position    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx_id       xid8        NOT NULL DEFAULT pg_current_xact_id(),
    id          uuid        NOT NULL UNIQUE,
    stream_id   text        NOT NULL,
    version     bigint      NOT NULL CHECK (version > 0),
    type        text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    tenant_id   uuid,
    user_id     uuid,
    metadata    jsonb       NOT NULL DEFAULT '{}',
    data        jsonb       NOT NULL DEFAULT '{}',
    -- AES-256-GCM sealed secret part: never read by the relay, never published.
    sealed      bytea,
    sealed_kid  text,
    CONSTRAINT events_stream_version UNIQUE (stream_id, version)
);
CREATE INDEX events_commit_order ON events (tx_id, position);

-- Fails the append when the stream is not at the version the command decided on
-- (-1 means any version: for audit streams with no invariant to protect).
-- Two appends racing from the same version both pass this check and then collide
-- on events_stream_version, so the loser fails either way.
-- +goose StatementBegin
CREATE FUNCTION eventstore_expect_version(p_stream text, p_expected bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    current bigint;
BEGIN
    SELECT version INTO current FROM events WHERE stream_id = p_stream ORDER BY version DESC LIMIT 1;
    IF p_expected <> -1 AND coalesce(current, 0) <> p_expected THEN
        RAISE EXCEPTION 'stream % is at version %, expected %', p_stream, coalesce(current, 0), p_expected
            USING ERRCODE = 'AU409';
    END IF;
    RETURN true;
END $$;
-- +goose StatementEnd

-- Write-side uniqueness (e.g. one account per email), claimed in the same
-- transaction as the events that rely on it, never checked against a projection.
CREATE TABLE unique_keys (
    scope      text NOT NULL,
    key        text NOT NULL,
    owner      text NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);

-- The relay's progress through the log: the last (tx_id, position) published.
CREATE TABLE relay_checkpoint (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    tx_id      xid8   NOT NULL DEFAULT '0',
    position   bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO relay_checkpoint DEFAULT VALUES;

-- Each projection's progress. stream_seq is a JetStream sequence at or before
-- (tx_id, position): where the consumer restarts; events up to the pair are skipped.
CREATE TABLE projection_checkpoints (
    name       text PRIMARY KEY,
    tx_id      xid8   NOT NULL DEFAULT '0',
    position   bigint NOT NULL DEFAULT 0,
    stream_seq bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE projection_checkpoints;
DROP TABLE relay_checkpoint;
DROP TABLE unique_keys;
DROP FUNCTION eventstore_expect_version;
DROP TABLE events;
