package domain

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
)

// Verifying an email decides both of its events: the user's EmailVerified
// and the TenantCreated of the tenant the signup named, or, unnamed, one
// named after the user. A verified user decides nothing: its tenant exists.
func TestVerifyCreatesTheSignupsTenantOnce(t *testing.T) {
	id, tenant := uuid.New(), uuid.New()
	for _, c := range []struct {
		named, want string
	}{
		{"Acme", "Acme"},
		{"", "Ada's organization"},
	} {
		u := &User{}
		u.Apply(&UserRegistered{UserID: id, TenantID: tenant, TenantName: c.named, Email: "ada@example.com", Name: "Ada"}, time.Now())
		events, created := u.Verify()
		if len(events) != 1 || created == nil {
			t.Fatalf("verifying a pending signup decided %v and %v; want EmailVerified and TenantCreated", events, created)
		}
		if v, ok := events[0].(*EmailVerified); !ok || v.UserID != id {
			t.Errorf("the user's event is %#v, want EmailVerified of %s", events[0], id)
		}
		if *created != (TenantCreated{TenantID: tenant, Name: c.want, OwnerID: id}) {
			t.Errorf("tenant named %q: created %+v, want %q owned by the user", c.named, *created, c.want)
		}
		u.Apply(events[0], time.Now())
		if again, tenant := u.Verify(); again != nil || tenant != nil {
			t.Errorf("verifying a verified user decided %v and %v; want nothing", again, tenant)
		}
	}
}

// Deleting an account decides AccountDeleted with ids only; the account then
// loads as gone, and deleting it again decides nothing.
func TestDeleteEndsTheAccount(t *testing.T) {
	id, tenant := uuid.New(), uuid.New()
	u := &User{}
	u.Apply(&UserRegistered{UserID: id, TenantID: tenant, Email: "ada@example.com", Name: "Ada"}, time.Now())
	u.Apply(&EmailVerified{UserID: id}, time.Now())
	events, err := u.Delete()
	if err != nil || len(events) != 1 {
		t.Fatalf("Delete() = %v, %v; want one event", events, err)
	}
	if d, ok := events[0].(*AccountDeleted); !ok || *d != (AccountDeleted{UserID: id, TenantID: tenant}) {
		t.Fatalf("decided %#v, want AccountDeleted of the user and tenant", events[0])
	}
	u.Apply(events[0], time.Now())
	if u.Exists() {
		t.Error("a deleted account still exists")
	}
	if again, err := u.Delete(); !errors.Is(err, ErrAccountGone) || again != nil {
		t.Errorf("deleting a deleted account decided %v, %v; want ErrAccountGone", again, err)
	}
}
