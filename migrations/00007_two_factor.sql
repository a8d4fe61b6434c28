-- +goose Up
-- Read model of the twofactor projection: what GET /2fa/status and /me show.
-- No secret and no code: those live only in the sealed part of the events.
CREATE TABLE two_factor (
    user_id                uuid PRIMARY KEY,
    enabled                boolean     NOT NULL DEFAULT false,
    enabled_at             timestamptz,
    backup_codes_remaining integer     NOT NULL DEFAULT 0,
    updated_at             timestamptz NOT NULL
);

-- Pending login challenges of package twofactor (5 minutes, 5 answers), keyed
-- by a SHA-256 of the 256-bit token, so a dump of the table gives no token
-- away. UNLOGGED: a challenge is worth nothing after a crash or failover (the
-- user signs in again), and skipping the WAL makes every login cheaper.
CREATE UNLOGGED TABLE two_factor_challenges (
    token_hash bytea       PRIMARY KEY,
    id         uuid        NOT NULL,
    user_id    uuid        NOT NULL,
    amr        text[]      NOT NULL,
    tries      integer     NOT NULL DEFAULT 0,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX two_factor_challenges_expiry ON two_factor_challenges (expires_at);

-- +goose Down
DROP TABLE two_factor_challenges;
DROP TABLE two_factor;
