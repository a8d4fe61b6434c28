package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/authd/authd/eventstore"
)

// Bus is what the runner needs of the NATS connection (natsbus.Bus).
type Bus interface {
	EnsureStream(ctx context.Context) (jetstream.Stream, error)
	SubjectFilter() string
	Signal(name string) error
	Listen(name string) (nudges <-chan struct{}, stop func(), err error)
}

// checkpointSignal names the nudge a projection's leader sends after it saves
// the projection's checkpoint, so that waiters on other instances read it at
// once rather than at their next poll.
func checkpointSignal(projection string) string { return "checkpoint." + projection }

// Config tunes the runner; the zero value is usable.
type Config struct {
	BatchSize int           // events applied per transaction at most (default 1000)
	Poll      time.Duration // how often an instance that does not apply a projection re-reads its checkpoint for waiters, besides when the leader says it moved (default 50ms)
	Takeover  time.Duration // how often such an instance tries to take the projection over (default 1s)
	Backoff   time.Duration // first wait after a failure, doubling to 30 times it (default 200ms)
	AckWait   time.Duration // how long JetStream waits for a batch's ack before redelivering (default 1m)
}

func (c Config) withDefaults() Config {
	if c.BatchSize <= 0 {
		c.BatchSize = 1000
	}
	if c.Poll <= 0 {
		c.Poll = 50 * time.Millisecond
	}
	if c.Takeover <= 0 {
		c.Takeover = time.Second
	}
	if c.Backoff <= 0 {
		c.Backoff = 200 * time.Millisecond
	}
	if c.AckWait <= 0 {
		c.AckWait = time.Minute
	}
	return c
}

// skipSave bounds how long a checkpoint moved only by events a projection
// skips stays unsaved, and so how much longer a read-your-writes wait on
// another instance, which reads the saved checkpoint, may take for a write
// whose events the projection skips. Sign-ins, the commonest writes, no
// longer wait on projections that skip all their events (commands' waitFor),
// so this can be long enough to save a skipping projection's checkpoint a few
// times a second rather than after nearly every busy commit.
const skipSave = 100 * time.Millisecond

// Runner applies projections from JetStream and answers read-your-writes waits.
//
// Only one instance applies a given projection at a time (a Postgres advisory
// lock); a durable consumer splitting messages between two instances would let
// one skip what the other had not yet applied. The Postgres checkpoint, not the
// consumer's ack floor, is the truth: a leader recreates the consumer from the
// checkpoint, drops out and starts again if JetStream delivers anything but the
// next sequence, and every batch skips what the checkpoint already covers.
type Runner struct {
	pool   *pgxpool.Pool
	bus    Bus
	cfg    Config
	log    *slog.Logger
	states map[string]*state
	order  []Projection

	applied  *prometheus.CounterVec
	delay    *prometheus.HistogramVec
	lag      *prometheus.GaugeVec
	failing  *prometheus.GaugeVec
	position *prometheus.GaugeVec
}

// NewRunner returns a runner of projections. Metrics go to reg when not nil.
func NewRunner(pool *pgxpool.Pool, bus Bus, projections []Projection, cfg Config, log *slog.Logger, reg prometheus.Registerer) *Runner {
	f := promauto.With(reg)
	r := &Runner{
		pool: pool, bus: bus, cfg: cfg.withDefaults(), log: log.With("component", "projections"),
		states: make(map[string]*state, len(projections)), order: projections,
		applied: f.NewCounterVec(prometheus.CounterOpts{Name: "authd_projection_events_applied_total", Help: "Events applied by a projection."}, []string{"projection"}),
		delay: f.NewHistogramVec(prometheus.HistogramOpts{
			Name: "authd_projection_apply_delay_seconds", Help: "Time from an event's append to its projection's commit.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"projection"}),
		lag:      f.NewGaugeVec(prometheus.GaugeOpts{Name: "authd_projection_lag_seconds", Help: "Append-to-apply delay of the last event a projection applied."}, []string{"projection"}),
		failing:  f.NewGaugeVec(prometheus.GaugeOpts{Name: "authd_projection_failing", Help: "1 while a projection is stopped by an error."}, []string{"projection"}),
		position: f.NewGaugeVec(prometheus.GaugeOpts{Name: "authd_projection_checkpoint_position", Help: "Log position of a projection's checkpoint."}, []string{"projection"}),
	}
	for _, p := range projections {
		r.states[p.Name()] = newState()
	}
	return r
}

// Run applies every projection until ctx ends.
func (r *Runner) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, p := range r.order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.run(ctx, p, r.states[p.Name()])
		}()
	}
	wg.Wait()
}

