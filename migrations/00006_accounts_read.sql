-- +goose Up
-- Read models of the users projection (tenants beside users) and the sessions projection.
CREATE TABLE tenants (
    id         uuid PRIMARY KEY,
    name       text NOT NULL,
    owner_id   uuid NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE TABLE sessions (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL,
    tenant_id    uuid NOT NULL,
    amr          text[] NOT NULL,
    device       text NOT NULL DEFAULT '',
    user_agent   text NOT NULL DEFAULT '',
    ip           text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    revoked_at   timestamptz
);
CREATE INDEX sessions_user_active ON sessions (user_id, created_at DESC) WHERE revoked_at IS NULL;
CREATE INDEX sessions_revoked_recent ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

-- +goose Down
DROP TABLE sessions;
DROP TABLE tenants;
