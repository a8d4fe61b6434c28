package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/natsbus"
	"github.com/authd/authd/internal/testenv"
)

type harness struct {
	pool  *pgxpool.Pool
	store *eventstore.Store
	bus   *natsbus.Bus
}

func newHarness(t *testing.T, bus *natsbus.Bus) *harness {
	t.Helper()
	pool, _ := testenv.Database(t)
	return &harness{pool: pool, store: eventstore.NewStore(pool, testenv.Sealer(t), nil), bus: bus}
}

func (h *harness) startRelay(t *testing.T) (stop func()) {
	t.Helper()
	r := eventstore.NewRelay(h.store, h.bus, eventstore.RelayConfig{Backoff: 50 * time.Millisecond}, testenv.Logger(t), nil)
	return background(t, r.Run)
}

func (h *harness) startRunner(t *testing.T) *Runner {
	t.Helper()
	r := NewRunner(h.pool, h.bus, All(), Config{Backoff: 50 * time.Millisecond}, testenv.Logger(t), nil)
	background(t, r.Run)
	return r
}

// background runs run until the test ends or stop is called.
func background(t *testing.T, run func(context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { run(ctx); close(done) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

func (h *harness) append(t testing.TB, stream string, expected int64, events ...domain.Event) eventstore.Cursor {
	t.Helper()
	out := make([]eventstore.Event, len(events))
	for i, e := range events {
		var err error
		if out[i], err = eventstore.Encode(e); err != nil {
			t.Fatal(err)
		}
	}
	c, err := h.store.Append(context.Background(), stream, expected, out...)
	if err != nil {
		t.Fatal(err)
	}
	return c.Last
}

// registerUsers registers n users, verifying every other one, and returns the
// cursor of the last event.
func (h *harness) registerUsers(t testing.TB, n int) eventstore.Cursor {
	t.Helper()
	var last eventstore.Cursor
	tenant := uuid.New()
	for i := range n {
		id := uuid.New()
		reg := &domain.UserRegistered{UserID: id, TenantID: tenant, Email: fmt.Sprintf("u%d-%s@example.com", i, id), Name: fmt.Sprintf("User %d", i)}
		reg.Secret.PasswordHash = "$argon2id$secret"
		if i%2 == 0 {
			last = h.append(t, "user-"+id.String(), 0, reg, domain.EmailVerified{UserID: id})
		} else {
			last = h.append(t, "user-"+id.String(), 0, reg)
		}
	}
	return last
}

func waitFor(t *testing.T, r *Runner, name string, c eventstore.Cursor) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, ok := Find(name)
	if !ok {
		t.Fatalf("no projection named %s", name)
	}
	if err := r.Wait(ctx, p, c); err != nil {
		t.Fatalf("projection %s never reached %s: %v (statuses %+v)", name, c, err, r.Statuses())
	}
}

// dumpUsers renders the users read model for comparison.
func dumpUsers(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT id, tenant_id, email, name, email_verified, created_at, updated_at FROM users ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id, tenant uuid.UUID
		var email, name string
		var verified bool
		var created, updated time.Time
		if err := rows.Scan(&id, &tenant, &email, &name, &verified, &created, &updated); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s|%s|%s|%s|%t|%d|%d", id, tenant, email, name, verified, created.UnixMicro(), updated.UnixMicro()))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func verifiedCount(rows []string) int {
	n := 0
	for _, r := range rows {
		if strings.Contains(r, "|true|") {
			n++
		}
	}
	return n
}

func TestUsersProjectionFollowsTheLog(t *testing.T) {
	t.Parallel()
	for _, which := range testenv.NATSServers() {
		t.Run(string(which), func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, testenv.NATS(t, which))
			h.startRelay(t)
			r := h.startRunner(t)
			last := h.registerUsers(t, 120)
			waitFor(t, r, "users", last)
			rows := dumpUsers(t, h.pool)
			if len(rows) != 120 || verifiedCount(rows) != 60 {
				t.Fatalf("users read model has %d users, %d verified; want 120 and 60", len(rows), verifiedCount(rows))
			}
			for _, row := range rows {
				if strings.Contains(row, "argon2id") {
					t.Fatal("a secret reached the read model")
				}
			}
		})
	}
}

func TestWaitIsBoundedByItsContext(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testenv.NATS(t, testenv.EmbeddedNATS))
	r := NewRunner(h.pool, h.bus, All(), Config{}, slog.New(slog.DiscardHandler), nil) // not running
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := r.Wait(ctx, Users{}, eventstore.Cursor{Tx: 1, Position: 1}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait on a stopped projection = %v, want a deadline error", err)
	}
	if err := r.Wait(context.Background(), nope{}, eventstore.Cursor{}); !errors.Is(err, ErrUnknownProjection) {
		t.Fatalf("Wait on an unknown projection = %v", err)
	}
}

