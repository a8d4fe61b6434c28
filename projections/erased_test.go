package projections

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/testenv"
)

// An erased user's events apply as they come, their personal fields empty:
// every projection rebuilds from them, and none of its tables holds any of
// the user's personal data afterwards (API.md, "Erasure": no trace beyond
// ids).
func TestEveryProjectionRebuildsFromErasedEvents(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	store := eventstore.NewStore(pool, testenv.Sealer(t), nil)
	ctx := context.Background()
	user, tenant, session, key := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	const email, newEmail, ip, agent = "grace@example.com", "hopper@example.com", "192.0.2.91", "Erased-Agent/1.0"
	name := "Grace Hopper"
	client := domain.Client{IP: ip, UserAgent: agent, Device: "Erased Device"}
	appended := 0
	add := func(stream string, events ...domain.Event) {
		t.Helper()
		out := make([]eventstore.Event, len(events))
		for i, e := range events {
			enc, err := eventstore.Encode(e)
			if err != nil {
				t.Fatal(err)
			}
			enc.UserID, enc.TenantID = user, tenant
			enc.Metadata = eventstore.Metadata{IP: ip, UserAgent: agent, RequestID: "r"}
			out[i] = enc
		}
		if _, err := store.Append(ctx, stream, 0, out...); err != nil {
			t.Fatal(err)
		}
		appended += len(out)
	}
	now := time.Now().UTC()
	add(domain.UserStream(user),
		&domain.UserRegistered{UserID: user, TenantID: tenant, TenantName: name + " Inc", Email: email, Name: name},
		&domain.EmailVerified{UserID: user},
		&domain.ProfileUpdated{UserID: user, Name: &name},
		&domain.PasskeyAdded{PasskeyID: key, UserID: user, Name: name + "'s key", CreatedAt: now},
		&domain.PasskeyRenamed{PasskeyID: key, UserID: user, Name: name + "'s laptop"},
		&domain.EmailChanged{UserID: user, OldEmail: email, NewEmail: newEmail})
	add(domain.TenantStream(tenant), &domain.TenantCreated{TenantID: tenant, Name: name + " Inc", OwnerID: user})
	add(domain.SessionStream(session),
		&domain.SessionStarted{SessionID: session, UserID: user, TenantID: tenant, AMR: []string{"pwd"}, Client: client},
		&domain.LoginSucceeded{UserID: user, SessionID: session, AMR: []string{"pwd"}},
		&domain.SessionRefreshed{SessionID: session, Generation: 1, Client: client})
	if _, err := store.Write(ctx, eventstore.Change{Also: []eventstore.Statement{eventstore.Shred(user)}}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		events, err := store.ReadLog(ctx, eventstore.Cursor{}, 100)
		return err == nil && len(events) == appended
	})

	for _, p := range All() {
		if _, err := Rebuild(ctx, pool, store, p, 4, nil); err != nil {
			t.Fatalf("rebuild %s from erased events: %v", p.Name(), err)
		}
		for _, table := range p.Tables() {
			var rows string
			if err := pool.QueryRow(ctx, `SELECT coalesce(string_agg(t::text, ' '), '') FROM `+pgx.Identifier{table}.Sanitize()+` t`).Scan(&rows); err != nil {
				t.Fatal(err)
			}
			for _, personal := range []string{email, newEmail, "Grace", "Hopper", ip, agent, "Erased Device"} {
				if strings.Contains(rows, personal) {
					t.Errorf("%s.%s holds %q after a rebuild from erased events: %s", p.Name(), table, personal, rows)
				}
			}
			if table == "users" && !strings.Contains(rows, user.String()) {
				t.Errorf("users lost the erased user's row (ids stay until the account is deleted): %s", rows)
			}
		}
	}
}
