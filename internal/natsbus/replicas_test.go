package natsbus_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

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

// A stream lookup that fails for another reason than the stream not being
// there (no answer while its leader is elected, JetStream unavailable) is
// returned as it is: a create or update after it only waited out a second
// timeout before the caller could try again.
func TestEnsureStreamCreatesOnlyAStreamThatIsNotThere(t *testing.T) {
	t.Parallel()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true}) // no JetStream
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// What a create or update would send; nobody answers it.
	writes := make(chan *nats.Msg, 8)
	for _, api := range []string{"CREATE", "UPDATE"} {
		if _, err := nc.ChanSubscribe("$JS.API.STREAM."+api+".AUTH_EVENTS_X", writes); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// Without JetStream the lookup fails at once; a create or update sent
	// after it waits for an answer until this deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := natsbus.Open(ctx, natsbus.Config{URL: srv.ClientURL(), Stream: "AUTH_EVENTS_X", SubjectPrefix: "x.auth.events"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	if _, err := b.EnsureStream(ctx); err == nil {
		t.Fatal("EnsureStream on a server without JetStream succeeded")
	}
	select { // a request sent was received before its requester gave up
	case msg := <-writes:
		t.Fatalf("EnsureStream sent %s after its lookup failed; want the lookup's error alone", msg.Subject)
	default:
	}
}