// A rebuild while events keep arriving must end equal to a projection that
// followed the log live: nothing skipped at the hand-over, nothing twice.
func TestRebuildWhileRunningEqualsLive(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testenv.NATS(t, testenv.EmbeddedNATS))
	h.startRelay(t)
	r := h.startRunner(t)
	waitFor(t, r, "users", h.registerUsers(t, 300))
	live := dumpUsers(t, h.pool)
	liveIndexes := indexShapes(t, h.pool, "users")

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var lastDuring eventstore.Cursor
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			lastDuring = h.registerUsers(t, 5)
		}
	}()
	stats, err := Rebuild(context.Background(), h.pool, h.store, Users{}, 50, nil)
	stop()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if stats.Events < int64(len(live)) {
		t.Fatalf("rebuild read %d events, fewer than the %d users before it", stats.Events, len(live))
	}
	final := h.registerUsers(t, 3)
	waitFor(t, r, "users", final)
	if lastDuring.Before(final) {
		waitFor(t, r, "users", final)
	}
	rebuilt := dumpUsers(t, h.pool)
	if got := indexShapes(t, h.pool, "users"); !slices.Equal(got, liveIndexes) {
		t.Fatalf("the rebuilt users table has indexes %q, the live one had %q", got, liveIndexes)
	}

	// A projection built from nothing, straight from the log, is the reference.
	if _, err := h.pool.Exec(context.Background(), `CREATE TABLE reference (LIKE users INCLUDING ALL)`); err != nil {
		t.Fatal(err)
	}
	events, err := h.store.ReadLog(context.Background(), eventstore.Cursor{}, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	var want int
	for _, e := range events {
		if e.Type == domain.TypeUserRegistered {
			want++
		}
	}
	if len(rebuilt) != want {
		t.Fatalf("after rebuild the read model has %d users; the log registered %d", len(rebuilt), want)
	}
	if got := dumpUsers(t, h.pool)[:len(live)]; len(got) != len(live) {
		t.Fatal("rows vanished")
	}
	liveSet := map[string]bool{}
	for _, row := range rebuilt {
		liveSet[row] = true
	}
	for _, row := range live {
		if !liveSet[row] {
			t.Fatalf("a user projected live differs after the rebuild: %s", row)
		}
	}
	for _, st := range r.Statuses() {
		if st.Err != nil {
			t.Fatalf("projection %s failed after the rebuild: %v", st.Name, st.Err)
		}
	}
}

