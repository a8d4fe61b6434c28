package commands

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/ratelimit"
	"github.com/authd/authd/internal/revocation"
	"github.com/authd/authd/internal/tokens"
	"github.com/authd/authd/projections"
)

// Sessions opens, refreshes, lists and ends sessions.
type Sessions struct {
	*core
	keys    *tokens.Keyring
	revoked *revocation.Set
	reads   SessionReads
	// rules are the refresh tokens' lifetimes.
	rules domain.RefreshRules
	// reauthMaxAge is how old auth_time may be for RequireFresh.
	reauthMaxAge time.Duration
	// cache holds the state of recently refreshed sessions, so that a
	// rotation, the commonest write there is, need not read its stream
	// first. Its append names the version the state was at, so a state that
	// another instance has moved on only costs a conflict and a reload.
	cache *lru.Cache[uuid.UUID, domain.Session]
}

// Tokens is a signed-in session's credentials.
type Tokens struct {
	AccessToken  string
	RefreshToken string
	ExpiresIn    time.Duration
	RefreshTTL   time.Duration
	SessionID    uuid.UUID
	UserID       uuid.UUID
}

// startSession adds a new session for user to the change. The session
// starts only on the account the sign-in decided on: if the user's stream
// moved before this change commits (a password change or reset, an email
// change, a deletion), it fails with a conflict. That narrows, and does not
// close, the race with a change that revokes every session: the version is
// read without a lock, so a sign-in that commits after such a change listed
// the sessions, and before it committed, keeps a session that change never
// saw. A reset and a deletion also cut the user's tokens by time, which
// covers it until the cut is swept; a password change does not.
func (a *Sessions) startSession(c *change, u *domain.User, amr []string, r Request) (uuid.UUID, error) {
	id := uuid.New()
	err := c.record(&domain.Session{}, domain.SessionStream(id), u.TenantID, u.ID,
		&domain.SessionStarted{SessionID: id, UserID: u.ID, TenantID: u.TenantID, AMR: amr, Client: r.client()},
		&domain.LoginSucceeded{UserID: u.ID, SessionID: id, AMR: amr},
	)
	c.also(eventstore.ExpectVersion(domain.UserStream(u.ID), u.StreamVersion()))
	return id, err
}

// issue signs the access token and derives the refresh token of a session at
// its current refresh generation; authTime is when the user last proved who
// they are in it (the token's auth_time).
func (a *Sessions) issue(session, user, tenant uuid.UUID, amr []string, authTime time.Time, generation uint64) (Tokens, error) {
	access, err := a.keys.Issue(tokens.Claims{UserID: user, TenantID: tenant, SessionID: session, AMR: amr, AuthTime: authTime, IssuedAt: a.now()})
	if err != nil {
		return Tokens{}, err
	}
	return Tokens{
		AccessToken:  access,
		RefreshToken: a.keys.RefreshToken(session, generation),
		ExpiresIn:    a.keys.AccessTTL(),
		RefreshTTL:   a.rules.TTL,
		SessionID:    session,
		UserID:       user,
	}, nil
}

// SignIn is the outcome of a first factor: tokens, or, for a user with
// two-factor authentication on, a challenge to answer at /2fa/verify.
type SignIn struct {
	Tokens    *Tokens
	Challenge *Challenge
}

// Challenge is a pending second factor.
type Challenge struct {
	Token     string
	Methods   []string
	ExpiresIn time.Duration
}

// signIn finishes a first-factor login: it commits c (whatever the login
// changed) and either opens a session or, when the user has a second factor,
// answers a challenge instead. tf is the user's two-factor state when the
// caller loaded it with the user; nil has it loaded here.
func (a *TwoFactor) signIn(ctx context.Context, c *change, u *domain.User, tf *domain.TwoFactor, amr []string, r Request) (SignIn, error) {
	ch, err := a.challenge(ctx, c, u, tf, amr, r)
	if err != nil || ch != nil {
		return SignIn{Challenge: ch}, err
	}
	t, err := a.sessions.openSession(ctx, c, u, amr, r)
	if err != nil {
		return SignIn{}, err
	}
	return SignIn{Tokens: &t}, nil
}

