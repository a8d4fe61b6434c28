// Package ratelimit counts requests per key in Postgres so every authd
// instance shares the same limits.
package ratelimit

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/eventstore"
)

// Limit allows Requests requests per key in each Window.
type Limit struct {
	Requests int
	Window   time.Duration
}

// Limiter enforces limits with counters in the rate_limits table, and keeps
// the per-account count of wrong passwords in login_failures.
//
// Keys name an address or an email (ip:login:192.0.2.9, login:known:<email>):
// personal data, which an erasure must not leave behind in a table. The
// tables hold an HMAC of each key instead (stored), so the counters of an
// erased person name nobody, and an erasure can still delete them (Forget).
type Limiter struct {
	pool   *pgxpool.Pool
	secret []byte // the key of the keys' HMAC
	now    func() time.Time
	delays []time.Duration // delayTable(), built once
	login  loginSQL
	// over holds keys this instance has seen over their limit, with the end
	// of that window: a count only grows within a fixed window, so their
	// further requests until then are refused without a round trip, and a
	// flood from a few addresses costs the database nothing once it is over.
	over *lru.Cache[string, time.Time]
}

// overKeys bounds the keys remembered as over their limit; a flood from more
// addresses than this is still refused, at a round trip each.
const overKeys = 1 << 16

// New returns a Limiter over pool that reads the time from now and stores
// its keys as HMACs under secret (a secret of its own, kept in
// token_secrets, which a master key rotation leaves as it is).
func New(pool *pgxpool.Pool, secret []byte, now func() time.Time) *Limiter {
	over, _ := lru.New[string, time.Time](overKeys) // fails only for a size below 1
	return &Limiter{pool: pool, secret: secret, now: now, delays: delayTable(), login: newLoginSQL(), over: over}
}

// stored is how key is kept in the tables: its HMAC, so that no row names an
// address or an email, while each key still has exactly one row.
func (l *Limiter) stored(key string) string {
	m := hmac.New(sha256.New, l.secret)
	m.Write([]byte(key))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Forget deletes every count kept under keys (request windows, login
// failures, guessing budgets), to commit with an account's erasure
// (eventstore.Change.Also).
func (l *Limiter) Forget(keys ...string) eventstore.Statement {
	stored := make([]string, len(keys))
	for i, k := range keys {
		stored[i] = l.stored(k)
	}
	return eventstore.Statement{SQL: `WITH windows AS (DELETE FROM rate_limits WHERE key = ANY($1)),
		failures AS (DELETE FROM login_failures WHERE account = ANY($1))
		DELETE FROM guess_budgets WHERE key = ANY($1)`, Args: []any{stored}}
}

// Counts one request in the key's current window and returns the count so
// far, this one included. The upsert locks the row, so concurrent requests
// from every instance are counted one after another, each sees its own count,
// and no read-then-write race can let an extra request through.
const countSQL = `
INSERT INTO rate_limits AS r (key, window_start, count, expires_at)
VALUES ($1, $2, 1, $3)
ON CONFLICT (key, window_start) DO UPDATE SET count = r.count + 1
RETURNING r.count`

// Allow counts a request for key and reports whether it is within lim. When it
// is not, retryAfter is the time left until the window ends. It costs one
// round trip, except for a key this instance has already refused in the
// window.
//
// Windows are fixed and aligned to their length (a one-minute window starts on
// the minute), which makes the answer exact and retryAfter simple; the price is
// that a client can get up to twice lim.Requests through across a window
// boundary. Refused requests are counted until this instance has seen the
// key over its limit; whether they are changes nothing within a fixed window.
//
// A key names one limit: a caller that puts two limits with different windows
// on the same traffic should build two keys, or their counts mix whenever the
// windows start together.
func (l *Limiter) Allow(ctx context.Context, key string, lim Limit) (ok bool, retryAfter time.Duration, err error) {
	if lim.Requests < 1 || lim.Window <= 0 {
		return false, 0, fmt.Errorf("ratelimit: invalid limit of %d requests per %v", lim.Requests, lim.Window)
	}
	now := l.now()
	if end, ok := l.over.Get(key); ok && now.Before(end) {
		return false, end.Sub(now), nil
	}
	start := now.Truncate(lim.Window)
	end := start.Add(lim.Window)
	var count int64
	if err := l.pool.QueryRow(ctx, countSQL, l.stored(key), start, end).Scan(&count); err != nil {
		return false, 0, fmt.Errorf("ratelimit: count request: %w", err)
	}
	if count > int64(lim.Requests) {
		l.over.Add(key, end)
		return false, end.Sub(now), nil
	}
	return true, 0, nil
}

// Deletes the windows that have ended, the failure records old enough to be
// forgotten, the guessing days that have ended and the networks no longer
// known, in one statement so the sweep is a single round trip.
const sweepSQL = `
WITH windows AS (
    DELETE FROM rate_limits WHERE expires_at <= $1 RETURNING 1
), failures AS (
    DELETE FROM login_failures WHERE last_failure_at <= $2 AND in_flight_at <= $3 RETURNING 1
), budgets AS (
    DELETE FROM guess_budgets WHERE window_start <= $4 RETURNING 1
), guessing AS (
    DELETE FROM code_guessing WHERE window_start <= $4 RETURNING 1
), networks AS (
    DELETE FROM known_networks WHERE last_sign_in_at <= $5 RETURNING 1
)
SELECT (SELECT count(*) FROM windows) + (SELECT count(*) FROM failures) + (SELECT count(*) FROM budgets)
     + (SELECT count(*) FROM guessing) + (SELECT count(*) FROM networks)`

// Sweep deletes ended windows and days, forgotten login failures and networks
// no longer known, and returns how many rows it deleted. Nothing reads those
// rows again, so sweeping only keeps the tables small; callers run it every
// minute or so.
func (l *Limiter) Sweep(ctx context.Context) (int64, error) {
	now := l.now()
	var n int64
	if err := l.pool.QueryRow(ctx, sweepSQL, now, now.Add(-failureMemory), now.Add(-inFlightMemory),
		now.Add(-GuessWindow), now.Add(-KnownNetworkMemory)).Scan(&n); err != nil {
		return 0, fmt.Errorf("ratelimit: sweep: %w", err)
	}
	return n, nil
}
