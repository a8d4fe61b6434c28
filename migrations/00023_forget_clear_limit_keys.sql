-- +goose Up
-- The rate limits' keys (an IP, an email address) are stored as HMACs since
-- erasure came in (ratelimit.Limiter.stored). Rows written before hold them
-- in clear, would outlive an erasure until they aged out (a day, for a
-- guessing budget), and no longer count for anyone. They are short-lived
-- counters: starting them afresh once is the price of not keeping the
-- addresses.
DELETE FROM rate_limits;
DELETE FROM login_failures;
DELETE FROM guess_budgets;

-- +goose Down
SELECT 1;