// openSession commits a change that starts a session, waits until the reads
// that follow a sign-in will see it (and the projections named in waitAlso,
// for what else c changed), and returns the session's tokens. Paths that need
// no second factor (a passkey, an answered challenge) call it directly.
func (a *Sessions) openSession(ctx context.Context, c *change, u *domain.User, amr []string, r Request, waitAlso ...projections.Projection) (Tokens, error) {
	id, err := a.startSession(c, u, amr, r)
	if err != nil {
		return Tokens{}, err
	}
	// The client's network is known to the account from this sign-in on.
	if st, ok := ratelimit.SignedInStatement(u.ID, r.IP, c.at); ok {
		c.also(st)
	}
	committed, err := a.commit(ctx, c)
	if err != nil {
		return Tokens{}, err
	}
	a.waitFor(ctx, committed, append([]projections.Projection{projections.Users{}, projections.Sessions{}}, waitAlso...)...)
	return a.issue(id, u.ID, u.TenantID, amr, c.at, 0) // a sign-in is the proof
}

// RequireFresh admits a sensitive change only from a caller who proved who
// they are (a sign-in or a re-authentication) within the configured max age,
// so that a stolen access token alone cannot take the account over (API.md:
// "Fresh" endpoints). A token without auth_time, issued before authd put it
// in, is not fresh. ErrReauthenticationRequired otherwise.
func (a *Sessions) RequireFresh(caller tokens.Claims) error {
	if caller.AuthTime.IsZero() || a.now().Sub(caller.AuthTime) > a.reauthMaxAge {
		return ErrReauthenticationRequired
	}
	return nil
}

// Refresh rotates a refresh token (API.md: POST /refresh).
func (a *Sessions) Refresh(ctx context.Context, refreshToken string, r Request) (Tokens, error) {
	id, generation, err := a.keys.ParseRefreshToken(refreshToken)
	if err != nil {
		return Tokens{}, ErrInvalidRefreshToken
	}
	return retry(ctx, func() (Tokens, error) {
		decide := func(s *domain.Session) (domain.RefreshDecision, error) {
			if s.Version > 0 && s.StartedAt.Before(a.revoked.UserCut(s.UserID)) {
				return domain.RefreshDecision{}, ErrInvalidRefreshToken
			}
			return s.Refresh(generation, a.now(), a.rules, r.client())
		}
		var s *domain.Session
		var d domain.RefreshDecision
		var err error
		if cached, ok := a.cache.Get(id); ok {
			s = &cached
			// Only a rotation is checked against the stream, by its append's
			// expected version; any other outcome of a cached state is
			// decided again on the stream as stored.
			if d, err = decide(s); err != nil || !d.Answer || len(d.Events) == 0 {
				s = nil
			}
		}
		if s == nil {
			if s, err = a.loadSession(ctx, id); err != nil {
				return Tokens{}, err
			}
			d, err = decide(s)
		}
		if errors.Is(err, domain.ErrRefreshInvalid) {
			return Tokens{}, ErrInvalidRefreshToken
		}
		if err != nil {
			return Tokens{}, err
		}
		if len(d.Events) > 0 {
			c := a.newChange(r)
			if err := c.record(s, domain.SessionStream(id), s.TenantID, s.UserID, d.Events...); err != nil {
				return Tokens{}, err
			}
			if _, err := a.commit(ctx, c); err != nil {
				a.cache.Remove(id)
				return Tokens{}, err
			}
			a.cache.Add(id, *s)
		}
		if !d.Answer {
			a.revoked.RevokeSession(id)
			a.log.Warn("refresh token reused after rotation: session revoked", "session_id", id, "request_id", r.RequestID)
			return Tokens{}, ErrInvalidRefreshToken
		}
		return a.issue(id, s.UserID, s.TenantID, s.AMR, s.AuthTime, s.Generation)
	})
}

