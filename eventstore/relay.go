package eventstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Bus is what the relay needs of the NATS connection (natsbus.Bus).
type Bus interface {
	JetStream() jetstream.JetStream
	EnsureStream(ctx context.Context) (jetstream.Stream, error)
	Subject(eventType string) string
	Signal(name string) error
	Listen(name string) (nudges <-chan struct{}, stop func(), err error)
}

// committedSignal names the nudge an instance that does not relay sends the
// one that does after its appends: without it, their events waited for the
// relay's poll.
const committedSignal = "committed"

// RelayConfig tunes the relay; the zero value is usable.
type RelayConfig struct {
	BatchSize int           // events read from the log per query (default 1000)
	Window    int           // published messages awaiting their ack at once (default 256)
	Poll      time.Duration // how often to look for events other instances appended (default 25ms)
	Backoff   time.Duration // first wait after a failure, doubling to 5 times it (default 200ms)
	// AckTimeout bounds the wait for a publish's ack (default 5s). An ack can
	// be lost for good with the connection still up (the node holding the
	// stream killed mid-publish): the relay then starts again from what the
	// stream holds.
	AckTimeout time.Duration
	LagEvery   time.Duration // how often the lag metric is measured from the log (default 1s)
	// ProjectionWait is how long at most an erasure waits for the
	// projections to pass it before its user's messages are deleted from the
	// stream they read (default 3s): one that is stopped must not hold the
	// erasure up (API.md gives it 10 s), and one rebuilt later reads the log.
	ProjectionWait time.Duration
}

func (c RelayConfig) withDefaults() RelayConfig {
	if c.BatchSize <= 0 {
		c.BatchSize = 1000
	}
	if c.Window <= 0 {
		c.Window = 256
	}
	if c.Poll <= 0 {
		// Appends on other instances wake nothing here: this is their
		// read-your-writes latency, for one cheap indexed query per tick.
		c.Poll = 25 * time.Millisecond
	}
	if c.Backoff <= 0 {
		c.Backoff = 200 * time.Millisecond
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = 5 * time.Second
	}
	if c.LagEvery <= 0 {
		c.LagEvery = time.Second
	}
	if c.ProjectionWait <= 0 {
		c.ProjectionWait = 3 * time.Second
	}
	return c
}

// relayLockKey is the Postgres advisory lock that makes one instance the relay.
const relayLockKey int64 = 0x61757468645f726c // "authd_rl"

// Relay publishes the log to JetStream in log order, each event once.
//
// The stream is kept in strict log order: every publish names the stream
// sequence it expects to follow, so if one message of a pipelined window is
// lost the ones after it are refused rather than stored out of order. After any
// failure the relay asks the stream for the last event it holds and continues
// from there, which also covers a crash between publish and checkpoint. The
// event id as Nats-Msg-Id makes a republish within the stream's duplicate
// window harmless besides.
type Relay struct {
	store *Store
	bus   Bus
	cfg   RelayConfig
	log   *slog.Logger

	mu        sync.Mutex
	published Cursor
	leading   bool
	// oldest is when the oldest committed event not yet published was
	// appended, as last measured from the log; zero when there was none.
	oldest time.Time
	// erasures is how many erasures still have messages in the stream, and
	// oldestErasure when the oldest of them was asked for, as last measured.
	erasures      int64
	oldestErasure time.Time

	publishedTotal prometheus.Counter
	failures       prometheus.Counter
	leader         prometheus.Gauge
}

