package commands

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/domain"
)

// Events a change records for an aggregate are applied to it as they are
// recorded: a second decision in the same change appends at the version the
// first left, with no version counted by hand, and the aggregate shows what
// the log holds once committed.
func TestARecordedEventIsAppliedToItsAggregate(t *testing.T) {
	t.Parallel()
	a, _ := tracedApp(t)
	ctx := t.Context()
	id, tenant := uuid.New(), uuid.New()
	c := a.newChange(Request{})
	if err := c.record(&domain.User{}, domain.UserStream(id), tenant, id,
		&domain.UserRegistered{UserID: id, TenantID: tenant, Email: "pending@example.com"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.commit(ctx, c); err != nil {
		t.Fatal(err)
	}

	u, err := a.loadUser(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	// A reset of a pending account verifies it too: two records for the
	// user in one change, as ResetPassword makes them.
	c = a.newChange(Request{})
	if err := c.record(u, domain.UserStream(id), tenant, id, &domain.PasswordReset{UserID: id, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := verifyEmail(c, u); err != nil {
		t.Fatal(err)
	}
	if _, err := a.commit(ctx, c); err != nil {
		t.Fatalf("committing two records for one user: %v", err)
	}

	stored, err := a.loadUser(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if u.Version != stored.Version || u.EmailVerified != stored.EmailVerified || !u.EmailVerified {
		t.Errorf("after the commit the user recorded for is at version %d (verified %v); the log has it at %d (verified %v)",
			u.Version, u.EmailVerified, stored.Version, stored.EmailVerified)
	}
}
