-- +goose NO TRANSACTION
-- +goose Up
-- Finds the recent password resets an instance loads into its revocation set
-- at start (revocation.Set.Load) without reading the whole log. Resets are
-- rare, so the index is small. Built concurrently: on a large log, a plain
-- build would hold every append back until it finished.
CREATE INDEX CONCURRENTLY IF NOT EXISTS events_password_resets ON events (occurred_at) WHERE type = 'PasswordReset';

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS events_password_resets;
