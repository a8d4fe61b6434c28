-- +goose NO TRANSACTION
-- +goose Up
-- An erased account's tokens are refused by every instance: AccountDeleted
-- is a revocation like SessionRevoked and PasswordReset, read from the log
-- by the revocation feed's backstop (events_revocations covered only those
-- two) and at start with the resets (events_password_resets). Built
-- concurrently: on a large log, a plain build would hold every append back.
CREATE INDEX CONCURRENTLY IF NOT EXISTS events_revocations_by_tx ON events (tx_id)
    WHERE type IN ('SessionRevoked', 'PasswordReset', 'AccountDeleted');
DROP INDEX CONCURRENTLY IF EXISTS events_revocations;
CREATE INDEX CONCURRENTLY IF NOT EXISTS events_user_cuts ON events (occurred_at)
    WHERE type IN ('PasswordReset', 'AccountDeleted');
DROP INDEX CONCURRENTLY IF EXISTS events_password_resets;

-- The address of a deleted account, kept only for its farewell notice
-- (AccountDeleted has ids only, and the account's events can no longer be
-- read): sealed under the master key with the user id as associated data,
-- written in the erasing commit, and deleted by the notices consumer with
-- the record of the send, or by the sweep once it is older than a few
-- minutes, whether or not the mail went.
CREATE TABLE IF NOT EXISTS farewells (
    user_id    uuid PRIMARY KEY,
    kid        text        NOT NULL,
    sealed     bytea       NOT NULL, -- {"email", "locale"}
    created_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE IF EXISTS farewells;
CREATE INDEX CONCURRENTLY IF NOT EXISTS events_password_resets ON events (occurred_at) WHERE type = 'PasswordReset';
DROP INDEX CONCURRENTLY IF EXISTS events_user_cuts;
CREATE INDEX CONCURRENTLY IF NOT EXISTS events_revocations ON events (tx_id) WHERE type IN ('SessionRevoked', 'PasswordReset');
DROP INDEX CONCURRENTLY IF EXISTS events_revocations_by_tx;
