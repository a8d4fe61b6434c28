package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/authd/authd/eventstore"
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

// inFlightMemory is how long after its admission an attempt still counts as
// in flight: one whose process died never reports, and must not block the
// account for longer than this.
const inFlightMemory = 30 * time.Second

// inFlightPoll is how soon an attempt that waits for the account's attempts
// in flight to prove right or wrong looks again; each look waits longer, up
// to inFlightPollMax. The wait itself has no bound of its own: an attempt in
// flight ends when its hash does, however slow hashing is, or is presumed dead
// after inFlightMemory, and the request's context bounds the rest.
const (
	inFlightPoll    = 20 * time.Millisecond
	inFlightPollMax = 250 * time.Millisecond
)

// failuresNow is the SQL of row f's failures not yet forgotten, given the
// parameter holding the time before which they are.
func failuresNow(forget string) string {
	return `(CASE WHEN f.last_failure_at > ` + forget + ` THEN f.failures ELSE 0 END)`
}

// inFlightNow is the SQL of row f's attempts in flight, given the parameter
// holding the time before which an attempt is presumed dead.
func inFlightNow(presumeDead string) string {
	return `(CASE WHEN f.in_flight_at > ` + presumeDead + ` THEN f.in_flight ELSE 0 END)`
}

// loginSQL holds the statements of the login slow-down, built once.
type loginSQL struct {
	attempt, blocked, fail, end string
}

func newLoginSQL() loginSQL {
	return loginSQL{
		// Admits a login attempt as in flight, under the row's lock, when the delay
		// the account's failures earned is over and either the failures and the
		// attempts in flight together are still within the free ones or nothing is
		// in flight. Counting those in flight keeps a burst of concurrent guesses to
		// the free attempts and one more, as if each had already failed; no row
		// comes back when the attempt is not admitted.
		//
		// $2 is now, $3 and $4 the times before which failures are forgotten and
		// attempts in flight presumed dead, $5 delayTable() (the wait after n
		// failures is $5[n], and its last entry holds for any larger n) and $6 the
		// free failures.
		attempt: `
INSERT INTO login_failures AS f (account, failures, last_failure_at, in_flight, in_flight_at)
VALUES ($1, 0, 'epoch', 1, $2)
ON CONFLICT (account) DO UPDATE SET
    failures     = ` + failuresNow("$3") + `,
    in_flight    = ` + inFlightNow("$4") + ` + 1,
    in_flight_at = $2
WHERE (` + failuresNow("$3") + ` <= $6
       OR f.last_failure_at + ($5::interval[])[least(` + failuresNow("$3") + `, cardinality($5::interval[]))] <= $2)
  AND (` + failuresNow("$3") + ` + ` + inFlightNow("$4") + ` <= $6 OR ` + inFlightNow("$4") + ` = 0)
RETURNING true`,
		// blocked reads the failures that may have kept an attempt out ($2
		// as $3 above).
		blocked: `SELECT ` + failuresNow("$2") + `, f.last_failure_at FROM login_failures f WHERE f.account = $1`,
		// fail counts a failure now ($2), with $3 and $4 as in attempt.
		fail: `
INSERT INTO login_failures AS f (account, failures, last_failure_at) VALUES ($1, 1, $2)
ON CONFLICT (account) DO UPDATE SET
    failures        = ` + failuresNow("$3") + ` + 1,
    last_failure_at = $2,
    in_flight       = greatest(` + inFlightNow("$4") + ` - 1, 0)`,
		// end takes an attempt off those in flight, and the failures too when
		// $4 is set; a row with nothing left in it goes. $2 and $3 are the
		// times before which failures are forgotten and attempts in flight
		// presumed dead.
		end: `WITH gone AS (
    DELETE FROM login_failures f
    WHERE f.account = $1 AND ` + inFlightNow("$3") + ` <= 1 AND ($4 OR ` + failuresNow("$2") + ` = 0)
    RETURNING 1)
UPDATE login_failures f SET
    failures  = CASE WHEN $4 THEN 0 ELSE f.failures END,
    in_flight = greatest(` + inFlightNow("$3") + ` - 1, 0)
WHERE f.account = $1 AND NOT EXISTS (SELECT 1 FROM gone)`,
	}
}

