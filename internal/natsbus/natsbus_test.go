package natsbus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// externalURL is the machine's own NATS server (2.9.10 on the dev and CI
// machines): authd must work with it as well as with the embedded 2.15.
const externalURL = "nats://127.0.0.1:4222"

const startExternal = "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log"

// target is one kind of NATS the tests run against.
type target struct {
	name string
	open func(t *testing.T) *Bus
}

func targets() []target {
	return []target{
		{"embedded", func(t *testing.T) *Bus { return openEmbedded(t, t.TempDir()) }},
		{"external", openExternal},
	}
}

// uniqueConfig gives each test its own stream and subjects, so tests can run
// in parallel against the one external server.
func uniqueConfig(t *testing.T) Config {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("random suffix: %v", err)
	}
	suffix := hex.EncodeToString(b)
	return Config{Stream: "TEST_" + suffix, SubjectPrefix: "test." + suffix}
}

// randomLoopbackAddr picks a random address in 127.0.0.0/8 with port 0, so
// the kernel picks a free port and parallel tests never collide, nor touch
// 4222.
func randomLoopbackAddr(t *testing.T) string {
	t.Helper()
	n, err := rand.Int(rand.Reader, big.NewInt(1<<24-2))
	if err != nil {
		t.Fatalf("random address: %v", err)
	}
	v := n.Int64() + 1
	return fmt.Sprintf("127.%d.%d.%d:0", v>>16&0xff, v>>8&0xff, v&0xff)
}

func openEmbedded(t *testing.T, dataDir string) *Bus {
	t.Helper()
	cfg := uniqueConfig(t)
	cfg.DataDir = dataDir
	cfg.EmbeddedAddr = randomLoopbackAddr(t)
	return openBus(t, cfg, slog.New(slog.DiscardHandler))
}

func openExternal(t *testing.T) *Bus {
	t.Helper()
	nc, err := nats.Connect(externalURL, nats.Timeout(2*time.Second))
	if err != nil {
		t.Fatalf("the machine's NATS server is not reachable at %s (%v); these tests need it, start it with:\n  %s", externalURL, err, startExternal)
	}
	nc.Close()
	cfg := uniqueConfig(t)
	cfg.URL = externalURL
	return openBus(t, cfg, slog.New(slog.DiscardHandler))
}

// openBus opens a bus whose stream is deleted and connection closed when the
// test ends.
func openBus(t *testing.T, cfg Config, log *slog.Logger) *Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	b, err := Open(ctx, cfg, log)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(b.Close)
	// Open only logs a stream it could not create, and leaves it to the
	// bus's users; these tests publish at once.
	if _, err := b.EnsureStream(ctx); err != nil {
		t.Fatalf("ensure stream %s: %v", b.StreamName(), err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := b.JetStream().DeleteStream(ctx, b.StreamName()); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Errorf("delete stream %s: %v", b.StreamName(), err)
		}
	})
	return b
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func publish(ctx context.Context, t *testing.T, b *Bus, id string, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	t.Helper()
	msg := &nats.Msg{Subject: b.Subject("UserRegistered"), Data: []byte(`{"id":"` + id + `"}`)}
	return b.JetStream().PublishMsg(ctx, msg, append(opts, jetstream.WithMsgID(id))...)
}

func mustPublish(ctx context.Context, t *testing.T, b *Bus, id string, opts ...jetstream.PublishOpt) *jetstream.PubAck {
	t.Helper()
	ack, err := publish(ctx, t, b, id, opts...)
	if err != nil {
		t.Fatalf("publish %s: %v", id, err)
	}
	return ack
}

func streamState(ctx context.Context, t *testing.T, b *Bus) jetstream.StreamState {
	t.Helper()
	s, err := b.JetStream().Stream(ctx, b.StreamName())
	if err != nil {
		t.Fatalf("stream %s: %v", b.StreamName(), err)
	}
	return s.CachedInfo().State
}

