package domain

import (
	"errors"
	"time"

	"github.com/google/uuid"
)

// Event types of the session stream (see Kinds).
const (
	TypeSessionStarted     = "SessionStarted"
	TypeLoginSucceeded     = "LoginSucceeded"
	TypeSessionRefreshed   = "SessionRefreshed"
	TypeRefreshTokenReused = "RefreshTokenReused"
	TypeSessionRevoked     = "SessionRevoked"
	TypeLoginFailed        = "LoginFailed"
	TypeReauthenticated    = "Reauthenticated"
)

// AccessTokenTTL is the longest an access token lives (tokens.MaxAccessTTL,
// the bound of AUTHD_ACCESS_TOKEN_TTL): revocations are kept this long.
const AccessTokenTTL = 24 * time.Hour

// RefreshRules are the configured lifetimes a refresh is decided by.
type RefreshRules struct {
	// TTL is how long a refresh token lives from its issue
	// (AUTHD_REFRESH_TOKEN_TTL).
	TTL time.Duration
	// Grace is how long the token just rotated away still answers the
	// current pair (AUTHD_REFRESH_REUSE_GRACE); 0 turns it off.
	Grace time.Duration
}

// Lives says whether a refresh token issued at issued may still be used at
// now: for TTL from its issue, the end included. It is the one rule of a
// refresh token's life: Refresh decides by it, and a session is listed as
// active while its current refresh token lives.
func (r RefreshRules) Lives(issued, now time.Time) bool { return !now.After(issued.Add(r.TTL)) }

// LiveSince is the earliest issue of a refresh token that still lives at now
// (Lives), itself included: the bound of a query for the sessions whose
// token does.
func (r RefreshRules) LiveSince(now time.Time) time.Time { return now.Add(-r.TTL) }

// SessionStream names a session's stream.
func SessionStream(id uuid.UUID) string { return "session-" + id.String() }

// LoginStream names the stream of a user's failed logins, kept apart from the
// user's own stream so that failures cannot make the account slow to load.
func LoginStream(userID uuid.UUID) string { return "logins-" + userID.String() }

// Client is where a request came from.
type Client struct {
	IP        string `json:"ip" personal:"true"`
	UserAgent string `json:"user_agent" personal:"true"`
	Device    string `json:"device" personal:"true"`
}

// SessionStarted opens a session after a successful login.
type SessionStarted struct {
	SessionID uuid.UUID `json:"session_id"`
	UserID    uuid.UUID `json:"user_id"`
	TenantID  uuid.UUID `json:"tenant_id"`
	AMR       []string  `json:"amr"`
	Client
}

// LoginSucceeded is the audit record of a login; it starts no state of its own.
type LoginSucceeded struct {
	UserID    uuid.UUID `json:"user_id"`
	SessionID uuid.UUID `json:"session_id"`
	AMR       []string  `json:"amr"`
}

// LoginFailed records a wrong password for a known user.
type LoginFailed struct {
	UserID uuid.UUID `json:"user_id"`
	Reason string    `json:"reason"`
}

// SessionRefreshed rotates the session's refresh token to a new generation.
// After a re-authentication it carries the session's proof forward (AuthTime,
// AMR): a session is loaded from the ends of its stream, where the
// Reauthenticated event may no longer be (SessionStateTail). A session never
// re-authenticated leaves both empty: its first event, always read, has them.
type SessionRefreshed struct {
	SessionID  uuid.UUID `json:"session_id"`
	Generation uint64    `json:"generation"`
	AuthTime   time.Time `json:"auth_time,omitzero"`
	AMR        []string  `json:"amr,omitempty"`
	Client
}

// Reauthenticated records that the session's user proved who they are again
// (API.md: POST /reauthenticate): it moves the session's auth_time to when it
// happened, its amr to the proof used, and rotates its refresh token as a
// refresh does, so the pair it answers is a new one.
type Reauthenticated struct {
	SessionID  uuid.UUID `json:"session_id"`
	UserID     uuid.UUID `json:"user_id"`
	AMR        []string  `json:"amr"`
	Generation uint64    `json:"generation"`
	Client
}

// RefreshTokenReused records that a rotated-away refresh token came back
// after the grace: someone else may hold it, so the session is revoked.
type RefreshTokenReused struct {
	SessionID  uuid.UUID `json:"session_id"`
	Generation uint64    `json:"generation"`
	Current    uint64    `json:"current_generation"`
}

// Reasons a session is revoked.
const (
	RevokedByLogout   = "logout"
	RevokedByUser     = "revoked"
	RevokedByReuse    = "refresh_token_reused"
	RevokedByPassword = "password_reset"
	// RevokedByPasswordChange: the user changed their password in another
	// session (POST /me/password).
	RevokedByPasswordChange = "password_changed"
	// RevokedByErasure: the user deleted their account.
	RevokedByErasure = "account_deleted"
)

// SessionRevoked ends a session: its refresh and access tokens stop working.
type SessionRevoked struct {
	SessionID uuid.UUID `json:"session_id"`
	UserID    uuid.UUID `json:"user_id"`
	Reason    string    `json:"reason"`
}

