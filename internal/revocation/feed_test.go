package revocation

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/testenv"
)

// revokeInLog appends a session's revocation to the log only: nothing relays
// it to NATS and no projection applies it.
func revokeInLog(t *testing.T, pool *pgxpool.Pool, session uuid.UUID) {
	t.Helper()
	store := eventstore.NewStore(pool, testenv.Sealer(t), nil)
	user := uuid.New()
	data, err := json.Marshal(domain.SessionRevoked{SessionID: session, UserID: user, Reason: domain.RevokedByUser})
	if err != nil {
		t.Fatal(err)
	}
	e := eventstore.Event{Type: domain.TypeSessionRevoked, Data: data, UserID: user, OccurredAt: time.Now()}
	if _, err := store.Append(context.Background(), domain.SessionStream(session), eventstore.AnyVersion, e); err != nil {
		t.Fatal(err)
	}
}

// A revocation committed before an instance starts but not yet projected
// (and published before it subscribed) is known once Load returns.
func TestLoadKnowsRevocationsTheReadModelLacks(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	session := uuid.New()
	revokeInLog(t, pool, session)
	if loadedSet(t, pool).Allows(session, uuid.New(), time.Now()) {
		t.Fatal("a session revoked in the log but not in the read model is allowed after Load")
	}
}

// loadedSet is a set whose feed has loaded the revocations of pool's log.
func loadedSet(t *testing.T, pool *pgxpool.Pool) *Set {
	t.Helper()
	s := New(time.Now)
	bus := testenv.NATS(t, testenv.MachineNATS)
	feed, err := s.Follow(bus.Conn(), bus.Subject, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(feed.Stop)
	if err := feed.Load(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	return s
}

// An erased user's revocation still revokes: it carries ids, which
// erasure keeps, and the feed reads nothing personal of it.
func TestAnErasedUsersRevocationStillRevokes(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	ctx := context.Background()
	store := eventstore.NewStore(pool, testenv.Sealer(t), nil)
	session, user := uuid.New(), uuid.New()
	e, err := eventstore.Encode(&domain.SessionRevoked{SessionID: session, UserID: user, Reason: domain.RevokedByUser})
	if err != nil {
		t.Fatal(err)
	}
	e.UserID, e.Metadata = user, eventstore.Metadata{IP: "192.0.2.44", UserAgent: "test", RequestID: "r"}
	if _, err := store.Write(ctx, eventstore.Change{
		Appends: []eventstore.StreamAppend{{Stream: domain.SessionStream(session), Expected: eventstore.AnyVersion, Events: []eventstore.Event{e}}},
		Also:    []eventstore.Statement{eventstore.Shred(user)},
	}); err != nil {
		t.Fatal(err)
	}
	if logged, err := store.ReadStream(ctx, domain.SessionStream(session)); err != nil || len(logged) != 1 || !logged[0].Erased {
		t.Fatalf("setup: the revocation is not erased in the log: %+v (%v)", logged, err)
	}
	if loadedSet(t, pool).Allows(session, user, time.Now()) {
		t.Fatal("an erased user's revoked session is allowed")
	}
}

// While the relay lags, the backstop brings into the set a revocation that
// NATS never carried; while NATS is healthy it sends Postgres nothing.
func TestBackstopReadsTheLogOnlyWhileTheRelayLags(t *testing.T) {
	t.Parallel()
	_, url := testenv.Database(t)
	statements := testenv.NewStatements()
	pool := statements.Pool(t, url, 4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	s := New(time.Now)
	bus := testenv.NATS(t, testenv.MachineNATS)
	feed, err := s.Follow(bus.Conn(), bus.Subject, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer feed.Stop()
	if err := feed.Load(ctx, pool); err != nil {
		t.Fatal(err)
	}
	var lag atomic.Int64
	done := make(chan struct{})
	go func() {
		feed.Backstop(statements.Label(ctx, "backstop"), pool, func() time.Duration { return time.Duration(lag.Load()) })
		close(done)
	}()
	defer func() { cancel(); <-done }()

	session := uuid.New()
	revokeInLog(t, pool, session)
	// Several of the backstop's ticks with NATS connected and the relay
	// caught up: a slower machine only makes them fewer.
	time.Sleep(4 * PollEvery)
	if got := statements.Of("backstop"); len(got) > 0 {
		t.Fatalf("the backstop queried Postgres with NATS healthy: %q", got)
	}
	if !s.Allows(session, uuid.New(), time.Now()) {
		t.Fatal("the revocation reached the set with no relay and no backstop read")
	}

	lag.Store(int64(2 * LagLimit))
	deadline := time.Now().Add(5 * time.Second)
	for s.Allows(session, uuid.New(), time.Now()) {
		if time.Now().After(deadline) {
			t.Fatal("the backstop did not bring the revocation in 5s with the relay lagging")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, q := range statements.Of("backstop") {
		if !strings.Contains(q, "pg_snapshot_xmin") {
			t.Errorf("the backstop sent %q", q)
		}
	}
}

// After a reconnect, what NATS brings says nothing of what was published
// while the connection was down: a message then must not move the horizon
// past a revocation the subscription missed, or the backstop's read, which
// starts at the horizon, would miss it too.
func TestAReconnectedFeedIsNotTrustedUntilTheLogIsRead(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	srv := testenv.StartNATSProcess(t)
	nc, err := nats.Connect(srv.URL, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	subject := func(typ string) string { return "t" + typ }
	s := New(time.Now)
	feed, err := s.Follow(nc, subject, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer feed.Stop()
	if err := feed.Load(ctx, pool); err != nil {
		t.Fatal(err)
	}

	srv.Kill()
	srv.Start()
	deadline := time.Now().Add(30 * time.Second)
	for !nc.IsConnected() || nc.Stats().Reconnects == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no reconnect to the restarted nats-server in 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Committed while the connection was down: its message never came.
	missed := uuid.New()
	revokeInLog(t, pool, missed)
	// A later revocation arrives over the new connection.
	later := uuid.New()
	published, err := eventstore.Encode(&domain.SessionRevoked{SessionID: later, UserID: uuid.New()})
	if err != nil {
		t.Fatal(err)
	}
	published.ID = uuid.New()
	data, err := published.MarshalEnvelope()
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(subject(domain.TypeSessionRevoked))
	msg.Data = data
	msg.Header.Set(eventstore.HeaderTx, "9223372036854775807")
	if err := nc.PublishMsg(msg); err != nil {
		t.Fatal(err)
	}
	for s.Allows(later, uuid.New(), time.Now()) {
		if time.Now().After(deadline) {
			t.Fatal("the published revocation did not arrive in 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}

	if why := feed.doubt(func() time.Duration { return 0 }); why == "" {
		t.Fatal("the feed is trusted after a reconnect it has not caught up on")
	}
	if err := feed.readLog(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if s.Allows(missed, uuid.New(), time.Now()) {
		t.Fatal("the revocation missed while disconnected is not read from the log")
	}
	if why := feed.doubt(func() time.Duration { return 0 }); why != "" {
		t.Fatalf("the feed is still in doubt after catching up: %s", why)
	}
}
