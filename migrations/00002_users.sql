-- +goose Up
-- Read model of the users projection.
CREATE TABLE users (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL,
    email          text NOT NULL,
    name           text NOT NULL DEFAULT '',
    email_verified boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE INDEX users_email ON users (email);

-- +goose Down
DROP TABLE users;
