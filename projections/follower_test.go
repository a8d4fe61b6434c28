package projections

import (
	"context"
	"testing"
	"time"

	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/testenv"
)

// A follower whose poll never comes still moves its waiters when the
// leader nudges it.
func TestAFollowerMovesItsWaitersWhenTheLeaderNudges(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, testenv.NATS(t, testenv.EmbeddedNATS))
	r := NewRunner(h.pool, h.bus, []Projection{Users{}}, Config{Poll: time.Hour}, testenv.Logger(t), nil)
	st := r.states["users"]
	conn, err := h.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = startCheckpoint(ctx, conn, "users")
	conn.Release()
	if err != nil {
		t.Fatal(err)
	}
	before := eventstore.Cursor{Tx: 5, Position: 7}
	if _, err := advanceCheckpoint(ctx, h.pool, "users", Checkpoint{Cursor: before}); err != nil {
		t.Fatal(err)
	}
	background(t, func(ctx context.Context) { r.follow(ctx, Users{}, st, time.Hour) })
	// Its first look, for the checkpoint metric, comes once it listens.
	testenv.Eventually(t, 30*time.Second, func() bool { return gaugeValue(r.position.WithLabelValues("users")) == float64(before.Position) })

	// A waiter counted without the word a Wait sends the follower: only the
	// leader's nudge has it look again now.
	st.set(func(s *state) { s.waiters++ })
	after := eventstore.Cursor{Tx: 9, Position: 11}
	if _, err := advanceCheckpoint(ctx, h.pool, "users", Checkpoint{Cursor: after}); err != nil {
		t.Fatal(err)
	}
	if err := h.bus.Signal(checkpointSignal("users")); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() bool { done, _ := st.reached(after); return done })
}

// A follower gives the projection's lock another try after its time.
func TestAFollowerEndsAfterItsTime(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testenv.NATS(t, testenv.EmbeddedNATS))
	r := NewRunner(h.pool, h.bus, []Projection{Users{}}, Config{Poll: time.Hour}, testenv.Logger(t), nil)
	done := make(chan struct{})
	go func() { r.follow(context.Background(), Users{}, r.states["users"], time.Millisecond); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the follower never gave the lock another try")
	}
}
