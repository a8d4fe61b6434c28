package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/internal/testenv"
)

// gatedQuerier holds the first query until the test opens the gate, so that
// the reads behind it pile up; it counts the queries sent.
type gatedQuerier struct {
	Querier
	gate    chan struct{}
	queries atomic.Int32
	first   atomic.Int32 // how many reads the first query answers
}

func (g *gatedQuerier) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if g.queries.Add(1) == 1 {
		g.first.Store(int32(len(args[0].([]pgtype.UUID))))
		<-g.gate
	}
	return g.Querier.Query(ctx, sql, args...)
}

func TestUserReaderAnswersReadsThatWaitedInOneQuery(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	ctx := context.Background()
	const users = 50
	ids := make([]uuid.UUID, users)
	tenant := uuid.New()
	if _, err := pool.Exec(ctx, `INSERT INTO tenants (id, name, owner_id, created_at) VALUES ($1, 'Acme', $1, now())`, tenant); err != nil {
		t.Fatal(err)
	}
	for i := range ids {
		ids[i] = uuid.New()
		if _, err := pool.Exec(ctx, `INSERT INTO users (id, tenant_id, email, name, email_verified, created_at, updated_at)
			VALUES ($1, $2, $3, $4, true, now(), now())`, ids[i], tenant, fmt.Sprintf("u%d@example.com", i), fmt.Sprintf("User %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pool.Exec(ctx, `INSERT INTO two_factor (user_id, enabled, enabled_at, backup_codes_remaining, updated_at)
		VALUES ($1, true, now(), 10, now())`, ids[7]); err != nil {
		t.Fatal(err)
	}

	q := &gatedQuerier{Querier: pool, gate: make(chan struct{})}
	r := NewUserReader(q)
	const reads = 200
	type result struct {
		want uuid.UUID
		got  UserView
		err  error
	}
	results := make([]result, reads)
	gone, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range reads {
		want := ids[i%users]
		if i%10 == 3 {
			want = uuid.New() // unknown
		}
		readCtx := ctx
		if i%10 == 5 {
			readCtx = gone // its client goes away while it waits
		}
		results[i].want = want
		wg.Go(func() { results[i].got, results[i].err = r.Get(readCtx, want) })
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		first := int(q.first.Load())
		return first > 0 && first+len(r.pending) == reads
	})
	cancel()
	close(q.gate)
	wg.Wait()

	if n := q.queries.Load(); n != 2 {
		t.Errorf("%d reads took %d queries; want 2 (the first, then everything that waited behind it)", reads, n)
	}
	for i, res := range results {
		switch {
		case i%10 == 5:
			if !errors.Is(res.err, context.Canceled) && res.err != nil {
				t.Errorf("read %d: a read whose client left got %v", i, res.err)
			}
		case i%10 == 3:
			if !errors.Is(res.err, ErrNotFound) {
				t.Errorf("read %d of an unknown user: got %v, want ErrNotFound", i, res.err)
			}
		case res.err != nil:
			t.Errorf("read %d: %v", i, res.err)
		case res.got.ID != res.want || res.got.Tenant.ID != tenant || res.got.Tenant.Name != "Acme" ||
			res.got.TwoFactorEnabled != (res.want == ids[7]) || res.got.Email != fmt.Sprintf("u%d@example.com", i%users):
			t.Errorf("read %d: got %+v for user %s", i, res.got, res.want)
		}
	}
}

// Like eventstore's loads, the reader's query hides its ids from the planner
// so that Postgres keeps one generic plan instead of planning every read.
func TestUserReaderIsNotPlannedOnEveryRead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, url := testenv.Database(t)
	pool := testenv.OneConnection(t, url)
	r := NewUserReader(pool)
	const reads = 20
	for range reads {
		if _, err := r.Get(ctx, uuid.New()); !errors.Is(err, ErrNotFound) {
			t.Fatalf("read of an unknown user: %v, want ErrNotFound", err)
		}
	}
	if generic, custom := testenv.Plans(t, pool, "u.id = ANY"); generic == 0 || custom > 5 {
		t.Errorf("%d reads ran %d generic and %d custom plans; want at most the 5 custom plans Postgres tries first", reads, generic, custom)
	}
}

// explainingQuerier runs every query under EXPLAIN ANALYZE before running
// it, and keeps the last plan.
type explainingQuerier struct {
	Querier
	t    *testing.T
	plan []struct{ Plan planNode }
}

type planNode struct {
	Relation string     `json:"Relation Name"`
	Rows     float64    `json:"Actual Rows"`
	Removed  float64    `json:"Rows Removed by Filter"`
	Loops    float64    `json:"Actual Loops"`
	Plans    []planNode `json:"Plans"`
}

func (e *explainingQuerier) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	var plan []byte
	if err := e.Querier.QueryRow(ctx, `EXPLAIN (ANALYZE, FORMAT JSON) `+sql, args...).Scan(&plan); err != nil {
		e.t.Fatalf("explain: %v", err)
	}
	if err := json.Unmarshal(plan, &e.plan); err != nil {
		e.t.Fatalf("read the plan: %v", err)
	}
	return e.Querier.Query(ctx, sql, args...)
}

// rowsRead sums, over the plan's scans of table, the rows they went through.
func (n planNode) rowsRead(table string) float64 {
	read := 0.0
	if n.Relation == table {
		read = (n.Rows + n.Removed) * n.Loops
	}
	for _, child := range n.Plans {
		read += child.rowsRead(table)
	}
	return read
}

// A read of a few users reads a few rows of tenants and two_factor, however
// many other users signed up: joined, these tables were hashed whole for
// every batch of reads, and GET /me slowed with every signup (issue 19's
// soak).
func TestUserReaderReadsOnlyTheRowsOfItsUsers(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	ctx := context.Background()
	const others = 3000
	if _, err := pool.Exec(ctx, `WITH t AS (INSERT INTO tenants (id, name, owner_id, created_at)
			SELECT gen_random_uuid(), 'Tenant ' || g, gen_random_uuid(), now() FROM generate_series(1, $1) g RETURNING id, name),
		u AS (INSERT INTO users (id, tenant_id, email, name, email_verified, created_at, updated_at)
			SELECT gen_random_uuid(), t.id, t.name || '@example.com', t.name, true, now(), now() FROM t RETURNING id)
		INSERT INTO two_factor (user_id, enabled, enabled_at, backup_codes_remaining, updated_at)
			SELECT id, true, now(), 10, now() FROM u`, others); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `ANALYZE tenants, users, two_factor`); err != nil {
		t.Fatal(err)
	}
	var ids []uuid.UUID
	if err := pool.QueryRow(ctx, `SELECT array_agg(id) FROM (SELECT id FROM users LIMIT 4) u`).Scan(&ids); err != nil {
		t.Fatal(err)
	}

	q := &explainingQuerier{Querier: pool, t: t}
	r := NewUserReader(q)
	found, err := r.query(ctx, []*userRead{{id: ids[0]}, {id: ids[1]}, {id: ids[2]}, {id: ids[3]}})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != len(ids) || !found[ids[0]].view.TwoFactorEnabled || found[ids[0]].view.Tenant.Name == "" {
		t.Fatalf("read %d users: %+v", len(ids), found)
	}
	for _, table := range []string{"tenants", "two_factor", "users"} {
		if read := q.plan[0].Plan.rowsRead(table); read > 2*float64(len(ids)) {
			t.Errorf("a read of %d users went through %.0f rows of %s (of %d)", len(ids), read, table, others)
		}
	}
}

// A user whose stream, or two-factor stream, holds an event past its
// projection's saved checkpoint is read as ErrBehind, whatever the row says;
// once the checkpoint covers the event, the row is the answer again.
func TestUserReaderSaysWhenTheLogIsAhead(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	ctx := context.Background()
	r := NewUserReader(pool)
	user, tenant := uuid.New(), uuid.New()
	if _, err := pool.Exec(ctx, `INSERT INTO users (id, tenant_id, email, name, email_verified, created_at, updated_at)
		VALUES ($1, $2, 'behind@example.com', 'Behind', false, now(), now())`, user, tenant); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(ctx, user); err != nil {
		t.Fatalf("read with an empty log: %v", err)
	}
	version := map[string]int{}
	appendEvent := func(stream, eventType string) (tx string, pos int64) {
		t.Helper()
		version[stream]++
		if err := pool.QueryRow(ctx, `INSERT INTO events (id, stream_id, version, type, occurred_at, user_id)
			VALUES ($1, $2, $3, $4, now(), $5) RETURNING tx_id::text, position`, uuid.New(), stream, version[stream], eventType, user).Scan(&tx, &pos); err != nil {
			t.Fatal(err)
		}
		return tx, pos
	}
	checkpoint := func(name, tx string, pos int64) {
		t.Helper()
		if _, err := pool.Exec(ctx, `INSERT INTO projection_checkpoints (name, tx_id, position) VALUES ($1, $2::xid8, $3)
			ON CONFLICT (name) DO UPDATE SET tx_id = excluded.tx_id, position = excluded.position`, name, tx, pos); err != nil {
			t.Fatal(err)
		}
	}

	tx, pos := appendEvent(domain.UserStream(user), domain.TypeEmailVerified)
	if _, err := r.Get(ctx, user); !errors.Is(err, ErrBehind) {
		t.Fatalf("read with the user's event past every checkpoint: %v, want ErrBehind", err)
	}
	checkpoint(Users{}.Name(), tx, pos)
	if _, err := r.Get(ctx, user); err != nil {
		t.Fatalf("read with the users checkpoint at the event: %v", err)
	}

	// An event the projection does not apply changes nothing the row shows.
	appendEvent(domain.UserStream(user), domain.TypePasswordRehashed)
	if _, err := r.Get(ctx, user); err != nil {
		t.Fatalf("read with only a password rehash past the checkpoint: %v", err)
	}

	tx, pos = appendEvent(domain.TwoFactorStream(user), domain.TypeTotpEnabled)
	checkpoint(Users{}.Name(), tx, pos) // the users projection is not the one that shows two-factor state
	if _, err := r.Get(ctx, user); !errors.Is(err, ErrBehind) {
		t.Fatalf("read with a two-factor event past its projection's checkpoint: %v, want ErrBehind", err)
	}
	checkpoint(TwoFactor{}.Name(), tx, pos)
	if _, err := r.Get(ctx, user); err != nil {
		t.Fatalf("read with both checkpoints at the events: %v", err)
	}
}

// SessionsBehind names the user's sessions with events past the sessions
// checkpoint, and no one else's.
func TestSessionsBehindListsTheUsersSessionsPastTheCheckpoint(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	ctx := context.Background()
	user, other := uuid.New(), uuid.New()
	old, fresh, theirs := uuid.New(), uuid.New(), uuid.New()
	appendEvent := func(session, owner uuid.UUID) (tx string, pos int64) {
		t.Helper()
		if err := pool.QueryRow(ctx, `INSERT INTO events (id, stream_id, version, type, occurred_at, user_id)
			VALUES ($1, $2, 1, 'Test', now(), $3) RETURNING tx_id::text, position`, uuid.New(), domain.SessionStream(session), owner).Scan(&tx, &pos); err != nil {
			t.Fatal(err)
		}
		return tx, pos
	}
	tx, pos := appendEvent(old, user)
	if _, err := pool.Exec(ctx, `INSERT INTO projection_checkpoints (name, tx_id, position) VALUES ($1, $2::xid8, $3)`, Sessions{}.Name(), tx, pos); err != nil {
		t.Fatal(err)
	}
	appendEvent(fresh, user)
	appendEvent(theirs, other)
	got, err := SessionsBehind(ctx, pool, user)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != fresh {
		t.Fatalf("SessionsBehind = %v; want only %s", got, fresh)
	}
}

// ActiveSessions lists a session exactly while its refresh token lives
// (domain.RefreshRules.Lives): one last seen at the bound is still listed,
// as its token still rotates then.
func TestActiveSessionsListsWhileTheRefreshTokenLives(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	ctx := context.Background()
	rules := domain.RefreshRules{TTL: time.Hour}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	since := rules.LiveSince(now)
	user := uuid.New()
	want := map[uuid.UUID]bool{}
	for _, seen := range []time.Time{since.Add(-time.Microsecond), since, since.Add(time.Microsecond)} {
		id := uuid.New()
		if _, err := pool.Exec(ctx, `INSERT INTO sessions (id, user_id, tenant_id, amr, created_at, last_seen_at)
			VALUES ($1, $2, $3, '{pwd}', $4, $4)`, id, user, uuid.New(), seen); err != nil {
			t.Fatal(err)
		}
		want[id] = rules.Lives(seen, now)
	}
	list, err := ActiveSessions(ctx, pool, user, since)
	if err != nil {
		t.Fatal(err)
	}
	got := map[uuid.UUID]bool{}
	for _, s := range list {
		got[s.ID] = true
	}
	for id, lives := range want {
		if got[id] != lives {
			t.Errorf("session %s: listed %v, but its refresh token lives %v", id, got[id], lives)
		}
	}
}
