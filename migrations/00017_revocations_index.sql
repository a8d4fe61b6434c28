-- +goose NO TRANSACTION
-- +goose Up
-- Finds the revocations committed since a transaction id in one index range
-- scan (revocation.Feed's backstop, which reads them from the log while NATS
-- cannot be trusted to carry them). Revocations are a small part of the log,
-- so the index is small. Built concurrently: on a large log, a plain build
-- would hold every append back until it finished.
CREATE INDEX CONCURRENTLY IF NOT EXISTS events_revocations ON events (tx_id) WHERE type IN ('SessionRevoked', 'PasswordReset');

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS events_revocations;
