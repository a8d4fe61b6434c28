-- +goose NO TRANSACTION
-- +goose Up
-- Finds the unverified signups old enough to expire (commands.SignupSweeper)
-- without reading every user: only pending accounts are in the index, by when
-- their signup was last made or renewed (updated_at, which nothing else moves
-- before a verify). Built concurrently, like the other indexes on a table
-- that may be large.
CREATE INDEX CONCURRENTLY IF NOT EXISTS users_pending_signups ON users (updated_at) WHERE NOT email_verified;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS users_pending_signups;
