package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/authd/authd/eventstore"
)

// GuessWindow is the day of a guessing budget and of the count that tells
// the owner about guessing: it starts at the first guess (or failure) and
// lasts this long; the next one starts at the first after it.
const GuessWindow = 24 * time.Hour

// Takes one guess from a key's budget for the day, unless the day's budget
// is spent; a day that has ended gives way to a new one from now. No row
// comes back when the budget is spent. $2 is now, $3 the start before which
// a day has ended, $4 the budget.
const spendSQL = `
INSERT INTO guess_budgets AS g (key, window_start, guesses) VALUES ($1, $2, 1)
ON CONFLICT (key) DO UPDATE SET
    window_start = CASE WHEN g.window_start <= $3 THEN $2 ELSE g.window_start END,
    guesses      = CASE WHEN g.window_start <= $3 THEN 1 ELSE g.guesses + 1 END
WHERE g.window_start <= $3 OR g.guesses < $4
RETURNING true`

const budgetStartSQL = `SELECT window_start FROM guess_budgets WHERE key = $1`

// Gives a guess back: it was right, or was never checked.
const refundSQL = `UPDATE guess_budgets SET guesses = greatest(guesses - 1, 0) WHERE key = $1`

// Spend takes one guess at a secret from key's budget of perDay guesses a
// day, before the guess is checked, so that concurrent guesses cannot pass
// the budget together. When the day's budget is spent it returns false and
// how long until the day ends; the guess must then be refused unchecked. A
// guess that proves right, or is never checked, is given back with Refund.
//
// key names the secret, the account and the class (e.g.
// "2fa:known:<user>"): each class of an account has a budget of its own.
func (l *Limiter) Spend(ctx context.Context, key string, perDay int) (ok bool, retryAfter time.Duration, err error) {
	now := l.now()
	err = l.pool.QueryRow(ctx, spendSQL, l.stored(key), now, now.Add(-GuessWindow), perDay).Scan(&ok)
	if err == nil {
		return true, 0, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return false, 0, fmt.Errorf("ratelimit: spend a guess: %w", err)
	}
	var start time.Time
	if err := l.pool.QueryRow(ctx, budgetStartSQL, l.stored(key)).Scan(&start); err != nil {
		return false, 0, fmt.Errorf("ratelimit: read a guessing budget: %w", err)
	}
	return false, max(start.Add(GuessWindow).Sub(now), time.Second), nil
}

// Refund gives back a guess Spend took.
func (l *Limiter) Refund(ctx context.Context, key string) error {
	if _, err := l.pool.Exec(ctx, refundSQL, l.stored(key)); err != nil {
		return fmt.Errorf("ratelimit: give a guess back: %w", err)
	}
	return nil
}

// RefundStatement is Refund to commit with the events the right guess
// earned (eventstore.Change.Also).
func (l *Limiter) RefundStatement(key string) eventstore.Statement {
	return eventstore.Statement{SQL: refundSQL, Args: []any{l.stored(key)}}
}

// Counts a wrong code against a user's day (restarting a day that has
// ended, with its notice not yet given). $2 is now, $3 the start before
// which a day has ended.
const missSQL = `
INSERT INTO code_guessing AS g (user_id, window_start, failures) VALUES ($1, $2, 1)
ON CONFLICT (user_id) DO UPDATE SET
    window_start = CASE WHEN g.window_start <= $3 THEN $2 ELSE g.window_start END,
    failures     = CASE WHEN g.window_start <= $3 THEN 1 ELSE g.failures + 1 END,
    notified     = CASE WHEN g.window_start <= $3 THEN false ELSE g.notified END
RETURNING failures, window_start, notified`

const notifiedSQL = `UPDATE code_guessing SET notified = true WHERE user_id = $1 AND window_start = $2`

// Misses is a user's wrong codes (second factor and emailed) in the current
// day.
type Misses struct {
	Failures    int
	WindowStart time.Time
	// Notified says the owner has been told about this day's guessing.
	Notified bool
}

// Miss counts a wrong second-factor or emailed code against user and returns
// the day's count so far.
func (l *Limiter) Miss(ctx context.Context, user uuid.UUID) (Misses, error) {
	now := l.now()
	var m Misses
	if err := l.pool.QueryRow(ctx, missSQL, user, now, now.Add(-GuessWindow)).Scan(&m.Failures, &m.WindowStart, &m.Notified); err != nil {
		return Misses{}, fmt.Errorf("ratelimit: count a wrong code: %w", err)
	}
	return m, nil
}

// NotifiedStatement marks the day that starts at windowStart as told to
// user, to commit with the event that tells (eventstore.Change.Also).
func NotifiedStatement(user uuid.UUID, windowStart time.Time) eventstore.Statement {
	return eventstore.Statement{SQL: notifiedSQL, Args: []any{user, windowStart}}
}
