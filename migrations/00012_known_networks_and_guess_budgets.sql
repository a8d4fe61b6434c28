-- +goose Up
-- The networks (a /24 of IPv4, a /64 of IPv6) each account signed in from,
-- with the last time: a sign-in upserts its row in the transaction of its
-- own events, and a login reads it with the account. Attempts from a known
-- network have slow-downs, code quotas and guessing budgets of their own, so
-- an attacker elsewhere cannot spend the owner's (README: "Limits").
CREATE TABLE known_networks (
    user_id         uuid        NOT NULL,
    network         text        NOT NULL,
    last_sign_in_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, network)
);

-- Guesses at a secret (a TOTP or backup code, an emailed code) per account
-- and class (known or unknown network) in a day that starts at the first
-- guess. Logged, unlike the slow-down: a crash must not hand a guesser a
-- fresh day.
CREATE TABLE guess_budgets (
    key          text        PRIMARY KEY,
    window_start timestamptz NOT NULL,
    guesses      integer     NOT NULL
);

-- Wrong second-factor and emailed codes per account in a day that starts at
-- the first; notified is set with the CodeGuessingDetected event appended
-- at the tenth, so there is one per account and day.
CREATE TABLE code_guessing (
    user_id      uuid        PRIMARY KEY,
    window_start timestamptz NOT NULL,
    failures     integer     NOT NULL,
    notified     boolean     NOT NULL DEFAULT false
);

-- Codes sent to a known network live apart from those sent elsewhere: a new
-- code, or five wrong tries, from an unknown network leave the owner's alone.
ALTER TABLE email_codes ADD COLUMN class text NOT NULL DEFAULT 'unknown';
ALTER TABLE email_codes DROP CONSTRAINT email_codes_pkey;
ALTER TABLE email_codes ADD PRIMARY KEY (email, purpose, class);

-- +goose Down
DELETE FROM email_codes WHERE class <> 'unknown';
ALTER TABLE email_codes DROP CONSTRAINT email_codes_pkey;
ALTER TABLE email_codes ADD PRIMARY KEY (email, purpose);
ALTER TABLE email_codes DROP COLUMN class;
DROP TABLE code_guessing;
DROP TABLE guess_budgets;
DROP TABLE known_networks;