// AccountFromLog rebuilds an account and its two-factor state from their
// streams: what a read shows when the users read model has not caught up with
// the account (DESIGN.md rule 10: a read never misstates what the log has).
// ErrNotFound when the log has no such account.
func (a *Accounts) AccountFromLog(ctx context.Context, id uuid.UUID) (*domain.User, *domain.TwoFactor, error) {
	return a.loadAccount(ctx, id)
}

// SessionRecord is a session as GET /sessions lists it, rebuilt from the log.
type SessionRecord struct {
	ID         uuid.UUID
	UserID     uuid.UUID
	Client     domain.Client
	CreatedAt  time.Time
	LastSeenAt time.Time
	Revoked    bool
}

// SessionFromLog rebuilds a session's listing from the ends of its stream, as
// the sessions read model would show it once caught up: the first event
// gives the client and start, the newest refresh the last use and address.
// ErrNotFound when the log has no such session.
func (a *Sessions) SessionFromLog(ctx context.Context, id uuid.UUID) (SessionRecord, error) {
	events, err := a.store.LoadEnds(ctx, domain.SessionStream(id), domain.SessionStateTail)
	if err != nil {
		return SessionRecord{}, err
	}
	var s SessionRecord
	for _, e := range events {
		d, err := eventstore.Decode(e)
		if err != nil {
			return SessionRecord{}, err
		}
		switch d := d.(type) {
		case *domain.SessionStarted:
			s = SessionRecord{ID: d.SessionID, UserID: d.UserID, Client: d.Client, CreatedAt: e.OccurredAt, LastSeenAt: e.OccurredAt}
		case *domain.SessionRefreshed:
			s.LastSeenAt = e.OccurredAt
			if d.IP != "" {
				s.Client.IP = d.IP
			}
		case *domain.Reauthenticated:
			s.LastSeenAt = e.OccurredAt
			if d.IP != "" {
				s.Client.IP = d.IP
			}
		case *domain.SessionRevoked:
			s.Revoked = true
		}
	}
	if s.ID == uuid.Nil {
		return SessionRecord{}, ErrNotFound
	}
	return s, nil
}

// Logout revokes the caller's own session.
func (a *Sessions) Logout(ctx context.Context, caller tokens.Claims, r Request) error {
	_, err := a.revoke(ctx, caller.UserID, caller.SessionID, domain.RevokedByLogout, r)
	return err
}

// RevokeSession revokes one of the caller's sessions; someone else's session
// is not found, so nobody learns which ids exist.
func (a *Sessions) RevokeSession(ctx context.Context, caller tokens.Claims, session uuid.UUID, r Request) error {
	at, err := a.revoke(ctx, caller.UserID, session, domain.RevokedByUser, r)
	if err != nil {
		return err
	}
	a.wait(ctx, at, projections.Sessions{})
	return nil
}