// indexShapes lists a table's indexes without their names, which a rebuild
// may choose differently.
func indexShapes(t *testing.T, pool *pgxpool.Pool, table string) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT regexp_replace(pg_get_indexdef(indexrelid), 'INDEX \S+ ON \S+', 'INDEX ON')
		FROM pg_index WHERE indrelid = $1::regclass ORDER BY 1`, table)
	if err != nil {
		t.Fatal(err)
	}
	shapes, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(shapes) < 2 {
		t.Fatalf("table %s has indexes %q: want its key and at least one secondary index", table, shapes)
	}
	return shapes
}

// An event the projection cannot apply stops it there: later events wait
// behind it rather than being applied over a hole.
func TestAnEventThatCannotBeAppliedStopsTheProjection(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testenv.NATS(t, testenv.EmbeddedNATS))
	h.startRelay(t)
	r := h.startRunner(t)
	good := h.registerUsers(t, 2)
	waitFor(t, r, "users", good)
	stranger := uuid.New()
	bad := h.append(t, "user-"+stranger.String(), 0, domain.EmailVerified{UserID: stranger})
	after := h.registerUsers(t, 1)

	// However slow the machine, the projection reaches the bad event and
	// stops there: wait for the stop, not for a time.
	testenv.Eventually(t, 30*time.Second, func() bool { return r.Statuses()[0].Err != nil })
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := r.Wait(ctx, Users{}, after); err == nil {
		t.Fatal("the projection moved past an event it cannot apply")
	}
	st := r.Statuses()[0]
	if st.Err == nil || st.Checkpoint.Before(good) || !st.Checkpoint.Before(bad) {
		t.Fatalf("status %+v: want an error and a checkpoint at %s, before %s", st, good, bad)
	}
	if n := len(dumpUsers(t, h.pool)); n != 2 {
		t.Fatalf("%d users projected; the one after the bad event must wait", n)
	}
}

// Two instances: one applies, the other's waiters still see the progress.
func TestOnlyOneInstanceAppliesAProjection(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testenv.NATS(t, testenv.MachineNATS))
	h.startRelay(t)
	a, b := h.startRunner(t), h.startRunner(t)
	last := h.registerUsers(t, 50)
	waitFor(t, a, "users", last)
	waitFor(t, b, "users", last)
	if la, lb := a.Statuses()[0].Leading, b.Statuses()[0].Leading; la == lb {
		t.Fatalf("leading: a=%v b=%v, want exactly one", la, lb)
	}
	if n := len(dumpUsers(t, h.pool)); n != 50 {
		t.Fatalf("%d users, want 50", n)
	}
}

// Writes go on while NATS is down; once it is back, the backlog arrives and
// each event is applied once.
func TestNATSOutageLosesNothing(t *testing.T) {
	t.Parallel()
	serverCfg := testenv.NATSConfig(t, testenv.EmbeddedNATS)
	var restarted *natsbus.Bus
	t.Cleanup(func() { // first registered, so it runs after everything using the server has stopped
		if restarted != nil {
			restarted.Close()
		}
	})
	server := testenv.OpenNATS(t, serverCfg)
	clientCfg := natsbus.Config{URL: server.ClientURL(), Stream: serverCfg.Stream, SubjectPrefix: serverCfg.SubjectPrefix}
	h := newHarness(t, testenv.OpenNATS(t, clientCfg))
	h.startRelay(t)
	r := h.startRunner(t)
	waitFor(t, r, "users", h.registerUsers(t, 20))

	server.Close()
	last := h.registerUsers(t, 30) // appends do not need NATS
	var err error
	if restarted, err = natsbus.Open(context.Background(), serverCfg, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, r, "users", last)
	rows := dumpUsers(t, h.pool)
	if len(rows) != 50 || verifiedCount(rows) != 25 {
		t.Fatalf("after the outage: %d users, %d verified; want 50 and 25", len(rows), verifiedCount(rows))
	}
	var msgs uint64
	stream, err := h.bus.EnsureStream(context.Background())
	if err == nil {
		info, ierr := stream.Info(context.Background())
		if ierr == nil {
			msgs = info.State.Msgs
		}
		err = ierr
	}
	if err != nil || msgs != 75 {
		t.Fatalf("stream holds %d messages (%v), want 75 (50 registrations, 25 verifications)", msgs, err)
	}
}

// failingUsers is the users projection with an Apply that always fails.
type failingUsers struct{ Users }

func (failingUsers) Apply(*Batch, []eventstore.Event) error {
	return errors.New("cannot apply")
}

func TestAFailedRebuildLeavesNoScratchSchema(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testenv.NATS(t, testenv.EmbeddedNATS))
	h.registerUsers(t, 3)
	// The log is read below the oldest transaction running anywhere on the
	// server (other tests' included): wait until the events can be read.
	testenv.Eventually(t, 10*time.Second, func() bool {
		events, err := h.store.ReadLog(context.Background(), eventstore.Cursor{}, 10)
		return err == nil && len(events) > 0
	})
	if _, err := Rebuild(context.Background(), h.pool, h.store, failingUsers{}, 0, nil); err == nil {
		t.Fatal("a rebuild whose projection cannot apply succeeded")
	}
	var left int
	if err := h.pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'authd_rebuild_%'`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Fatalf("%d scratch schemas left behind", left)
	}
}

// Events a projection does not use move its checkpoint at once for this
// instance's waiters, and into Postgres (for other instances') soon after,
// though no batch of them is applied.
func TestSkippedEventsMoveTheCheckpoint(t *testing.T) {
	t.Parallel()
	for _, which := range testenv.NATSServers() {
		t.Run(string(which), func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, testenv.NATS(t, which))
			h.startRelay(t)
			r := h.startRunner(t)
			waitFor(t, r, "users", h.registerUsers(t, 2))
			var last eventstore.Cursor
			for i := range 20 {
				c, err := h.store.Append(context.Background(), fmt.Sprintf("audit-%d", i), 0, eventstore.Event{Type: "SomethingUsersSkip", Data: []byte(`{}`)})
				if err != nil {
					t.Fatal(err)
				}
				last = c.Last
			}
			waitFor(t, r, "users", last)
			testenv.Eventually(t, 10*time.Second, func() bool {
				cp, err := loadCheckpoint(context.Background(), h.pool, "users")
				return err == nil && !cp.Cursor.Before(last)
			})
			if n := len(dumpUsers(t, h.pool)); n != 2 {
				t.Fatalf("users read model has %d users, want 2", n)
			}
		})
	}
}

