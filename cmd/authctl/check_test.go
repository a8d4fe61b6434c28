package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/natsbus"
	"github.com/authd/authd/internal/testenv"
	"github.com/authd/authd/projections"
)

// checked is a deployment after normal traffic: every event published and
// applied, then the relay and projections stopped so that the test alone
// changes anything.
type checked struct {
	pool   *pgxpool.Pool
	store  *eventstore.Store
	bus    *natsbus.Bus
	stream string
	env    env
	events int
}

func newChecked(t *testing.T) checked {
	t.Helper()
	c, halt := startChecked(t)
	halt()
	return c
}

// startChecked is newChecked with the relay and projections left running
// until halt.
func startChecked(t *testing.T) (checked, func()) {
	t.Helper()
	natsCfg := testenv.NATSConfig(t, testenv.MachineNATS)
	bus := testenv.OpenNATS(t, natsCfg)
	pool, url := testenv.Database(t)
	store := newStore(t, pool)
	ctx := context.Background()

	const users = 20
	tenant := uuid.New()
	events := 0
	for i := range users {
		u := uuid.New()
		evs := []eventstore.Event{
			userEvent(t, &domain.UserRegistered{UserID: u, TenantID: tenant, Email: fmt.Sprintf("u%d@example.com", i), Name: "Ada"}, u, tenant),
			userEvent(t, &domain.EmailVerified{UserID: u}, u, tenant),
		}
		if _, err := store.Append(ctx, "user-"+u.String(), 0, evs...); err != nil {
			t.Fatal(err)
		}
		s := uuid.New()
		started := userEvent(t, &domain.SessionStarted{SessionID: s, UserID: u, TenantID: tenant, AMR: []string{"pwd"}}, u, tenant)
		if _, err := store.Append(ctx, "session-"+s.String(), 0, started); err != nil {
			t.Fatal(err)
		}
		events += 3
	}
	owner := uuid.New()
	if _, err := store.Append(ctx, "tenant-"+tenant.String(), 0,
		userEvent(t, &domain.TenantCreated{TenantID: tenant, Name: "Acme", OwnerID: owner}, owner, tenant)); err != nil {
		t.Fatal(err)
	}
	events++
	// Readable first: other tests' open transactions on the same server hold
	// the log's readable end back, and a backlog of 0 before that means nothing.
	waitReadable(t, store, int64(events))

	runCtx, stop := context.WithCancel(ctx)
	relay := eventstore.NewRelay(store, bus, eventstore.RelayConfig{Backoff: 50 * time.Millisecond}, testenv.Logger(t), nil)
	runner := projections.NewRunner(pool, bus, projections.All(), projections.Config{}, testenv.Logger(t), nil)
	relayDone, runnerDone := make(chan struct{}), make(chan struct{})
	go func() { relay.Run(runCtx); close(relayDone) }()
	go func() { runner.Run(runCtx); close(runnerDone) }()
	stopped := false
	halt := func() {
		if !stopped {
			stopped = true
			stop()
			<-relayDone
			<-runnerDone
		}
	}
	t.Cleanup(halt)

	e := env{"DATABASE_URL": url}.withNATS(natsCfg)
	caughtUp(t, e)
	waitForStreamMsgs(t, bus, natsCfg.Stream, uint64(events))
	return checked{pool: pool, store: store, bus: bus, stream: natsCfg.Stream, env: e, events: events}, halt
}

// caughtUp waits until authctl status says the relay and every projection
// have nothing left to do.
func caughtUp(t *testing.T, e env) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := statusOf(t, e)
		caught := s.Relay.LagEvents == 0
		for _, p := range s.Projections {
			caught = caught && p.LagEvents == 0 && !p.NeverRun
		}
		if caught {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay and projections did not catch up: %+v", s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runCheck runs authctl check and decodes its report.
func runCheck(t *testing.T, e env, args ...string) (result, checkReport) {
	t.Helper()
	r := runCLI(t, e, append([]string{"check"}, args...)...)
	var rep checkReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("check printed no JSON report (%v):\n%s", err, r)
	}
	return r, rep
}