// ActiveSessions lists the user's active sessions from the sessions read
// model, with those the read model has not caught up with taken from the
// log instead: a session just started is listed, one just revoked is not.
// Newest first.
func (a *Sessions) ActiveSessions(ctx context.Context, user uuid.UUID) ([]projections.SessionView, error) {
	now := a.now()
	list, err := a.reads.Active(ctx, user, a.rules.LiveSince(now))
	if err != nil {
		return nil, err
	}
	behind, err := a.reads.Behind(ctx, user)
	if err != nil || len(behind) == 0 {
		return list, err
	}
	for _, id := range behind {
		list = slices.DeleteFunc(list, func(s projections.SessionView) bool { return s.ID == id })
		s, err := a.SessionFromLog(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue // committed since the scan, in a stream not yet started: not the user's to see yet
		}
		if err != nil {
			return nil, err
		}
		if s.UserID != user || s.Revoked || !a.rules.Lives(s.LastSeenAt, now) {
			continue
		}
		list = append(list, projections.SessionView{
			ID: s.ID, Device: s.Client.Device, UserAgent: s.Client.UserAgent, IP: s.Client.IP,
			CreatedAt: s.CreatedAt.UTC(), LastSeenAt: s.LastSeenAt.UTC(),
		})
	}
	// The read model's order: newest first.
	slices.SortFunc(list, func(x, y projections.SessionView) int {
		if c := y.CreatedAt.Compare(x.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(x.ID.String(), y.ID.String())
	})
	return list, nil
}

// activeSessionIDs is ActiveSessions' ids.
func (a *Sessions) activeSessionIDs(ctx context.Context, user uuid.UUID) ([]uuid.UUID, error) {
	list, err := a.ActiveSessions(ctx, user)
	if err != nil {
		return nil, err
	}
	ids := make([]uuid.UUID, len(list))
	for i, s := range list {
		ids[i] = s.ID
	}
	return ids, nil
}

// revokeIn records in c the revocation of every active session of user but
// keep (uuid.Nil: none), for reason, and returns their ids: revoked in the
// commit of the change that calls for it (revokedHere once it committed).
func (a *Sessions) revokeIn(ctx context.Context, c *change, user, keep uuid.UUID, reason string) ([]uuid.UUID, error) {
	active, err := a.activeSessionIDs(ctx, user)
	if err != nil {
		return nil, err
	}
	active = slices.DeleteFunc(active, func(id uuid.UUID) bool { return id == keep })
	// One round trip for all of them: a user may have many sessions.
	sessions, err := a.loadSessions(ctx, active)
	if err != nil {
		return nil, err
	}
	var revoked []uuid.UUID
	for i, s := range sessions {
		id := active[i]
		events := s.Revoke(reason)
		if s.UserID != user || len(events) == 0 {
			continue // ended meanwhile
		}
		if err := c.record(s, domain.SessionStream(id), s.TenantID, s.UserID, events...); err != nil {
			return nil, err
		}
		revoked = append(revoked, id)
	}
	return revoked, nil
}

// revokedHere refuses the committed revocations of sessions at once on this
// instance; the others learn them from the SessionRevoked events
// (internal/revocation).
func (a *Sessions) revokedHere(ids []uuid.UUID) {
	for _, id := range ids {
		a.revoked.RevokeSession(id)
		a.cache.Remove(id)
	}
}

// RevokeOtherSessions revokes every active session of the caller but the one
// making the request, in one commit, and says how many it revoked.
func (a *Sessions) RevokeOtherSessions(ctx context.Context, caller tokens.Claims, r Request) (int, error) {
	var revoked []uuid.UUID
	at, err := retry(ctx, func() (eventstore.Cursor, error) {
		c := a.newChange(r)
		var err error
		if revoked, err = a.revokeIn(ctx, c, caller.UserID, caller.SessionID, domain.RevokedByUser); err != nil || len(revoked) == 0 {
			return eventstore.Cursor{}, err
		}
		committed, err := a.commit(ctx, c)
		return committed.Last, err
	})
	if err != nil {
		return 0, err
	}
	if len(revoked) > 0 {
		a.revokedHere(revoked)
		a.wait(ctx, at, projections.Sessions{})
	}
	return len(revoked), nil
}

func (a *Sessions) revoke(ctx context.Context, user, session uuid.UUID, reason string, r Request) (eventstore.Cursor, error) {
	at, err := retry(ctx, func() (eventstore.Cursor, error) {
		s, err := a.loadSession(ctx, session)
		if err != nil {
			return eventstore.Cursor{}, err
		}
		if s.Version == 0 || s.UserID != user || s.Revoked {
			return eventstore.Cursor{}, ErrNotFound
		}
		c := a.newChange(r)
		if err := c.record(s, domain.SessionStream(session), s.TenantID, s.UserID, s.Revoke(reason)...); err != nil {
			return eventstore.Cursor{}, err
		}
		committed, err := a.commit(ctx, c)
		return committed.Last, err
	})
	if err == nil {
		a.revoked.RevokeSession(session)
		a.cache.Remove(session) // saves the next refresh a conflict
	}
	return at, err
}
