package natsbus_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/authd/authd/internal/natsbus"
	"github.com/authd/authd/internal/testenv"
)

// AUTHD_NATS_REPLICAS replicates the stream; a stream an operator made
// larger is never scaled down by authd's next start, whatever authd is
// configured with.
func TestEnsureStreamReplicatesAndNeverScalesDown(t *testing.T) {
	t.Parallel()
	nodes := testenv.StartNATSPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	open := func(cfg natsbus.Config) *natsbus.Bus {
		t.Helper()
		b, err := natsbus.Open(ctx, cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		return b
	}
	replicas := func(b *natsbus.Bus) int {
		t.Helper()
		s, err := b.EnsureStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.Config.Replicas
	}

	wide := nodes[0].Config()
	wide.Replicas = 2
	if n := replicas(open(wide)); n != 2 {
		t.Fatalf("with Replicas 2 the stream has %d replicas", n)
	}

	// The operator's R2 stream, met by an instance configured with the default.
	narrow := wide
	narrow.Replicas = 0
	if n := replicas(open(narrow)); n != 2 {
		t.Fatalf("an instance with the default replica count scaled the stream from 2 to %d replicas", n)
	}
}
