package projections_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/testenv"
	"github.com/authd/authd/projections"
)

// An account that ends (deleted, or a signup that expired) leaves no row in
// any read model, whether its end comes in the batch of its rows or in a
// later one; another account's rows stay.
func TestEveryReadModelForgetsAnAccountThatEnds(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	store := eventstore.NewStore(pool, testenv.Sealer(t), nil)
	ctx := context.Background()
	deleted, expired, kept := uuid.New(), uuid.New(), uuid.New()
	total := 0
	appendTo := func(stream string, user uuid.UUID, events ...domain.Event) {
		t.Helper()
		out := make([]eventstore.Event, len(events))
		for i, d := range events {
			e, err := eventstore.Encode(d)
			if err != nil {
				t.Fatal(err)
			}
			e.UserID, e.OccurredAt = user, time.Now()
			e.Metadata = eventstore.Metadata{IP: "203.0.113.7", UserAgent: "Firefox"}
			out[i] = e
		}
		if _, err := store.Append(ctx, stream, eventstore.AnyVersion, out...); err != nil {
			t.Fatal(err)
		}
		total += len(events)
	}
	for _, id := range []uuid.UUID{deleted, kept} {
		tenant, session := uuid.New(), uuid.New()
		appendTo(domain.UserStream(id), id,
			&domain.UserRegistered{UserID: id, TenantID: tenant, Email: id.String() + "@example.com", Name: "Ada"},
			&domain.EmailVerified{UserID: id},
			&domain.PasskeyAdded{PasskeyID: uuid.New(), UserID: id, Name: "Phone", AAGUID: uuid.New(), CreatedAt: time.Now()})
		appendTo(domain.TenantStream(tenant), id, &domain.TenantCreated{TenantID: tenant, Name: "Ada's organization", OwnerID: id})
		appendTo(domain.SessionStream(session), id,
			&domain.SessionStarted{SessionID: session, UserID: id, TenantID: tenant, AMR: []string{"pwd"},
				Client: domain.Client{IP: "203.0.113.7", UserAgent: "Firefox", Device: "Firefox on Linux"}},
			&domain.SessionRevoked{SessionID: session, UserID: id, Reason: domain.RevokedByErasure})
		appendTo(domain.TwoFactorStream(id), id, &domain.TotpEnabled{UserID: id, Step: 1, BackupCodes: 10})
	}
	appendTo(domain.UserStream(deleted), deleted, &domain.AccountDeleted{UserID: deleted})
	appendTo(domain.UserStream(expired), expired,
		&domain.UserRegistered{UserID: expired, TenantID: uuid.New(), Email: "pending@example.com", Name: "Bo"},
		&domain.SignupExpired{UserID: expired})

	// The log is read below the oldest transaction still open on the
	// server (any database's): wait until it shows every event.
	deadline := time.Now().Add(30 * time.Second)
	for {
		events, err := store.ReadLog(ctx, eventstore.Cursor{}, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(events) == total {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the log shows %d of the %d events after 30s", len(events), total)
		}
		time.Sleep(20 * time.Millisecond)
	}
	tables := map[string]string{"users": "id", "tenants": "owner_id", "sessions": "user_id", "two_factor": "user_id",
		"passkeys": "user_id", "activity": "user_id"}
	// Batches of one put each end after the batches of its rows; one batch
	// has them all together.
	for _, batch := range []int{1, 1000} {
		for _, p := range projections.All() {
			if _, err := projections.Rebuild(ctx, pool, store, p, batch, nil); err != nil {
				t.Fatalf("rebuild %s in batches of %d: %v", p.Name(), batch, err)
			}
		}
		for table, column := range tables {
			for _, id := range []uuid.UUID{deleted, expired} {
				var n int
				if err := pool.QueryRow(ctx, `SELECT count(*) FROM `+table+` WHERE `+column+` = $1`, id).Scan(&n); err != nil {
					t.Fatal(err)
				}
				if n != 0 {
					t.Errorf("batches of %d: %s holds %d rows of an account that ended", batch, table, n)
				}
			}
			var n int
			if err := pool.QueryRow(ctx, `SELECT count(*) FROM `+table+` WHERE `+column+` = $1`, kept).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				t.Errorf("batches of %d: %s lost the rows of an account that lives", batch, table)
			}
		}
	}
}
