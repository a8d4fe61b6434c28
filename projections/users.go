package projections

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
)

// Users is the read model of accounts and their tenants.
type Users struct{}

func (Users) Name() string     { return "users" }
func (Users) Tables() []string { return []string{"users", "tenants"} }

// Uses lists the event types Apply acts on (Selective).
func (u Users) Uses(eventType string) bool { return slices.Contains(u.types(), eventType) }

// types are the event types Apply acts on: also those whose being past the
// checkpoint makes a user's row stale (UserReader).
func (Users) types() []string {
	return []string{domain.TypeUserRegistered, domain.TypeRegistrationRenewed, domain.TypeEmailVerified,
		domain.TypeTenantCreated, domain.TypeSignupExpired, domain.TypeProfileUpdated, domain.TypeEmailChanged,
		domain.TypeAccountDeleted}
}

type userRow struct {
	id, tenant     uuid.UUID
	email, name    string
	locale         string
	verified       bool
	created, moved time.Time
}

type userChange struct {
	name     *string
	email    *string
	locale   *string
	verified bool
	at       time.Time
}

// Apply folds the batch in memory and writes it with a few set-based
// statements, so a rebuild costs a few statements per batch rather than one
// per event.
func (u Users) Apply(b *Batch, events []eventstore.Event) error {
	created := map[uuid.UUID]*userRow{}
	var order []uuid.UUID
	changed := map[uuid.UUID]*userChange{}
	var gone []uuid.UUID   // users of earlier batches whose account ended
	var owners []uuid.UUID // deleted users whose tenants of earlier batches go
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
	err := eachUsed(u, events, func(e eventstore.Event, d domain.Event) error {
		switch v := d.(type) {
		case *domain.UserRegistered:
			if _, dup := created[v.UserID]; dup {
				return fmt.Errorf("users: user %s registered twice (event %s)", v.UserID, e.ID)
			}
			created[v.UserID] = &userRow{id: v.UserID, tenant: v.TenantID, email: v.Email, name: v.Name, created: e.OccurredAt, moved: e.OccurredAt}
			order = append(order, v.UserID)
		case *domain.RegistrationRenewed:
			if r, ok := created[v.UserID]; ok {
				r.name, r.moved = v.Name, e.OccurredAt
			} else {
				change(v.UserID, e.OccurredAt).name = &v.Name
			}
		case *domain.EmailVerified:
			if r, ok := created[v.UserID]; ok {
				r.verified, r.moved = true, e.OccurredAt
			} else {
				change(v.UserID, e.OccurredAt).verified = true
			}
		case *domain.ProfileUpdated:
			if r, ok := created[v.UserID]; ok {
				r.name, r.locale, r.moved = deref(v.Name, r.name), deref(v.Locale, r.locale), e.OccurredAt
			} else {
				c := change(v.UserID, e.OccurredAt)
				c.name, c.locale = cmp.Or(v.Name, c.name), cmp.Or(v.Locale, c.locale)
			}
		case *domain.EmailChanged:
			if r, ok := created[v.UserID]; ok {
				r.email, r.verified, r.moved = v.NewEmail, true, e.OccurredAt
			} else {
				c := change(v.UserID, e.OccurredAt)
				c.email, c.verified = &v.NewEmail, true
			}
		case *domain.TenantCreated:
			tenants, tenantsAt = append(tenants, *v), append(tenantsAt, e.OccurredAt)
		case *domain.SignupExpired, *domain.AccountDeleted:
			// The account is gone: its row goes, with the email and name in
			// it, and so do the tenants it owns, which may be named after it.
			id, _ := endedUser(d)
			if _, ok := created[id]; ok {
				delete(created, id)
				order = slices.DeleteFunc(order, func(u uuid.UUID) bool { return u == id })
			} else {
				delete(changed, id)
				gone = append(gone, id)
			}
			for i := len(tenants) - 1; i >= 0; i-- {
				if tenants[i].OwnerID == id {
					tenants, tenantsAt = slices.Delete(tenants, i, i+1), slices.Delete(tenantsAt, i, i+1)
				}
			}
			owners = append(owners, id)
		}
		return nil
	})
	if err != nil {
		return err
	}
	insertUsers(b, created, order)
	updateUsers(b, changed)
	deleteUsers(b, gone)
	insertTenants(b, tenants, tenantsAt)
	deleteTenants(b, owners)
	return nil
}

