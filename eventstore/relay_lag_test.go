package eventstore

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"
)

// The lag is measured from the oldest committed event past what this
// instance saw published and past the saved checkpoint, whichever is
// further; a measure that fails leaves the last one standing.
func TestTheRelaysLagIsTheAgeOfTheOldestEventNotPublished(t *testing.T) {
	t.Parallel()
	s, pool := newStore(t)
	ctx := context.Background()
	r := NewRelay(s, nil, RelayConfig{}, slog.New(slog.DiscardHandler), nil)
	oldest := func() time.Time {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.oldest
	}
	r.measureOnce(ctx)
	if lag := r.Lag(); lag != 0 {
		t.Fatalf("lag %s with an empty log", lag)
	}

	var commits []Cursor
	var times []time.Time
	for i := range 3 {
		c, err := s.Append(ctx, fmt.Sprintf("lag-%d", i), 0, ev("Tick", `{}`))
		if err != nil {
			t.Fatal(err)
		}
		var at time.Time
		if err := pool.QueryRow(ctx, `SELECT occurred_at FROM events WHERE id = $1`, c.Events[0].ID).Scan(&at); err != nil {
			t.Fatal(err)
		}
		commits, times = append(commits, c.Last), append(times, at)
	}
	saveCheckpoint := func(c Cursor) {
		t.Helper()
		if _, err := pool.Exec(ctx, `UPDATE relay_checkpoint SET tx_id = $1::text::xid8, position = $2`, c.txText(), c.Position); err != nil {
			t.Fatal(err)
		}
	}
	for _, step := range []struct {
		what      string
		published Cursor
		saved     Cursor
		want      time.Time
	}{
		{"nothing published", Cursor{}, Cursor{}, times[0]},
		{"the first published here", commits[0], Cursor{}, times[1]},
		{"the second published by another instance", commits[0], commits[1], times[2]},
		{"all published here, a nearer checkpoint saved", commits[2], commits[1], time.Time{}},
	} {
		r.setPublished(step.published)
		saveCheckpoint(step.saved)
		r.measureOnce(ctx)
		if got := oldest(); !got.Equal(step.want) {
			t.Fatalf("%s: the oldest event not published is from %s, want %s", step.what, got, step.want)
		}
	}
	if lag := r.Lag(); lag != 0 {
		t.Fatalf("lag %s with everything published", lag)
	}

	r.setPublished(Cursor{})
	saveCheckpoint(Cursor{})
	r.measureOnce(ctx)
	ended, cancel := context.WithCancel(ctx)
	cancel()
	r.setPublished(commits[2])
	r.measureOnce(ended)
	if got := oldest(); !got.Equal(times[0]) {
		t.Fatalf("a measure that failed replaced the last one with %s", got)
	}
}
