package projections

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
)

// Users is the read model of accounts and their tenants.
type Users struct{}

func (Users) Name() string     { return "users" }
func (Users) Tables() []string { return []string{"users", "tenants"} }

// Uses lists the event types Apply acts on (Selective).
func (Users) Uses(eventType string) bool {
	switch eventType {
	case domain.TypeUserRegistered, domain.TypeRegistrationRenewed, domain.TypeEmailVerified, domain.TypeTenantCreated:
		return true
	}
	return false
}

type userRow struct {
	id, tenant     uuid.UUID
	email, name    string
	verified       bool
	created, moved time.Time
}

type userChange struct {
	name     *string
	verified bool
	at       time.Time
}

// Apply folds the batch in memory and writes it with a few set-based
// statements, so a rebuild costs a round trip per batch rather than per event.
func (Users) Apply(ctx context.Context, tx pgx.Tx, events []eventstore.Event) error {
	created := map[uuid.UUID]*userRow{}
	var order []uuid.UUID
	changed := map[uuid.UUID]*userChange{}
	var tenants []domain.TenantCreated
	var tenantsAt []time.Time
	change := func(id uuid.UUID, at time.Time) *userChange {
		c, ok := changed[id]
		if !ok {
			c = &userChange{}
			changed[id] = c
		}
		c.at = at
		return c
	}
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
		case domain.TypeRegistrationRenewed:
			v, err := decode[domain.RegistrationRenewed](e)
			if err != nil {
				return err
			}
			if r, ok := created[v.UserID]; ok {
				r.name, r.moved = v.Name, e.OccurredAt
			} else {
				change(v.UserID, e.OccurredAt).name = &v.Name
			}
		case domain.TypeEmailVerified:
			v, err := decode[domain.EmailVerified](e)
			if err != nil {
				return err
			}
			if r, ok := created[v.UserID]; ok {
				r.verified, r.moved = true, e.OccurredAt
			} else {
				change(v.UserID, e.OccurredAt).verified = true
			}
		case domain.TypeTenantCreated:
			v, err := decode[domain.TenantCreated](e)
			if err != nil {
				return err
			}
			tenants, tenantsAt = append(tenants, v), append(tenantsAt, e.OccurredAt)
		}
	}
	if err := insertUsers(ctx, tx, created, order); err != nil {
		return err
	}
	if err := updateUsers(ctx, tx, changed); err != nil {
		return err
	}
	return insertTenants(ctx, tx, tenants, tenantsAt)
}

func insertUsers(ctx context.Context, tx pgx.Tx, created map[uuid.UUID]*userRow, order []uuid.UUID) error {
	if len(order) == 0 {
		return nil
	}
	n := len(order)
	ids, tenants := make([]pgtype.UUID, n), make([]pgtype.UUID, n)
	emails, names := make([]string, n), make([]string, n)
	flags := make([]bool, n)
	createdAt, updatedAt := make([]time.Time, n), make([]time.Time, n)
	for i, id := range order {
		r := created[id]
		ids[i], tenants[i], emails[i], names[i], flags[i], createdAt[i], updatedAt[i] = pgUUID(r.id), pgUUID(r.tenant), r.email, r.name, r.verified, r.created, r.moved
	}
	if _, err := tx.Exec(ctx, `INSERT INTO users (id, tenant_id, email, name, email_verified, created_at, updated_at)
		SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bool[], $6::timestamptz[], $7::timestamptz[])`,
		ids, tenants, emails, names, flags, createdAt, updatedAt); err != nil {
		return fmt.Errorf("users: insert %d users: %w", n, err)
	}
	return nil
}

// updateUsers applies changes to users registered in earlier batches; a
// change to a user the read model does not have is an inconsistency, and
// stops the projection.
func updateUsers(ctx context.Context, tx pgx.Tx, changed map[uuid.UUID]*userChange) error {
	if len(changed) == 0 {
		return nil
	}
	n := len(changed)
	ids, at := make([]pgtype.UUID, 0, n), make([]time.Time, 0, n)
	names := make([]*string, 0, n)
	verified := make([]bool, 0, n)
	for id, c := range changed {
		ids, at, names, verified = append(ids, pgUUID(id)), append(at, c.at), append(names, c.name), append(verified, c.verified)
	}
	tag, err := tx.Exec(ctx, `UPDATE users u
		SET name = coalesce(v.name, u.name), email_verified = u.email_verified OR v.verified, updated_at = v.at
		FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::bool[]) AS v(id, at, name, verified)
		WHERE u.id = v.id`, ids, at, names, verified)
	if err != nil {
		return fmt.Errorf("users: update %d users: %w", n, err)
	}
	if tag.RowsAffected() != int64(n) {
		return fmt.Errorf("users: %d of %d changed users are unknown", int64(n)-tag.RowsAffected(), n)
	}
	return nil
}

func insertTenants(ctx context.Context, tx pgx.Tx, tenants []domain.TenantCreated, at []time.Time) error {
	if len(tenants) == 0 {
		return nil
	}
	ids, owners, names := make([]pgtype.UUID, len(tenants)), make([]pgtype.UUID, len(tenants)), make([]string, len(tenants))
	for i, t := range tenants {
		ids[i], owners[i], names[i] = pgUUID(t.TenantID), pgUUID(t.OwnerID), t.Name
	}
	if _, err := tx.Exec(ctx, `INSERT INTO tenants (id, name, owner_id, created_at)
		SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::timestamptz[])`, ids, names, owners, at); err != nil {
		return fmt.Errorf("users: insert %d tenants: %w", len(tenants), err)
	}
	return nil
}

// pgUUID hands pgx a uuid it encodes directly; a uuid.UUID goes through its
// driver.Valuer as text, which costs more than the rest of a rebuild batch.
func pgUUID(id uuid.UUID) pgtype.UUID { return pgtype.UUID{Bytes: id, Valid: true} }
