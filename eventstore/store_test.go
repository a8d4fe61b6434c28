package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/internal/testenv"
)

func newStore(t testing.TB) (*Store, *pgxpool.Pool) {
	t.Helper()
	pool, _ := testenv.Database(t)
	return NewStore(pool, testenv.Sealer(t), nil), pool
}

func ev(typ string, data string) Event {
	return Event{Type: typ, Data: json.RawMessage(data)}
}

func TestAppendAndLoad(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := context.Background()
	user := uuid.New()
	e1 := ev("UserRegistered", `{"email":"a@example.com"}`)
	e1.UserID = user
	e1.Secret = json.RawMessage(`{"password_hash":"$argon2id$secret"}`)
	e1.Metadata = Metadata{IP: "192.0.2.1", UserAgent: "test", RequestID: "r1"}
	c, err := s.Append(ctx, "user-"+user.String(), 0, e1, ev("EmailVerified", `{}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Events) != 2 || c.Events[0].Version != 1 || c.Events[1].Version != 2 {
		t.Fatalf("committed = %+v", c.Events)
	}
	if !c.Events[0].Commit.Before(c.Events[1].Commit) || c.Last != c.Events[1].Commit {
		t.Fatalf("cursors out of order: %v %v last %v", c.Events[0].Commit, c.Events[1].Commit, c.Last)
	}
	got, err := s.Load(ctx, "user-"+user.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Type != "UserRegistered" || got[1].Type != "EmailVerified" {
		t.Fatalf("loaded %+v", got)
	}
	if string(got[0].Secret) != `{"password_hash":"$argon2id$secret"}` || got[1].Secret != nil {
		t.Fatalf("secrets: %q %q", got[0].Secret, got[1].Secret)
	}
	if got[0].UserID != user || got[0].TenantID != uuid.Nil || got[0].Metadata.IP != "192.0.2.1" {
		t.Fatalf("loaded fields %+v", got[0])
	}
}

func TestLoadEndsReadsTheFirstAndLastEvents(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := context.Background()
	first := ev("SessionStarted", `{}`)
	first.Secret = json.RawMessage(`{"key":"k"}`)
	if _, err := s.Append(ctx, "session-a", 0, first); err != nil {
		t.Fatal(err)
	}
	versions := func(tail int) []int64 {
		t.Helper()
		got, err := s.LoadEnds(ctx, "session-a", tail)
		if err != nil {
			t.Fatal(err)
		}
		if string(got[0].Secret) != `{"key":"k"}` {
			t.Fatalf("first event's secret: %q", got[0].Secret)
		}
		var vs []int64
		for _, e := range got {
			vs = append(vs, e.Version)
		}
		return vs
	}
	if got := versions(3); !slices.Equal(got, []int64{1}) {
		t.Fatalf("one event, tail 3: versions %v", got)
	}
	for v := int64(1); v < 10; v++ {
		if _, err := s.Append(ctx, "session-a", v, ev("SessionRefreshed", `{}`)); err != nil {
			t.Fatal(err)
		}
	}
	if got := versions(3); !slices.Equal(got, []int64{1, 8, 9, 10}) {
		t.Fatalf("ten events, tail 3: versions %v", got)
	}
	if got := versions(20); !slices.Equal(got, []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}) {
		t.Fatalf("ten events, tail 20: versions %v", got)
	}
}

// LoadEndsOf gives each stream's ends, in the order the streams are named,
// as LoadEnds gives them one by one; a stream with no events gives none.
func TestLoadEndsOfReadsEachStreamsEnds(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := context.Background()
	for i, n := range map[string]int64{"session-x": 6, "session-y": 2} {
		for v := range n {
			if _, err := s.Append(ctx, i, v, ev("Tick", `{}`)); err != nil {
				t.Fatal(err)
			}
		}
	}
	got, err := s.LoadEndsOf(ctx, []string{"session-y", "session-none", "session-x"}, 2)
	if err != nil {
		t.Fatal(err)
	}
	var versions [][]int64
	for _, events := range got {
		var vs []int64
		for _, e := range events {
			vs = append(vs, e.Version)
		}
		versions = append(versions, vs)
	}
	if want := [][]int64{{1, 2}, nil, {1, 5, 6}}; !slices.EqualFunc(versions, want, slices.Equal) {
		t.Fatalf("versions %v, want %v", versions, want)
	}
}

func TestLoadStreamsReadsEachStreamInItsOrder(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := context.Background()
	a := ev("A1", `{}`)
	a.Secret = json.RawMessage(`{"k":1}`)
	if _, err := s.Append(ctx, "b-stream", 0, ev("B1", `{}`), ev("B2", `{}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, "a-stream", 0, a, ev("A2", `{}`), ev("A3", `{}`)); err != nil {
		t.Fatal(err)
	}
	got, err := s.LoadStreams(ctx, "b-stream", "none", "a-stream")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || !slices.Equal(types(got[0]), []string{"B1", "B2"}) || len(got[1]) != 0 || !slices.Equal(types(got[2]), []string{"A1", "A2", "A3"}) {
		t.Fatalf("loaded %v", got)
	}
	if string(got[2][0].Secret) != `{"k":1}` {
		t.Fatalf("secret not opened: %q", got[2][0].Secret)
	}
	// From the latest snapshot on, and the whole stream when it has none.
	if _, err := s.Append(ctx, "a-stream", 3, ev("ASnapshotTaken", `{}`), ev("A4", `{}`), ev("ASnapshotTaken", `{}`), ev("A5", `{}`)); err != nil {
		t.Fatal(err)
	}
	got, err = s.LoadStreams(ctx, "a-stream", "b-stream")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(types(got[0]), []string{"ASnapshotTaken", "A5"}) || got[0][0].Version != 6 || !slices.Equal(types(got[1]), []string{"B1", "B2"}) {
		t.Fatalf("loaded from the latest snapshot: %v and %v", types(got[0]), types(got[1]))
	}
}

// The statements ahead of a load commit with it and hand their rows to their
// Scan; one that fails fails the load and commits none of them.
func TestLoadStreamsAfterStatements(t *testing.T) {
	t.Parallel()
	s, pool := newStore(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `CREATE TABLE tries (token text PRIMARY KEY, n int NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, "a-stream", 0, ev("A1", `{}`)); err != nil {
		t.Fatal(err)
	}
	try := func(token string, n *int) Statement {
		return Statement{
			SQL:  `INSERT INTO tries VALUES ($1, 1) ON CONFLICT (token) DO UPDATE SET n = tries.n + 1 RETURNING n`,
			Args: []any{token},
			Scan: func(row pgx.Row) error { return row.Scan(n) },
		}
	}
	var first, second int
	got, err := s.LoadStreamsAfter(ctx, []Statement{try("t", &first), try("t", &second)}, "a-stream")
	if err != nil {
		t.Fatal(err)
	}
	if first != 1 || second != 2 || len(got) != 1 || !slices.Equal(types(got[0]), []string{"A1"}) {
		t.Fatalf("tries %d and %d, loaded %v; want 1, 2 and [A1]", first, second, got)
	}

	var third int
	_, err = s.LoadStreamsAfter(ctx, []Statement{try("t", &third), {SQL: `SELECT 1 / 0`}}, "a-stream")
	if err == nil || !strings.Contains(err.Error(), "statement 2") {
		t.Fatalf("a failing statement: %v, want the load to fail naming statement 2", err)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT n FROM tries WHERE token = 't'`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("after a failed load the count is %d (%v), want 2: nothing of it committed", n, err)
	}
}

func TestSecretIsSealedAtRest(t *testing.T) {
	t.Parallel()
	s, pool := newStore(t)
	ctx := context.Background()
	e := ev("UserRegistered", `{}`)
	e.Secret = json.RawMessage(`{"totp":"JBSWY3DPEHPK3PXP"}`)
	if _, err := s.Append(ctx, "user-x", 0, e); err != nil {
		t.Fatal(err)
	}
	var raw string
	if err := pool.QueryRow(ctx, `SELECT e::text FROM events e`).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if json.Valid([]byte(raw)) || strings.Contains(raw, "JBSWY3DPEHPK3PXP") {
		t.Fatalf("secret stored in the clear: %s", raw)
	}
	logged := readAtLeast(t, s, Cursor{}, 10, 1)
	if len(logged) != 1 || logged[0].Secret != nil {
		t.Fatalf("ReadLog exposed a secret: %+v", logged)
	}
}

// readAtLeast reads until at least want events are readable: transactions of
// other tests on the same server hold the readable end back for a moment.
func readAtLeast(t *testing.T, s *Store, after Cursor, limit, want int) []Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := s.ReadLog(context.Background(), after, limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) >= want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestConcurrentAppendsOneWinnerPerVersion(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := context.Background()
	const writers, versions = 50, 5
	for v := int64(0); v < versions; v++ {
		var wins, conflicts atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, err := s.Append(ctx, "contended", v, ev("Tick", fmt.Sprintf(`{"writer":%d}`, i)))
				switch {
				case err == nil:
					wins.Add(1)
				case errors.Is(err, ErrConflict):
					conflicts.Add(1)
				default:
					t.Errorf("writer %d: unexpected error %v", i, err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if wins.Load() != 1 || conflicts.Load() != writers-1 {
			t.Fatalf("version %d: %d wins, %d conflicts; want exactly one winner", v+1, wins.Load(), conflicts.Load())
		}
	}
	got, err := s.Load(ctx, "contended")
	if err != nil || len(got) != versions {
		t.Fatalf("stream has %d events (%v), want %d", len(got), err, versions)
	}
}

func TestAppendAtWrongVersionIsAConflict(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := context.Background()
	if _, err := s.Append(ctx, "s", 0, ev("A", `{}`)); err != nil {
		t.Fatal(err)
	}
	for _, expected := range []int64{0, 2, 7} {
		_, err := s.Append(ctx, "s", expected, ev("B", `{}`))
		var ce *ConflictError
		if !errors.As(err, &ce) || ce.Stream != "s" {
			t.Fatalf("expected %d: got %v, want a conflict on s", expected, err)
		}
	}
	if got, _ := s.Load(ctx, "s"); len(got) != 1 {
		t.Fatalf("a refused append wrote %d events", len(got)-1)
	}
	// In a change of several streams, the conflict names the stale one, and
	// the other stream's events are not written either.
	for _, expected := range []int64{0, 2} {
		_, err := s.Write(ctx, Change{Appends: []StreamAppend{
			{Stream: "fresh", Expected: 0, Events: []Event{ev("A", `{}`)}},
			{Stream: "s", Expected: expected, Events: []Event{ev("B", `{}`), ev("C", `{}`)}},
		}})
		var ce *ConflictError
		if !errors.As(err, &ce) || ce.Stream != "s" {
			t.Fatalf("two streams, s expected at %d: got %v, want a conflict on s", expected, err)
		}
	}
	if got, _ := s.Load(ctx, "fresh"); len(got) != 0 {
		t.Fatal("a change with a conflict wrote another stream's events")
	}
}

func TestClaimsCommitWithTheEventsOrNotAtAll(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := context.Background()
	claim := Claim{Scope: "email", Key: "a@example.com", Owner: "u1"}
	if _, err := s.Write(ctx, Change{
		Appends: []StreamAppend{{Stream: "user-u1", Events: []Event{ev("UserRegistered", `{}`)}}},
		Claims:  []Claim{claim},
	}); err != nil {
		t.Fatal(err)
	}
	if owner, err := s.Lookup(ctx, "email", "a@example.com"); err != nil || owner != "u1" {
		t.Fatalf("Lookup = %q, %v", owner, err)
	}
	_, err := s.Write(ctx, Change{
		Appends: []StreamAppend{{Stream: "user-u2", Events: []Event{ev("UserRegistered", `{}`)}}},
		Claims:  []Claim{{Scope: "email", Key: "a@example.com", Owner: "u2"}},
	})
	if !errors.Is(err, ErrKeyTaken) {
		t.Fatalf("second claim: %v, want ErrKeyTaken", err)
	}
	if got, _ := s.Load(ctx, "user-u2"); len(got) != 0 {
		t.Fatal("the events of a change whose claim failed were committed")
	}
	_, err = s.Write(ctx, Change{
		Appends: []StreamAppend{{Stream: "user-u1", Expected: 0, Events: []Event{ev("X", `{}`)}}},
		Claims:  []Claim{{Scope: "email", Key: "b@example.com", Owner: "u1"}},
	})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("stale append: %v, want ErrConflict", err)
	}
	if _, err := s.Lookup(ctx, "email", "b@example.com"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the claim of a conflicting change was committed: %v", err)
	}
	if _, err := s.Write(ctx, Change{
		Appends:  []StreamAppend{{Stream: "user-u1", Expected: 1, Events: []Event{ev("EmailChanged", `{}`)}}},
		Releases: []Claim{claim},
		Claims:   []Claim{{Scope: "email", Key: "c@example.com", Owner: "u1"}},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lookup(ctx, "email", "a@example.com"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("released key still held: %v", err)
	}
}

// A held claim commits while its owner holds the key, and fails as a stale
// decision when the owner does not (the key was released, or passed to
// another owner, after the command looked it up): it never claims the key
// anew.
func TestHeldClaimsCommitOnlyWhileTheOwnerHoldsTheKey(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := context.Background()
	held := func(owner string) Change {
		return Change{
			Appends: []StreamAppend{{Stream: "attempts-" + owner, Expected: AnyVersion, Events: []Event{ev("SignupAttempted", `{}`)}}},
			Claims:  []Claim{{Scope: "email", Key: "a@example.com", Owner: owner, Held: true}},
		}
	}
	if _, err := s.Write(ctx, held("u1")); !errors.Is(err, ErrConflict) {
		t.Fatalf("held claim of a free key: %v, want ErrConflict", err)
	}
	if _, err := s.Lookup(ctx, "email", "a@example.com"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a held claim of a free key claimed it: %v", err)
	}
	claim := Claim{Scope: "email", Key: "a@example.com", Owner: "u1"}
	if _, err := s.Write(ctx, Change{Appends: []StreamAppend{{Stream: "user-u1", Events: []Event{ev("UserRegistered", `{}`)}}}, Claims: []Claim{claim}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(ctx, held("u1")); err != nil {
		t.Fatalf("held claim by its owner: %v", err)
	}
	if _, err := s.Write(ctx, held("u2")); !errors.Is(err, ErrConflict) {
		t.Fatalf("held claim of another owner's key: %v, want ErrConflict", err)
	}
	if got, _ := s.Load(ctx, "attempts-u2"); len(got) != 0 {
		t.Fatal("the events of a change whose held claim failed were committed")
	}
	if owner, err := s.Lookup(ctx, "email", "a@example.com"); err != nil || owner != "u1" {
		t.Fatalf("Lookup after held claims = %q, %v", owner, err)
	}
}

func TestAlsoStatementsCommitWithTheEventsOrNotAtAll(t *testing.T) {
	t.Parallel()
	s, pool := newStore(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `CREATE TABLE ceremony (token text PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO ceremony VALUES ('t1'), ('t2')`); err != nil {
		t.Fatal(err)
	}
	consume := func(token string) Statement {
		return Statement{SQL: `DELETE FROM ceremony WHERE token = $1`, Args: []any{token}}
	}
	left := func() []string {
		rows, _ := pool.Query(ctx, `SELECT token FROM ceremony ORDER BY token`)
		tokens, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return tokens
	}

	if _, err := s.Write(ctx, Change{
		Appends: []StreamAppend{{Stream: "session-1", Events: []Event{ev("SessionStarted", `{}`)}}},
		Also:    []Statement{consume("t1")},
	}); err != nil {
		t.Fatal(err)
	}
	if got := left(); !slices.Equal(got, []string{"t2"}) {
		t.Fatalf("after a committed change: %v left, want [t2]", got)
	}

	_, err := s.Write(ctx, Change{
		Appends: []StreamAppend{{Stream: "session-1", Expected: 0, Events: []Event{ev("SessionStarted", `{}`)}}},
		Also:    []Statement{consume("t2")},
	})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("stale append: %v, want ErrConflict", err)
	}
	if got := left(); !slices.Equal(got, []string{"t2"}) {
		t.Fatalf("the statement of a conflicting change was committed: %v left", got)
	}

	_, err = s.Write(ctx, Change{
		Appends: []StreamAppend{{Stream: "session-2", Events: []Event{ev("SessionStarted", `{}`)}}},
		Also:    []Statement{consume("t2"), {SQL: `INSERT INTO ceremony VALUES ($1)`, Args: []any{"t1"}}, {SQL: `INSERT INTO ceremony VALUES ($1)`, Args: []any{"t1"}}},
	})
	if err == nil || !strings.Contains(err.Error(), "statement 3") {
		t.Fatalf("a failing statement: %v, want the change to fail naming statement 3", err)
	}
	if got, _ := s.Load(ctx, "session-2"); len(got) != 0 {
		t.Fatal("the events of a change whose statement failed were committed")
	}
	if got := left(); !slices.Equal(got, []string{"t2"}) {
		t.Fatalf("the statements of a failed change were committed: %v left", got)
	}
}

// A transaction that took a lower position can commit after one that took a
// higher position. A reader that followed positions would skip it; ReadLog
// must hold back until it commits and then deliver both, once each.
func TestReadLogNeverSkipsAnEventThatCommitsLate(t *testing.T) {
	t.Parallel()
	s, pool := newStore(t)
	ctx := context.Background()

	slow, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Rollback(ctx)
	slowEvent := appendInTx(t, s, slow, "slow", ev("Slow", `{}`))

	fast, err := s.Append(ctx, "fast", 0, ev("Fast", `{}`))
	if err != nil {
		t.Fatal(err)
	}
	if fast.Last.Position <= slowEvent.Position {
		t.Fatalf("setup: fast position %d should be above slow %d", fast.Last.Position, slowEvent.Position)
	}
	seen, err := s.ReadLog(ctx, Cursor{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 0 {
		t.Fatalf("read %d events past an uncommitted lower position", len(seen))
	}
	if err := slow.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	seen = readAtLeast(t, s, Cursor{}, 100, 2)
	if len(seen) != 2 || seen[0].Type != "Slow" || seen[1].Type != "Fast" {
		t.Fatalf("after commit read %v, want Slow then Fast", types(seen))
	}
	again, err := s.ReadLog(ctx, seen[1].Commit, 100)
	if err != nil || len(again) != 0 {
		t.Fatalf("read %d events again after the cursor (%v)", len(again), err)
	}
}

// Here the transaction with the older id takes the higher position and commits
// last: the log order follows transactions, so the reader must deliver the
// higher position first and still miss nothing.
func TestReadLogOrdersByTransactionWhenPositionsCross(t *testing.T) {
	t.Parallel()
	s, pool := newStore(t)
	ctx := context.Background()

	older, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer older.Rollback(ctx)
	if _, err := older.Exec(ctx, "SELECT pg_current_xact_id()"); err != nil { // take a transaction id now
		t.Fatal(err)
	}
	younger, err := s.Append(ctx, "younger", 0, ev("Younger", `{}`))
	if err != nil {
		t.Fatal(err)
	}
	olderEvent := appendInTx(t, s, older, "older", ev("Older", `{}`))
	if olderEvent.Position <= younger.Last.Position {
		t.Fatalf("setup: older position %d should be above younger %d", olderEvent.Position, younger.Last.Position)
	}
	if seen, _ := s.ReadLog(ctx, Cursor{}, 100); len(seen) != 0 {
		t.Fatalf("read %v while an older transaction was open", types(seen))
	}
	if err := older.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	seen := readAtLeast(t, s, Cursor{}, 1, 1)
	if len(seen) != 1 || seen[0].Type != "Older" {
		t.Fatalf("first read %v, want Older", types(seen))
	}
	rest := readAtLeast(t, s, seen[0].Commit, 100, 1)
	if len(rest) != 1 || rest[0].Type != "Younger" {
		t.Fatalf("second read %v, want Younger", types(rest))
	}
}

func appendInTx(t *testing.T, s *Store, tx pgx.Tx, stream string, e Event) Event {
	t.Helper()
	a := StreamAppend{Stream: stream, Events: []Event{e}}
	p := &pending{start: time.Now()}
	query, args, err := s.appendArgs(&a, p)
	if err != nil {
		t.Fatal(err)
	}
	var id uuid.UUID
	var pos, version int64
	var txt string
	if err := tx.QueryRow(context.Background(), query, args...).Scan(&id, &pos, &txt, &version); err != nil {
		t.Fatal(err)
	}
	out := a.Events[0]
	out.Position = pos
	return out
}

func types(es []Event) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Type
	}
	return out
}

func TestAnyVersionAppendsNeverConflict(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Append(ctx, "audit", AnyVersion, ev("LoginFailed", `{}`)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	got, err := s.Load(ctx, "audit")
	if err != nil || len(got) != 10 {
		t.Fatalf("audit stream has %d events (%v), want 10", len(got), err)
	}
	for i, e := range got {
		if e.Version != int64(i+1) {
			t.Fatalf("event %d has version %d", i, e.Version)
		}
	}
}

// Postgres planned a load again on every call while it judged a custom plan
// for each array cheaper than the generic one, and planning cost more than
// the load: the streams reach the query hidden from the planner, so it
// settles on the generic plan after its first five custom ones.
func TestLoadStreamsIsNotPlannedOnEveryCall(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, url := testenv.Database(t)
	pool := testenv.OneConnection(t, url)
	s := NewStore(pool, testenv.Sealer(t), nil)
	streams := []string{"p-1", "p-2", "p-3", "p-4"}
	for _, name := range streams {
		if _, err := s.Append(ctx, name, 0, ev("E1", `{}`), ev("E2", `{}`)); err != nil {
			t.Fatal(err)
		}
	}
	const loads = 20
	for i := range loads {
		if _, err := s.LoadStreams(ctx, streams[i%4:]...); err != nil {
			t.Fatal(err)
		}
	}
	if generic, custom := testenv.Plans(t, pool, "e.stream_id = ANY"); generic == 0 || custom > 5 {
		t.Errorf("%d loads ran %d generic and %d custom plans; want at most the 5 custom plans Postgres tries first", loads, generic, custom)
	}
}
