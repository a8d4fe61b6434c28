package commands

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
)

// Signups expires the signups nobody verified.
type Signups struct {
	*core
	erase eraser
}

// ExpireSignup ends user id's signup when nobody verified it within ttl of
// its last registration: SignupExpired goes to the user's stream at the
// version the decision saw, and the email key is released in the same
// append, so the address can sign up again at once. The account is erased
// in that commit as a deleted one is (eraser): nobody verified the address,
// so nobody is told. A verify that commits
// first makes the append conflict, and the reloaded account is verified:
// nothing expires. It reports whether the signup expired.
func (a *Signups) ExpireSignup(ctx context.Context, id uuid.UUID, ttl time.Duration) (bool, error) {
	return retry(ctx, func() (bool, error) {
		u, err := a.loadUser(ctx, id)
		if err != nil {
			return false, err
		}
		events := u.ExpireSignup(a.now(), ttl)
		if len(events) == 0 {
			return false, nil
		}
		c := a.newChange(Request{})
		if err := c.record(u, domain.UserStream(u.ID), u.TenantID, u.ID, events...); err != nil {
			return false, err
		}
		c.write.Releases = []eventstore.Claim{{Scope: emailScope, Key: u.Email, Owner: u.ID.String()}}
		c.also(a.erase.statements(u)...)
		_, err = a.commit(ctx, c)
		return err == nil, err
	})
}

// SignupSweeper expires the signups nobody verified within TTL: each cost a
// hash, a mail and rows, and would hold its email forever. One instance
// sweeps at a time (a Postgres advisory lock); should two ever decide on the
// same account, its stream's version lets one of them append.
type SignupSweeper struct {
	App  *App
	Pool *pgxpool.Pool
	TTL  time.Duration
	// Every is the time between two sweeps.
	Every time.Duration
	Log   *slog.Logger
}

// sweepLockKey names the advisory lock of the sweeper.
const sweepLockKey = "authd.signup-sweeper"

// sweepPage bounds the candidates one query returns.
const sweepPage = 500

// Run sweeps every s.Every until ctx ends.
func (s *SignupSweeper) Run(ctx context.Context) {
	t := time.NewTicker(s.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := s.Sweep(ctx)
		if err != nil && ctx.Err() == nil {
			s.Log.Warn("expiring unverified signups", "err", err)
		}
		if n > 0 {
			s.Log.Info("expired unverified signups", "count", n, "ttl", s.TTL)
		}
	}
}

// Sweep expires every signup past its time, unless another instance is
// sweeping now, and says how many it expired.
func (s *SignupSweeper) Sweep(ctx context.Context) (int, error) {
	conn, err := s.Pool.Acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("signup sweep: acquire connection: %w", err)
	}
	defer conn.Release()
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended($1, 0))`, sweepLockKey).Scan(&got); err != nil {
		conn.Conn().Close(context.Background()) // the lock state is unknown: drop the session
		return 0, fmt.Errorf("signup sweep: take lock: %w", err)
	}
	if !got {
		return 0, nil
	}
	defer func() {
		unlock, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := conn.Exec(unlock, `SELECT pg_advisory_unlock(hashtextextended($1, 0))`, sweepLockKey); err != nil {
			conn.Conn().Close(unlock)
		}
	}()

	// The users read model only proposes candidates (its index holds the
	// pending accounts by their last signup); each is decided on its stream.
	// A projection running behind delays an expiry, never makes a wrong one.
	cutoff := s.App.now().Add(-s.TTL)
	var after time.Time
	var afterID uuid.UUID
	expired := 0
	for {
		ids, at, err := pendingBefore(ctx, conn, cutoff, after, afterID)
		if err != nil {
			return expired, err
		}
		for _, id := range ids {
			done, err := s.App.ExpireSignup(ctx, id, s.TTL)
			if err != nil && !errors.Is(err, eventstore.ErrConflict) {
				return expired, fmt.Errorf("signup sweep: expire %s: %w", id, err)
			}
			if done {
				expired++
			}
		}
		if len(ids) < sweepPage {
			return expired, nil
		}
		after, afterID = at, ids[len(ids)-1]
	}
}

// pendingBefore pages through the unverified users whose signup was last
// made or renewed at or before cutoff, after the (updated_at, id) given, and
// returns them with the updated_at of the last one.
func pendingBefore(ctx context.Context, conn *pgxpool.Conn, cutoff, after time.Time, afterID uuid.UUID) ([]uuid.UUID, time.Time, error) {
	rows, err := conn.Query(ctx, `SELECT id, updated_at FROM users
		WHERE NOT email_verified AND updated_at <= $1 AND (updated_at, id) > ($2, $3)
		ORDER BY updated_at, id LIMIT $4`, cutoff, after, afterID, sweepPage)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("signup sweep: find pending signups: %w", err)
	}
	defer rows.Close()
	var ids []uuid.UUID
	var last time.Time
	for rows.Next() {
		var id uuid.UUID
		if err := rows.Scan(&id, &last); err != nil {
			return nil, time.Time{}, fmt.Errorf("signup sweep: find pending signups: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, time.Time{}, fmt.Errorf("signup sweep: find pending signups: %w", err)
	}
	return ids, last, nil
}
