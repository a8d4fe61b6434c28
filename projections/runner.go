package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

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

// Config tunes the runner; the zero value is usable.
type Config struct {
	BatchSize int           // events applied per transaction at most (default 1000)
	Poll      time.Duration // how often an instance that does not apply a projection re-reads its checkpoint for waiters, besides when the leader says it moved (default 50ms)
	Takeover  time.Duration // how often such an instance tries to take the projection over (default 1s)
	Backoff   time.Duration // first wait after a failure, doubling to 5 times it (default 200ms)
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
		lag:      f.NewGaugeVec(prometheus.GaugeOpts{Name: "authd_projection_lag_seconds", Help: "Age of the oldest committed event past a projection's saved checkpoint; 0 when it has applied the whole log."}, []string{"projection"}),
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
	wg.Go(func() { r.measureLag(ctx) })
	for _, p := range r.order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.run(ctx, p, r.states[p.Name()])
		}()
	}
	wg.Wait()
}

// ErrStream marks a projection stopped by the event stream (NATS gone, a
// consumer or pull request lost, a gap in delivery) rather than by an event
// it cannot apply. The instance still serves meanwhile, from the log where a
// read model is behind, and every instance shares the stream: readiness
// reports it as degraded, not as a reason to take the instance out.
var ErrStream = errors.New("the event stream is not delivering")

// streamError marks err as the stream's (ErrStream).
func streamError(err error) error { return fmt.Errorf("%w: %w", ErrStream, err) }

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

// run applies p while this instance can take its lock and follows the
// instance that applies it otherwise; after a failure it tries again from
// the checkpoint, backing off.
func (r *Runner) run(ctx context.Context, p Projection, st *state) {
	var backoff time.Duration
	for ctx.Err() == nil {
		began := time.Now()
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
			backoff = eventstore.NextBackoff(r.cfg.Backoff, backoff, time.Since(began))
			st.set(func(s *state) { s.err = err })
			r.failing.WithLabelValues(p.Name()).Set(1)
			r.log.Error("projection stopped; retrying from its checkpoint", "projection", p.Name(), "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
		}
	}
}

// recovered clears what this instance reports as p's error.
func (r *Runner) recovered(name string, st *state) {
	st.set(func(s *state) { s.err = nil })
	r.failing.WithLabelValues(name).Set(0)
}
