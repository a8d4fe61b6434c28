-- +goose Up
-- The activity read model (projections/activity.go): one row per security
-- event of a user, behind GET /me/activity. Its ip and user_agent are
-- personal data: every row carries user_id, so erasing a person's activity is
-- one DELETE ... WHERE user_id = $1 through activity_by_user.
CREATE TABLE activity (
    id          uuid PRIMARY KEY, -- the event's id
    user_id     uuid        NOT NULL,
    -- The event's place in the log: the order of a page. The projection
    -- applies the log in this order, so a row never lands behind one a
    -- client has already paged past.
    tx_id       xid8        NOT NULL,
    position    bigint      NOT NULL,
    type        text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    ip          text        NOT NULL,
    user_agent  text        NOT NULL,
    device      text        NOT NULL, -- set on sign-ins; other rows of a session show their sign-in's
    session_id  uuid,
    method      text[]                -- the amr values of a sign-in
);
-- A user's page, newest first, and the erasure's DELETE.
CREATE INDEX activity_by_user ON activity (user_id, tx_id, position);
-- The sign-in a row of a session takes its device from.
CREATE INDEX activity_sign_ins ON activity (session_id) WHERE type = 'SessionStarted';

-- +goose Down
DROP TABLE activity;
