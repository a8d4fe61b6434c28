package projections

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/testenv"
)

// A projection's lag is the age of the oldest event it has not passed, so a
// projection that nobody moves shows it growing, and it is 0 once the
// checkpoint is past the whole log. It was the delay of the last event
// applied: 0 here, where nothing ever applied the event.
func TestLagIsTheAgeOfTheOldestEventNotApplied(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, nil)
	r := NewRunner(h.pool, nil, []Projection{Users{}}, Config{}, testenv.Logger(t), nil)
	if _, err := h.pool.Exec(ctx, `INSERT INTO projection_checkpoints (name) VALUES ('users')`); err != nil {
		t.Fatal(err)
	}
	lag := func() float64 {
		t.Helper()
		if err := r.measureLagOnce(ctx); err != nil {
			t.Fatal(err)
		}
		return gaugeValue(r.lag.WithLabelValues("users"))
	}
	if got := lag(); got != 0 {
		t.Fatalf("lag over an empty log = %v, want 0", got)
	}

	id := uuid.New()
	e, err := eventstore.Encode(&domain.UserRegistered{UserID: id, TenantID: uuid.New(), Email: "lag@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	e.UserID, e.OccurredAt = id, time.Now().Add(-time.Hour)
	c, err := h.store.Append(ctx, domain.UserStream(id), 0, e)
	if err != nil {
		t.Fatal(err)
	}
	if got := lag(); got < time.Hour.Seconds() {
		t.Fatalf("lag with an hour-old event not applied = %vs, want at least an hour", got)
	}

	if _, err := advanceCheckpoint(ctx, h.pool, "users", Checkpoint{Cursor: c.Last}); err != nil {
		t.Fatal(err)
	}
	if got := lag(); got != 0 {
		t.Fatalf("lag with the checkpoint past the log = %v, want 0", got)
	}
}
