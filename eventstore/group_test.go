package eventstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Changes committed together must each end as they would have alone: a
// conflict, a taken key or a failing statement fails only its own change.
func TestGroupedChangesFailAlone(t *testing.T) {
	t.Parallel()
	s, pool := newStore(t)
	ctx := context.Background()
	if _, err := s.Append(ctx, "raced", 0, ev("Started", `{}`)); err != nil {
		t.Fatal(err)
	}

	const each = 25
	type outcome struct {
		kind string
		err  error
	}
	changes := map[string]func(i int) Change{
		// Each its own new stream: all commit.
		"fresh": func(i int) Change {
			return Change{Appends: []StreamAppend{{Stream: fmt.Sprintf("fresh-%d", i), Events: []Event{ev("Started", `{}`)}}}}
		},
		// All expect the stream at version 1: one wins.
		"raced": func(i int) Change {
			return Change{Appends: []StreamAppend{{Stream: "raced", Expected: 1, Events: []Event{ev("Refreshed", fmt.Sprintf(`{"i":%d}`, i))}}}}
		},
		// All claim one key: one wins.
		"claim": func(i int) Change {
			return Change{
				Appends: []StreamAppend{{Stream: fmt.Sprintf("claimer-%d", i), Events: []Event{ev("UserRegistered", `{}`)}}},
				Claims:  []Claim{{Scope: "email", Key: "same@example.com", Owner: fmt.Sprint(i)}},
			}
		},
		// A statement that fails: none commits.
		"broken": func(i int) Change {
			return Change{
				Appends: []StreamAppend{{Stream: fmt.Sprintf("broken-%d", i), Events: []Event{ev("Started", `{}`)}}},
				Also:    []Statement{{SQL: `SELECT 1 / (0 * $1::int)`, Args: []any{i}}},
			}
		},
	}
	results := make(chan outcome, each*len(changes))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for kind, change := range changes {
		for i := range each {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, err := s.Write(ctx, change(i))
				results <- outcome{kind, err}
			}()
		}
	}
	close(start)
	wg.Wait()
	close(results)

	wins := map[string]int{}
	for r := range results {
		switch {
		case r.err == nil:
			wins[r.kind]++
		case r.kind == "raced" && errors.Is(r.err, ErrConflict),
			r.kind == "claim" && errors.Is(r.err, ErrKeyTaken),
			r.kind == "broken" && !errors.Is(r.err, ErrConflict) && !errors.Is(r.err, ErrKeyTaken):
		default:
			t.Errorf("%s change: unexpected error %v", r.kind, r.err)
		}
	}
	if want := map[string]int{"fresh": each, "raced": 1, "claim": 1}; fmt.Sprint(wins) != fmt.Sprint(want) {
		t.Errorf("changes committed per kind: %v, want %v", wins, want)
	}
	var stored int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if want := 1 + each + 1 + 1; stored != want {
		t.Errorf("%d events stored, want %d (the first, %d fresh, one refresh, one claimer)", stored, want, each)
	}
	if events, _ := s.Load(ctx, "raced"); len(events) != 2 {
		t.Errorf("raced stream has %d events, want 2", len(events))
	}

	h := sample(t, s.groupSize).GetHistogram()
	count, sum := float64(h.GetSampleCount()), h.GetSampleSum()
	if sum <= count {
		t.Errorf("%v changes in %v transactions: the changes were never grouped, so this test proved nothing", sum, count)
	}
}

// sample reads one of the store's metrics as it stands.
func sample(t *testing.T, m prometheus.Metric) *dto.Metric {
	t.Helper()
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		t.Fatal(err)
	}
	return &out
}

// A change whose caller has gone before its turn is not committed.
func TestCanceledChangeIsNotCommitted(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Append(ctx, "gone", 0, ev("Started", `{}`)); !errors.Is(err, context.Canceled) {
		t.Fatalf("append with a canceled context: %v, want context.Canceled", err)
	}
	if events, _ := s.Load(context.Background(), "gone"); len(events) != 0 {
		t.Fatal("the change of a canceled caller was committed")
	}
}

