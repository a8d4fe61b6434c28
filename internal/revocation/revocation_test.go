package revocation

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/testenv"
)

func TestLoadCutsTheUsersOfRecentPasswordResets(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	ctx := context.Background()
	store := eventstore.NewStore(pool, testenv.Sealer(t), nil)
	now := time.Now().UTC().Truncate(time.Second)
	reset := func(user uuid.UUID, at time.Time) {
		data, err := json.Marshal(domain.PasswordReset{UserID: user, At: at})
		if err != nil {
			t.Fatal(err)
		}
		e := eventstore.Event{Type: domain.TypePasswordReset, Data: data, UserID: user, OccurredAt: at}
		if _, err := store.Append(ctx, domain.UserStream(user), eventstore.AnyVersion, e); err != nil {
			t.Fatal(err)
		}
	}
	recent, old, other := uuid.New(), uuid.New(), uuid.New()
	reset(recent, now.Add(-time.Hour))
	reset(old, now.Add(-3*domain.AccessTokenTTL))
	verified := eventstore.Event{Type: domain.TypeEmailVerified, Data: json.RawMessage(`{}`), UserID: other, OccurredAt: now}
	if _, err := store.Append(ctx, domain.UserStream(other), eventstore.AnyVersion, verified); err != nil {
		t.Fatal(err)
	}

	s := New(func() time.Time { return now })
	if err := s.Load(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if s.Allows(uuid.New(), recent, now.Add(-2*time.Hour)) {
		t.Error("a token issued before a recent password reset is allowed")
	}
	if !s.Allows(uuid.New(), recent, now.Add(-time.Minute)) {
		t.Error("a token issued after the reset is refused")
	}
	if !s.Allows(uuid.New(), other, now.Add(-time.Hour)) {
		t.Error("a user with no reset is cut")
	}
	if len(s.users) != 1 {
		t.Errorf("loaded %d users' cuts, want only the reset within a token's life", len(s.users))
	}

}

// A deleted account's tokens are refused whenever they were issued, the
// same second as the deletion included, and so is every session's refresh
// (UserCut after all of them); an instance that starts later learns it from
// the log, since the sessions read model forgets the account's sessions.
func TestLoadRefusesEveryTokenOfARecentlyDeletedAccount(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	ctx := context.Background()
	store := eventstore.NewStore(pool, testenv.Sealer(t), nil)
	now := time.Now().UTC().Truncate(time.Second)
	gone, other := uuid.New(), uuid.New()
	data, err := json.Marshal(domain.AccountDeleted{UserID: gone, TenantID: uuid.New()})
	if err != nil {
		t.Fatal(err)
	}
	e := eventstore.Event{Type: domain.TypeAccountDeleted, Data: data, UserID: gone, OccurredAt: now.Add(-time.Hour)}
	if _, err := store.Append(ctx, domain.UserStream(gone), eventstore.AnyVersion, e); err != nil {
		t.Fatal(err)
	}

	s := New(func() time.Time { return now })
	if err := s.Load(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if s.Allows(uuid.New(), gone, now) {
		t.Error("a token of a deleted account, issued after the deletion, is allowed")
	}
	if !s.UserCut(gone).After(now.Add(domain.AccessTokenTTL)) {
		t.Errorf("the deleted account's cut is %v: a session started before the deletion may refresh", s.UserCut(gone))
	}
	if !s.Allows(uuid.New(), other, now) {
		t.Error("another user's token is refused")
	}
}