// NewRelay returns a relay of store's log to bus. Metrics go to reg when not nil.
func NewRelay(store *Store, bus Bus, cfg RelayConfig, log *slog.Logger, reg prometheus.Registerer) *Relay {
	f := promauto.With(reg)
	r := &Relay{
		store: store, bus: bus, cfg: cfg.withDefaults(), log: log.With("component", "relay"),
		publishedTotal: f.NewCounter(prometheus.CounterOpts{Name: "authd_relay_published_total", Help: "Events published to JetStream."}),
		failures:       f.NewCounter(prometheus.CounterOpts{Name: "authd_relay_failures_total", Help: "Relay runs ended by an error (NATS or Postgres unavailable, an ack that never came)."}),
		leader:         f.NewGauge(prometheus.GaugeOpts{Name: "authd_relay_leader", Help: "1 while this instance is the one relaying."}),
	}
	// Computed at each scrape from the oldest unpublished event last found
	// in the log, so it grows while the relay is stuck, whatever it is stuck
	// on, and on every instance, relaying or not.
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "authd_relay_lag_seconds", Help: "Age of the oldest committed event not yet published (0 when caught up)."},
		func() float64 { return r.Lag().Seconds() })
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "authd_stream_erasures_pending", Help: "Erased users whose messages are still to be deleted from the stream."},
		func() float64 { n, _ := r.ErasureLag(); return float64(n) })
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "authd_stream_erasure_lag_seconds", Help: "Age of the oldest erasure whose messages are still in the stream (0 when none)."},
		func() float64 { _, age := r.ErasureLag(); return age.Seconds() })
	return r
}

// ErasureLag is how many erasures still have messages in the stream and how
// long ago the oldest was asked for, as last measured (every LagEvery).
func (r *Relay) ErasureLag() (pending int64, oldest time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.erasures == 0 {
		return 0, 0
	}
	return r.erasures, max(time.Since(r.oldestErasure), 0)
}

// Lag is the age of the oldest committed event not yet published, as last
// measured (Run measures it every LagEvery); 0 when there was none.
func (r *Relay) Lag() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.oldest.IsZero() {
		return 0
	}
	return max(time.Since(r.oldest), 0)
}

// Published is the cursor of the last event this instance saw acknowledged.
func (r *Relay) Published() Cursor {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.published
}

// Leading reports whether this instance holds the relay lock.
func (r *Relay) Leading() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.leading
}

// Run relays until ctx ends, then flushes what is already committed (for up to
// a few seconds) so a graceful shutdown leaves no backlog behind.
func (r *Relay) Run(ctx context.Context) {
	measuring, stopMeasuring := context.WithCancel(ctx)
	measured := make(chan struct{})
	go func() { r.measureLag(measuring); close(measured) }()
	defer func() { stopMeasuring(); <-measured }()
	var backoff time.Duration
	for ctx.Err() == nil {
		backoff = r.relayOnce(ctx, backoff)
	}
	flush, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.leadOnce(flush, true); err != nil && !errors.Is(err, errNotLeader) {
		r.log.Warn("relay flush at shutdown incomplete", "err", err)
	}
}

// relayOnce relays while this instance holds the relay lock, or stands by
// while another does. After a failure it waits as NextBackoff says, given
// the wait after the last failure (0 for none), and returns the wait.
func (r *Relay) relayOnce(ctx context.Context, backoff time.Duration) time.Duration {
	began := time.Now()
	err := r.leadOnce(ctx, false)
	if ctx.Err() != nil {
		return backoff
	}
	if errors.Is(err, errNotLeader) {
		r.standBy(ctx, time.Second)
		return backoff
	}
	wait := r.cfg.Backoff
	if err != nil {
		wait = NextBackoff(r.cfg.Backoff, backoff, time.Since(began))
		r.failures.Inc()
		r.log.Warn("relay interrupted; will retry", "err", err, "retry_in", wait)
	}
	select {
	case <-ctx.Done():
	case <-time.After(wait):
	}
	return wait
}

// maxBackoffs is how many times its first wait the wait between two failed
// runs of a worker grows to. Each wait is time the event flow may stay
// stopped after NATS or Postgres is back: at 30 times 200 ms (6 s), an
// outage long enough to reach it could not recover within the 5 s the chaos
// suite aims at. A run costs a connection, a lock attempt and a few
// JetStream requests, about what an instance on standby spends every
// second anyway.
const maxBackoffs = 5

