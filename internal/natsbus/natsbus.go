// Package natsbus connects authd to NATS JetStream — an embedded server when
// no URL is given — and keeps the events stream configured.
package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/authd/authd/internal/redact"
)

// Config says where NATS is and which stream carries the events.
type Config struct {
	// URL is one NATS URL or several, comma-separated, for a cluster. Empty
	// runs an embedded server.
	URL string
	// DataDir holds the embedded server's storage, under DataDir/nats.
	DataDir string
	// EmbeddedAddr is the loopback host:port the embedded server listens on
	// for other processes (authctl, audit consumers); port 0 picks a free one.
	EmbeddedAddr  string
	Stream        string
	SubjectPrefix string
	// Replicas is how many JetStream nodes hold the stream (and so its
	// consumers, which inherit it); zero means 1. A stream an operator made
	// larger keeps its count.
	Replicas int
	// PublishAsyncMaxPending bounds unacknowledged async publishes, so a
	// publisher slows down instead of piling up messages while NATS lags.
	// Zero means DefaultPublishAsyncMaxPending.
	PublishAsyncMaxPending int
}

const (
	// DefaultPublishAsyncMaxPending is the async publish window when Config leaves it zero.
	DefaultPublishAsyncMaxPending = 256

	// duplicateWindow is how long a Nats-Msg-Id is remembered; a relay that
	// republishes after a crash does so well within it.
	duplicateWindow = 2 * time.Minute

	embeddedServerName = "authd-embedded"
	embeddedReadyWait  = 10 * time.Second
	drainTimeout       = 5 * time.Second
	connectionName     = "authd"
)

// Bus is a connection to NATS with its JetStream handle, and the embedded
// server when there is one.
type Bus struct {
	cfg    Config
	log    *slog.Logger
	srv    *server.Server // nil with an external NATS
	nc     *nats.Conn
	js     jetstream.JetStream
	closed chan struct{} // closed once the connection is closed
	once   sync.Once
}

// Open connects to NATS, starting the embedded server first when cfg.URL is
// empty, and ensures the stream once. A failure to ensure the stream is only
// logged: an external NATS may be down at start, the connection keeps
// retrying, and callers call EnsureStream again when they (re)start.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Bus, error) {
	if cfg.Stream == "" || cfg.SubjectPrefix == "" {
		return nil, errors.New("open NATS bus: stream name and subject prefix are required")
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.PublishAsyncMaxPending == 0 {
		cfg.PublishAsyncMaxPending = DefaultPublishAsyncMaxPending
	}
	b := &Bus{cfg: cfg, log: log, closed: make(chan struct{})}

	opts := []nats.Option{
		nats.Name(connectionName),
		nats.MaxReconnects(-1),
		nats.DrainTimeout(drainTimeout),
		// A nil error is a Close of ours, which is no news.
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected; reconnecting", "err", err)
			}
		}),
		// The address, not the URL: a URL's user part can be a token.
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS connected", "addr", nc.ConnectedAddr())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Error("NATS async error", "subject", subject, "err", err)
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(b.closed) }),
	}

	var (
		nc  *nats.Conn
		err error
	)
	if cfg.URL == "" {
		if b.srv, err = startEmbedded(ctx, cfg, log); err != nil {
			return nil, err
		}
		nc, err = nats.Connect("", append(opts, nats.InProcessServer(b.srv))...)
		if err != nil {
			b.shutdownServer()
			return nil, fmt.Errorf("connect to the embedded NATS server in-process: %w", err)
		}
	} else {
		// Checked here because nats.Connect quotes a URL it cannot parse,
		// credentials and all.
		if err := checkURLs(cfg.URL); err != nil {
			return nil, fmt.Errorf("connect to NATS: %w", err)
		}
		// RetryOnFailedConnect lets authd start while NATS is down; the
		// connection comes up in the background and ReconnectHandler says so.
		nc, err = nats.Connect(cfg.URL, append(opts, nats.RetryOnFailedConnect(true))...)
		if err != nil {
			return nil, fmt.Errorf("connect to NATS at %s: %w", redact.NATSURLs(cfg.URL), err)
		}
		if !nc.IsConnected() {
			log.Warn("NATS is not reachable yet; retrying in the background", "url", redact.NATSURLs(cfg.URL))
		}
	}
	b.nc = nc

	b.js, err = jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(cfg.PublishAsyncMaxPending))
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("create JetStream handle: %w", err)
	}

	// While the connection is still being retried the request could only time
	// out, so this attempt is skipped rather than slowing the start down.
	if nc.IsConnected() {
		if _, err := b.EnsureStream(ctx); err != nil {
			log.Error("NATS stream not ready; will be ensured again by its users", "stream", cfg.Stream, "err", err)
		}
	}
	return b, nil
}

