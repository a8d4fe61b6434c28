package projections

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
)

// Passkeys is the read model behind GET /passkey/list: each passkey's name,
// when it was added and when it last signed in. It sees only the public part
// of the events; the credential records stay on the write side.
type Passkeys struct{}

func (Passkeys) Name() string     { return "passkeys" }
func (Passkeys) Tables() []string { return []string{"passkeys"} }

// Uses lists the event types Apply acts on (Selective).
func (pk Passkeys) Uses(eventType string) bool {
	return slices.Contains(pk.types(), eventType) || ends(eventType)
}

// types are the event types Apply acts on: also those whose being past the
// checkpoint makes a user's passkey list stale (UserPasskeys).
func (Passkeys) types() []string {
	return []string{domain.TypePasskeyAdded, domain.TypePasskeyRenamed, domain.TypePasskeyUsed, domain.TypePasskeyRemoved}
}

// Apply queues one statement per passkey event, each of which must touch
// exactly one row.
func (pk Passkeys) Apply(b *Batch, events []eventstore.Event) error {
	return eachUsed(pk, events, func(e eventstore.Event, d domain.Event) error {
		switch v := d.(type) {
		case *domain.PasskeyAdded:
			created := v.CreatedAt
			if created.IsZero() {
				created = e.OccurredAt
			}
			b.Row(e, `INSERT INTO passkeys (id, user_id, name, aaguid, created_at) VALUES ($1, $2, $3, $4, $5)`,
				v.PasskeyID, v.UserID, v.Name, v.AAGUID, created)
		case *domain.PasskeyRenamed:
			b.Row(e, `UPDATE passkeys SET name = $2 WHERE id = $1`, v.PasskeyID, v.Name)
		case *domain.PasskeyUsed:
			b.Row(e, `UPDATE passkeys SET last_used_at = $2 WHERE id = $1`, v.PasskeyID, e.OccurredAt)
		case *domain.PasskeyRemoved:
			b.Row(e, `DELETE FROM passkeys WHERE id = $1`, v.PasskeyID)
		default:
			forget(b, e, d, "passkeys")
		}
		return nil
	})
}

// PasskeyView is a passkey as GET /passkey/list shows it.
type PasskeyView struct {
	ID         uuid.UUID  `json:"id"`
	Name       string     `json:"name"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
}

// UserPasskeys lists a user's passkeys, oldest first; ErrBehind when the
// user's stream holds a passkey change the read model has not applied yet.
func UserPasskeys(ctx context.Context, q Querier, userID uuid.UUID) ([]PasskeyView, error) {
	var behind bool
	if err := q.QueryRow(ctx, `SELECT `+behindSQL("$1", "$2", "$3"),
		domain.UserStream(userID), Passkeys{}.Name(), Passkeys{}.types()).Scan(&behind); err != nil {
		return nil, fmt.Errorf("passkeys of %s behind the log: %w", userID, err)
	}
	if behind {
		return nil, ErrBehind
	}
	rows, err := q.Query(ctx, `SELECT id, name, created_at, last_used_at FROM passkeys
		WHERE user_id = $1 ORDER BY created_at, id`, userID)
	if err != nil {
		return nil, fmt.Errorf("list passkeys of %s: %w", userID, err)
	}
	defer rows.Close()
	out := []PasskeyView{}
	for rows.Next() {
		var p PasskeyView
		if err := rows.Scan(&p.ID, &p.Name, &p.CreatedAt, &p.LastUsedAt); err != nil {
			return nil, fmt.Errorf("list passkeys of %s: %w", userID, err)
		}
		p.CreatedAt = p.CreatedAt.UTC()
		if p.LastUsedAt != nil {
			t := p.LastUsedAt.UTC()
			p.LastUsedAt = &t
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list passkeys of %s: %w", userID, err)
	}
	return out, nil
}
