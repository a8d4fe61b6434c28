package eventstore

import (
	"bytes"
	"context"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/internal/natsbus"
	"github.com/authd/authd/internal/testenv"
)

// erase appends user's AccountDeleted and queues the stream erasure in its
// transaction, as DELETE /me does.
func erase(t *testing.T, s *Store, user uuid.UUID) {
	t.Helper()
	if _, err := s.Write(context.Background(), Change{
		Appends: []StreamAppend{userAppend(t, s, user, userEv(user, domain.TypeAccountDeleted))},
		Also:    []Statement{QueueStreamErasure(user)},
	}); err != nil {
		t.Fatal(err)
	}
}

func erasuresPending(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM stream_erasures`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// checkErased checks that the stream holds what it held before, less the
// messages of erased users that an erasure deletes, plus what was
// published since, and that records are left of what it holds only.
func checkErased(t *testing.T, pool *pgxpool.Pool, bus *natsbus.Bus, before map[uint64]Event, erased ...uuid.UUID) {
	t.Helper()
	now := streamMessages(t, bus)
	for seq, e := range before {
		gone := false
		for _, u := range erased {
			gone = gone || (e.UserID == u && Erasable(e))
		}
		if _, there := now[seq]; there == gone {
			t.Errorf("message %d (%s of user %s): in the stream %t, want %t", seq, e.Type, e.UserID, there, !gone)
		}
	}
	checkRecorded(t, pool, bus)
}

// An erasure deletes exactly its user's messages from the stream, once the
// relay has published its transaction, but for the AccountDeleted that
// outside consumers must still receive; other users' messages stay.
func TestStreamErasureDeletesTheUsersMessagesButItsEnd(t *testing.T) {
	t.Parallel()
	onEachNATS(t, func(t *testing.T, s *Store, pool *pgxpool.Pool, bus *natsbus.Bus) {
		alice, bob := uuid.New(), uuid.New()
		appendFor(t, s, alice, userEv(alice, "UserRegistered"), userEv(alice, "EmailVerified"))
		appendFor(t, s, bob, userEv(bob, "UserRegistered"))
		if _, err := s.Append(context.Background(), "session-a", 0, userEv(alice, "SessionStarted"), userEv(alice, "SessionRefreshed")); err != nil {
			t.Fatal(err)
		}
		appendFor(t, s, bob, userEv(bob, "EmailVerified"))
		runRelay(t, s, bus, RelayConfig{})
		waitForMessages(t, bus, 6, 10*time.Second)
		before := streamMessages(t, bus)

		erase(t, s, alice)
		appendFor(t, s, bob, userEv(bob, "SessionStarted"))
		// The purge may end before the relay publishes bob's newest event,
		// which came after the erasure: wait for both.
		testenv.Eventually(t, 30*time.Second, func() bool {
			if erasuresPending(t, pool) != 0 {
				return false
			}
			for _, e := range streamMessages(t, bus) {
				if e.UserID == bob && e.Type == "SessionStarted" {
					return true
				}
			}
			return false
		})
		checkErased(t, pool, bus, before, alice)
		now := streamMessages(t, bus)
		if len(now) != 4 {
			t.Fatalf("stream holds %d messages, want bob's three and alice's AccountDeleted: %v", len(now), now)
		}
		for _, e := range now {
			if e.UserID == alice && e.Type != domain.TypeAccountDeleted {
				t.Fatalf("alice's %s is still in the stream", e.Type)
			}
		}
	})
}

// The purge waits for the relay to publish the erasure's transaction: while
// an older transaction holds the relay back, nothing is deleted, and the
// metrics show the erasure pending and ageing.
func TestStreamErasureWaitsForTheRelayAndShowsItsLag(t *testing.T) {
	t.Parallel()
	onEachNATS(t, func(t *testing.T, s *Store, pool *pgxpool.Pool, bus *natsbus.Bus) {
		ctx := context.Background()
		reg := prometheus.NewRegistry()
		r := NewRelay(s, bus, RelayConfig{LagEvery: 50 * time.Millisecond}, slog.New(slog.DiscardHandler), reg)
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { r.Run(runCtx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
		alice := uuid.New()
		appendFor(t, s, alice, userEv(alice, "UserRegistered"), userEv(alice, "EmailVerified"))
		waitForMessages(t, bus, 2, 10*time.Second)
		before := streamMessages(t, bus)

		older := holdBack(t, pool)
		erase(t, s, alice)
		testenv.Eventually(t, 30*time.Second, func() bool {
			return gatherGauge(t, reg, "authd_stream_erasures_pending") == 1 && gatherGauge(t, reg, "authd_stream_erasure_lag_seconds") > 1
		})
		if got := len(streamMessages(t, bus)); got != 2 {
			t.Fatalf("stream holds %d messages while the erasure's transaction is unpublished, want alice's 2", got)
		}
		if err := older.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 30*time.Second, func() bool { return erasuresPending(t, pool) == 0 })
		checkErased(t, pool, bus, before, alice)
		testenv.Eventually(t, 30*time.Second, func() bool {
			return gatherGauge(t, reg, "authd_stream_erasures_pending") == 0 && gatherGauge(t, reg, "authd_stream_erasure_lag_seconds") == 0
		})
	})
}

// The projections read the stream, so the purge waits for them to pass the
// erasure; a projection that does not move holds it up for ProjectionWait
// only.
func TestStreamErasureWaitsForTheProjectionsForAWhile(t *testing.T) {
	t.Parallel()
	onEachNATS(t, func(t *testing.T, s *Store, pool *pgxpool.Pool, bus *natsbus.Bus) {
		ctx := context.Background()
		if _, err := pool.Exec(ctx, `INSERT INTO projection_checkpoints (name) VALUES ('moving'), ('stopped')`); err != nil {
			t.Fatal(err)
		}
		alice, bob := uuid.New(), uuid.New()
		appendFor(t, s, alice, userEv(alice, "UserRegistered"))
		appendFor(t, s, bob, userEv(bob, "UserRegistered"))
		_, stop := runRelay(t, s, bus, RelayConfig{ProjectionWait: time.Hour})
		waitForMessages(t, bus, 2, 10*time.Second)
		erase(t, s, alice)
		waitForMessages(t, bus, 3, 10*time.Second)
		testenv.Eventually(t, 10*time.Second, func() bool { return savedCheckpoint(t, pool).seq == 3 })
		// Both projections move past the erasure but one: still waiting.
		if _, err := pool.Exec(ctx, `UPDATE projection_checkpoints SET tx_id = c.tx_id, position = c.position
			FROM relay_checkpoint c WHERE name = 'moving'`); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		if len(streamMessages(t, bus)) != 3 || erasuresPending(t, pool) != 1 {
			t.Fatal("the erasure went ahead while a projection had not passed it")
		}
		stop()
		before := streamMessages(t, bus)
		runRelay(t, s, bus, RelayConfig{ProjectionWait: 100 * time.Millisecond})
		testenv.Eventually(t, 30*time.Second, func() bool { return erasuresPending(t, pool) == 0 })
		checkErased(t, pool, bus, before, alice)
	})
}

// A purge that dies after deleting the messages, before forgetting them,
// is done again from the start: the messages already gone are fine.
func TestStreamErasureRepeatedAfterACrashIsHarmless(t *testing.T) {
	t.Parallel()
	onEachNATS(t, func(t *testing.T, s *Store, pool *pgxpool.Pool, bus *natsbus.Bus) {
		ctx := context.Background()
		alice, bob := uuid.New(), uuid.New()
		appendFor(t, s, alice, userEv(alice, "UserRegistered"), userEv(alice, "EmailVerified"))
		appendFor(t, s, bob, userEv(bob, "UserRegistered"))
		_, stop := runRelay(t, s, bus, RelayConfig{})
		waitForMessages(t, bus, 3, 10*time.Second)
		before := streamMessages(t, bus)
		aliceRecords := recorded(t, pool)
		erase(t, s, alice)
		testenv.Eventually(t, 30*time.Second, func() bool { return erasuresPending(t, pool) == 0 })
		stop()
		// The crash: the messages are gone, their records and the erasure not.
		for r := range aliceRecords {
			if r.user != alice {
				continue
			}
			if _, err := pool.Exec(ctx, `INSERT INTO stream_messages (user_id, seq) VALUES ($1, $2)`, r.user, int64(r.seq)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := pool.Exec(ctx, `INSERT INTO stream_erasures (user_id) VALUES ($1)`, alice); err != nil {
			t.Fatal(err)
		}
		runRelay(t, s, bus, RelayConfig{})
		testenv.Eventually(t, 30*time.Second, func() bool { return erasuresPending(t, pool) == 0 })
		checkErased(t, pool, bus, before, alice)
		if got := len(streamMessages(t, bus)); got != 2 {
			t.Fatalf("stream holds %d messages, want bob's and alice's AccountDeleted", got)
		}
	})
}

// The purge overwrites what it deletes: the personal data is no longer in
// the embedded server's files, where a plain delete leaves it until the
// block is compacted.
func TestStreamErasureOverwritesTheMessages(t *testing.T) {
	t.Parallel()
	s, pool := newStore(t)
	cfg := testenv.NATSConfig(t, testenv.EmbeddedNATS)
	bus := testenv.OpenNATS(t, cfg)
	alice, bob := uuid.New(), uuid.New()
	const secret = "alice.erase.me@example.com"
	registered := ev("UserRegistered", `{"email":"`+secret+`"}`)
	registered.UserID = alice
	appendFor(t, s, alice, registered)
	appendFor(t, s, bob, userEv(bob, "UserRegistered"))
	runRelay(t, s, bus, RelayConfig{})
	waitForMessages(t, bus, 2, 10*time.Second)
	inFiles := func() bool {
		found := false
		err := filepath.WalkDir(cfg.DataDir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			found = found || bytes.Contains(b, []byte(secret))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return found
	}
	testenv.Eventually(t, 10*time.Second, inFiles)
	erase(t, s, alice)
	testenv.Eventually(t, 30*time.Second, func() bool { return erasuresPending(t, pool) == 0 })
	if inFiles() {
		t.Fatalf("%s is still in the stream's files after the erasure", secret)
	}
}
