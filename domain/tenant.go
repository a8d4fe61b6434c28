package domain

import "github.com/google/uuid"

// TypeTenantCreated is the event type that starts a tenant's stream (see Kinds).
const TypeTenantCreated = "TenantCreated"

// TenantStream names a tenant's stream.
func TenantStream(id uuid.UUID) string { return "tenant-" + id.String() }

// TenantCreated creates an organization; its owner is the user who signed up.
type TenantCreated struct {
	TenantID uuid.UUID `json:"tenant_id"`
	Name     string    `json:"name" personal:"true"`
	OwnerID  uuid.UUID `json:"owner_id"`
}

// DefaultTenantName names the organization of a user who gave none.
func DefaultTenantName(name, email string) string {
	if name != "" {
		return name + "'s organization"
	}
	return email + "'s organization"
}