// startEmbedded runs a JetStream server in this process. It listens only on
// loopback because it has no authentication: whoever reaches it can read and
// rewrite the event stream.
func startEmbedded(ctx context.Context, cfg Config, log *slog.Logger) (*server.Server, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("start embedded NATS: no data directory given")
	}
	host, portStr, err := net.SplitHostPort(cfg.EmbeddedAddr)
	if err != nil {
		return nil, fmt.Errorf("start embedded NATS: address %q is not host:port: %w", cfg.EmbeddedAddr, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("start embedded NATS: address %q: port is not a number from 0 to 65535", cfg.EmbeddedAddr)
	}
	if !isLoopbackHost(host) {
		return nil, fmt.Errorf("start embedded NATS: refusing to listen on %q: the embedded server has no authentication, so its host must be loopback (127.0.0.1, ::1 or localhost)", cfg.EmbeddedAddr)
	}
	// nats-server reads port 0 as its default 4222, which the machine's own
	// NATS may hold; 0 here means what it means to net.Listen: any free port.
	natsPort := int(port)
	if natsPort == 0 {
		natsPort = server.RANDOM_PORT
	}

	srv, err := server.NewServer(&server.Options{
		ServerName: embeddedServerName,
		Host:       host,
		Port:       natsPort,
		JetStream:  true,
		StoreDir:   filepath.Join(cfg.DataDir, "nats"),
		// authd handles signals itself and shuts the server down in Close.
		NoSigs: true,
	})
	if err != nil {
		return nil, fmt.Errorf("configure embedded NATS server: %w", err)
	}
	logger := &serverLogger{log: log.With("component", "nats-server")}
	srv.SetLogger(logger, log.Enabled(ctx, slog.LevelDebug), log.Enabled(ctx, levelTrace))
	srv.Start()

	wait := embeddedReadyWait
	if dl, ok := ctx.Deadline(); ok {
		wait = time.Until(dl)
	}
	if !srv.ReadyForConnections(wait) {
		srv.Shutdown()
		srv.WaitForShutdown()
		if fatal := logger.fatalMessage(); fatal != "" {
			return nil, fmt.Errorf("start embedded NATS on %s: %s", cfg.EmbeddedAddr, fatal)
		}
		return nil, fmt.Errorf("start embedded NATS on %s: not ready after %s", cfg.EmbeddedAddr, wait)
	}
	log.Info("embedded NATS server started", "url", srv.ClientURL(), "store_dir", filepath.Join(cfg.DataDir, "nats"))
	return srv, nil
}

func checkURLs(urls string) error {
	for i, u := range strings.Split(urls, ",") {
		if _, err := url.Parse(strings.TrimSpace(u)); err != nil {
			return fmt.Errorf("URL %d of the list is not a URL", i+1)
		}
	}
	return nil
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// StreamConfig is the configuration EnsureStream applies. Only features that
// NATS 2.9 already had are used, so any server from 2.9 on can hold the log.
func (b *Bus) StreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        b.cfg.Stream,
		Description: "authd events; the audit log, so nothing expires",
		Subjects:    []string{b.SubjectFilter()},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      0,
		MaxBytes:    -1,
		MaxMsgs:     -1,
		Discard:     jetstream.DiscardOld,
		Duplicates:  duplicateWindow,
		Replicas:    b.cfg.Replicas,
	}
}

// EnsureStream creates the events stream, or brings an existing one back to
// StreamConfig, but for a replica count larger than Replicas, which it keeps:
// an operator who replicated the stream wider (to survive the loss of a
// node) must not find it scaled down by the next start.
func (b *Bus) EnsureStream(ctx context.Context) (jetstream.Stream, error) {
	want := b.StreamConfig()
	// The relay and every projection call this when they (re)start. An update
	// that changes nothing still rewrites the stream's configuration on the
	// server, and nats-server 2.15 races doing so while a consumer is being
	// created; so leave a stream that is already as wanted alone.
	s, err := b.js.Stream(ctx, want.Name)
	switch {
	case err == nil:
		have := s.CachedInfo().Config
		want.Replicas = max(want.Replicas, have.Replicas)
		if sameStream(have, want) {
			return s, nil
		}
	case !errors.Is(err, jetstream.ErrStreamNotFound):
		// Unanswered (the stream's leader being elected, the cluster coming
		// back) or refused: a create or update now would wait out a second
		// timeout the same way, and the chaos suite saw the relay and the
		// projections start again up to 10 s after the stream had a leader.
		return nil, fmt.Errorf("look up JetStream stream %s: %w", b.cfg.Stream, err)
	}
	for attempt := 1; ; attempt++ {
		s, err := b.js.CreateOrUpdateStream(ctx, want)
		var apiErr *jetstream.APIError
		if err != nil && attempt < 3 && errors.As(err, &apiErr) && apiErr.ErrorCode == streamStoreFailed {
			select {
			case <-time.After(50 * time.Millisecond):
				continue
			case <-ctx.Done():
			}
		}
		if err != nil {
			return nil, fmt.Errorf("create or update JetStream stream %s: %w", b.cfg.Stream, err)
		}
		return s, nil
	}
}

