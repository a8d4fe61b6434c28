-- +goose Up
-- The language of a user's mails (PATCH /me), canonical BCP 47; '' is English.
ALTER TABLE users ADD COLUMN locale text NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE users DROP COLUMN locale;
