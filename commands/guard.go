package commands

import (
	"context"
	"errors"
	"strings"
	"sync"

	"github.com/google/uuid"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/ratelimit"
)

// Daily guessing budgets per account and class (ratelimit.Spend): a guess of
// a TOTP code is right with probability 3/10^6 (±1 step), of an emailed code
// 1/10^6. A day overlaps at most two budget days of each of the two classes,
// so an account's codes can be guessed at most 4 × 40 = 160 times a day
// (0.048%) and 4 × 100 = 400 times (0.04%): under API.md's 0.1% (README:
// "Guessing budgets").
const (
	secondFactorGuessesPerDay = 40
	emailCodeGuessesPerDay    = 100
)

// guard is what the commands that check a secret share: the login and code
// throttle, the daily guessing budgets, and the count of wrong codes.
type guard struct {
	*core
	throttle Throttle
}

// secondFactorKey is the throttle's and the budget's key for a user's
// second-factor codes tried from a network of class.
func secondFactorKey(user uuid.UUID, class ratelimit.Class) string {
	return "2fa:" + string(class) + ":" + user.String()
}

// emailCodeKey is the budget's key for the emailed codes of an address
// tried from a network of class.
func emailCodeKey(email string, class ratelimit.Class) string {
	return "email_code:" + string(class) + ":" + email
}

// loginKey is the throttle's key for the password logins of an address from
// a network of class: wrong passwords sent from elsewhere slow down only the
// logins from elsewhere.
func loginKey(email string, class ratelimit.Class) string {
	return "login:" + string(class) + ":" + email
}

// codesKey is the quota's key for the codes sent to an address when asked
// for from a network of class.
func codesKey(email string, class ratelimit.Class) string {
	return "codes:" + string(class) + ":" + email
}

// knownNetwork says whether the network of ip signed in to user lately. A
// user that does not exist has none, at the same cost.
func (a *guard) knownNetwork(ctx context.Context, user uuid.UUID, ip string) (ratelimit.Class, error) {
	known, err := a.throttle.Known(ctx, user, ip)
	return ratelimit.ClassOf(known), err
}

// ownerOrNobody is the user an address belongs to, or, when none, a new id
// that no account has: reading its streams and networks does the same work
// as for a real account and finds nothing, so that answers for unknown
// addresses take what they take for known ones.
func (a *core) ownerOrNobody(ctx context.Context, email string) (id uuid.UUID, found bool, err error) {
	id, found, err = a.emailOwner(ctx, email)
	if err != nil || found {
		return id, found, err
	}
	return uuid.New(), false, nil
}

// spendGuess takes a guess at a secret from key's budget for the day, or
// refuses it until the day ends.
func (a *guard) spendGuess(ctx context.Context, key string, perDay int) error {
	ok, wait, err := a.throttle.Spend(ctx, key, perDay)
	if err != nil {
		return err
	}
	if !ok {
		a.log.Warn("guess refused: the day's guessing budget is spent", "budget", budgetName(key))
		return &RetryLaterError{After: wait}
	}
	return nil
}

// refundGuess gives back a guess that proved right or was never checked.
func (a *guard) refundGuess(ctx context.Context, key string) {
	if err := a.throttle.Refund(context.WithoutCancel(ctx), key); err != nil {
		a.log.Error("giving a guess back", "err", err)
	}
}

// budgetName is the part of a budget's key a log may show: its secret and
// class ("2fa:known"), not the account.
func budgetName(key string) string {
	parts := strings.SplitN(key, ":", 3)
	return strings.Join(parts[:min(len(parts), 2)], ":")
}

// missed counts a wrong second-factor or emailed code of kind against user,
// and at the day's CodeGuessingThreshold-th appends CodeGuessingDetected, for
// the notices consumer to tell the owner. The event's stream is the user's
// day, appended at version 0, and the day is marked told in the same commit:
// one event per account and day, however many instances see the threshold.
func (a *guard) missed(ctx context.Context, user uuid.UUID, kind string, r Request) {
	ctx = context.WithoutCancel(ctx)
	m, err := a.throttle.Miss(ctx, user)
	if err != nil {
		a.log.Error("counting a wrong code", "err", err)
		return
	}
	if m.Failures < domain.CodeGuessingThreshold || m.Notified {
		return
	}
	u, err := a.loadUser(ctx, user)
	if err != nil || !u.Exists() {
		a.log.Error("loading the user whose codes are guessed", "err", err)
		return
	}
	c := a.newChange(r)
	// The event says the threshold was reached: under concurrent guesses the
	// caller whose count was past it may be the one that commits it.
	e := &domain.CodeGuessingDetected{UserID: user, Kind: kind, Failures: domain.CodeGuessingThreshold, WindowStart: m.WindowStart}
	if err := c.create(domain.CodeGuessingStream(user, m.WindowStart), u.TenantID, user, e); err != nil {
		a.log.Error("recording code guessing", "err", err)
		return
	}
	c.also(ratelimit.NotifiedStatement(user, m.WindowStart))
	if _, err := a.commit(ctx, c); err != nil && !errors.Is(err, eventstore.ErrConflict) {
		a.log.Error("recording code guessing", "err", err)
	}
}

// backgroundQueue bounds the work handed off to run after the answer;
// backgroundWorkers run it.
const (
	backgroundQueue   = 4096
	backgroundWorkers = 8
)

// handOff queues work that must not hold the answer up: mail, the record of
// a failed login. Paths that must not be told apart by their timing (an
// address with an account and one without) hand off alike, the one with
// nothing to do a job that does nothing. A full queue drops the job with a
// log line rather than make the request wait. job must hold no string of
// the request's own (Request.detached, strings.Clone).
func (a *core) handOff(what string, job func(ctx context.Context)) {
	select {
	case a.jobs <- job:
	default:
		a.log.Error("background queue full: work dropped", "work", what)
	}
}

// detached is r with its own copies of its strings: the HTTP edge's point
// into a request's buffers, which the server reuses once the answer is
// written, and handed-off work runs after that.
func (r Request) detached() Request {
	return Request{IP: strings.Clone(r.IP), UserAgent: strings.Clone(r.UserAgent), Device: strings.Clone(r.Device), RequestID: strings.Clone(r.RequestID)}
}

// Run does the work handed off by the commands until ctx ends, then what is
// still queued.
func (a *core) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for range backgroundWorkers {
		wg.Go(func() {
			for {
				select {
				case job := <-a.jobs:
					job(context.WithoutCancel(ctx))
				case <-ctx.Done():
					return
				}
			}
		})
	}
	wg.Wait()
	for {
		select {
		case job := <-a.jobs:
			job(context.WithoutCancel(ctx))
		default:
			return
		}
	}
}
