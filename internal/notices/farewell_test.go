package notices

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/internal/seal"
	"github.com/authd/authd/internal/testenv"
)

// rotation is Farewells on each side of a master key rotation
// (testenv.Rotation).
func rotation(t *testing.T) (before, rotated, after *Farewells) {
	t.Helper()
	keys := testenv.Rotation(t)
	return NewFarewells(keys.Before), NewFarewells(keys.Rotated), NewFarewells(keys.After)
}

func keep(t *testing.T, pool *pgxpool.Pool, f *Farewells, user uuid.UUID, email string) {
	t.Helper()
	st, err := f.Keep(user, email, "de", "Firefox on Linux", "198.51.100.7")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(context.Background(), st.SQL, st.Args...); err != nil {
		t.Fatal(err)
	}
}

// After a rotation of the master key, Reseal moves the farewells to the
// new key: they open with it alone, to what was kept, and a second run
// has nothing to do.
func TestResealMovesFarewellsToTheFirstKey(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	ctx := context.Background()
	before, rotated, after := rotation(t)
	users := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	for _, u := range users {
		keep(t, pool, before, u, u.String()+"@example.com")
	}
	r, err := rotated.Reseal(ctx, pool, seal.ResealOptions{Batch: 2})
	if err != nil {
		t.Fatal(err)
	}
	if r.Table != "farewells" || r.Resealed != 3 || r.Left != 0 || r.Failed != 0 {
		t.Errorf("report %+v, want 3 re-sealed", r)
	}
	for _, u := range users {
		fw, found, err := after.open(ctx, pool, u)
		if err != nil || !found || fw.Email != u.String()+"@example.com" || fw.Locale != "de" || fw.IP != "198.51.100.7" {
			t.Errorf("farewell of %s with the new key alone: %+v, found %v (%v)", u, fw, found, err)
		}
	}
	again, err := rotated.Reseal(ctx, pool, seal.ResealOptions{})
	if err != nil || again.Resealed != 0 || again.Left != 0 {
		t.Errorf("second run: %+v (%v), want nothing to do", again, err)
	}
}

// A farewell kept again between Reseal's read and its update (by an
// instance still sealing with the old key) is not overwritten with the
// older content: it is reported changed and left under the old key.
func TestResealLeavesAFarewellKeptMeanwhile(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	ctx := context.Background()
	before, rotated, _ := rotation(t)
	user := uuid.New()
	keep(t, pool, before, user, "first@example.com")
	table := farewellsTable(pool)
	swap := table.Swap
	table.Swap = func(ctx context.Context, rows []seal.ResealRow[uuid.UUID]) ([]uuid.UUID, error) {
		keep(t, pool, before, user, "second@example.com")
		return swap(ctx, rows)
	}
	r, err := seal.Reseal(ctx, rotated.sealer, table, seal.ResealOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Resealed != 0 || r.Changed != 1 || r.Left != 1 {
		t.Errorf("report %+v, want 1 changed and left, none re-sealed", r)
	}
	fw, _, err := rotated.open(ctx, pool, user)
	if err != nil || fw.Email != "second@example.com" {
		t.Fatalf("the farewell kept meanwhile was overwritten: %+v (%v)", fw, err)
	}
}