// msgAt reads the stream's message at seq.
func (c checked) msgAt(t *testing.T, seq uint64) *jetstream.RawStreamMsg {
	t.Helper()
	s, err := c.bus.JetStream().Stream(context.Background(), c.stream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMsg(context.Background(), seq)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (c checked) deleteMsg(t *testing.T, seq uint64) {
	t.Helper()
	s, err := c.bus.JetStream().Stream(context.Background(), c.stream)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMsg(context.Background(), seq); err != nil {
		t.Fatal(err)
	}
}

// republish appends a copy of m at the stream's end with authd's headers
// only: without its Nats-Msg-Id, which JetStream would drop as a duplicate
// within its window, nor the relay's expected last sequence. As an operator
// republishing by hand, or a faulty relay, would.
func (c checked) republish(t *testing.T, m *jetstream.RawStreamMsg) {
	t.Helper()
	msg := nats.NewMsg(m.Subject)
	msg.Data = m.Data
	for k, v := range m.Header {
		if strings.HasPrefix(k, "Authd-") {
			msg.Header[k] = v
		}
	}
	if _, err := c.bus.JetStream().PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
}

func wantProblem(t *testing.T, r result, rep checkReport, kind string, id string) {
	t.Helper()
	if r.code != exitFailure || rep.Consistent {
		t.Fatalf("check exited %d, consistent=%v; want 1, inconsistent:\n%s", r.code, rep.Consistent, r)
	}
	for _, p := range rep.Stream.Problems {
		if p.Kind == kind && p.EventID.String() == id {
			return
		}
	}
	t.Fatalf("report names no %s problem for event %s:\n%s", kind, id, r)
}

func TestCheckIsCleanAfterNormalTraffic(t *testing.T) {
	t.Parallel()
	c := newChecked(t)
	r, rep := runCheck(t, c.env)
	t.Logf("report:\n%s", r.stdout)
	if r.code != exitOK || !rep.Consistent || len(rep.Problems) != 0 || r.stderr != "" {
		t.Fatalf("check of a consistent deployment:\n%s", r)
	}
	if s := rep.Stream; s.Messages != int64(c.events) || s.Matched != int64(c.events) || s.Pending.Events != 0 || s.Name != c.stream {
		t.Errorf("stream part: %+v, want %d events matched", s, c.events)
	}
	if len(rep.Projections) != len(projections.All()) {
		t.Fatalf("%d projections reported", len(rep.Projections))
	}
	for _, p := range rep.Projections {
		if !p.Consistent || p.LagEvents != 0 || p.Events == 0 {
			t.Errorf("projection %s: %+v", p.Projection, p)
		}
		if p.Projection == "users" && (len(p.Tables) != 2 || p.Tables[0].LiveRows != 20 || p.Tables[0].RebuiltRows != 20) {
			t.Errorf("users tables: %+v", p.Tables)
		}
	}
	// The scratch schemas are gone.
	var n int
	if err := c.pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'authd_check_%'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("%d scratch schemas left (%v)", n, err)
	}

	// An event committed and not yet published is pending, not an
	// inconsistency, while younger than --pending-max.
	u := uuid.New()
	register(t, c.store, u, uuid.New(), "late@example.com")
	waitReadable(t, c.store, int64(c.events+1))
	r, rep = runCheck(t, c.env, "--sample", "5")
	if r.code != exitOK || !rep.Consistent || rep.Stream.Pending.Events != 1 || rep.Stream.Pending.Stalled {
		t.Fatalf("check with one event pending:\n%s", r)
	}
	for _, p := range rep.Projections {
		if p.Projection == "users" && (p.LagEvents != 1 || p.Tables[0].SampledRows != 5) {
			t.Errorf("users with one event pending, sampled: %+v", p)
		}
	}
}

// TestCheckIsCleanWhileTrafficFlows runs the check while events are
// appended, published and applied: the live tables and the checkpoint read in
// one snapshot, and the stream read beside the log, must agree however the
// live projections move on meanwhile.
func TestCheckIsCleanWhileTrafficFlows(t *testing.T) {
	t.Parallel()
	c, halt := startChecked(t)
	defer halt()
	stop := make(chan struct{})
	written := make(chan int)
	go func() {
		n := 0
		defer func() { written <- n }()
		tenant := uuid.New()
		for {
			select {
			case <-stop:
				return
			default:
			}
			u := uuid.New()
			if _, err := c.store.Append(context.Background(), "user-"+u.String(), 0,
				userEvent(t, &domain.UserRegistered{UserID: u, TenantID: tenant, Email: u.String() + "@example.com"}, u, tenant)); err != nil {
				t.Error(err)
				return
			}
			n++
		}
	}()
	// Until the traffic has gone on through a whole check at least once.
	var r result
	var rep checkReport
	for range 3 {
		r, rep = runCheck(t, c.env)
		if r.code != exitOK || !rep.Consistent {
			break
		}
	}
	close(stop)
	n := <-written
	t.Logf("%d events appended during the checks; last report's stream part: %+v", n, rep.Stream)
	if r.code != exitOK || !rep.Consistent {
		t.Fatalf("check during traffic:\n%s", r)
	}
	if n == 0 {
		t.Fatal("no traffic during the checks")
	}
}

// TestCheckFindsAStalledRelay: an event older than --pending-max and still
// unpublished is an inconsistency.
func TestCheckFindsAStalledRelay(t *testing.T) {
	t.Parallel()
	c := newChecked(t)
	u := uuid.New()
	register(t, c.store, u, uuid.New(), "stuck@example.com")
	waitReadable(t, c.store, int64(c.events+1))
	if _, err := c.pool.Exec(context.Background(), `UPDATE events SET occurred_at = now() - interval '1 hour' WHERE stream_id = $1`, "user-"+u.String()); err != nil {
		t.Fatal(err)
	}
	r, rep := runCheck(t, c.env)
	p := rep.Stream.Pending
	if r.code != exitFailure || rep.Consistent || p.Events != 1 || !p.Stalled || p.OldestAgeSeconds < 3600 ||
		!strings.Contains(r.stderr, "relay stalled: the oldest of 1 unpublished events is 36") {
		t.Fatalf("check with an hour-old unpublished event:\n%s", r)
	}
	r, rep = runCheck(t, c.env, "--pending-max", "2h")
	if r.code != exitOK || !rep.Consistent || rep.Stream.Pending.Events != 1 {
		t.Fatalf("the same within --pending-max 2h:\n%s", r)
	}
}

// TestCheckGivesUpAtItsTimeout: a check that cannot finish in --timeout
// (here a read model locked by another session) exits 2 and leaves no
// scratch schema behind.
func TestCheckGivesUpAtItsTimeout(t *testing.T) {
	t.Parallel()
	c := newChecked(t)
	tx, err := c.pool.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(context.Background(), `LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, c.env, "check", "--timeout", "2s")
	tx.Rollback(context.Background())
	if r.code != exitCouldNotCheck || r.stdout != "" || !strings.Contains(r.stderr, "authctl: check: could not check: not finished within --timeout 2s") {
		t.Fatal(r)
	}
	var n int
	if err := c.pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'authd_check_%'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("%d scratch schemas left (%v); check said:\n%s", n, err, r)
	}
}

func TestCheckFindsAMessageDeletedFromTheStream(t *testing.T) {
	t.Parallel()
	c := newChecked(t)
	m := c.msgAt(t, 5)
	c.deleteMsg(t, 5)
	r, rep := runCheck(t, c.env)
	wantProblem(t, r, rep, "missing", m.Header.Get(nats.MsgIdHdr))
	if rep.Stream.Missing != 1 || rep.Stream.Matched != int64(c.events-1) || !strings.Contains(r.stderr, "1 events missing from the stream") {
		t.Errorf("report:\n%s", r)
	}
}

func TestCheckFindsADuplicatedMessage(t *testing.T) {
	t.Parallel()
	c := newChecked(t)
	m := c.msgAt(t, 3)
	c.republish(t, m)
	r, rep := runCheck(t, c.env)
	wantProblem(t, r, rep, "duplicate", m.Header.Get(nats.MsgIdHdr))
	if rep.Stream.Duplicates != 1 || rep.Stream.Matched != int64(c.events) {
		t.Errorf("report:\n%s", r)
	}
}

func TestCheckFindsAMessageOutOfOrder(t *testing.T) {
	t.Parallel()
	c := newChecked(t)
	m := c.msgAt(t, 7)
	c.deleteMsg(t, 7)
	c.republish(t, m)
	r, rep := runCheck(t, c.env)
	wantProblem(t, r, rep, "out_of_order", m.Header.Get(nats.MsgIdHdr))
	if rep.Stream.OutOfOrder != 1 || rep.Stream.Missing != 0 {
		t.Errorf("report:\n%s", r)
	}
}

func TestCheckFindsAReadModelRowAlteredByHand(t *testing.T) {
	t.Parallel()
	c := newChecked(t)
	var id uuid.UUID
	if err := c.pool.QueryRow(context.Background(),
		`UPDATE users SET email_verified = false WHERE id = (SELECT id FROM users ORDER BY id LIMIT 1) RETURNING id`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{nil, {"--sample", "100"}} {
		r, rep := runCheck(t, c.env, args...)
		if r.code != exitFailure || rep.Consistent || !strings.Contains(r.stderr, "projection users: table users has 1 rows unlike a rebuild") {
			t.Fatalf("check %q after a row was altered:\n%s", args, r)
		}
		wantChanged(t, rep, id)
	}
}

// wantChanged checks that the report names the users row id as changed, and
// nothing else.
func wantChanged(t *testing.T, rep checkReport, id uuid.UUID) {
	t.Helper()
	for _, p := range rep.Projections {
		if p.Projection != "users" {
			if !p.Consistent {
				t.Errorf("projection %s reported inconsistent", p.Projection)
			}
			continue
		}
		ex := p.Tables[0].Examples
		var key map[string]string
		if len(ex) == 1 {
			_ = json.Unmarshal(ex[0].Key, &key)
		}
		if p.Consistent || len(ex) != 1 || ex[0].Kind != "changed" || len(key) != 1 || key["id"] != id.String() {
			t.Errorf("users: %+v", p)
		}
	}
	if len(rep.Stream.Problems) != 0 {
		t.Errorf("stream problems: %+v", rep.Stream.Problems)
	}
}

func TestCheckThatCannotReachNATSExitsTwo(t *testing.T) {
	t.Parallel()
	_, url := testenv.Database(t)
	e := env{"DATABASE_URL": url, "NATS_URL": fmt.Sprintf("nats://127.0.0.1:%d", testenv.FreePort(t))}
	r := runCLI(t, e, "check")
	if r.code != exitCouldNotCheck || r.stdout != "" || !strings.Contains(r.stderr, "authctl: check: could not check: connect to NATS") {
		t.Fatal(r)
	}
}

// An erased user's messages are deleted from the stream, all but the
// AccountDeleted: the check counts them as erased, not missing.
func TestCheckCountsAnErasedUsersMessagesAsErased(t *testing.T) {
	t.Parallel()
	// The projections run through the erasure, as in authd: they forget the
	// user at AccountDeleted, as a rebuild from the erased log does.
	c, halt := startChecked(t)
	ctx := context.Background()
	first, err := eventstore.FromMessage(c.msgAt(t, 1).Header, c.msgAt(t, 1).Data)
	if err != nil {
		t.Fatal(err)
	}
	u := first.UserID
	if _, err := c.store.Write(ctx, eventstore.Change{
		Appends: []eventstore.StreamAppend{{Stream: "user-" + u.String(), Expected: 2,
			Events: []eventstore.Event{userEvent(t, &domain.AccountDeleted{UserID: u, TenantID: first.TenantID}, u, first.TenantID)}}},
		Also: []eventstore.Statement{eventstore.Shred(u), eventstore.QueueStreamErasure(u)},
	}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		var n int
		if err := c.pool.QueryRow(ctx, `SELECT count(*) FROM stream_erasures`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 0
	})
	caughtUp(t, c.env)
	halt()

	r, rep := runCheck(t, c.env)
	if r.code != exitOK || !rep.Consistent {
		t.Fatalf("check after an erasure:\n%s", r)
	}
	if s := rep.Stream; s.Erased != 3 || s.Missing != 0 || s.Matched != int64(c.events-2) {
		t.Fatalf("stream part: %+v, want the user's 3 messages erased and the rest and its AccountDeleted matched", s)
	}
}
