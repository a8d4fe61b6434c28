package projections

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/authd/authd/internal/testenv"
)

// A projection that starts again where its last leader stopped keeps its
// durable consumer, and updates it when its settings changed; one whose
// checkpoint is elsewhere gets a consumer that delivers from there. Deleting
// and creating the consumer on every start cost seconds after a NATS node
// loss (BENCHMARKS.md, the chaos suite).
func TestARestartedProjectionKeepsItsConsumer(t *testing.T) {
	t.Parallel()
	for _, which := range testenv.NATSServers() {
		t.Run(string(which), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			h := newHarness(t, testenv.NATS(t, which))
			h.startRelay(t)
			consumer := func() *jetstream.ConsumerInfo {
				t.Helper()
				stream, err := h.bus.EnsureStream(ctx)
				if err != nil {
					t.Fatal(err)
				}
				cons, err := stream.Consumer(ctx, "authd_projection_users")
				if err != nil {
					t.Fatal(err)
				}
				return cons.CachedInfo()
			}
			run := func(cfg Config, users int) {
				t.Helper()
				r := NewRunner(h.pool, h.bus, All(), cfg, testenv.Logger(t), nil)
				stop := background(t, r.Run)
				waitFor(t, r, "users", h.registerUsers(t, users))
				stop()
			}

			run(Config{Backoff: 50 * time.Millisecond}, 10)
			first := consumer()
			run(Config{Backoff: 50 * time.Millisecond}, 10)
			if again := consumer(); !again.Created.Equal(first.Created) {
				t.Errorf("the restarted projection made a new consumer (created %s, then %s)", first.Created, again.Created)
			}

			run(Config{Backoff: 50 * time.Millisecond, AckWait: 2 * time.Minute}, 10)
			updated := consumer()
			if !updated.Created.Equal(first.Created) || updated.Config.AckWait != 2*time.Minute {
				t.Errorf("with a new ack wait: consumer created %s (first %s), ack wait %s", updated.Created, first.Created, updated.Config.AckWait)
			}

			// A rebuild's start from the beginning: the kept consumer is past it.
			if _, err := h.pool.Exec(ctx, `UPDATE projection_checkpoints SET tx_id = '0', position = 0, stream_seq = 0 WHERE name = 'users'`); err != nil {
				t.Fatal(err)
			}
			if _, err := h.pool.Exec(ctx, `TRUNCATE users`); err != nil {
				t.Fatal(err)
			}
			run(Config{Backoff: 50 * time.Millisecond}, 10)
			if replaced := consumer(); replaced.Created.Equal(first.Created) {
				t.Error("a projection restarted from the log's beginning kept a consumer past it")
			}
			if rows := dumpUsers(t, h.pool); len(rows) != 40 {
				t.Errorf("the users read model has %d users after replaying from the beginning; want 40", len(rows))
			}
		})
	}
}