func insertUsers(b *Batch, created map[uuid.UUID]*userRow, order []uuid.UUID) {
	if len(order) == 0 {
		return
	}
	n := len(order)
	ids, tenants := make([]pgtype.UUID, n), make([]pgtype.UUID, n)
	emails, names, locales := make([]string, n), make([]string, n), make([]string, n)
	flags := make([]bool, n)
	createdAt, updatedAt := make([]time.Time, n), make([]time.Time, n)
	for i, id := range order {
		r := created[id]
		ids[i], tenants[i], emails[i], names[i], flags[i], createdAt[i], updatedAt[i] = pgUUID(r.id), pgUUID(r.tenant), r.email, r.name, r.verified, r.created, r.moved
		locales[i] = r.locale
	}
	b.Rows(fmt.Sprintf("insert %d users", n), n, `INSERT INTO users (id, tenant_id, email, name, email_verified, created_at, updated_at, locale)
		SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bool[], $6::timestamptz[], $7::timestamptz[], $8::text[])`,
		ids, tenants, emails, names, flags, createdAt, updatedAt, locales)
}

// updateUsers applies changes to users registered in earlier batches; a
// change to a user the read model does not have is an inconsistency, and
// stops the projection.
func updateUsers(b *Batch, changed map[uuid.UUID]*userChange) {
	if len(changed) == 0 {
		return
	}
	n := len(changed)
	ids, at := make([]pgtype.UUID, 0, n), make([]time.Time, 0, n)
	names, emails, locales := make([]*string, 0, n), make([]*string, 0, n), make([]*string, 0, n)
	verified := make([]bool, 0, n)
	for id, c := range changed {
		ids, at, names, verified = append(ids, pgUUID(id)), append(at, c.at), append(names, c.name), append(verified, c.verified)
		emails, locales = append(emails, c.email), append(locales, c.locale)
	}
	b.Rows(fmt.Sprintf("update %d users", n), n, `UPDATE users u
		SET name = coalesce(v.name, u.name), email_verified = u.email_verified OR v.verified, updated_at = v.at,
			email = coalesce(v.email, u.email), locale = coalesce(v.locale, u.locale)
		FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::bool[], $5::text[], $6::text[]) AS v(id, at, name, verified, email, locale)
		WHERE u.id = v.id`, ids, at, names, verified, emails, locales)
}

// deleteUsers removes the rows of users registered in earlier batches.
func deleteUsers(b *Batch, gone []uuid.UUID) {
	if len(gone) == 0 {
		return
	}
	ids := make([]pgtype.UUID, len(gone))
	for i, id := range gone {
		ids[i] = pgUUID(id)
	}
	b.Rows(fmt.Sprintf("delete %d ended accounts", len(gone)), len(gone), `DELETE FROM users WHERE id = ANY($1::uuid[])`, ids)
}

// deleteTenants removes the tenants of earlier batches that the users owned.
func deleteTenants(b *Batch, owners []uuid.UUID) {
	if len(owners) == 0 {
		return
	}
	ids := make([]pgtype.UUID, len(owners))
	for i, id := range owners {
		ids[i] = pgUUID(id)
	}
	b.Any(fmt.Sprintf("delete the tenants of %d ended accounts", len(owners)), `DELETE FROM tenants WHERE owner_id = ANY($1::uuid[])`, ids)
}

func insertTenants(b *Batch, tenants []domain.TenantCreated, at []time.Time) {
	if len(tenants) == 0 {
		return
	}
	ids, owners, names := make([]pgtype.UUID, len(tenants)), make([]pgtype.UUID, len(tenants)), make([]string, len(tenants))
	for i, t := range tenants {
		ids[i], owners[i], names[i] = pgUUID(t.TenantID), pgUUID(t.OwnerID), t.Name
	}
	b.Rows(fmt.Sprintf("insert %d tenants", len(tenants)), len(tenants), `INSERT INTO tenants (id, name, owner_id, created_at)
		SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::timestamptz[])`, ids, names, owners, at)
}

// deref is *p, or else when p is nil (a field an event leaves as it was).
func deref(p *string, otherwise string) string {
	if p == nil {
		return otherwise
	}
	return *p
}

// pgUUID hands pgx a uuid it encodes directly; a uuid.UUID goes through its
// driver.Valuer as text, which costs more than the rest of a rebuild batch.
func pgUUID(id uuid.UUID) pgtype.UUID { return pgtype.UUID{Bytes: id, Valid: true} }