func TestEnsureStream(t *testing.T) {
	t.Parallel()
	for _, srv := range targets() {
		t.Run(srv.name, func(t *testing.T) {
			t.Parallel()
			b := srv.open(t)
			ctx := testContext(t)

			// Open ensured it already; ensuring again must be a no-op.
			s, err := b.EnsureStream(ctx)
			if err != nil {
				t.Fatalf("EnsureStream after Open: %v", err)
			}
			checkStreamConfig(t, b, s.CachedInfo().Config)

			// Someone changes the stream behind authd's back: a retention limit
			// on the audit log must not survive the next start.
			drifted := b.StreamConfig()
			drifted.MaxAge = time.Hour
			drifted.MaxMsgs = 1000
			drifted.Duplicates = time.Minute
			if _, err := b.JetStream().UpdateStream(ctx, drifted); err != nil {
				t.Fatalf("UpdateStream: %v", err)
			}
			s, err = b.EnsureStream(ctx)
			if err != nil {
				t.Fatalf("EnsureStream on a drifted stream: %v", err)
			}
			checkStreamConfig(t, b, s.CachedInfo().Config)
		})
	}
}

func checkStreamConfig(t *testing.T, b *Bus, got jetstream.StreamConfig) {
	t.Helper()
	if got.Name != b.StreamName() {
		t.Errorf("Name = %q, want %q", got.Name, b.StreamName())
	}
	if len(got.Subjects) != 1 || got.Subjects[0] != b.SubjectFilter() {
		t.Errorf("Subjects = %q, want [%q]", got.Subjects, b.SubjectFilter())
	}
	if got.Storage != jetstream.FileStorage {
		t.Errorf("Storage = %v, want file", got.Storage)
	}
	if got.Retention != jetstream.LimitsPolicy {
		t.Errorf("Retention = %v, want limits", got.Retention)
	}
	if got.MaxAge != 0 || got.MaxBytes != -1 || got.MaxMsgs != -1 {
		t.Errorf("MaxAge, MaxBytes, MaxMsgs = %v, %d, %d; want 0, -1, -1 (an audit log keeps everything)", got.MaxAge, got.MaxBytes, got.MaxMsgs)
	}
	if got.Duplicates != 2*time.Minute {
		t.Errorf("Duplicates = %v, want 2m", got.Duplicates)
	}
	if got.Replicas != 1 {
		t.Errorf("Replicas = %d, want 1", got.Replicas)
	}
}

func TestSubjects(t *testing.T) {
	t.Parallel()
	b := openEmbedded(t, t.TempDir())
	prefix := b.cfg.SubjectPrefix
	if got, want := b.Subject("UserRegistered"), prefix+".UserRegistered"; got != want {
		t.Errorf("Subject = %q, want %q", got, want)
	}
	if got, want := b.SubjectFilter(), prefix+".>"; got != want {
		t.Errorf("SubjectFilter = %q, want %q", got, want)
	}
	if !strings.HasPrefix(b.StreamName(), "TEST_") {
		t.Errorf("StreamName = %q", b.StreamName())
	}
}

// Instances sharing a stream nudge each other; those of another stream on
// the same server do not hear it.
func TestSignalReachesListenersOfTheSameStream(t *testing.T) {
	t.Parallel()
	openExternal(t) // fails loudly when the machine's NATS is down
	cfg := uniqueConfig(t)
	cfg.URL = externalURL
	a, b := openBus(t, cfg, slog.New(slog.DiscardHandler)), openBus(t, cfg, slog.New(slog.DiscardHandler))
	other := openExternal(t)
	heard, stop, err := b.Listen("committed")
	if err != nil {
		t.Fatal(err)
	}
	otherHeard, stopOther, err := other.Listen("committed")
	if err != nil {
		t.Fatal(err)
	}
	defer stopOther()
	for range 3 {
		if err := a.Signal("committed"); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-heard:
	case <-time.After(5 * time.Second):
		t.Fatal("the listener on the same stream heard nothing")
	}
	time.Sleep(100 * time.Millisecond) // the other two arrive, merged into at most one
	select {
	case <-heard:
	default:
	}
	if err := a.Signal("checkpoint.users"); err != nil {
		t.Fatal(err)
	}
	stop()
	if err := a.Signal("committed"); err != nil {
		t.Fatal(err)
	}
	if err := a.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-heard:
		t.Fatal("heard a nudge of another name, or one after stop")
	case <-otherHeard:
		t.Fatal("an instance of another stream heard the nudge")
	case <-time.After(200 * time.Millisecond):
	}
}

