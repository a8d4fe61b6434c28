package eventstore

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/internal/testenv"
)

// A relay flushing at shutdown returns once it has published what the log
// lets it read, its checkpoint saved, rather than relaying on.
func TestAFlushingRelayReturnsOnceCaughtUp(t *testing.T) {
	t.Parallel()
	s, pool := newStore(t)
	bus := testenv.NATS(t, testenv.EmbeddedNATS)
	ctx := context.Background()
	appended := map[uuid.UUID]Event{}
	var last Cursor
	for i := range 3 {
		c, err := s.Append(ctx, fmt.Sprintf("flush-%d", i), 0, ev("Tick", `{}`))
		if err != nil {
			t.Fatal(err)
		}
		appended[c.Events[0].ID], last = c.Events[0], c.Last
	}
	r := NewRelay(s, bus, RelayConfig{}, slog.New(slog.DiscardHandler), nil)
	// Other tests' transactions on the server may hold the events back from
	// one flush: each flush publishes what it can read, and returns.
	testenv.Eventually(t, 60*time.Second, func() bool {
		flush, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := r.leadOnce(flush, true); err != nil {
			t.Fatal(err)
		}
		if flush.Err() != nil {
			t.Fatal("a flushing relay relayed on until its context ended")
		}
		return r.Published() == last
	})
	checkExactlyOnceInOrder(t, streamEvents(t, bus), appended)
	var tx string
	var saved Cursor
	if err := pool.QueryRow(ctx, `SELECT tx_id::text, position FROM relay_checkpoint`).Scan(&tx, &saved.Position); err != nil {
		t.Fatal(err)
	}
	var err error
	if saved.Tx, err = ParseTx(tx); err != nil || saved != last {
		t.Fatalf("checkpoint saved at %s (%v) after the flush, want %s", saved, err, last)
	}
	if r.Leading() {
		t.Fatal("the relay still says it leads after its flush")
	}
}

// While an open transaction holds events back, the relay looks again soon,
// backing off, and not at all once nothing is held back.
func TestTheRelayLooksAgainSoonOnlyWhileEventsAreHeldBack(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		prev time.Duration
		held bool
		read int
		want time.Duration
	}{
		{0, false, 0, 0},
		{maxRecheck, false, 3, 0},
		{0, true, 0, time.Millisecond},
		{20 * time.Millisecond, true, 2, time.Millisecond},
		{time.Millisecond, true, 0, 2 * time.Millisecond},
		{40 * time.Millisecond, true, 0, maxRecheck},
		{maxRecheck, true, 0, maxRecheck},
	} {
		if got := nextRecheck(c.prev, c.held, c.read); got != c.want {
			t.Errorf("nextRecheck(%s, held %t, read %d) = %s, want %s", c.prev, c.held, c.read, got, c.want)
		}
	}
}