// streamStoreFailed is JetStream's error code for a stream whose storage the
// server could not create. nats-server 2.9 answers it now and then when the
// account's last other stream is deleted meanwhile: it removes the account's
// directory (mkdir .../jetstream/$G/streams: no such file or directory), and
// the same create a moment later succeeds.
const streamStoreFailed jetstream.ErrorCode = 10077

// sameStream compares the settings StreamConfig sets; the server fills in
// others of its own.
func sameStream(have, want jetstream.StreamConfig) bool {
	replicas := max(want.Replicas, 1)
	return slices.Equal(have.Subjects, want.Subjects) && have.Description == want.Description &&
		have.Storage == want.Storage && have.Retention == want.Retention && have.MaxAge == want.MaxAge &&
		have.MaxBytes == want.MaxBytes && have.MaxMsgs == want.MaxMsgs && have.Discard == want.Discard &&
		have.Duplicates == want.Duplicates && max(have.Replicas, 1) == replicas
}

// Conn is the NATS connection.
func (b *Bus) Conn() *nats.Conn { return b.nc }

// JetStream is the JetStream handle, with the configured async publish window.
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

// StreamName is the name of the events stream.
func (b *Bus) StreamName() string { return b.cfg.Stream }

// Subject is the subject an event of the given type is published on.
func (b *Bus) Subject(eventType string) string { return b.cfg.SubjectPrefix + "." + eventType }

// SubjectFilter matches every event subject.
func (b *Bus) SubjectFilter() string { return b.cfg.SubjectPrefix + ".>" }

// signalSubject is a core NATS subject, outside the stream, on which authd
// instances sharing the stream nudge each other (name says about what).
func (b *Bus) signalSubject(name string) string { return "_AUTHD." + b.cfg.Stream + "." + name }

// Signal nudges the instances sharing the stream that Listen for name. It is
// fire and forget: a nudge only saves a listener its next poll, so one that
// is lost costs that poll.
func (b *Bus) Signal(name string) error {
	if err := b.nc.Publish(b.signalSubject(name), nil); err != nil {
		return fmt.Errorf("natsbus: signal %s: %w", name, err)
	}
	return nil
}

// Listen hears every instance's Signal(name) sent after it returns, until
// stop is called. Nudges
// that arrive while one is still unread merge into it: a listener only needs
// to know that something happened since it last looked.
func (b *Bus) Listen(name string) (nudges <-chan struct{}, stop func(), err error) {
	ch := make(chan struct{}, 1)
	sub, err := b.nc.Subscribe(b.signalSubject(name), func(*nats.Msg) {
		select {
		case ch <- struct{}{}:
		default:
		}
	})
	if err == nil {
		err = b.nc.Flush() // the server has the subscription: nothing signalled from now on is missed
	}
	if err != nil {
		if sub != nil {
			_ = sub.Unsubscribe()
		}
		return nil, nil, fmt.Errorf("natsbus: listen for %s: %w", name, err)
	}
	return ch, func() { _ = sub.Unsubscribe() }, nil
}

// ClientURL is the URL other processes (authctl, audit consumers) use to
// reach this NATS: the embedded server's listener or the configured URL,
// which may carry credentials and so is not for logs.
func (b *Bus) ClientURL() string {
	if b.srv != nil {
		return b.srv.ClientURL()
	}
	return b.cfg.URL
}

// Ping reports whether NATS is connected and JetStream answers, for readiness.
func (b *Bus) Ping(ctx context.Context) error {
	if !b.nc.IsConnected() {
		return fmt.Errorf("NATS not connected (status %s)", b.nc.Status())
	}
	if _, err := b.js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("JetStream account info: %w", err)
	}
	return nil
}

// Close drains the connection so in-flight publishes and acks finish, waits
// a bounded time for that, then stops the embedded server and waits for it.
func (b *Bus) Close() {
	b.once.Do(func() {
		if err := b.nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			b.log.Warn("NATS drain failed; closing", "err", err)
			b.nc.Close()
		}
		select {
		case <-b.closed:
		case <-time.After(drainTimeout + time.Second):
			b.log.Warn("NATS drain did not finish; closing", "timeout", drainTimeout)
			b.nc.Close()
		}
		b.shutdownServer()
	})
}

func (b *Bus) shutdownServer() {
	if b.srv == nil {
		return
	}
	b.srv.Shutdown()
	b.srv.WaitForShutdown()
	b.log.Info("embedded NATS server stopped")
}

// IsWrongLastSequence reports whether JetStream refused a publish because
// the stream's last sequence was not the one the publish expected
// (jetstream.WithExpectLastSequence). Replicated streams on newer servers
// answer with a different code than single-replica ones; both count.
//
// A republish of an already stored Nats-Msg-Id can get this answer instead
// of a duplicate ack: NATS 2.15 checks the expected sequence before the
// duplicate window, 2.9 checked it after. So a publisher that resumes after
// a crash must look at the stream's last message to learn where it stands.
func IsWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}