// Two groups in flight that share streams must not stall each other.
func TestGroupsInFlightTogether(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		first, then string     // what the other transaction takes, in order
		changes     [][]string // the streams of the group's changes, in the order they came
		deadlocks   float64    // at least, and exactly when mayRepeat is false
		mayRepeat   bool
	}{
		// A group takes its streams in their sorted order, whatever order
		// its changes came in: against another writer that does so too,
		// there is a wait and no deadlock.
		{"same order", "a", "b", [][]string{{"b"}, {"a"}}, 0, false},
		// Against a writer that takes them the other way round, Postgres
		// aborts the group to break the deadlock; it is sent again one
		// change at a time, and every change in it commits.
		{"opposite order", "b", "a", [][]string{{"a"}, {"b"}}, 1, false},
		// A lone change that takes both streams is sent again as it was.
		// Sent again at once, it can take stream a before the other
		// transaction's waiting insert of a wakes, which closes the same
		// cycle a second time; Postgres then breaks it again, and the
		// change still commits within its attempts.
		{"one change of two streams", "b", "a", [][]string{{"a", "b"}}, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, pool := newStore(t)
			group := raceAnotherTransaction(t, s, pool, tc.first, tc.then, tc.changes)
			checkCommitted(t, s, group, "a", "b")
			n := sample(t, s.deadlocks).GetCounter().GetValue()
			if n < tc.deadlocks || (n > tc.deadlocks && !tc.mayRepeat) {
				t.Errorf("%v deadlocks counted, want %v (more allowed: %v)", n, tc.deadlocks, tc.mayRepeat)
			}
		})
	}
}

// raceAnotherTransaction has another transaction, standing in for another
// group, take the first version of stream first; sends a group of changes,
// each appending one new event to each of its streams; once the group waits
// for a lock, has the other transaction take then's first version too, and
// rolls it back. It returns the group, sent.
func raceAnotherTransaction(t *testing.T, s *Store, pool *pgxpool.Pool, first, then string, changes [][]string) []*pending {
	t.Helper()
	ctx := context.Background()
	insertFirst := `INSERT INTO events (id, stream_id, version, type, occurred_at) VALUES (gen_random_uuid(), $1, 1, 'Other', now())`
	other, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Rollback(ctx)
	if _, err := other.Exec(ctx, insertFirst, first); err != nil {
		t.Fatal(err)
	}
	var group []*pending
	for _, streams := range changes {
		var ch Change
		for _, stream := range streams {
			ch.Appends = append(ch.Appends, StreamAppend{Stream: stream, Events: []Event{ev("Started", `{}`)}})
		}
		p, err := s.prepare(ch)
		if err != nil {
			t.Fatal(err)
		}
		group = append(group, p)
	}
	sent := make(chan struct{})
	go func() {
		s.send(ctx, group)
		close(sent)
	}()
	for waiting := 0; waiting == 0; {
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// When this closes a cycle, Postgres aborts one side after
	// deadlock_timeout; whichever it is, the rollback then lets the group by.
	_, _ = other.Exec(ctx, insertFirst, then)
	_ = other.Rollback(ctx)
	<-sent
	return group
}

// checkCommitted fails the test unless every change of group committed its
// one event to its stream.
func checkCommitted(t *testing.T, s *Store, group []*pending, streams ...string) {
	t.Helper()
	for i, p := range group {
		if p.err != nil {
			t.Errorf("change %d of the group: %v", i, p.err)
		}
	}
	for _, stream := range streams {
		if events, err := s.Load(context.Background(), stream); err != nil || len(events) != 1 || events[0].Type != "Started" {
			t.Errorf("stream %s: %v, %v; want the group's one event", stream, events, err)
		}
	}
}