// SessionStateTail is how many of a session stream's last events, with its
// first, determine the session: the first (SessionStarted) gives who and how;
// the newest rotation (SessionRefreshed or Reauthenticated) gives the current
// generation, and the proof of a re-authentication (which every later
// SessionRefreshed carries); a SessionRevoked,
// if any, is the last event, since nothing is appended after it; and the
// longest run appended after a rotation is RefreshTokenReused then
// SessionRevoked. So the last three events always include the newest rotation.
const SessionStateTail = 3

// Session is the write side of one login, rebuilt from its stream.
type Session struct {
	ID         uuid.UUID
	UserID     uuid.UUID
	TenantID   uuid.UUID
	AMR        []string
	StartedAt  time.Time
	Generation uint64    // of the current refresh token
	RotatedAt  time.Time // when the current refresh token was issued
	// AuthTime is when the user last proved who they are in this session:
	// the sign-in, or the latest re-authentication (the tokens' auth_time).
	AuthTime time.Time
	// Reauthenticated says AuthTime and AMR come from a re-authentication,
	// not from the session's start.
	Reauthenticated bool
	Revoked         bool
	Version         int64
}

// Apply folds one event into the session; at is when it happened.
func (s *Session) Apply(e Event, at time.Time) {
	switch e := e.(type) {
	case *SessionStarted:
		s.ID, s.UserID, s.TenantID, s.AMR, s.StartedAt, s.RotatedAt, s.AuthTime = e.SessionID, e.UserID, e.TenantID, e.AMR, at, at, at
	case *SessionRefreshed:
		s.Generation, s.RotatedAt = e.Generation, at
		if !e.AuthTime.IsZero() {
			s.AuthTime, s.AMR, s.Reauthenticated = e.AuthTime, e.AMR, true
		}
	case *Reauthenticated:
		s.Generation, s.RotatedAt, s.AuthTime, s.AMR, s.Reauthenticated = e.Generation, at, at, e.AMR, true
	case *SessionRevoked:
		s.Revoked = true
	}
	s.Version++
}

// Refresh outcomes.
var (
	ErrRefreshInvalid = errors.New("refresh token is not valid")
)

// RefreshDecision is what presenting a refresh token does to a session.
type RefreshDecision struct {
	Events []Event // to append; none when the current pair is answered again
	Answer bool    // the session's current pair answers the request
}

// Refresh decides on a refresh token of the given generation presented at now.
// The current token rotates while younger than rules.TTL. The one just rotated
// away, within rules.Grace of its rotation, answers the current pair again
// (tabs refreshing at once). Any other reuse revokes the session, since the
// token may be in someone else's hands.
func (s *Session) Refresh(generation uint64, now time.Time, rules RefreshRules, client Client) (RefreshDecision, error) {
	grace := rules.Grace
	switch {
	case s.Version == 0 || s.Revoked:
		return RefreshDecision{}, ErrRefreshInvalid
	case generation > s.Generation:
		return RefreshDecision{}, ErrRefreshInvalid // never issued: forged or from a lost write
	case !rules.Lives(s.RotatedAt, now) && generation == s.Generation:
		return RefreshDecision{}, ErrRefreshInvalid
	case generation == s.Generation:
		e := &SessionRefreshed{SessionID: s.ID, Generation: generation + 1, Client: client}
		if s.Reauthenticated {
			e.AuthTime, e.AMR = s.AuthTime, s.AMR
		}
		return RefreshDecision{Answer: true, Events: []Event{e}}, nil
	case generation+1 == s.Generation && grace > 0 && !now.After(s.RotatedAt.Add(grace)):
		if s.rotatedByProof() {
			// The current pair carries a proof the token's holder did not
			// give: the grace is for tabs racing a refresh, not a way to a
			// fresh pair for whoever held the session's refresh token.
			return RefreshDecision{}, ErrRefreshInvalid
		}
		return RefreshDecision{Answer: true}, nil
	default:
		return RefreshDecision{Events: []Event{
			&RefreshTokenReused{SessionID: s.ID, Generation: generation, Current: s.Generation},
			&SessionRevoked{SessionID: s.ID, UserID: s.UserID, Reason: RevokedByReuse},
		}}, nil
	}
}

// ErrSessionEnded is a re-authentication of a session that is revoked or
// never started.
var ErrSessionEnded = errors.New("session has ended")

// rotatedByProof says the current refresh token was issued by a
// re-authentication, not by a refresh: that rotation moved auth_time to its
// own time, and a refresh since would have moved RotatedAt past it.
func (s *Session) rotatedByProof() bool {
	return s.Reauthenticated && s.RotatedAt.Equal(s.AuthTime)
}

// Reauthenticate decides on a user's new proof of who they are, amr, in this
// session: it moves auth_time to now and rotates the refresh token, so the
// pair answered is new and the one before follows the rules of a token
// rotated away. The proof itself is checked by the caller.
func (s *Session) Reauthenticate(amr []string, client Client) ([]Event, error) {
	if s.Version == 0 || s.Revoked {
		return nil, ErrSessionEnded
	}
	return []Event{&Reauthenticated{SessionID: s.ID, UserID: s.UserID, AMR: amr, Generation: s.Generation + 1, Client: client}}, nil
}

// Revoke ends the session, or does nothing when it already ended.
func (s *Session) Revoke(reason string) []Event {
	if s.Revoked || s.Version == 0 {
		return nil
	}
	return []Event{&SessionRevoked{SessionID: s.ID, UserID: s.UserID, Reason: reason}}
}
