package notices

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/testenv"
)

// A sign-in judged after its account was erased brings no device or network
// back; ForgetDevices deletes the history a live account had.
func TestAnErasedAccountKeepsNoDeviceHistory(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	ctx := context.Background()
	judge := func(user uuid.UUID) {
		t.Helper()
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if _, err := signIn(ctx, tx, user, "Firefox on Linux", "203.0.113.9", time.Now()); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	rows := func(user uuid.UUID) (n int) {
		t.Helper()
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM notice_devices WHERE user_id = $1`, user).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	live, erased := uuid.New(), uuid.New()
	judge(live)
	if rows(live) != 1 {
		t.Fatal("a live account's sign-in left no device history")
	}
	for _, st := range append([]eventstore.Statement{eventstore.Shred(erased), eventstore.Shred(live)}, ForgetDevices(live)...) {
		if _, err := pool.Exec(ctx, st.SQL, st.Args...); err != nil {
			t.Fatal(err)
		}
	}
	judge(erased)
	judge(live)
	if n, m := rows(erased), rows(live); n != 0 || m != 0 {
		t.Errorf("after the erasure: %d and %d device rows; want none", n, m)
	}
}