// Attempt is called before a login checks a password for account. A zero
// wait admits the attempt, which is then in flight until Fail, Reset or
// Forgive reports how it ended; a positive wait means the login must be
// refused without checking the password, and wait is how long until the
// account's next attempt.
//
// The first five wrong passwords in a row cost nothing; after them each costs
// a wait that doubles from 1 s up to 60 s, counted from the failure.
// Failures are forgotten 15 minutes after the last one. Attempts in flight
// count as failures for admission, so that concurrent guesses cannot all be
// checked before any of them fails; an attempt kept out only by attempts in
// flight waits for them to end, so that the owner's own burst of logins gets
// in once they prove right, however long their hashes take.
//
// account is any stable key, e.g. the normalised email, so that unknown emails
// are slowed down exactly like known ones.
func (l *Limiter) Attempt(ctx context.Context, account string) (wait time.Duration, err error) {
	poll := inFlightPoll
	for {
		st, admitted := l.AttemptStatement(account)
		if err := st.Scan(l.pool.QueryRow(ctx, st.SQL, st.Args...)); err != nil {
			return 0, err
		}
		if admitted() {
			return 0, nil
		}
		now := l.now()
		var failures int
		var last time.Time
		err := l.pool.QueryRow(ctx, l.login.blocked, l.stored(account), now.Add(-failureMemory)).Scan(&failures, &last)
		if errors.Is(err, pgx.ErrNoRows) {
			continue // ended meanwhile
		}
		if err != nil {
			return 0, fmt.Errorf("ratelimit: read login failures: %w", err)
		}
		if wait := last.Add(delayAfter(failures)).Sub(now); wait > 0 && failures > freeFailures {
			return wait, nil
		}
		// Only attempts in flight keep this one out: wait for them to end.
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("ratelimit: wait for attempts in flight: %w", ctx.Err())
		case <-time.After(poll):
		}
		poll = min(2*poll, inFlightPollMax)
	}
}

// AttemptStatement is Attempt's first try as a statement to run ahead of
// loading the account it is for (eventstore.Store.LoadStreamsAfter). Once it
// has run, admitted tells whether the attempt is in flight; when it is not,
// Attempt says whether to wait or refuse.
func (l *Limiter) AttemptStatement(account string) (st eventstore.Statement, admitted func() bool) {
	now := l.now()
	in := false
	st = eventstore.Statement{
		SQL:  l.login.attempt,
		Args: []any{l.stored(account), now, now.Add(-failureMemory), now.Add(-inFlightMemory), l.delays, freeFailures},
		Scan: func(row pgx.Row) error {
			in = false // what an earlier, rolled-back run found is void
			err := row.Scan(&in)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("ratelimit: admit login attempt: %w", err)
			}
			return nil
		},
	}
	return st, func() bool { return in }
}

// Fail reports that an attempt Attempt admitted had the wrong password: it
// counts as a failure from now.
func (l *Limiter) Fail(ctx context.Context, account string) error {
	now := l.now()
	if _, err := l.pool.Exec(ctx, l.login.fail, l.stored(account), now, now.Add(-failureMemory), now.Add(-inFlightMemory)); err != nil {
		return fmt.Errorf("ratelimit: count login failure: %w", err)
	}
	return nil
}

// Reset reports that an attempt Attempt admitted had the right password: the
// account's failures are forgotten.
func (l *Limiter) Reset(ctx context.Context, account string) error {
	return l.end(ctx, account, "reset login failures", true)
}

// Forgive reports that an attempt Attempt admitted never got as far as
// checking the password (the server was too busy, say): it neither failed
// nor succeeded, and being turned away by load must not slow the account's
// owner down later.
func (l *Limiter) Forgive(ctx context.Context, account string) error {
	return l.end(ctx, account, "forgive login attempt", false)
}

// ResetStatement is Reset as a statement to commit with the events of the
// sign-in the right password earned (eventstore.Change.Also): one commit
// fewer, and the failures are forgotten exactly when the sign-in is recorded.
func (l *Limiter) ResetStatement(account string) eventstore.Statement {
	return l.endStatement(account, true)
}

// end takes an attempt off the account's attempts in flight, and its
// failures too when clear is set. A row with nothing left in it goes.
func (l *Limiter) end(ctx context.Context, account, what string, clear bool) error {
	st := l.endStatement(account, clear)
	if _, err := l.pool.Exec(ctx, st.SQL, st.Args...); err != nil {
		return fmt.Errorf("ratelimit: %s: %w", what, err)
	}
	return nil
}

func (l *Limiter) endStatement(account string, clear bool) eventstore.Statement {
	now := l.now()
	return eventstore.Statement{SQL: l.login.end, Args: []any{l.stored(account), now.Add(-failureMemory), now.Add(-inFlightMemory), clear}}
}
