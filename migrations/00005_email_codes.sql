-- +goose Up
-- The live one-time code per (email, purpose) of package codes; issuing a new
-- code replaces the row. Logged, unlike the rate-limit counters: payload can
-- hold a pending registration, which a restart should not throw away.
CREATE TABLE email_codes (
    email      text        NOT NULL,
    purpose    text        NOT NULL,
    -- HMAC-SHA256 under a server key: a dump of the table does not give the
    -- codes away, although a plain hash of a 6-digit code would.
    code_hash  bytea       NOT NULL,
    expires_at timestamptz NOT NULL,
    -- Wrong guesses so far; the row is deleted at the fifth.
    tries      integer     NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL,
    -- Ceremony data the caller keeps with the code, sealed by the caller
    -- (opaque bytes, hence bytea rather than jsonb).
    payload    bytea,
    PRIMARY KEY (email, purpose)
);

-- +goose Down
DROP TABLE email_codes;
