-- +goose Up
-- A rotated-in key is published in the JWKS before it signs (package tokens,
-- ActivationDelay), so that clients caching the JWKS have it before they meet
-- its tokens. activates_at is when it starts signing; keys from before this
-- migration signed from their creation. The default keeps a binary from before
-- it, during a rolling upgrade, rotating as it did: at once.
ALTER TABLE signing_keys ADD COLUMN activates_at timestamptz NOT NULL DEFAULT now();
UPDATE signing_keys SET activates_at = created_at;

-- +goose Down
ALTER TABLE signing_keys DROP COLUMN activates_at;