// An instance that does not apply a projection hears from the one that does
// when its checkpoint moves. With polls and takeovers that never come, that
// is the only way its waiters can see a write.
func TestAFollowerHearsTheLeadersCheckpoints(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testenv.NATS(t, testenv.EmbeddedNATS))
	h.startRelay(t)
	leader := h.startRunner(t)
	waitFor(t, leader, "users", h.registerUsers(t, 1))
	testenv.Eventually(t, 10*time.Second, func() bool { return leader.Statuses()[0].Leading })
	follower := NewRunner(h.pool, h.bus, All(), Config{Poll: time.Hour, Takeover: time.Hour, Backoff: 50 * time.Millisecond}, testenv.Logger(t), nil)
	background(t, follower.Run)
	for range 3 {
		waitFor(t, follower, "users", h.registerUsers(t, 2))
	}
	if follower.Statuses()[0].Leading {
		t.Fatal("the follower took the projection over")
	}
}

// unselective is a projection that does not say which events it uses.
type unselective struct{ Projection }

// nope is a projection no runner runs.
type nope struct{ Projection }

func (nope) Name() string { return "nope" }

func TestUsesSaysWhichEventsAProjectionUses(t *testing.T) {
	t.Parallel()
	r := NewRunner(nil, nil, []Projection{Users{}, Sessions{}, unselective{Passkeys{}}}, Config{}, slog.New(slog.DiscardHandler), nil)
	for _, c := range []struct {
		projection Projection
		eventType  string
		want       bool
	}{
		{Users{}, domain.TypeUserRegistered, true},
		{Users{}, domain.TypeLoginSucceeded, false},
		{Users{}, domain.TypeSessionStarted, false},
		{Sessions{}, domain.TypeSessionStarted, true},
		{Passkeys{}, domain.TypeSessionStarted, true}, // it may use anything
		{nope{}, domain.TypeUserRegistered, false},
	} {
		if got := r.Uses(c.projection, c.eventType); got != c.want {
			t.Errorf("Uses(%q, %q) = %v, want %v", c.projection.Name(), c.eventType, got, c.want)
		}
	}
}

// A checkpoint moved in Postgres behind the leader's back (by a rebuild's
// swap, say) is noticed by the one-round-trip apply, which then changes
// nothing; the batch is applied under the checkpoint's lock instead, and what
// the moved checkpoint covers is skipped, not applied again.
func TestACheckpointMovedBehindTheLeadersBackIsRespected(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testenv.NATS(t, testenv.EmbeddedNATS))
	h.startRelay(t)
	r := h.startRunner(t)
	waitFor(t, r, "users", h.registerUsers(t, 1))

	ahead := eventstore.Cursor{Tx: 1 << 40, Position: 1 << 40}
	if _, err := h.pool.Exec(context.Background(), `UPDATE projection_checkpoints SET tx_id = $2::text::xid8, position = $3 WHERE name = $1`,
		"users", fmt.Sprint(ahead.Tx), ahead.Position); err != nil {
		t.Fatal(err)
	}
	h.registerUsers(t, 1)
	waitFor(t, r, "users", ahead)
	var n int
	if err := h.pool.QueryRow(context.Background(), `SELECT count(*) FROM users`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("the users read model holds %d users, want 1: the second registration was covered by the moved checkpoint", n)
	}
	for _, st := range r.Statuses() {
		if st.Err != nil {
			t.Errorf("projection %s stopped: %v", st.Name, st.Err)
		}
	}
}

// An instance whose projection failed while it applied it, and which then
// lost the projection to another instance, serves reads as well as that one
// does: it must not stay failing (readiness at 503 for good), and its
// checkpoint metric follows the checkpoint it sees.
func TestAnInstanceThatLostAProjectionReportsWhatItSeesNow(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testenv.NATS(t, testenv.EmbeddedNATS))
	h.startRelay(t)
	// a fails at every batch, then waits long enough before trying again
	// that b, which applies batches fine, takes the projection over.
	a := NewRunner(h.pool, h.bus, []Projection{failingUsers{}}, Config{Backoff: 3 * time.Second}, testenv.Logger(t), nil)
	background(t, a.Run)
	h.registerUsers(t, 2)
	testenv.Eventually(t, 30*time.Second, func() bool { return a.Statuses()[0].Err != nil })

	b := h.startRunner(t)
	last := h.registerUsers(t, 3)
	waitFor(t, b, "users", last)
	if !b.Statuses()[0].Leading {
		t.Fatal("the healthy instance does not apply the projection")
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		st := a.Statuses()[0]
		return st.Err == nil && !st.Leading && gaugeValue(a.failing.WithLabelValues("users")) == 0 &&
			gaugeValue(a.position.WithLabelValues("users")) == float64(last.Position)
	})
}

