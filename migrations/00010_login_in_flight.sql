-- +goose Up
-- An attempt counts as in flight from its admission until its password (or
-- code) proves right or wrong; only a wrong one counts as a failure.
ALTER TABLE login_failures
    ADD COLUMN in_flight    integer     NOT NULL DEFAULT 0,
    ADD COLUMN in_flight_at timestamptz NOT NULL DEFAULT 'epoch';

-- +goose Down
ALTER TABLE login_failures DROP COLUMN in_flight, DROP COLUMN in_flight_at;