// Status is a projection's health as this instance sees it.
type Status struct {
	Name       string
	Checkpoint eventstore.Cursor
	Leading    bool
	Err        error // why the projection is stopped; nil while it runs
}

// Statuses reports every projection, in the order they were given.
func (r *Runner) Statuses() []Status {
	out := make([]Status, 0, len(r.order))
	for _, p := range r.order {
		st := r.states[p.Name()]
		st.mu.Lock()
		out = append(out, Status{Name: p.Name(), Checkpoint: st.cp, Leading: st.leading, Err: st.err})
		st.mu.Unlock()
	}
	return out
}

// Uses reports whether the read model of the runner's projection named as p
// can change with an event of the given type. A projection that does not
// say which it uses (Selective) may use any. Callers name a projection by its
// value (Users{}), not by a string: a misspelt one does not compile.
func (r *Runner) Uses(p Projection, eventType string) bool {
	name := p.Name()
	for _, q := range r.order {
		if q.Name() == name {
			return uses(q, eventType)
		}
	}
	return false
}

// ErrUnknownProjection is returned by Wait for a name the runner does not run.
var ErrUnknownProjection = errors.New("projections: unknown projection")

// Wait returns once the runner's projection named as p has applied the log up
// to and including cursor, or with ctx's error. Commands call it after an
// append so that the client's next read sees its write; they name the
// projection by its value, so that a misspelt name does not compile, where a
// string compiled and the wait answered ErrUnknownProjection.
func (r *Runner) Wait(ctx context.Context, p Projection, cursor eventstore.Cursor) error {
	name := p.Name()
	st, ok := r.states[name]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownProjection, name)
	}
	st.mu.Lock()
	st.waiters++
	st.mu.Unlock()
	select {
	case st.waiting <- struct{}{}: // an instance that does not lead p looks now
	default:
	}
	defer func() {
		st.mu.Lock()
		st.waiters--
		st.mu.Unlock()
	}()
	for {
		st.mu.Lock()
		done, changed := !st.cp.Before(cursor), st.changed
		st.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("wait for projection %s to reach %s: %w", name, cursor, ctx.Err())
		}
	}
}

// state is what this instance knows of one projection.
type state struct {
	mu      sync.Mutex
	cp      eventstore.Cursor
	changed chan struct{} // closed and replaced whenever cp advances
	waiting chan struct{} // signalled when a waiter arrives
	waiters int
	leading bool
	err     error
}

func newState() *state {
	return &state{changed: make(chan struct{}), waiting: make(chan struct{}, 1)}
}

func (s *state) advance(c eventstore.Cursor) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cp.Before(c) {
		s.cp = c
		close(s.changed)
		s.changed = make(chan struct{})
	}
}

func (s *state) set(f func(*state)) {
	s.mu.Lock()
	f(s)
	s.mu.Unlock()
}

func (r *Runner) run(ctx context.Context, p Projection, st *state) {
	backoff := r.cfg.Backoff
	for ctx.Err() == nil {
		err := r.leadOnce(ctx, p, st)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, errNotLeader):
			// Another instance applies p now: an error this one hit while
			// it did is no longer about anything this instance does, and
			// kept, it held readiness at 503 for good on an instance
			// serving fine.
			r.recovered(p.Name(), st)
			r.follow(ctx, p, st, r.cfg.Takeover)
			continue
		case err != nil:
			st.set(func(s *state) { s.err = err })
			r.failing.WithLabelValues(p.Name()).Set(1)
			r.log.Error("projection stopped; retrying from its checkpoint", "projection", p.Name(), "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 30*r.cfg.Backoff)
		}
	}
}

// follow keeps waiters moving on an instance that does not apply p, by
// re-reading the checkpoint the leader writes, for the given time.
func (r *Runner) follow(ctx context.Context, p Projection, st *state, d time.Duration) {
	t := time.NewTicker(r.cfg.Poll)
	defer t.Stop()
	nudged, stopListening, err := r.bus.Listen(checkpointSignal(p.Name()))
	if err == nil {
		defer stopListening()
	} else {
		r.log.Warn("cannot hear the leader's checkpoints; polling only", "projection", p.Name(), "err", err)
	}
	until := time.After(d)
	// The first look is at once: a move made before the subscription was not
	// heard.
	for first := true; ; first = false {
		if !first {
			select {
			case <-ctx.Done():
				return
			case <-until:
				return
			case <-nudged:
			case <-st.waiting:
			case <-t.C:
			}
		}
		st.mu.Lock()
		waiting := st.waiters > 0
		st.mu.Unlock()
		// The first look is also for the checkpoint metric, which on an
		// instance that does not apply p reports the checkpoint it sees,
		// about once per Takeover; waiters need every move.
		if !first && !waiting {
			continue
		}
		if cp, err := loadCheckpoint(ctx, r.pool, p.Name()); err == nil {
			st.advance(cp.Cursor)
			r.position.WithLabelValues(p.Name()).Set(float64(cp.Cursor.Position))
		}
	}
}

