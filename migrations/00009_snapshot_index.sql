-- +goose NO TRANSACTION
-- +goose Up
-- Finds a stream's latest snapshot in one probe (eventstore.LoadStreams), so
-- loading a stream that grows with use does not read what precedes it.
-- Snapshot event types end in SnapshotTaken. Built concurrently: on a large
-- log, a plain build would hold every append back until it finished.
CREATE INDEX CONCURRENTLY IF NOT EXISTS events_snapshots ON events (stream_id, version) WHERE type LIKE '%SnapshotTaken';

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS events_snapshots;
