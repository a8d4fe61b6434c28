package projections

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/testenv"
)

// A waiter tells the follower it arrived, and returns once the checkpoint
// reaches its cursor, not before.
func TestAWaitEndsOnceTheCheckpointReachesItsCursor(t *testing.T) {
	t.Parallel()
	r := NewRunner(nil, nil, []Projection{Users{}}, Config{}, slog.New(slog.DiscardHandler), nil)
	st := r.states["users"]
	st.advance(eventstore.Cursor{Tx: 3, Position: 2})
	target := eventstore.Cursor{Tx: 3, Position: 3}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	result := make(chan error, 1)
	go func() { result <- r.Wait(ctx, Users{}, target) }()
	testenv.Eventually(t, 30*time.Second, func() bool { return len(st.waiting) == 1 })
	select {
	case err := <-result:
		t.Fatalf("Wait for %s returned %v with the checkpoint short of it", target, err)
	default:
	}
	if !st.hasWaiters() {
		t.Fatal("a waiter is not counted while it waits")
	}
	st.advance(target)
	if err := <-result; err != nil {
		t.Fatalf("Wait = %v once the checkpoint reached its cursor", err)
	}
	if st.hasWaiters() {
		t.Fatal("a waiter that returned is still counted")
	}
}

// A write whose event is already applied needs no time: its wait returns
// before looking at its context.
func TestAWaitForWhatIsAppliedReturnsAtOnce(t *testing.T) {
	t.Parallel()
	r := NewRunner(nil, nil, []Projection{Users{}}, Config{}, slog.New(slog.DiscardHandler), nil)
	applied := eventstore.Cursor{Tx: 4, Position: 9}
	r.states["users"].advance(applied)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Wait(ctx, Users{}, applied); err != nil {
		t.Fatalf("Wait for an applied cursor = %v", err)
	}
	if err := r.Wait(ctx, Users{}, eventstore.Cursor{Tx: 4, Position: 10}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait past the checkpoint with an ended context = %v", err)
	}
}
