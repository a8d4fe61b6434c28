package projections

import (
	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
)

// Sessions is the read model behind GET /sessions.
type Sessions struct{}

func (Sessions) Name() string     { return "sessions" }
func (Sessions) Tables() []string { return []string{"sessions"} }

// Uses lists the event types Apply acts on (Selective).
func (Sessions) Uses(eventType string) bool {
	switch eventType {
	case domain.TypeSessionStarted, domain.TypeSessionRefreshed, domain.TypeReauthenticated, domain.TypeSessionRevoked:
		return true
	}
	return ends(eventType)
}

// seenAgain moves a session's last use and address: a rotation of its refresh
// token, by a refresh or a re-authentication.
const seenAgain = `UPDATE sessions SET last_seen_at = $2, ip = CASE WHEN $3 = '' THEN ip ELSE $3 END WHERE id = $1`

// Apply queues one statement per session event, each of which must touch
// exactly one row; an account that ends takes its sessions with it (their
// revocations come before, in the same commit).
func (s Sessions) Apply(b *Batch, events []eventstore.Event) error {
	return eachUsed(s, events, func(e eventstore.Event, d domain.Event) error {
		switch v := d.(type) {
		case *domain.SessionStarted:
			b.Row(e, `INSERT INTO sessions (id, user_id, tenant_id, amr, device, user_agent, ip, created_at, last_seen_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)`,
				v.SessionID, v.UserID, v.TenantID, v.AMR, v.Device, v.UserAgent, v.IP, e.OccurredAt)
		case *domain.SessionRefreshed:
			b.Row(e, seenAgain, v.SessionID, e.OccurredAt, v.IP)
		case *domain.Reauthenticated:
			b.Row(e, seenAgain, v.SessionID, e.OccurredAt, v.IP)
		case *domain.SessionRevoked:
			b.Row(e, `UPDATE sessions SET revoked_at = $2 WHERE id = $1`, v.SessionID, e.OccurredAt)
		default:
			forget(b, e, d, "sessions")
		}
		return nil
	})
}