// A projection stopped by something other than an event (here its consumer
// deleted under it) recovers as soon as it runs again with nothing left to
// apply, not at the next event, which may be long in coming.
func TestAProjectionCaughtUpAgainIsNotFailing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testenv.NATS(t, testenv.EmbeddedNATS))
	h.startRelay(t)
	r := h.startRunner(t)
	waitFor(t, r, "users", h.registerUsers(t, 2))
	testenv.Eventually(t, 30*time.Second, func() bool { return r.Statuses()[0].Leading })

	ctx := context.Background()
	stream, err := h.bus.EnsureStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	if err := stream.DeleteConsumer(ctx, "authd_projection_users"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		c, err := stream.Consumer(ctx, "authd_projection_users")
		return err == nil && c.CachedInfo().Created.After(deleted)
	})
	testenv.Eventually(t, 30*time.Second, func() bool {
		st := r.Statuses()[0]
		return st.Err == nil && st.Leading && gaugeValue(r.failing.WithLabelValues("users")) == 0
	})
}

// gaugeValue reads a gauge as a scrape would.
func gaugeValue(g prometheus.Gauge) float64 {
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		return -1
	}
	return m.GetGauge().GetValue()
}

// A projection's pull requests ask JetStream for a heartbeat every second,
// so a request lost with no error (its node killed, its consumer's leader
// moved) is noticed in two seconds, not nats.go's default of thirty, during
// which the projection applied nothing.
func TestAProjectionsPullRequestsAskForFrequentHeartbeats(t *testing.T) {
	t.Parallel()
	cfg := testenv.NATSConfig(t, testenv.MachineNATS)
	bus := testenv.OpenNATS(t, cfg)
	h := newHarness(t, bus)
	nc, err := nats.Connect(cfg.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// A copy of each pull request of the users projection's consumer.
	pulls, err := nc.SubscribeSync("$JS.API.CONSUMER.MSG.NEXT." + cfg.Stream + ".authd_projection_users")
	if err != nil {
		t.Fatal(err)
	}
	h.startRunner(t)
	msg, err := pulls.NextMsg(30 * time.Second)
	if err != nil {
		t.Fatalf("no pull request of the users projection within 30 s: %v", err)
	}
	var req struct {
		Expires   time.Duration `json:"expires"`
		Heartbeat time.Duration `json:"idle_heartbeat"`
	}
	if err := json.Unmarshal(msg.Data, &req); err != nil {
		t.Fatalf("pull request %q: %v", msg.Data, err)
	}
	if req.Heartbeat <= 0 || req.Heartbeat > time.Second || req.Expires > 5*time.Second {
		t.Fatalf("pull request asks for heartbeats every %s and expires in %s; want a heartbeat each second at most and 5 s at most", req.Heartbeat, req.Expires)
	}
}

// An erasure deletes messages from the stream that a projection which lags
// has not read yet: JetStream skips them, and the projection goes on past the
// gap rather than stall waiting for a sequence that will never come.
func TestAProjectionGoesOnPastMessagesDeletedAhead(t *testing.T) {
	t.Parallel()
	for _, which := range testenv.NATSServers() {
		t.Run(string(which), func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, testenv.NATS(t, which))
			h.startRelay(t)
			r := NewRunner(h.pool, h.bus, All(), Config{Backoff: 50 * time.Millisecond}, testenv.Logger(t), nil)
			stop := background(t, r.Run)
			waitFor(t, r, "users", h.registerUsers(t, 4))
			stop()
			last := h.registerUsers(t, 6) // 9 messages, sequences 7 to 15
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			stream, err := h.bus.EnsureStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, 20*time.Second, func() bool {
				info, err := stream.Info(ctx)
				return err == nil && info.State.LastSeq == 15
			})
			// Two users erased: the first of the batch, whose registration is
			// the next message the projection needs, and one further on.
			for _, seq := range []uint64{7, 8, 12} {
				if err := stream.SecureDeleteMsg(ctx, seq); err != nil {
					t.Fatal(err)
				}
			}
			r = h.startRunner(t)
			waitFor(t, r, "users", last)
			if rows := dumpUsers(t, h.pool); len(rows) != 8 {
				t.Fatalf("the users read model has %d users, want the 8 whose registration is in the stream", len(rows))
			}
		})
	}
}
