package eventstore

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/internal/natsbus"
	"github.com/authd/authd/internal/testenv"
)

// userEv is an event of user's, as commands append them.
func userEv(user uuid.UUID, typ string) Event {
	e := ev(typ, `{}`)
	e.UserID = user
	return e
}

// appendFor appends events to user's own stream, after the version it is at.
func appendFor(t *testing.T, s *Store, user uuid.UUID, events ...Event) {
	t.Helper()
	if _, err := s.Write(context.Background(), Change{Appends: []StreamAppend{userAppend(t, s, user, events...)}}); err != nil {
		t.Fatal(err)
	}
}

// userAppend is an append of events to user's own stream, after the version
// it is at.
func userAppend(t *testing.T, s *Store, user uuid.UUID, events ...Event) StreamAppend {
	t.Helper()
	stream := "user-" + user.String()
	have, err := s.Load(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	return StreamAppend{Stream: stream, Expected: int64(len(have)), Events: events}
}

// erasableIn is what stream_messages must hold for msgs: every message with
// a user id but those that end an account.
func erasableIn(msgs map[uint64]Event) map[streamRecord]bool {
	want := map[streamRecord]bool{}
	for seq, e := range msgs {
		if e.UserID != uuid.Nil && e.Type != domain.TypeAccountDeleted && e.Type != domain.TypeSignupExpired {
			want[streamRecord{user: e.UserID, seq: seq}] = true
		}
	}
	return want
}

func recorded(t *testing.T, pool *pgxpool.Pool) map[streamRecord]bool {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT user_id, seq FROM stream_messages`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[streamRecord]bool{}
	for rows.Next() {
		var r streamRecord
		var seq int64
		if err := rows.Scan(&r.user, &seq); err != nil {
			t.Fatal(err)
		}
		r.seq = uint64(seq)
		got[r] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}

func checkRecorded(t *testing.T, pool *pgxpool.Pool, bus *natsbus.Bus) {
	t.Helper()
	// A running relay saves its records with its checkpoint, a moment after
	// it publishes: wait for that save rather than read before it.
	var want, got map[streamRecord]bool
	deadline := time.Now().Add(10 * time.Second)
	for {
		want, got = erasableIn(streamMessages(t, bus)), recorded(t, pool)
		if maps.Equal(got, want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !maps.Equal(got, want) {
		t.Fatalf("stream_messages holds %d records %v, want the %d erasable messages of the stream %v", len(got), got, len(want), want)
	}
}

// relayUntilSaved runs a relay until it has saved its checkpoint at stream
// sequence seq, and checks that what the stream holds is recorded: n records.
func relayUntilSaved(t *testing.T, s *Store, pool *pgxpool.Pool, bus *natsbus.Bus, cfg RelayConfig, seq uint64, n int) {
	t.Helper()
	_, stop := runRelay(t, s, bus, cfg)
	testenv.Eventually(t, 10*time.Second, func() bool { return savedCheckpoint(t, pool).seq == seq })
	stop()
	checkRecorded(t, pool, bus)
	if got := len(recorded(t, pool)); got != n {
		t.Fatalf("%d records, want %d", got, n)
	}
}

// savedCheckpoint is the relay's checkpoint as saved.
func savedCheckpoint(t *testing.T, pool *pgxpool.Pool) relayed {
	t.Helper()
	var c relayed
	var tx string
	var seq int64
	if err := pool.QueryRow(context.Background(), `SELECT tx_id::text, position, stream_seq FROM relay_checkpoint`).Scan(&tx, &c.cp.Position, &seq); err != nil {
		t.Fatal(err)
	}
	var err error
	if c.cp.Tx, err = ParseTx(tx); err != nil {
		t.Fatal(err)
	}
	c.seq = uint64(seq)
	return c
}

// Every published message of a user, but those that end an account, is
// recorded with its stream sequence, and the checkpoint saved with the
// sequence of its event.
func TestRelayRecordsEachUsersMessages(t *testing.T) {
	t.Parallel()
	onEachNATS(t, func(t *testing.T, s *Store, pool *pgxpool.Pool, bus *natsbus.Bus) {
		alice, bob := uuid.New(), uuid.New()
		appendFor(t, s, alice, userEv(alice, "UserRegistered"), userEv(alice, "EmailVerified"))
		appendFor(t, s, bob, userEv(bob, "UserRegistered"))
		if _, err := s.Append(context.Background(), "tenant-x", 0, ev("TenantCreated", `{}`)); err != nil {
			t.Fatal(err)
		}
		appendFor(t, s, alice, userEv(alice, domain.TypeAccountDeleted))
		appendFor(t, s, bob, userEv(bob, domain.TypeSignupExpired))
		_, stop := runRelay(t, s, bus, RelayConfig{})
		waitForMessages(t, bus, 6, 10*time.Second)
		stop()
		checkRecorded(t, pool, bus)
		if got := len(recorded(t, pool)); got != 3 {
			t.Fatalf("%d records, want 3: alice's two messages and bob's first", got)
		}
		msgs := streamMessages(t, bus)
		if cp := savedCheckpoint(t, pool); cp.seq != 6 || cp.cp != msgs[6].Commit {
			t.Fatalf("checkpoint %s at stream sequence %d, want %s at 6", cp.cp, cp.seq, msgs[6].Commit)
		}
	})
}

// A relay that dies after publishing but before saving its checkpoint has
// not saved the records of what it published either: the next one reads
// them back from the stream as it moves the checkpoint forward.
func TestRelayRecordsWhatItPublishedBeforeACrash(t *testing.T) {
	t.Parallel()
	onEachNATS(t, func(t *testing.T, s *Store, pool *pgxpool.Pool, bus *natsbus.Bus) {
		ctx := context.Background()
		users := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
		for _, u := range users {
			appendFor(t, s, u, userEv(u, "UserRegistered"))
		}
		_, stop := runRelay(t, s, bus, RelayConfig{})
		waitForMessages(t, bus, 3, 10*time.Second)
		stop()
		before := savedCheckpoint(t, pool)
		for _, u := range users {
			appendFor(t, s, u, userEv(u, "SessionStarted"), userEv(u, "SessionRefreshed"))
		}
		_, stop = runRelay(t, s, bus, RelayConfig{})
		waitForMessages(t, bus, 9, 10*time.Second)
		stop()
		// The crash: neither the checkpoint nor the records of the second
		// run were saved.
		if _, err := pool.Exec(ctx, `WITH f AS (DELETE FROM stream_messages WHERE seq > $3)
			UPDATE relay_checkpoint SET tx_id = $1::text::xid8, position = $2, stream_seq = $3`,
			before.cp.txText(), before.cp.Position, int64(before.seq)); err != nil {
			t.Fatal(err)
		}
		if got := len(recorded(t, pool)); got != 3 {
			t.Fatalf("%d records after the crash, want the first run's 3", got)
		}
		relayUntilSaved(t, s, pool, bus, RelayConfig{}, 9, 9)
		if got := len(streamMessages(t, bus)); got != 9 {
			t.Fatalf("stream holds %d messages, want 9: nothing published twice", got)
		}
	})
}

// A checkpoint saved before the relay recorded anything (stream_seq 0, an
// upgrade) has the next relay record the whole stream once.
func TestRelayRecordsTheStreamPublishedBeforeItRecorded(t *testing.T) {
	t.Parallel()
	onEachNATS(t, func(t *testing.T, s *Store, pool *pgxpool.Pool, bus *natsbus.Bus) {
		alice, bob := uuid.New(), uuid.New()
		appendFor(t, s, alice, userEv(alice, "UserRegistered"))
		appendFor(t, s, bob, userEv(bob, "UserRegistered"), userEv(bob, "EmailVerified"))
		_, stop := runRelay(t, s, bus, RelayConfig{})
		waitForMessages(t, bus, 3, 10*time.Second)
		stop()
		if _, err := pool.Exec(context.Background(), `WITH f AS (DELETE FROM stream_messages) UPDATE relay_checkpoint SET stream_seq = 0`); err != nil {
			t.Fatal(err)
		}
		relayUntilSaved(t, s, pool, bus, RelayConfig{}, 3, 3)
	})
}

// A save of the checkpoint that fails hands its records on to the next
// save, which is past them: none may be left out.
func TestRelayRecordsWhatAFailedSaveHeld(t *testing.T) {
	t.Parallel()
	s, pool := newStore(t)
	bus := testenv.NATS(t, testenv.EmbeddedNATS)
	// The first statement that records anything fails, once.
	if _, err := pool.Exec(context.Background(), `CREATE SEQUENCE record_attempts;
		CREATE FUNCTION fail_first_record() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF nextval('record_attempts') = 1 THEN RAISE EXCEPTION 'the first save fails'; END IF;
			RETURN NULL;
		END $$;
		CREATE TRIGGER fail_first_record AFTER INSERT ON stream_messages FOR EACH STATEMENT EXECUTE FUNCTION fail_first_record()`); err != nil {
		t.Fatal(err)
	}
	users := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	for _, u := range users {
		appendFor(t, s, u, userEv(u, "UserRegistered"))
	}
	// Saved by the next save, after the first failed: a relay stopped
	// before then would read its records back from the stream instead.
	relayUntilSaved(t, s, pool, bus, RelayConfig{Backoff: 50 * time.Millisecond}, 3, 3)
	var attempts int64
	if err := pool.QueryRow(context.Background(), `SELECT last_value FROM record_attempts`).Scan(&attempts); err != nil || attempts < 2 {
		t.Fatalf("%d saves recorded (%v): the first never failed, and this test proved nothing", attempts, err)
	}
}