func TestDuplicateMsgIDStoredOnce(t *testing.T) {
	t.Parallel()
	for _, srv := range targets() {
		t.Run(srv.name, func(t *testing.T) {
			t.Parallel()
			b := srv.open(t)
			ctx := testContext(t)

			first := mustPublish(ctx, t, b, "event-1")
			second := mustPublish(ctx, t, b, "event-1")
			if first.Duplicate || !second.Duplicate {
				t.Errorf("Duplicate flags = %v, %v; want false, true", first.Duplicate, second.Duplicate)
			}
			if second.Sequence != first.Sequence {
				t.Errorf("duplicate acked with sequence %d, want the original's %d", second.Sequence, first.Sequence)
			}
			if st := streamState(ctx, t, b); st.Msgs != 1 {
				t.Errorf("stream holds %d messages, want 1", st.Msgs)
			}
		})
	}
}

// TestExpectLastSequence pins what the relay relies on to keep the stream in
// the log's order: a publish that expects the wrong last sequence is refused.
func TestExpectLastSequence(t *testing.T) {
	t.Parallel()
	for _, srv := range targets() {
		t.Run(srv.name, func(t *testing.T) {
			t.Parallel()
			b := srv.open(t)
			ctx := testContext(t)

			if ack := mustPublish(ctx, t, b, "e1", jetstream.WithExpectLastSequence(0)); ack.Sequence != 1 {
				t.Fatalf("first publish got sequence %d, want 1", ack.Sequence)
			}
			if ack := mustPublish(ctx, t, b, "e2", jetstream.WithExpectLastSequence(1)); ack.Sequence != 2 {
				t.Fatalf("second publish got sequence %d, want 2", ack.Sequence)
			}
			for _, stale := range []uint64{0, 1, 7} {
				_, err := publish(ctx, t, b, fmt.Sprintf("new-%d", stale), jetstream.WithExpectLastSequence(stale))
				if !IsWrongLastSequence(err) {
					t.Errorf("publish expecting last sequence %d of 2: err = %v, want wrong last sequence", stale, err)
				}
			}

			// Async, as a relay publishes in a window.
			fut, err := b.JetStream().PublishMsgAsync(&nats.Msg{Subject: b.Subject("X"), Data: []byte("{}")},
				jetstream.WithMsgID("async-stale"), jetstream.WithExpectLastSequence(1))
			if err != nil {
				t.Fatalf("PublishMsgAsync: %v", err)
			}
			select {
			case ack := <-fut.Ok():
				t.Errorf("async publish with a stale expected sequence was stored at %d", ack.Sequence)
			case err := <-fut.Err():
				if !IsWrongLastSequence(err) {
					t.Errorf("async stale publish: err = %v, want wrong last sequence", err)
				}
			case <-ctx.Done():
				t.Fatal("no answer to the async publish")
			}

			if st := streamState(ctx, t, b); st.Msgs != 2 || st.LastSeq != 2 {
				t.Errorf("stream holds %d messages up to %d, want 2 up to 2", st.Msgs, st.LastSeq)
			}
		})
	}
}

