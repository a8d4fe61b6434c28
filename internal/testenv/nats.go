package testenv

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/authd/authd/internal/natsbus"
)

// NATSServer is which NATS a test runs against.
type NATSServer string

const (
	// MachineNATS is the machine's own nats-server (Debian's 2.9.10) on 4222.
	MachineNATS NATSServer = "machine"
	// EmbeddedNATS is the nats-server module authd embeds (2.15.x).
	EmbeddedNATS NATSServer = "embedded"
)

// NATSServers lists both, so tests run against the oldest and newest server
// authd supports.
func NATSServers() []NATSServer { return []NATSServer{MachineNATS, EmbeddedNATS} }

// MachineNATSURL is the machine's NATS; AUTHD_TEST_NATS overrides it.
func MachineNATSURL() string {
	if u := os.Getenv("AUTHD_TEST_NATS"); u != "" {
		return u
	}
	return "nats://127.0.0.1:4222"
}

const startNATS = "start it with: start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log"

// NATSConfig returns a natsbus configuration with a stream and subjects of the
// test's own. For the embedded server it also picks a data dir and a free port.
func NATSConfig(t testing.TB, which NATSServer) natsbus.Config {
	t.Helper()
	sfx := Suffix()
	cfg := natsbus.Config{Stream: "AUTH_EVENTS_T" + strings.ToUpper(sfx), SubjectPrefix: "t" + sfx + ".auth.events"}
	switch which {
	case MachineNATS:
		cfg.URL = MachineNATSURL()
		host := strings.TrimPrefix(cfg.URL, "nats://")
		c, err := net.DialTimeout("tcp", host, 2*time.Second)
		if err != nil {
			t.Fatalf("NATS is not reachable at %s (%v); %s", cfg.URL, err, startNATS)
		}
		c.Close()
	case EmbeddedNATS:
		cfg.DataDir = t.TempDir()
		cfg.EmbeddedAddr = fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	default:
		t.Fatalf("unknown NATS server %q", which)
	}
	return cfg
}

// NATS opens a bus for the test and closes it (deleting an external stream)
// when the test ends.
func NATS(t testing.TB, which NATSServer) *natsbus.Bus {
	t.Helper()
	return OpenNATS(t, NATSConfig(t, which))
}

// OpenNATS opens a bus on cfg for the test, as NATS does.
func OpenNATS(t testing.TB, cfg natsbus.Config) *natsbus.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bus, err := natsbus.Open(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("open NATS: %v", err)
	}
	if _, err := bus.EnsureStream(ctx); err != nil {
		bus.Close()
		t.Fatalf("NATS at %q has no JetStream stream (%v); %s", cfg.URL, err, startNATS)
	}
	t.Cleanup(func() {
		if cfg.URL != "" {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = bus.JetStream().DeleteStream(ctx, cfg.Stream)
		}
		bus.Close()
	})
	return bus
}

// FreePort returns a loopback TCP port that was free a moment ago (never 4222).
func FreePort(t testing.TB) int {
	t.Helper()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("find a free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if port != 4222 {
			return port
		}
	}
}

// Logger writes through t.Log, so a failing test shows what the code logged.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
