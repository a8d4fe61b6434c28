package ceremony

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/internal/testenv"
)

func TestCeremoniesAreSingleUseShortLivedAndBound(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	now := time.Now()
	clock := func() time.Time { return now }
	s := New(pool, clock)
	ctx := context.Background()
	ada, bob := uuid.New(), uuid.New()

	if err := s.Put(ctx, Register, "c1", ada, []byte(`{"a":1}`), time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, wrong := range []struct {
		kind Kind
		user uuid.UUID
	}{{Register, bob}, {Register, uuid.Nil}, {Login, ada}} {
		if _, ok, err := s.Take(ctx, wrong.kind, "c1", wrong.user); ok || err != nil {
			t.Fatalf("took c1 as %s for %s: %v %v", wrong.kind, wrong.user, ok, err)
		}
	}
	state, ok, err := s.Take(ctx, Register, "c1", ada)
	if err != nil || !ok || string(state) != `{"a":1}` {
		t.Fatalf("take: %q %v %v", state, ok, err)
	}
	if _, ok, _ := s.Take(ctx, Register, "c1", ada); ok {
		t.Fatal("a ceremony was taken twice")
	}

	// Expiry, and the sweep that the next Put does.
	if err := s.Put(ctx, Login, "c2", uuid.Nil, []byte(`{}`), time.Minute); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Minute)
	if _, ok, _ := s.Take(ctx, Login, "c2", uuid.Nil); ok {
		t.Fatal("an expired ceremony was taken")
	}
	if err := s.Put(ctx, Login, "c3", uuid.Nil, []byte(`{}`), time.Minute); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM webauthn_ceremonies`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("rows after the sweep: %d %v", n, err)
	}
	if swept, err := s.Sweep(ctx); err != nil || swept != 0 {
		t.Fatalf("sweep: %d %v", swept, err)
	}
	if err := s.Put(ctx, Login, "c3", uuid.Nil, []byte(`{}`), time.Minute); err == nil {
		t.Fatal("a challenge was stored twice")
	}

	// Racing takers: exactly one wins.
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, ok, err := s.Take(ctx, Login, "c3", uuid.Nil); err == nil && ok {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d racing takers won", wins.Load())
	}
}
