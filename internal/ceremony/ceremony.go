// Package ceremony keeps the server-side state of WebAuthn ceremonies between
// their two steps: short-lived and single use, in the webauthn_ceremonies
// table that every authd instance shares.
package ceremony

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Kind is what a ceremony is for, as the webauthn_ceremonies table names it:
// a ceremony is taken only as the kind it was put as. The kinds are named
// here, beside the table, and nowhere else.
type Kind string

// Kinds of ceremony.
const (
	Register Kind = "register"
	Login    Kind = "login"
)

// Store keeps ceremonies in Postgres.
type Store struct {
	pool *pgxpool.Pool
	now  func() time.Time
}

// New returns a Store over pool that reads the time from now.
func New(pool *pgxpool.Pool, now func() time.Time) *Store {
	return &Store{pool: pool, now: now}
}

// Stores a ceremony and, in the same statement, deletes a few expired ones:
// whoever starts ceremonies keeps the table small, with no sweeper of its own.
// SKIP LOCKED keeps concurrent starts from waiting on each other's sweep.
const putSQL = `
WITH swept AS (
    DELETE FROM webauthn_ceremonies WHERE challenge IN (
        SELECT challenge FROM webauthn_ceremonies WHERE expires_at <= $5
        ORDER BY expires_at LIMIT 32 FOR UPDATE SKIP LOCKED)
)
INSERT INTO webauthn_ceremonies (challenge, kind, user_id, session, expires_at)
VALUES ($1, $2, $3, $4, $6)`

// Put stores a ceremony's state under its challenge (base64url), for user
// (uuid.Nil for a login, whose user is not known yet), valid for ttl.
func (s *Store) Put(ctx context.Context, kind Kind, challenge string, user uuid.UUID, state []byte, ttl time.Duration) error {
	if challenge == "" || ttl <= 0 {
		return errors.New("ceremony: put needs a challenge and a positive lifetime")
	}
	now := s.now()
	if _, err := s.pool.Exec(ctx, putSQL, challenge, kind, nullable(user), state, now, now.Add(ttl)); err != nil {
		return fmt.Errorf("ceremony: store a %s ceremony: %w", kind, err)
	}
	return nil
}

// Takes a live ceremony: the DELETE makes it single use, even between
// instances racing for it (only one DELETE returns the row).
const takeSQL = `
DELETE FROM webauthn_ceremonies
WHERE challenge = $1 AND kind = $2 AND user_id IS NOT DISTINCT FROM $3 AND expires_at > $4
RETURNING session`

// Take removes and returns the state of a live ceremony of the given kind and
// user (uuid.Nil for a login). ok is false when there is none: never issued,
// expired, already taken, of another kind, or another user's (which is left
// alone).
func (s *Store) Take(ctx context.Context, kind Kind, challenge string, user uuid.UUID) (state []byte, ok bool, err error) {
	if challenge == "" {
		return nil, false, nil
	}
	err = s.pool.QueryRow(ctx, takeSQL, challenge, kind, nullable(user), s.now()).Scan(&state)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("ceremony: take a %s ceremony: %w", kind, err)
	}
	return state, true, nil
}

// Sweep deletes every expired ceremony and returns how many.
func (s *Store) Sweep(ctx context.Context) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM webauthn_ceremonies WHERE expires_at <= $1`, s.now())
	if err != nil {
		return 0, fmt.Errorf("ceremony: sweep: %w", err)
	}
	return tag.RowsAffected(), nil
}

func nullable(id uuid.UUID) *uuid.UUID {
	if id == uuid.Nil {
		return nil
	}
	return &id
}
