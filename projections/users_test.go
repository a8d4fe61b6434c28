package projections_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/testenv"
	"github.com/authd/authd/projections"
)

// A signup that expired leaves no row in the users read model, whether its
// SignupExpired comes in the batch that registered it or in a later one.
func TestUsersProjectionDropsExpiredSignups(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	store := eventstore.NewStore(pool, testenv.Sealer(t), nil)
	ctx := context.Background()
	expired, kept, renewedThenExpired := uuid.New(), uuid.New(), uuid.New()
	for _, id := range []uuid.UUID{expired, kept, renewedThenExpired} {
		if _, err := store.Append(ctx, domain.UserStream(id), 0, registration(id, uuid.New())); err != nil {
			t.Fatal(err)
		}
	}
	renewed, err := eventstore.Encode(&domain.RegistrationRenewed{UserID: renewedThenExpired, Name: "Again"})
	if err != nil {
		t.Fatal(err)
	}
	renewed.UserID = renewedThenExpired
	if _, err := store.Append(ctx, domain.UserStream(renewedThenExpired), 1, renewed); err != nil {
		t.Fatal(err)
	}
	for id, version := range map[uuid.UUID]int64{expired: 1, renewedThenExpired: 2} {
		e, err := eventstore.Encode(&domain.SignupExpired{UserID: id})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.Append(ctx, domain.UserStream(id), version, e); err != nil {
			t.Fatal(err)
		}
	}
	// The log is read below the oldest transaction still open on the server
	// (any database's): wait until it shows the six events.
	deadline := time.Now().Add(30 * time.Second)
	for {
		events, err := store.ReadLog(ctx, eventstore.Cursor{}, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(events) == 6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the log shows %d of the 6 events after 30s", len(events))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Batches of one event put each SignupExpired after the batch of its
	// user's row; one batch has them all together.
	for _, batch := range []int{1, 1000} {
		if _, err := projections.Rebuild(ctx, pool, store, projections.Users{}, batch, nil); err != nil {
			t.Fatalf("rebuild in batches of %d: %v", batch, err)
		}
		var ids []uuid.UUID
		rows, err := pool.Query(ctx, `SELECT id FROM users`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id uuid.UUID
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		if rows.Err() != nil {
			t.Fatal(rows.Err())
		}
		if !slices.Equal(ids, []uuid.UUID{kept}) {
			t.Errorf("batches of %d: users %v, want only %v", batch, ids, kept)
		}
	}
}
