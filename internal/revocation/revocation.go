// Package revocation keeps, in memory, which access tokens must be refused
// before they expire: those of revoked sessions, those issued before a
// password reset, and every one of a deleted account. Every instance learns of revocations from the event stream
// and, while that cannot be trusted to bring them in time, from the log a few
// times a second (Feed): no request needs a database round trip to be checked.
//
// It is a projection kept in memory: Set.Apply folds the SessionRevoked,
// PasswordReset and AccountDeleted events, decoded by the codec every reader of the log shares
// (eventstore.Decode, eventstore.FromMessage), and what happened before the
// instance started comes through the queries the projections package
// exports. It reads no table and no wire format of its own.
package revocation

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/projections"
)

// Set is the revocations an instance knows of. An entry is kept as long as an
// access token it refuses could still be unexpired.
type Set struct {
	now      func() time.Time
	mu       sync.RWMutex
	sessions map[uuid.UUID]time.Time // revoked session -> when it was learned
	users    map[uuid.UUID]time.Time // user -> tokens issued before this are refused
	erased   map[uuid.UUID]time.Time // deleted user -> when it was learned: every token refused
}

// New returns an empty set.
func New(now func() time.Time) *Set {
	return &Set{now: now, sessions: map[uuid.UUID]time.Time{}, users: map[uuid.UUID]time.Time{}, erased: map[uuid.UUID]time.Time{}}
}

// EraseUser refuses every access token of a deleted account, whenever it
// was issued: a cut at the time of the deletion would let a token issued in
// the same second through (tokens carry whole seconds). Its sessions are
// revoked in the deletion's commit too; this also covers one started by a
// sign-in that raced the deletion, until Sweep forgets the user (a
// day and a minute later) or the process restarts.
func (s *Set) EraseUser(id uuid.UUID) {
	s.mu.Lock()
	if _, known := s.erased[id]; !known {
		s.erased[id] = s.now()
	}
	s.mu.Unlock()
}

// endOfTime is the cut of a deleted account: every session started before it.
var endOfTime = time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)

// RevokeSession refuses every access token of the session from now on.
// Learning it again (the log backstop rereads what NATS may also bring)
// keeps the first time, so Sweep forgets it no later than once.
func (s *Set) RevokeSession(id uuid.UUID) {
	s.mu.Lock()
	if _, known := s.sessions[id]; !known {
		s.sessions[id] = s.now()
	}
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
	if _, gone := s.erased[user]; gone {
		return false
	}
	cut, ok := s.users[user]
	// Tokens carry whole seconds: one issued in the second of the reset is let
	// through, since its session, if older, is also revoked on its own.
	return !ok || !issuedAt.Before(cut.Truncate(time.Second))
}

// UserCut returns when the user's last known reset cut their sessions off
// (zero when none): sessions started before it are over. A deleted
// account's cut is after every session.
func (s *Set) UserCut(user uuid.UUID) time.Time {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if _, gone := s.erased[user]; gone {
		return endOfTime
	}
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
	for id, at := range s.erased {
		if at.Before(horizon) {
			delete(s.erased, id)
		}
	}
}

// Apply folds a revocation into the set: a revoked session, a password
// reset that cuts its user's older tokens off, or a deleted account. Other events leave it as it
// is. An event that names no session or user is unreadable, not a change.
func (s *Set) Apply(e domain.Event) error {
	switch e := e.(type) {
	case *domain.SessionRevoked:
		if e.SessionID == uuid.Nil {
			return fmt.Errorf("%s names no session", e.EventType())
		}
		s.RevokeSession(e.SessionID)
	case *domain.PasswordReset:
		if e.UserID == uuid.Nil {
			return fmt.Errorf("%s names no user", e.EventType())
		}
		s.CutUser(e.UserID, e.At)
	case *domain.AccountDeleted:
		if e.UserID == uuid.Nil {
			return fmt.Errorf("%s names no user", e.EventType())
		}
		s.EraseUser(e.UserID)
	}
	return nil
}

// types are the event types Apply acts on: the feed subscribes to them.
func types() []string {
	return []string{domain.TypeSessionRevoked, domain.TypePasswordReset, domain.TypeAccountDeleted}
}

// Load fills the set with what happened before this instance started
// (Feed.Load calls it, after subscribing, so nothing falls between the two).
// Revoked sessions come from the sessions read model, resets and deleted
// accounts from the log itself: no read model keeps them (the sessions of a
// deleted account leave the read model with it).
func (s *Set) Load(ctx context.Context, pool *pgxpool.Pool) error {
	since := s.now().Add(-domain.AccessTokenTTL - time.Minute)
	ids, err := projections.RevokedSessions(ctx, pool, since)
	if err != nil {
		return err
	}
	for _, id := range ids {
		s.RevokeSession(id)
	}
	cuts, err := projections.UserCuts(ctx, pool, since)
	if err != nil {
		return err
	}
	for _, r := range cuts {
		d, err := eventstore.Decode(r)
		if err == nil {
			err = s.Apply(d)
		}
		if err != nil {
			return fmt.Errorf("load password resets and deleted accounts: %w", err)
		}
	}
	return nil
}
