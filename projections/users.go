package projections

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
)

// Users is the read model of accounts: who exists, in which tenant, verified or not.
type Users struct{}

func (Users) Name() string     { return "users" }
func (Users) Tables() []string { return []string{"users"} }

type userRow struct {
	id, tenant     uuid.UUID
	email, name    string
	verified       bool
	created, moved time.Time
}

// Apply folds the batch in memory and writes it with two statements, so a
// rebuild costs a round trip per batch rather than per event.
func (Users) Apply(ctx context.Context, tx pgx.Tx, events []eventstore.Event) error {
	created := map[uuid.UUID]*userRow{}
	var order []uuid.UUID
	verified := map[uuid.UUID]time.Time{}
	for _, e := range events {
		switch e.Type {
		case domain.TypeUserRegistered:
			v, err := decode[domain.UserRegistered](e)
			if err != nil {
				return err
			}
			if _, dup := created[v.UserID]; dup {
				return fmt.Errorf("users: user %s registered twice (event %s)", v.UserID, e.ID)
			}
			created[v.UserID] = &userRow{id: v.UserID, tenant: v.TenantID, email: v.Email, name: v.Name, created: e.OccurredAt, moved: e.OccurredAt}
			order = append(order, v.UserID)
		case domain.TypeEmailVerified:
			v, err := decode[domain.EmailVerified](e)
			if err != nil {
				return err
			}
			if r, ok := created[v.UserID]; ok {
				r.verified, r.moved = true, e.OccurredAt
			} else {
				verified[v.UserID] = e.OccurredAt
			}
		}
	}
	if len(order) > 0 {
		n := len(order)
		ids, tenants := make([]uuid.UUID, n), make([]uuid.UUID, n)
		emails, names := make([]string, n), make([]string, n)
		flags := make([]bool, n)
		createdAt, updatedAt := make([]time.Time, n), make([]time.Time, n)
		for i, id := range order {
			r := created[id]
			ids[i], tenants[i], emails[i], names[i], flags[i], createdAt[i], updatedAt[i] = r.id, r.tenant, r.email, r.name, r.verified, r.created, r.moved
		}
		if _, err := tx.Exec(ctx, `INSERT INTO users (id, tenant_id, email, name, email_verified, created_at, updated_at)
			SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bool[], $6::timestamptz[], $7::timestamptz[])`,
			ids, tenants, emails, names, flags, createdAt, updatedAt); err != nil {
			return fmt.Errorf("users: insert %d users: %w", n, err)
		}
	}
	if len(verified) > 0 {
		ids, at := make([]uuid.UUID, 0, len(verified)), make([]time.Time, 0, len(verified))
		for id, t := range verified {
			ids, at = append(ids, id), append(at, t)
		}
		tag, err := tx.Exec(ctx, `UPDATE users u SET email_verified = true, updated_at = v.at
			FROM unnest($1::uuid[], $2::timestamptz[]) AS v(id, at) WHERE u.id = v.id`, ids, at)
		if err != nil {
			return fmt.Errorf("users: mark %d verified: %w", len(ids), err)
		}
		if tag.RowsAffected() != int64(len(ids)) {
			return fmt.Errorf("users: %d of %d verified users are unknown", int64(len(ids))-tag.RowsAffected(), len(ids))
		}
	}
	return nil
}
