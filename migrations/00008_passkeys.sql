-- +goose Up
-- Read model of the passkeys projection: what GET /passkey/list shows. The
-- credential records themselves stay on the write side (sealed in the
-- PasskeyAdded events of the user's stream).
CREATE TABLE passkeys (
    id           uuid        PRIMARY KEY,
    user_id      uuid        NOT NULL,
    name         text        NOT NULL,
    aaguid       uuid        NOT NULL,
    created_at   timestamptz NOT NULL,
    last_used_at timestamptz
);
CREATE INDEX passkeys_user ON passkeys (user_id, created_at);

-- WebAuthn ceremony state of package ceremony, between the options a client
-- is given and the credential it comes back with: short-lived (minutes) and
-- single use (taken with DELETE ... RETURNING). Keyed by the challenge, which
-- is how a discoverable login finds its ceremony from the clientDataJSON.
-- UNLOGGED: after a crash the ceremonies in flight are simply started again.
CREATE UNLOGGED TABLE webauthn_ceremonies (
    challenge  text        PRIMARY KEY,
    kind       text        NOT NULL CHECK (kind IN ('register', 'login')),
    -- The user a registration is for; NULL for a login, whose user is not
    -- known until the credential comes back.
    user_id    uuid,
    session    bytea       NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX webauthn_ceremonies_expiry ON webauthn_ceremonies (expires_at);

-- +goose Down
DROP TABLE webauthn_ceremonies;
DROP TABLE passkeys;