// NextBackoff is the wait after a failed run of a worker that retries (the
// relay, a projection) that lasted ran, the wait before it being last (0
// for none) and the first wait first. A run that lasted longer than the
// longest wait spaced the attempts out by itself (it worked for a while, or
// waited out a timeout), so the next wait starts from first again instead of
// inheriting the wait of an outage long past: the wait never came down, and
// a relay or projection that had waited out one outage came back from the
// next up to 6 s late.
func NextBackoff(first, last, ran time.Duration) time.Duration {
	if last == 0 || ran > maxBackoffs*first {
		return first
	}
	return min(2*last, maxBackoffs*first)
}

// StartTimeout bounds the first JetStream requests of a worker's run (the
// relay's, a projection's: look up the stream, read what it holds). They go
// to the stream's leader, and while NATS elects one (its node was killed, the cluster restarts) they go
// unanswered until the client's own timeout, 5 s each: the next run, which
// may find the new leader, came up to 10 s after the stream had one again.
const StartTimeout = 2 * time.Second

var errNotLeader = errors.New("another instance is relaying")

// standBy is what an instance does while another relays, for d: it passes
// the news of its own appends on to the relaying instance.
func (r *Relay) standBy(ctx context.Context, d time.Duration) {
	until := time.After(d)
	for {
		select {
		case <-ctx.Done():
			return
		case <-until:
			return
		case <-r.store.Committed():
			if err := r.bus.Signal(committedSignal); err != nil {
				r.log.Debug("nudging the relay failed", "err", err)
			}
		}
	}
}

func (r *Relay) setPublished(c Cursor) {
	r.mu.Lock()
	r.published = c
	r.mu.Unlock()
}

// publish sends events pipelined, at most Window awaiting their ack, each
// expecting the stream to be exactly at the sequence before it, and tells
// acked each event's stream sequence in order.
func (r *Relay) publish(ctx context.Context, events []Event, lastSeq uint64, acked func(e Event, seq uint64)) error {
	js := r.bus.JetStream()
	pending := make([]jetstream.PubAckFuture, 0, r.cfg.Window)
	acks := r.newAcks()
	defer acks.timeout.Stop()
	done := 0
	wait := func(f jetstream.PubAckFuture) error {
		seq, err := acks.wait(ctx, f)
		if err != nil {
			return err
		}
		acked(events[done], seq)
		done++
		return nil
	}
	for i, e := range events {
		if len(pending) == r.cfg.Window {
			if err := wait(pending[0]); err != nil {
				return err
			}
			pending = pending[1:]
		}
		msg, err := r.message(e)
		if err != nil {
			return err
		}
		f, err := js.PublishMsgAsync(msg, jetstream.WithExpectLastSequence(lastSeq+uint64(i)))
		if err != nil {
			return fmt.Errorf("relay: publish event %s: %w", e.ID, err)
		}
		pending = append(pending, f)
	}
	for _, f := range pending {
		if err := wait(f); err != nil {
			return err
		}
	}
	return nil
}

// message is e as the relay publishes it: the public envelope, with the
// event id for JetStream's deduplication and the commit for placing it.
func (r *Relay) message(e Event) (*nats.Msg, error) {
	body, err := e.MarshalEnvelope()
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	msg := nats.NewMsg(r.bus.Subject(e.Type))
	msg.Data = body
	msg.Header.Set(nats.MsgIdHdr, e.ID.String())
	msg.Header.Set(HeaderTx, e.Commit.txText())
	msg.Header.Set(HeaderPosition, strconv.FormatInt(e.Commit.Position, 10))
	return msg, nil
}

// acks waits for a window's publish acks, each for at most AckTimeout.
type acks struct {
	timeout *time.Timer
	after   time.Duration
}

// newAcks has one timer for the window: each ack has AckTimeout from when
// the relay starts waiting for it, which is at or after its publish.
func (r *Relay) newAcks() acks {
	return acks{timeout: time.NewTimer(r.cfg.AckTimeout), after: r.cfg.AckTimeout}
}