// recovered clears what this instance reports as p's error.
func (r *Runner) recovered(name string, st *state) {
	st.set(func(s *state) { s.err = nil })
	r.failing.WithLabelValues(name).Set(0)
}

var errNotLeader = errors.New("another instance applies this projection")

func (r *Runner) leadOnce(ctx context.Context, p Projection, st *state) error {
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire connection: %w", err)
	}
	defer conn.Release()
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended('authd.projection.' || $1, 0))`, p.Name()).Scan(&got); err != nil {
		conn.Conn().Close(context.Background())
		return fmt.Errorf("take projection lock: %w", err)
	}
	if !got {
		return errNotLeader
	}
	st.set(func(s *state) { s.leading = true })
	defer func() {
		st.set(func(s *state) { s.leading = false })
		unlock, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := conn.Exec(unlock, `SELECT pg_advisory_unlock(hashtextextended('authd.projection.' || $1, 0))`, p.Name()); err != nil {
			conn.Conn().Close(unlock)
		}
	}()
	return r.lead(ctx, conn, p, st)
}

func (r *Runner) lead(ctx context.Context, conn *pgxpool.Conn, p Projection, st *state) error {
	name := p.Name()
	stream, err := r.bus.EnsureStream(ctx)
	if err != nil {
		return err
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("projection %s: %w", name, err)
	}
	err = createCheckpoint(ctx, tx, name)
	var cp Checkpoint
	if err == nil {
		cp, err = readCheckpoint(ctx, tx, name, false)
	}
	if err == nil {
		err = tx.Commit(ctx)
	}
	if err != nil {
		_ = tx.Rollback(ctx)
		return err
	}
	st.advance(cp.Cursor)
	r.position.WithLabelValues(name).Set(float64(cp.Cursor.Position))

	cons, err := r.resetConsumer(ctx, stream, name, cp.StreamSeq)
	if err != nil {
		return err
	}
	// Nothing left to apply: whatever stopped p before (NATS or Postgres
	// gone for a while) is over. Otherwise the error stands until a batch
	// applies, so an event p cannot apply keeps it failing.
	if cons.CachedInfo().NumPending == 0 {
		r.recovered(name, st)
	}
	done := make(chan struct{})
	defer close(done)
	msgs := make(chan jetstream.Msg, 2*r.cfg.BatchSize)
	consumeErr := make(chan error, 1)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case msgs <- m:
		case <-done:
		}
	}, jetstream.PullMaxMessages(r.cfg.BatchSize), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrNoHeartbeat) {
			select {
			case consumeErr <- err:
			default:
			}
		}
	}))
	if err != nil {
		return fmt.Errorf("projection %s: consume: %w", name, err)
	}
	defer cc.Stop()

	// A batch with no event p uses only moves its checkpoint: at once in
	// memory, for this instance's waiters, and in Postgres with the next
	// applied batch or skipSave later, whichever comes first. Saving it per
	// batch cost a commit per batch for every projection the events skip.
	// Only waiters on other instances, which poll Postgres, see it later;
	// a leader that dies first only has JetStream deliver the skipped
	// events again.
	var unsaved *Checkpoint
	// stored is the checkpoint as this leader last wrote or read it in
	// Postgres: what a batch applied in one round trip expects to find there.
	stored := cp
	saveTimer := time.NewTimer(time.Hour)
	saveTimer.Stop()
	save := func(ctx context.Context) error {
		if unsaved == nil {
			return nil
		}
		now, err := advanceCheckpoint(ctx, conn, name, *unsaved)
		if err != nil {
			return err
		}
		stored, unsaved = now, nil
		r.nudgeFollowers(name)
		return nil
	}
	defer func() {
		saveCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := save(saveCtx); err != nil {
			r.log.Warn("saving the checkpoint of skipped events failed; they will be delivered again", "projection", name, "err", err)
		}
	}()

	expect := cp.StreamSeq + 1
	first := cp.StreamSeq == 0 // a stream may have been purged: take whatever comes first
	batch := make([]jetstream.Msg, 0, r.cfg.BatchSize)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			return nil
		case err := <-consumeErr:
			return fmt.Errorf("projection %s: consumer: %w", name, err)
		case <-saveTimer.C:
			if err := save(ctx); err != nil {
				return err
			}
			continue
		case m := <-msgs:
			batch = append(batch, m)
		}
	drain:
		for len(batch) < r.cfg.BatchSize {
			select {
			case m := <-msgs:
				batch = append(batch, m)
			default:
				break drain
			}
		}
		events := make([]eventstore.Event, 0, len(batch))
		for _, m := range batch {
			meta, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("projection %s: %w", name, err)
			}
			if !first && meta.Sequence.Stream != expect {
				return fmt.Errorf("projection %s: JetStream delivered sequence %d, expected %d: restarting from the checkpoint", name, meta.Sequence.Stream, expect)
			}
			first, expect = false, meta.Sequence.Stream+1
			subject := m.Subject()
			eventType := subject[strings.LastIndexByte(subject, '.')+1:]
			if !uses(p, eventType) {
				// Placing an event p skips needs no more than its headers.
				if c, ok := eventstore.CommitFromHeaders(m.Headers().Get(eventstore.HeaderTx), m.Headers().Get(eventstore.HeaderPosition)); ok {
					events = append(events, eventstore.Event{Type: eventType, Position: c.Position, Commit: c})
					continue
				}
			}
			e, err := eventstore.FromMessage(m.Headers(), m.Data())
			if err != nil {
				return fmt.Errorf("projection %s: stream sequence %d: %w", name, meta.Sequence.Stream, err)
			}
			events = append(events, e)
		}
		var next Checkpoint
		var n int
		if !slices.ContainsFunc(events, func(e eventstore.Event) bool { return uses(p, e.Type) }) {
			next = Checkpoint{Cursor: events[len(events)-1].Commit, StreamSeq: expect - 1}
			if unsaved == nil {
				saveTimer.Reset(skipSave)
			}
			unsaved = &next
		} else {
			// A batch in hand is finished even when shutdown begins meanwhile.
			applyCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			next, n, err = r.applyBatch(applyCtx, conn, p, events, expect-1, stored)
			cancel()
			if err != nil {
				return err
			}
			stored, unsaved = next, nil // the applied batch's checkpoint is later
			r.nudgeFollowers(name)
		}
		// AckAll: acknowledging the last message acknowledges the batch.
		if err := batch[len(batch)-1].Ack(); err != nil {
			r.log.Warn("ack failed; the batch will be redelivered and skipped", "projection", name, "err", err)
		}
		st.advance(next.Cursor)
		r.recovered(name, st)
		r.observe(name, events, n, next)
	}
}

// nudgeFollowers tells other instances that the projection's checkpoint moved
// in Postgres.
func (r *Runner) nudgeFollowers(name string) {
	if err := r.bus.Signal(checkpointSignal(name)); err != nil {
		r.log.Debug("nudging other instances failed", "projection", name, "err", err)
	}
}

func (r *Runner) observe(name string, events []eventstore.Event, applied int, cp Checkpoint) {
	r.applied.WithLabelValues(name).Add(float64(applied))
	r.position.WithLabelValues(name).Set(float64(cp.Cursor.Position))
	now := time.Now()
	h := r.delay.WithLabelValues(name)
	var last time.Time
	for _, e := range events {
		if e.OccurredAt.IsZero() {
			continue // skipped unread: its time is not known
		}
		h.Observe(now.Sub(e.OccurredAt).Seconds())
		last = e.OccurredAt
	}
	if !last.IsZero() {
		r.lag.WithLabelValues(name).Set(now.Sub(last).Seconds())
	}
}

// resetConsumer (re)creates the projection's durable consumer so that it
// delivers from just after the checkpoint's stream sequence.
func (r *Runner) resetConsumer(ctx context.Context, stream jetstream.Stream, name string, seq uint64) (jetstream.Consumer, error) {
	durable := "authd_projection_" + name
	if err := stream.DeleteConsumer(ctx, durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("projection %s: delete consumer: %w", name, err)
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       durable,
		Description:   "authd projection " + name + "; positioned from its Postgres checkpoint",
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       r.cfg.AckWait,
		MaxAckPending: 4 * r.cfg.BatchSize,
		FilterSubject: r.bus.SubjectFilter(),
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if seq > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, seq+1
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("projection %s: create consumer: %w", name, err)
	}
	return cons, nil
}

// applyBatch applies the events after the checkpoint and moves it, in one
// transaction. When the checkpoint in Postgres is still stored, as this
// leader last saw it, that is one round trip for the statements and one for
// the commit: the checkpoint's update comes first, takes its row lock (which
// a rebuild's swap also takes) and finds out whether the row moved. If it
// did (a rebuild, or another applier before this one took the lead), the
// transaction is rolled back and the batch applied as before: the checkpoint
// read under its lock, what it covers skipped.
func (r *Runner) applyBatch(ctx context.Context, conn *pgxpool.Conn, p Projection, events []eventstore.Event, lastSeq uint64, stored Checkpoint) (Checkpoint, int, error) {
	next, fresh := after(stored, events, lastSeq)
	var b Batch
	if len(fresh) > 0 {
		if err := p.Apply(&b, fresh); err != nil {
			return Checkpoint{}, 0, fmt.Errorf("projection %s: apply %d events from %s: %w", p.Name(), len(fresh), fresh[0].Commit, err)
		}
	}
	moved, err := applyOnce(ctx, conn, p.Name(), &b, stored, next)
	if err != nil {
		return Checkpoint{}, 0, err
	}
	if !moved {
		return next, len(fresh), nil
	}
	return r.applyLocked(ctx, conn, p, events, lastSeq)
}

// after returns the checkpoint past events (never behind cp) and the events
// cp does not cover yet.
func after(cp Checkpoint, events []eventstore.Event, lastSeq uint64) (Checkpoint, []eventstore.Event) {
	fresh := events[:0:0]
	for _, e := range events {
		if cp.Cursor.Before(e.Commit) {
			fresh = append(fresh, e)
			cp.Cursor = e.Commit
		}
	}
	cp.StreamSeq = max(cp.StreamSeq, lastSeq)
	return cp, fresh
}

// applyOnce runs b and moves the checkpoint from stored to next in one
// transaction of two round trips, or reports that the checkpoint is no longer
// at stored and changes nothing.
func applyOnce(ctx context.Context, conn *pgxpool.Conn, name string, b *Batch, stored, next Checkpoint) (moved bool, err error) {
	var pb pgx.Batch
	pb.Queue(`BEGIN`)
	pb.Queue(`UPDATE projection_checkpoints SET tx_id = $4::text::xid8, position = $5, stream_seq = $6, updated_at = now()
		WHERE name = $1 AND tx_id = $2::text::xid8 AND position = $3`,
		name, fmt.Sprint(stored.Cursor.Tx), stored.Cursor.Position, fmt.Sprint(next.Cursor.Tx), next.Cursor.Position, int64(next.StreamSeq))
	b.queueOn(&pb)
	br := conn.SendBatch(ctx, &pb)
	_, err = br.Exec()
	if err == nil {
		var tag pgconn.CommandTag
		if tag, err = br.Exec(); err == nil {
			moved = tag.RowsAffected() != 1
		}
	}
	if err == nil && !moved {
		err = b.results(br, name)
	}
	if cerr := br.Close(); err == nil && !moved {
		err = cerr
	}
	if err != nil || moved {
		// The connection is in the transaction (or was lost with it).
		if _, rerr := conn.Exec(context.WithoutCancel(ctx), `ROLLBACK`); rerr != nil {
			conn.Conn().Close(context.WithoutCancel(ctx))
		}
		if err != nil {
			return false, fmt.Errorf("projection %s: apply and move the checkpoint to %s: %w", name, next.Cursor, err)
		}
		return true, nil
	}
	if _, err := conn.Exec(ctx, `COMMIT`); err != nil {
		return false, fmt.Errorf("projection %s: commit: %w", name, err)
	}
	return false, nil
}

// applyLocked applies events in a transaction that reads the checkpoint
// under its lock first and skips what it already covers.
func (r *Runner) applyLocked(ctx context.Context, conn *pgxpool.Conn, p Projection, events []eventstore.Event, lastSeq uint64) (Checkpoint, int, error) {
	name := p.Name()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return Checkpoint{}, 0, fmt.Errorf("projection %s: begin: %w", name, err)
	}
	defer tx.Rollback(ctx)
	cp, err := readCheckpoint(ctx, tx, name, true)
	if err != nil {
		return Checkpoint{}, 0, err
	}
	cp, fresh := after(cp, events, lastSeq)
	if len(fresh) > 0 {
		if err := apply(ctx, tx, p, fresh); err != nil {
			return Checkpoint{}, 0, fmt.Errorf("projection %s: apply %d events from %s: %w", name, len(fresh), fresh[0].Commit, err)
		}
	}
	if err := writeCheckpoint(ctx, tx, name, cp); err != nil {
		return Checkpoint{}, 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return Checkpoint{}, 0, fmt.Errorf("projection %s: commit: %w", name, err)
	}
	return cp, len(fresh), nil
}