// TestRepublishWithStaleExpectation covers a relay that crashed after NATS
// stored an event but before it saved its checkpoint: it publishes the event
// again, with the same id and the expectation it had then. The servers
// disagree on the answer, and a relay has to handle both.
func TestRepublishWithStaleExpectation(t *testing.T) {
	t.Parallel()
	for _, srv := range targets() {
		t.Run(srv.name, func(t *testing.T) {
			t.Parallel()
			b := srv.open(t)
			ctx := testContext(t)
			mustPublish(ctx, t, b, "e1", jetstream.WithExpectLastSequence(0))
			mustPublish(ctx, t, b, "e2", jetstream.WithExpectLastSequence(1))

			// With the current expectation a republish is a plain duplicate everywhere.
			if ack := mustPublish(ctx, t, b, "e2", jetstream.WithExpectLastSequence(2)); !ack.Duplicate || ack.Sequence != 2 {
				t.Errorf("republish expecting 2: ack %+v, want duplicate of 2", ack)
			}

			ack, err := publish(ctx, t, b, "e2", jetstream.WithExpectLastSequence(1))
			version := b.Conn().ConnectedServerVersion()
			switch {
			case strings.HasPrefix(version, "2.9."):
				// 2.9 looks the id up in the duplicate window first.
				if err != nil || !ack.Duplicate || ack.Sequence != 2 {
					t.Errorf("NATS %s: stale republish: ack %+v, err %v; want duplicate of 2", version, ack, err)
				}
			case strings.HasPrefix(version, "2.15."):
				// 2.15 checks the expected sequence before the duplicate window.
				if !IsWrongLastSequence(err) {
					t.Errorf("NATS %s: stale republish: ack %+v, err %v; want wrong last sequence", version, ack, err)
				}
			default:
				if err != nil && !IsWrongLastSequence(err) || err == nil && !ack.Duplicate {
					t.Errorf("NATS %s: stale republish: ack %+v, err %v; want a duplicate or wrong last sequence", version, ack, err)
				}
			}
			if st := streamState(ctx, t, b); st.Msgs != 2 {
				t.Errorf("stream holds %d messages, want 2", st.Msgs)
			}
		})
	}
}

func TestPing(t *testing.T) {
	t.Parallel()
	for _, srv := range targets() {
		t.Run(srv.name, func(t *testing.T) {
			t.Parallel()
			b := srv.open(t)
			if err := b.Ping(testContext(t)); err != nil {
				t.Errorf("Ping: %v", err)
			}
		})
	}
}

