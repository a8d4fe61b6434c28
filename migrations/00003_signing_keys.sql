-- +goose Up
-- Access-token signing keys (package tokens). The private key is sealed with the
-- master key, bound to its kid, so a row's secret cannot be moved to another row.
-- seq orders the keys: the highest non-retired one signs. It is assigned as
-- max(seq)+1 under a unique constraint, so two instances creating the first key
-- at once collide instead of both succeeding (INSERT ... ON CONFLICT DO NOTHING).
CREATE TABLE signing_keys (
    kid            text        PRIMARY KEY,
    seq            bigint      NOT NULL UNIQUE,
    alg            text        NOT NULL,
    public_key     bytea       NOT NULL,
    private_sealed bytea       NOT NULL,
    private_kid    text        NOT NULL, -- the seal key id
    created_at     timestamptz NOT NULL DEFAULT now(),
    retired_at     timestamptz -- set: no longer in the JWKS, its tokens fail
);

-- Other token secrets, such as the refresh-token MAC key: sealed, bound to name.
CREATE TABLE token_secrets (
    name       text        PRIMARY KEY,
    sealed     bytea       NOT NULL,
    seal_kid   text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE token_secrets;
DROP TABLE signing_keys;
