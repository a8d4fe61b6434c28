package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// The login slow-down policy. A guesser is slowed to one try a minute after a
// dozen failures, while the owner, who shares the account's counter, waits at
// most a minute: a delay, never a lockout.
const (
	freeFailures  = 5                // failures that cost nothing
	firstDelay    = time.Second      // the wait after the first failure beyond them
	maxDelay      = 60 * time.Second // the longest wait, however many failures
	failureMemory = 15 * time.Minute // failures are forgotten this long after the last one
)

// delayAfter is how long an account's logins wait after its last failure when
// it has had that many failures in a row: 0 for the first five, then 1 s, 2 s,
// 4 s … doubling up to maxDelay.
func delayAfter(failures int) time.Duration {
	if failures <= freeFailures {
		return 0
	}
	doublings := failures - freeFailures - 1
	if doublings >= 6 { // 64 s, already past the cap; also keeps the shift small
		return maxDelay
	}
	return min(firstDelay<<doublings, maxDelay)
}

// delayTable lists delayAfter(n) for n = 1 up to the first n that reaches
// maxDelay, which holds for every n beyond. It hands the policy to SQL as data,
// so the policy itself is written once, in delayAfter.
func delayTable() []time.Duration {
	var t []time.Duration
	for n := 1; ; n++ {
		d := delayAfter(n)
		t = append(t, d)
		if d >= maxDelay {
			return t
		}
	}
}

// Admits a login attempt and counts it as a failure, unless the account is
// still waiting out the delay its last failure earned. Admission and counting
// happen under the row lock of the upsert, so concurrent attempts on one
// account (from any instance) are admitted one at a time: a guesser cannot
// get a burst of password checks through in the moment a wait ends. A run of
// failures older than the memory starts again at 1. No row comes back when
// the attempt must wait.
//
// $4 is delayTable(): the wait after n failures is $4[n], and its last entry
// holds for any larger n.
const attemptSQL = `
INSERT INTO login_failures AS f (account, failures, last_failure_at)
VALUES ($1, 1, $2)
ON CONFLICT (account) DO UPDATE SET
    failures        = CASE WHEN f.last_failure_at > $3 THEN f.failures + 1 ELSE 1 END,
    last_failure_at = $2
WHERE f.last_failure_at <= $3
   OR f.last_failure_at + ($4::interval[])[least(f.failures, cardinality($4::interval[]))] <= $2
RETURNING f.failures`

// Reads what made an attempt wait, to tell the caller for how long.
const failuresSQL = `SELECT failures, last_failure_at FROM login_failures WHERE account = $1`

// Attempt is called before a login checks a password for account. A zero wait
// admits the attempt, which counts as a wrong password until Reset says
// otherwise; a positive wait means the login must be refused without checking
// the password, and wait is how long until the account's next attempt.
//
// The first five wrong passwords in a row cost nothing; after them each costs
// a wait that doubles from 1 s up to 60 s, counted from the failed attempt.
// Failures are forgotten 15 minutes after the last one. An attempt counts at
// admission rather than when the password proves wrong so that concurrent
// guesses cannot all be checked before any of them is counted; a process that
// dies in between leaves a failure behind, which errs on the safe side.
//
// account is any stable key, e.g. the normalised email, so that unknown emails
// are slowed down exactly like known ones.
func (l *Limiter) Attempt(ctx context.Context, account string) (wait time.Duration, err error) {
	// The loop runs again only when the row that made the attempt wait is
	// reset or forgotten between the two statements.
	for range 3 {
		now := l.now()
		var failures int
		err := l.pool.QueryRow(ctx, attemptSQL, account, now, now.Add(-failureMemory), l.delays).Scan(&failures)
		if err == nil {
			return 0, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return 0, fmt.Errorf("ratelimit: count login attempt: %w", err)
		}
		var last time.Time
		err = l.pool.QueryRow(ctx, failuresSQL, account).Scan(&failures, &last)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("ratelimit: read login failures: %w", err)
		}
		if wait := last.Add(delayAfter(failures)).Sub(now); wait > 0 && now.Before(last.Add(failureMemory)) {
			return wait, nil
		}
	}
	return 0, errors.New("ratelimit: login attempt kept racing with resets")
}

// A right password clears the account's failures.
const resetSQL = `DELETE FROM login_failures WHERE account = $1`

// Reset forgets the account's failures: the attempt Attempt admitted had the
// right password.
func (l *Limiter) Reset(ctx context.Context, account string) error {
	if _, err := l.pool.Exec(ctx, resetSQL, account); err != nil {
		return fmt.Errorf("ratelimit: reset login failures: %w", err)
	}
	return nil
}

// Forgive takes back the failure Attempt counted for an attempt that never
// got as far as checking the password (the server was too busy): being
// turned away by load must not slow the account's owner down later.
func (l *Limiter) Forgive(ctx context.Context, account string) error {
	// The last failure taken back removes the row: a row always holds at
	// least one failure, which is what Attempt's delay table is indexed by.
	if _, err := l.pool.Exec(ctx, `WITH less AS (
			UPDATE login_failures SET failures = failures - 1 WHERE account = $1 AND failures > 1 RETURNING 1)
		DELETE FROM login_failures WHERE account = $1 AND failures <= 1 AND NOT EXISTS (SELECT 1 FROM less)`, account); err != nil {
		return fmt.Errorf("ratelimit: forgive login attempt: %w", err)
	}
	return nil
}
