package projections

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/testenv"
)

// newLeaderOfUsers is the users projection's leader as lead starts it, with
// no consumer: the test hands it the events JetStream would deliver. nudges
// hears it as its followers do.
func newLeaderOfUsers(t *testing.T) (h *harness, l *leader, nudges <-chan struct{}) {
	t.Helper()
	ctx := context.Background()
	h = newHarness(t, testenv.NATS(t, testenv.EmbeddedNATS))
	r := NewRunner(h.pool, h.bus, []Projection{Users{}}, Config{}, testenv.Logger(t), nil)
	conn, err := h.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Release)
	cp, err := startCheckpoint(ctx, conn, "users")
	if err != nil {
		t.Fatal(err)
	}
	nudges, stop, err := h.bus.Listen(checkpointSignal("users"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return h, r.newLeader(conn, Users{}, r.states["users"], cp, 0), nudges
}

// appendEvents appends each event to a stream of its own and returns them as
// the log holds them.
func appendEvents(t *testing.T, h *harness, events ...domain.Event) []eventstore.Event {
	t.Helper()
	out := make([]eventstore.Event, 0, len(events))
	for _, e := range events {
		encoded, err := eventstore.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		c, err := h.store.Append(context.Background(), "leader-test-"+uuid.NewString(), 0, encoded)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c.Events...)
	}
	return out
}

func skippedByUsers(t *testing.T, h *harness, n int) []eventstore.Event {
	t.Helper()
	out := make([]eventstore.Event, 0, n)
	for i := range n {
		c, err := h.store.Append(context.Background(), fmt.Sprintf("audit-%d", i), 0, eventstore.Event{Type: "SomethingUsersSkip", Data: []byte(`{}`)})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c.Events...)
	}
	return out
}

func savedCheckpoint(t *testing.T, h *harness) eventstore.Cursor {
	t.Helper()
	cp, err := loadCheckpoint(context.Background(), h.pool, "users")
	if err != nil {
		t.Fatal(err)
	}
	return cp.Cursor
}

// hearNudge waits for a nudge from the leader, as a follower would.
func hearNudge(t *testing.T, nudges <-chan struct{}) {
	t.Helper()
	select {
	case <-nudges:
	case <-time.After(20 * time.Second):
		t.Fatal("the leader did not nudge its followers")
	}
}

// A batch the projection skips moves the leader's checkpoint in memory only;
// saving it writes it to Postgres and tells the followers.
func TestALeaderSavesTheCheckpointOfSkippedEventsWhenAsked(t *testing.T) {
	t.Parallel()
	h, l, nudges := newLeaderOfUsers(t)
	events := skippedByUsers(t, h, 3)
	last := events[len(events)-1].Commit

	next, n, err := l.settle(context.Background(), events)
	if err != nil || n != 0 || next.Cursor != last {
		t.Fatalf("settle of a skipped batch = %s, %d applied, %v; want %s, none applied", next.Cursor, n, err, last)
	}
	if got := savedCheckpoint(t, h); got != (eventstore.Cursor{}) {
		t.Fatalf("a skipped batch was saved at once, at %s", got)
	}
	if err := l.save(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := savedCheckpoint(t, h); got != last {
		t.Fatalf("checkpoint saved at %s, want %s", got, last)
	}
	hearNudge(t, nudges)
}

// A batch the projection uses is applied with its checkpoint, and applied
// again (JetStream redelivers after a lost ack) it changes nothing.
func TestALeaderAppliesABatchOnceWithItsCheckpoint(t *testing.T) {
	t.Parallel()
	h, l, nudges := newLeaderOfUsers(t)
	tenant := uuid.New()
	var registered []domain.Event
	for i := range 2 {
		id := uuid.New()
		registered = append(registered, &domain.UserRegistered{UserID: id, TenantID: tenant, Email: fmt.Sprintf("leader%d-%s@example.com", i, id), Name: "Leader"})
	}
	events := appendEvents(t, h, registered...)
	last := events[len(events)-1].Commit

	for round, want := range []int{2, 0} {
		next, n, err := l.settle(context.Background(), events)
		if err != nil || n != want || next.Cursor != last {
			t.Fatalf("round %d: settle = %s, %d applied, %v; want %s, %d applied", round, next.Cursor, n, err, last, want)
		}
		if got := savedCheckpoint(t, h); got != last {
			t.Fatalf("round %d: checkpoint saved at %s, want %s with the batch", round, got, last)
		}
		hearNudge(t, nudges)
	}
	if rows := dumpUsers(t, h.pool); len(rows) != 2 {
		t.Fatalf("the users read model has %d users, want 2", len(rows))
	}
}

// The leader takes JetStream's messages only in the consumer's order, later
// in the stream each time: after a lost delivery or one from before, it
// starts again rather than skip an event. A gap in the stream's sequences,
// where messages were deleted, is no loss.
func TestALeaderTakesTheStreamOnlyInOrder(t *testing.T) {
	t.Parallel()
	_, l, _ := newLeaderOfUsers(t)
	// A new consumer delivers from its first; the stream may have been
	// purged, so any stream sequence comes first.
	for i, seq := range []uint64{7, 8, 10} {
		if err := l.inOrder(seq, uint64(i+1)); err != nil {
			t.Fatalf("stream sequence %d as the consumer's %d: %v", seq, i+1, err)
		}
	}
	err := l.inOrder(12, 5)
	if err == nil || !strings.Contains(err.Error(), "expected its 4") {
		t.Fatalf("consumer sequence 5 after 3 = %v, want an error expecting 4", err)
	}
	if err := l.inOrder(9, 4); err == nil {
		t.Fatal("the leader took stream sequence 9 after 10")
	}

	resumed := l.r.newLeader(l.conn, l.p, l.st, Checkpoint{StreamSeq: 20}, 30)
	if err := resumed.inOrder(22, 32); err == nil {
		t.Fatal("a leader resuming after consumer sequence 30 took 32")
	}
	if err := resumed.inOrder(20, 31); err == nil {
		t.Fatal("a leader resuming after stream sequence 20 took 20 again")
	}
	if err := resumed.inOrder(22, 31); err != nil {
		t.Fatalf("a leader resuming after stream sequence 20 and consumer sequence 30 refused 22 as 31: %v", err)
	}
}
