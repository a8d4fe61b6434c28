package projections

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/authd/authd/domain"
)

// ErrNotFound means a read model has no such row.
var ErrNotFound = errors.New("projections: not found")

// ErrBehind means a read model has not applied all the log holds of what was
// asked: the answer is in the log, and the read model would misstate it.
var ErrBehind = errors.New("projections: read model behind the log")

// Querier is a pool, connection or transaction.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// UserView is a user as the API shows it.
type UserView struct {
	ID               uuid.UUID `json:"id"`
	Email            string    `json:"email"`
	Name             string    `json:"name"`
	EmailVerified    bool      `json:"email_verified"`
	Tenant           Tenant    `json:"tenant"`
	TwoFactorEnabled bool      `json:"two_factor_enabled"`
	CreatedAt        time.Time `json:"created_at"`
	// Locale is the language of the user's mails (BCP 47); empty: English.
	Locale string `json:"locale"`
}

// Tenant is a user's organization.
type Tenant struct {
	ID   uuid.UUID `json:"id"`
	Name string    `json:"name"`
}

// SessionView is a session as GET /sessions lists it.
type SessionView struct {
	ID         uuid.UUID `json:"id"`
	Device     string    `json:"device"`
	UserAgent  string    `json:"user_agent"`
	IP         string    `json:"ip"`
	CreatedAt  time.Time `json:"created_at"`
	LastSeenAt time.Time `json:"last_seen_at"`
	Current    bool      `json:"current"`
}

// ActiveSessions lists a user's sessions that are neither revoked nor past
// their refresh token's life, newest first: those last seen (their token
// last issued) at since or later, since being domain.RefreshRules.LiveSince.
func ActiveSessions(ctx context.Context, q Querier, userID uuid.UUID, since time.Time) ([]SessionView, error) {
	rows, err := q.Query(ctx, `SELECT id, device, user_agent, ip, created_at, last_seen_at FROM sessions
		WHERE user_id = $1 AND revoked_at IS NULL AND last_seen_at >= $2
		ORDER BY created_at DESC, id`, userID, since)
	if err != nil {
		return nil, fmt.Errorf("list sessions of %s: %w", userID, err)
	}
	defer rows.Close()
	out := []SessionView{}
	for rows.Next() {
		var s SessionView
		if err := rows.Scan(&s.ID, &s.Device, &s.UserAgent, &s.IP, &s.CreatedAt, &s.LastSeenAt); err != nil {
			return nil, fmt.Errorf("list sessions of %s: %w", userID, err)
		}
		s.CreatedAt, s.LastSeenAt = s.CreatedAt.UTC(), s.LastSeenAt.UTC()
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list sessions of %s: %w", userID, err)
	}
	return out, nil
}

// SessionReads queries the sessions read model through Q, for the commands
// that act on a user's active sessions (commands.SessionReads).
type SessionReads struct{ Q Querier }

// Active is ActiveSessions.
func (s SessionReads) Active(ctx context.Context, user uuid.UUID, since time.Time) ([]SessionView, error) {
	return ActiveSessions(ctx, s.Q, user, since)
}

// Behind is SessionsBehind.
func (s SessionReads) Behind(ctx context.Context, user uuid.UUID) ([]uuid.UUID, error) {
	return SessionsBehind(ctx, s.Q, user)
}

// SessionsBehind lists the user's sessions whose streams hold events that
// the sessions read model has not applied yet: what ActiveSessions may
// misstate. It scans the log from the projection's saved checkpoint on, in
// commit order, so its cost is the read model's lag, not the log's size.
func SessionsBehind(ctx context.Context, q Querier, userID uuid.UUID) ([]uuid.UUID, error) {
	prefix := streamPrefix(domain.SessionStream)
	rows, err := q.Query(ctx, `SELECT DISTINCT e.stream_id FROM events e
		WHERE (e.tx_id, e.position) >
			(coalesce((SELECT tx_id FROM projection_checkpoints WHERE name = $3), '0'),
			 coalesce((SELECT position FROM projection_checkpoints WHERE name = $3), 0))
		AND e.user_id = $1 AND starts_with(e.stream_id, $2)`, userID, prefix, Sessions{}.Name())
	if err != nil {
		return nil, fmt.Errorf("sessions of %s behind the log: %w", userID, err)
	}
	defer rows.Close()
	var out []uuid.UUID
	for rows.Next() {
		var stream string
		if err := rows.Scan(&stream); err != nil {
			return nil, fmt.Errorf("sessions of %s behind the log: %w", userID, err)
		}
		id, err := uuid.Parse(strings.TrimPrefix(stream, prefix))
		if err != nil {
			return nil, fmt.Errorf("session stream %q: %w", stream, err)
		}
		out = append(out, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sessions of %s behind the log: %w", userID, err)
	}
	return out, nil
}
