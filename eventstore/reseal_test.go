package eventstore

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/internal/seal"
	"github.com/authd/authd/internal/testenv"
)

// masterKeys are two distinct master keys, old and new.
// sealedUser appends a registration of a new user, with personal fields and
// a secret, and returns the user.
func sealedUser(t *testing.T, s *Store) uuid.UUID {
	t.Helper()
	user := uuid.New()
	e := owned(t, registered(user), user)
	e.Secret = json.RawMessage(`{"totp":"` + user.String() + `"}`)
	if _, err := s.Append(context.Background(), domain.UserStream(user), 0, e); err != nil {
		t.Fatal(err)
	}
	return user
}

// kidsOf counts the rows of user_keys and the events' secrets by seal key
// id ("" for a tombstone).
func kidsOf(t *testing.T, pool *pgxpool.Pool) map[string]int {
	t.Helper()
	rows, err := pool.Query(context.Background(), `
		SELECT 'user_keys:' || coalesce(kid, ''), count(*) FROM user_keys GROUP BY 1
		UNION ALL SELECT 'events:' || sealed_kid, count(*) FROM events WHERE sealed IS NOT NULL GROUP BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for rows.Next() {
		var k string
		var n int
		if err := rows.Scan(&k, &n); err != nil {
			t.Fatal(err)
		}
		out[k] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// After a rotation (new key first), Reseal moves every data key and secret
// to the new key, across several batches, and a store holding only the
// new key reads every event as it was; a tombstone stays one, a dry run
// writes nothing, and a second run has nothing to do.
func TestResealMovesDataKeysAndSecretsToTheFirstKey(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	ctx := context.Background()
	keys := testenv.Rotation(t)
	old, new, sealerOld, sealerNewOld, sealerNew := keys.Old, keys.New, keys.Before, keys.Rotated, keys.After
	before := NewStore(pool, sealerOld, nil)
	var users []uuid.UUID
	for range 5 {
		users = append(users, sealedUser(t, before))
	}
	erased := users[4]
	if _, err := before.Write(ctx, Change{Also: []Statement{Shred(erased)}}); err != nil {
		t.Fatal(err)
	}
	oldKID, newKID := seal.KeyID(old), seal.KeyID(new)
	want := map[string]int{"user_keys:" + oldKID: 4, "user_keys:": 1, "events:" + oldKID: 5}
	if got := kidsOf(t, pool); !equalCounts(got, want) {
		t.Fatalf("before: %v, want %v", got, want)
	}

	rotated := NewStore(pool, sealerNewOld, nil)
	dry, err := rotated.Reseal(ctx, seal.ResealOptions{Batch: 2, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if r := testenv.ResealReport(t, dry, "user_keys"); r.Left != 4 || r.Resealed != 0 {
		t.Errorf("dry run, user_keys: %+v", r)
	}
	if r := testenv.ResealReport(t, dry, "events"); r.Left != 5 || r.Resealed != 0 {
		t.Errorf("dry run, events: %+v", r)
	}
	if got := kidsOf(t, pool); !equalCounts(got, want) {
		t.Fatalf("a dry run changed the rows: %v", got)
	}

	reports, err := rotated.Reseal(ctx, seal.ResealOptions{Batch: 2})
	if err != nil {
		t.Fatal(err)
	}
	if r := testenv.ResealReport(t, reports, "user_keys"); r.Resealed != 4 || r.Left != 0 || r.Failed != 0 {
		t.Errorf("user_keys: %+v, want 4 re-sealed", r)
	}
	if r := testenv.ResealReport(t, reports, "events"); r.Resealed != 5 || r.Left != 0 || r.Failed != 0 {
		t.Errorf("events: %+v, want 5 re-sealed", r)
	}
	want = map[string]int{"user_keys:" + newKID: 4, "user_keys:": 1, "events:" + newKID: 5}
	if got := kidsOf(t, pool); !equalCounts(got, want) {
		t.Fatalf("after: %v, want %v", got, want)
	}
	var tombstone bool
	if err := pool.QueryRow(ctx, `SELECT kid IS NULL AND sealed_key IS NULL AND erased_at IS NOT NULL FROM user_keys WHERE user_id = $1`, erased).Scan(&tombstone); err != nil || !tombstone {
		t.Fatalf("the erased user's row is no longer a tombstone (%v)", err)
	}

	after := NewStore(pool, sealerNew, nil)
	for _, user := range users {
		events, err := after.Load(ctx, domain.UserStream(user))
		if err != nil {
			t.Fatalf("a store holding only the new key: %v", err)
		}
		e := events[0]
		if string(e.Secret) != `{"totp":"`+user.String()+`"}` {
			t.Errorf("user %s: secret %s", user, e.Secret)
		}
		if user == erased {
			if !e.Erased || e.Metadata.IP != "" {
				t.Errorf("erased user %s: erased %v, ip %q", user, e.Erased, e.Metadata.IP)
			}
			continue
		}
		if e.Erased || e.Metadata.IP != sealIP || e.Metadata.UserAgent != sealAgent {
			t.Errorf("user %s: erased %v, metadata %+v", user, e.Erased, e.Metadata)
		}
		got, err := Decode(e)
		if err != nil {
			t.Fatal(err)
		}
		if r := got.(*domain.UserRegistered); r.Email != sealEmail || r.Name != sealName {
			t.Errorf("user %s: registration opens to %+v", user, r)
		}
	}

	again, err := rotated.Reseal(ctx, seal.ResealOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range again {
		if r.Resealed != 0 || r.Left != 0 || r.Changed != 0 {
			t.Errorf("second run: %+v, want nothing to do", r)
		}
	}
}

func equalCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// An erasure committed between Reseal's read of a data key and its update
// wins: the row stays a tombstone, and the report says the row changed.
func TestResealNeverUndoesAConcurrentErasure(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	ctx := context.Background()
	keys := testenv.Rotation(t)
	sealerOld, sealerNewOld := keys.Before, keys.Rotated
	user := sealedUser(t, NewStore(pool, sealerOld, nil))
	rotated := NewStore(pool, sealerNewOld, nil)
	table := rotated.userKeysTable()
	swap := table.Swap
	table.Swap = func(ctx context.Context, rows []seal.ResealRow[uuid.UUID]) ([]uuid.UUID, error) {
		if _, err := rotated.Write(ctx, Change{Also: []Statement{Shred(user)}}); err != nil {
			t.Fatal(err)
		}
		return swap(ctx, rows)
	}
	r, err := seal.Reseal(ctx, sealerNewOld, table, seal.ResealOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Resealed != 0 || r.Changed != 1 || r.Left != 0 {
		t.Errorf("report %+v, want 1 changed, none re-sealed or left", r)
	}
	var tombstone bool
	if err := pool.QueryRow(ctx, `SELECT kid IS NULL AND sealed_key IS NULL AND erased_at IS NOT NULL FROM user_keys WHERE user_id = $1`, user).Scan(&tombstone); err != nil || !tombstone {
		t.Fatalf("the erasure was undone (%v)", err)
	}
}

// A secret changed between Reseal's read and its update (here sealed anew
// under the old key, as a second process would) is not overwritten: the
// update compares the whole sealed value, and the row is reported left.
func TestResealLeavesASecretChangedMeanwhile(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	ctx := context.Background()
	keys := testenv.Rotation(t)
	sealerOld, sealerNewOld := keys.Before, keys.Rotated
	user := sealedUser(t, NewStore(pool, sealerOld, nil))
	var id uuid.UUID
	var box []byte
	if err := pool.QueryRow(ctx, `SELECT id, sealed FROM events`).Scan(&id, &box); err != nil {
		t.Fatal(err)
	}
	plain, err := sealerOld.Open(seal.KeyID(bytes.Repeat([]byte{1}, seal.KeySize)), box, id[:])
	if err != nil {
		t.Fatal(err)
	}
	kid, other, err := sealerOld.Seal(plain, id[:])
	if err != nil {
		t.Fatal(err)
	}
	rotated := NewStore(pool, sealerNewOld, nil)
	table := rotated.eventSecretsTable()
	swap := table.Swap
	table.Swap = func(ctx context.Context, rows []seal.ResealRow[int64]) ([]int64, error) {
		if _, err := pool.Exec(ctx, `UPDATE events SET sealed_kid = $1, sealed = $2`, kid, other); err != nil {
			t.Fatal(err)
		}
		return swap(ctx, rows)
	}
	r, err := seal.Reseal(ctx, sealerNewOld, table, seal.ResealOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Resealed != 0 || r.Changed != 1 || r.Left != 1 {
		t.Errorf("report %+v, want 1 changed and left, none re-sealed", r)
	}
	var now []byte
	if err := pool.QueryRow(ctx, `SELECT sealed FROM events`).Scan(&now); err != nil || !bytes.Equal(now, other) {
		t.Fatalf("the concurrent change was overwritten (%v)", err)
	}
	if _, err := rotated.Load(ctx, domain.UserStream(user)); err != nil {
		t.Fatal(err)
	}
}

// A value that opens under no key held is counted, named and left, and
// the rest is re-sealed all the same.
func TestResealReportsWhatDoesNotOpen(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	ctx := context.Background()
	keys := testenv.Rotation(t)
	sealerOld, sealerNewOld := keys.Before, keys.Rotated
	lost := sealedUser(t, NewStore(pool, testenv.Sealer(t), nil))
	kept := sealedUser(t, NewStore(pool, sealerOld, nil))
	reports, err := NewStore(pool, sealerNewOld, nil).Reseal(ctx, seal.ResealOptions{Batch: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"user_keys", "events"} {
		r := testenv.ResealReport(t, reports, table)
		if r.Resealed != 1 || r.Failed != 1 || r.Left != 1 || len(r.Errors) != 1 {
			t.Errorf("%s: %+v, want 1 re-sealed and 1 failed, left and named", table, r)
		}
	}
	if r := testenv.ResealReport(t, reports, "user_keys"); len(r.Errors) == 1 && !strings.Contains(r.Errors[0], lost.String()) {
		t.Errorf("the error does not name the user: %s", r.Errors[0])
	}
	if _, err := NewStore(pool, sealerNewOld, nil).Load(ctx, domain.UserStream(kept)); err != nil {
		t.Fatal(err)
	}
}