// wait returns the stream sequence of f's message once it is stored.
func (a acks) wait(ctx context.Context, f jetstream.PubAckFuture) (uint64, error) {
	a.timeout.Reset(a.after)
	select {
	case ack := <-f.Ok():
		if ack.Duplicate {
			return 0, fmt.Errorf("relay: JetStream already held event %s: another relay is running", f.Msg().Header.Get(nats.MsgIdHdr))
		}
		return ack.Sequence, nil
	case err := <-f.Err():
		return 0, fmt.Errorf("relay: publish event %s: %w", f.Msg().Header.Get(nats.MsgIdHdr), err)
	case <-a.timeout.C:
		return 0, fmt.Errorf("relay: publish event %s: %w after %s", f.Msg().Header.Get(nats.MsgIdHdr), errNoAck, a.after)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// errNoAck is a publish whose ack did not come within AckTimeout: it may have
// been stored or not, so the relay asks the stream.
var errNoAck = errors.New("no ack")

// reconcile returns where to continue: the last event the stream actually
// holds, which can be ahead of the saved checkpoint (a crash after publishing)
// or behind it (a stream restored or recreated), its stream sequence, and the
// stream's last sequence. Moving the checkpoint forward records the users'
// messages published since the saved one, read back from the stream, in the
// same statement: an erasure finds every message before the checkpoint.
func (r *Relay) reconcile(ctx context.Context, conn *pgxpool.Conn, stream jetstream.Stream) (relayed, uint64, error) {
	var saved relayed
	var tx string
	var savedSeq int64
	if err := conn.QueryRow(ctx, `SELECT tx_id::text, position, stream_seq FROM relay_checkpoint`).Scan(&tx, &saved.cp.Position, &savedSeq); err != nil {
		return relayed{}, 0, fmt.Errorf("relay: read checkpoint: %w", err)
	}
	var err error
	if saved.cp.Tx, err = ParseTx(tx); err != nil {
		return relayed{}, 0, err
	}
	saved.seq = uint64(savedSeq)
	start, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	info, err := stream.Info(start)
	if err != nil {
		return relayed{}, 0, fmt.Errorf("relay: stream info: %w", err)
	}
	lastSeq := info.State.LastSeq
	held, found, err := lastRelayed(start, stream, lastSeq)
	if err != nil {
		return relayed{}, 0, err
	}
	if !found && lastSeq > 0 {
		r.log.Warn("the stream's newest messages were not written by the relay; continuing from the saved checkpoint", "checkpoint", saved.cp.String())
		return saved, lastSeq, nil
	}
	if held == saved {
		return held, lastSeq, nil
	}
	r.log.Info("relay checkpoint reconciled with the stream", "saved", saved.cp.String(), "stream_holds", held.cp.String())
	var records []streamRecord
	if saved.seq < held.seq {
		// Also what a checkpoint saved before stream_seq existed (0) needs:
		// the whole stream is read once and recorded.
		if records, err = readBack(ctx, stream, saved.seq+1, held.seq); err != nil {
			return relayed{}, 0, err
		}
	}
	// A stream behind the checkpoint was restored or recreated: records of
	// sequences past what it holds name other messages now, or none.
	forget := held.seq < saved.seq
	if err := saveCheckpoint(ctx, conn, held, records, forget); err != nil {
		return relayed{}, 0, err
	}
	return held, lastSeq, nil
}

// relayed is an event the stream holds: its place in the log and in the stream.
type relayed struct {
	cp  Cursor
	seq uint64
}

// lastRelayed finds the newest message in the stream that the relay wrote,
// looking back over a few in case something else published to the subjects.
func lastRelayed(ctx context.Context, stream jetstream.Stream, lastSeq uint64) (relayed, bool, error) {
	const lookBack = 100
	for seq := lastSeq; seq > 0 && lastSeq-seq < lookBack; seq-- {
		msg, err := stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return relayed{}, false, fmt.Errorf("relay: read stream message %d: %w", seq, err)
		}
		e, err := FromMessage(msg.Header, msg.Data)
		if err != nil {
			continue
		}
		return relayed{cp: e.Commit, seq: seq}, true, nil
	}
	return relayed{}, false, nil
}
