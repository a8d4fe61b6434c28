// Package revocation keeps, in memory, which access tokens must be refused
// before they expire: those of revoked sessions and those issued before a
// password reset. Every instance learns of revocations from the event stream,
// so no request needs a database round trip to be checked.
package revocation

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/authd/authd/domain"
)

// Set is the revocations an instance knows of. An entry is kept as long as an
// access token it refuses could still be unexpired.
type Set struct {
	now      func() time.Time
	mu       sync.RWMutex
	sessions map[uuid.UUID]time.Time // revoked session -> when it was learned
	users    map[uuid.UUID]time.Time // user -> tokens issued before this are refused
}

// New returns an empty set.
func New(now func() time.Time) *Set {
	return &Set{now: now, sessions: map[uuid.UUID]time.Time{}, users: map[uuid.UUID]time.Time{}}
}

// RevokeSession refuses every access token of the session from now on.
func (s *Set) RevokeSession(id uuid.UUID) {
	s.mu.Lock()
	s.sessions[id] = s.now()
	s.mu.Unlock()
}

// CutUser refuses the user's access tokens issued before at.
func (s *Set) CutUser(id uuid.UUID, at time.Time) {
	s.mu.Lock()
	if at.After(s.users[id]) {
		s.users[id] = at
	}
	s.mu.Unlock()
}

// Allows reports whether an access token of the session and user, issued at
// issuedAt, is still good.
func (s *Set) Allows(session, user uuid.UUID, issuedAt time.Time) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if _, revoked := s.sessions[session]; revoked {
		return false
	}
	cut, ok := s.users[user]
	// Tokens carry whole seconds: one issued in the second of the reset is let
	// through, since its session, if older, is also revoked on its own.
	return !ok || !issuedAt.Before(cut.Truncate(time.Second))
}

// UserCut returns when the user's last known reset cut their sessions off
// (zero when none): sessions started before it are over.
func (s *Set) UserCut(user uuid.UUID) time.Time {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.users[user]
}

// Sweep forgets entries older than any access token can live.
func (s *Set) Sweep() {
	horizon := s.now().Add(-domain.AccessTokenTTL - time.Minute)
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, at := range s.sessions {
		if at.Before(horizon) {
			delete(s.sessions, id)
		}
	}
	for id, at := range s.users {
		if at.Before(horizon) {
			delete(s.users, id)
		}
	}
}

// Follow subscribes to revocations published by any instance. Core NATS
// subscribers see each message as JetStream stores it, so this needs no
// consumer and adds no lag beyond the relay's.
func (s *Set) Follow(nc *nats.Conn, subject func(eventType string) string, log *slog.Logger) (unsubscribe func(), err error) {
	sessions, err := nc.Subscribe(subject(domain.TypeSessionRevoked), func(m *nats.Msg) {
		var env struct {
			Data domain.SessionRevoked `json:"data"`
		}
		if err := json.Unmarshal(m.Data, &env); err != nil || env.Data.SessionID == uuid.Nil {
			log.Error("unreadable SessionRevoked message", "err", err)
			return
		}
		s.RevokeSession(env.Data.SessionID)
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to session revocations: %w", err)
	}
	resets, err := nc.Subscribe(subject(domain.TypePasswordReset), func(m *nats.Msg) {
		var env struct {
			Data domain.PasswordReset `json:"data"`
		}
		if err := json.Unmarshal(m.Data, &env); err != nil || env.Data.UserID == uuid.Nil {
			log.Error("unreadable PasswordReset message", "err", err)
			return
		}
		s.CutUser(env.Data.UserID, env.Data.At)
	})
	if err != nil {
		_ = sessions.Unsubscribe()
		return nil, fmt.Errorf("subscribe to password resets: %w", err)
	}
	return func() { _ = sessions.Unsubscribe(); _ = resets.Unsubscribe() }, nil
}

// passwordResetsSQL names the event type in its text, not as a parameter:
// only then can the planner use the partial index events_password_resets
// (migration 00011) instead of reading the whole log.
const passwordResetsSQL = `SELECT data FROM events WHERE type = '` + domain.TypePasswordReset + `' AND occurred_at > $1`

// Load fills the set with what happened before this instance started: call
// it after Follow, so nothing falls between the two. Revoked sessions come
// from the sessions read model, resets from the log itself, which no read
// model keeps.
func (s *Set) Load(ctx context.Context, pool *pgxpool.Pool) error {
	since := s.now().Add(-domain.AccessTokenTTL - time.Minute)
	rows, err := pool.Query(ctx, `SELECT id FROM sessions WHERE revoked_at > $1`, since)
	if err != nil {
		return fmt.Errorf("load revoked sessions: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return fmt.Errorf("load revoked sessions: %w", err)
	}
	for _, id := range ids {
		s.RevokeSession(id)
	}
	rows, err = pool.Query(ctx, passwordResetsSQL, since)
	if err != nil {
		return fmt.Errorf("load password resets: %w", err)
	}
	resets, err := pgx.CollectRows(rows, pgx.RowTo[domain.PasswordReset])
	if err != nil {
		return fmt.Errorf("load password resets: %w", err)
	}
	for _, r := range resets {
		s.CutUser(r.UserID, r.At)
	}
	return nil
}