func TestClientURLReachesEmbeddedServer(t *testing.T) {
	t.Parallel()
	b := openEmbedded(t, t.TempDir())
	u, err := url.Parse(b.ClientURL())
	if err != nil || u.Scheme != "nats" || u.Port() == "0" || u.Port() == "4222" {
		t.Fatalf("ClientURL = %q, want nats://127.x.y.z:<picked port>", b.ClientURL())
	}
	// authctl and audit consumers connect over TCP, not in-process.
	nc, err := nats.Connect(b.ClientURL(), nats.Timeout(2*time.Second))
	if err != nil {
		t.Fatalf("connect to %s: %v", b.ClientURL(), err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream.New: %v", err)
	}
	if _, err := js.Stream(testContext(t), b.StreamName()); err != nil {
		t.Errorf("stream %s over TCP: %v", b.StreamName(), err)
	}
}

func TestEmbeddedRefusesNonLoopback(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{"0.0.0.0:14223", ":14223", "[::]:14223", "192.0.2.1:14223", "example.com:14223"} {
		cfg := uniqueConfig(t)
		cfg.DataDir = t.TempDir()
		cfg.EmbeddedAddr = addr
		b, err := Open(t.Context(), cfg, slog.New(slog.DiscardHandler))
		if err == nil {
			b.Close()
			t.Errorf("Open with embedded address %q succeeded, want a refusal", addr)
			continue
		}
		if !strings.Contains(err.Error(), "loopback") {
			t.Errorf("Open with %q: error %q does not say why", addr, err)
		}
	}
}

func TestCloseFreesEmbeddedPort(t *testing.T) {
	t.Parallel()
	cfg := uniqueConfig(t)
	cfg.DataDir = t.TempDir()
	cfg.EmbeddedAddr = randomLoopbackAddr(t)
	b, err := Open(testContext(t), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	u, err := url.Parse(b.ClientURL())
	if err != nil {
		t.Fatalf("ClientURL %q: %v", b.ClientURL(), err)
	}
	b.Close()
	b.Close() // a second Close is harmless

	l, err := net.Listen("tcp", u.Host)
	if err != nil {
		t.Fatalf("port %s still held after Close: %v", u.Host, err)
	}
	l.Close()
	if !b.Conn().IsClosed() {
		t.Errorf("connection status after Close = %v", b.Conn().Status())
	}
}

func TestEmbeddedDataSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := uniqueConfig(t)
	cfg.DataDir = dir
	cfg.EmbeddedAddr = randomLoopbackAddr(t)
	ctx := testContext(t)

	b, err := Open(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(b.Close)
	for i := range 3 {
		mustPublish(ctx, t, b, fmt.Sprintf("e%d", i), jetstream.WithExpectLastSequence(uint64(i)))
	}
	b.Close()

	cfg.EmbeddedAddr = randomLoopbackAddr(t)
	b = openBus(t, cfg, slog.New(slog.DiscardHandler))
	if st := streamState(ctx, t, b); st.Msgs != 3 || st.LastSeq != 3 {
		t.Fatalf("after restart the stream holds %d messages up to %d, want 3 up to 3", st.Msgs, st.LastSeq)
	}
	// The duplicate window is rebuilt from the stored messages, so a relay
	// that republishes right after a restart still adds nothing.
	if ack := mustPublish(ctx, t, b, "e2", jetstream.WithExpectLastSequence(3)); !ack.Duplicate {
		t.Errorf("republish after restart stored a new message at %d", ack.Sequence)
	}
}

func TestExternalDownDoesNotBlockStart(t *testing.T) {
	t.Parallel()
	// A port that was free a moment ago: nothing answers there.
	l, err := net.Listen("tcp", randomLoopbackAddr(t))
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := l.Addr().String()
	l.Close()

	cfg := uniqueConfig(t)
	cfg.URL = "nats://" + addr
	start := time.Now()
	b, err := Open(testContext(t), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Open with NATS down: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Open with NATS down took %v", d)
	}
	if b.ClientURL() != cfg.URL {
		t.Errorf("ClientURL = %q, want %q", b.ClientURL(), cfg.URL)
	}
	pingCtx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if err := b.Ping(pingCtx); err == nil {
		t.Error("Ping succeeded with NATS down")
	}
	start = time.Now()
	b.Close()
	if d := time.Since(start); d > drainTimeout+2*time.Second {
		t.Errorf("Close with NATS down took %v", d)
	}
}

func TestOpenRequiresStreamAndPrefix(t *testing.T) {
	t.Parallel()
	_, err := Open(t.Context(), Config{DataDir: t.TempDir(), EmbeddedAddr: randomLoopbackAddr(t)}, slog.New(slog.DiscardHandler))
	if err == nil {
		t.Fatal("Open without stream name and subject prefix succeeded")
	}
}

// recorder keeps the records logged through it, for tests of log routing.
type recorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec.Clone())
	return nil
}
func (r *recorder) WithAttrs(attrs []slog.Attr) slog.Handler { return &withAttrs{r, attrs} }
func (r *recorder) WithGroup(string) slog.Handler            { return r }

type withAttrs struct {
	*recorder
	attrs []slog.Attr
}

func (w *withAttrs) Handle(ctx context.Context, rec slog.Record) error {
	rec = rec.Clone()
	rec.AddAttrs(w.attrs...)
	return w.recorder.Handle(ctx, rec)
}

func TestEmbeddedServerLogsToSlog(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	cfg := uniqueConfig(t)
	cfg.DataDir = t.TempDir()
	cfg.EmbeddedAddr = randomLoopbackAddr(t)
	openBus(t, cfg, slog.New(rec))

	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, r := range rec.records {
		fromServer := false
		r.Attrs(func(a slog.Attr) bool {
			fromServer = fromServer || a.Key == "component" && a.Value.String() == "nats-server"
			return true
		})
		if fromServer && strings.Contains(r.Message, "Server is ready") {
			return
		}
	}
	t.Errorf("no \"Server is ready\" record from the nats-server component among %d records", len(rec.records))
}

func TestIsWrongLastSequence(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence}, true},
		{fmt.Errorf("publish: %w", &jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamWrongLastSequenceConstant}), true},
		{&jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamNotFound}, false},
		{errors.New("wrong last sequence"), false},
		{nil, false},
	} {
		if got := IsWrongLastSequence(tc.err); got != tc.want {
			t.Errorf("IsWrongLastSequence(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
