package projections

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/authd/authd/eventstore"
)

// skipSave bounds how long a checkpoint moved only by events a projection
// skips stays unsaved, and so how much longer a read-your-writes wait on
// another instance, which reads the saved checkpoint, may take for a write
// whose events the projection skips. Sign-ins, the commonest writes, no
// longer wait on projections that skip all their events (commands' waitFor),
// so this can be long enough to save a skipping projection's checkpoint a few
// times a second rather than after nearly every busy commit.
const skipSave = 100 * time.Millisecond

var errNotLeader = errors.New("another instance applies this projection")

// leadOnce applies p for as long as this instance holds p's advisory lock:
// errNotLeader when another instance holds it.
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

// lead positions p's consumer from its checkpoint and applies what it
// delivers until ctx ends or something fails.
func (r *Runner) lead(ctx context.Context, conn *pgxpool.Conn, p Projection, st *state) error {
	name := p.Name()
	// Bounded as the relay's start is: unanswered while NATS elects the
	// stream's leader, the lookup waited 5 s before the next try could find it.
	start, cancel := context.WithTimeout(ctx, eventstore.StartTimeout)
	stream, err := r.bus.EnsureStream(start)
	cancel()
	if err != nil {
		return streamError(err)
	}
	cp, err := startCheckpoint(ctx, conn, name)
	if err != nil {
		return err
	}
	st.advance(cp.Cursor)
	r.position.WithLabelValues(name).Set(float64(cp.Cursor.Position))

	cons, err := r.resetConsumer(ctx, stream, name, cp.StreamSeq)
	if err != nil {
		return streamError(err)
	}
	// Nothing left to apply: whatever stopped p before (NATS or Postgres
	// gone for a while) is over. Otherwise the error stands until a batch
	// applies, so an event p cannot apply keeps it failing.
	if cons.CachedInfo().NumPending == 0 {
		r.recovered(name, st)
	}
	d, err := r.consume(cons, name)
	if err != nil {
		return streamError(err)
	}
	defer d.stop()
	l := r.newLeader(conn, p, st, cp, cons.CachedInfo().Delivered.Consumer)
	defer l.saveOnExit(ctx)
	return l.loop(ctx, d)
}

// startCheckpoint creates p's checkpoint the first time and reads it.
func startCheckpoint(ctx context.Context, conn *pgxpool.Conn, name string) (Checkpoint, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("projection %s: %w", name, err)
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
		return Checkpoint{}, err
	}
	return cp, nil
}

// leader is one term of this instance applying a projection, from taking its
// lock to losing it, failing or shutting down.
type leader struct {
	r    *Runner
	conn *pgxpool.Conn
	p    Projection
	st   *state
	// stored is the checkpoint as this leader last wrote or read it in
	// Postgres: what a batch applied in one round trip expects to find there.
	stored Checkpoint
	// A batch with no event p uses only moves its checkpoint: at once in
	// memory, for this instance's waiters, and in Postgres with the next
	// applied batch or skipSave later, whichever comes first. Saving it per
	// batch cost a commit per batch for every projection the events skip.
	// Only waiters on other instances, which poll Postgres, see it later; a
	// leader that dies first only has JetStream deliver the skipped events
	// again.
	unsaved   *Checkpoint
	saveTimer *time.Timer
	// expect is the consumer sequence JetStream must deliver next, and
	// taken the stream sequence of the last message taken. The stream's
	// sequences have gaps where messages were deleted (an erasure's); the
	// consumer's have none, as it counts what it delivers.
	expect uint64
	taken  uint64
}

// newLeader starts a term from cp with a consumer that has delivered up to
// its sequence delivered.
func (r *Runner) newLeader(conn *pgxpool.Conn, p Projection, st *state, cp Checkpoint, delivered uint64) *leader {
	saveTimer := time.NewTimer(time.Hour)
	saveTimer.Stop()
	return &leader{
		r: r, conn: conn, p: p, st: st, stored: cp, saveTimer: saveTimer,
		expect: delivered + 1, taken: cp.StreamSeq,
	}
}

// loop takes each batch delivered, and saves the checkpoint of skipped
// events when it is due, until ctx ends or something fails.
func (l *leader) loop(ctx context.Context, d *delivery) error {
	batch := make([]jetstream.Msg, 0, l.r.cfg.BatchSize)
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-d.failed:
			return streamError(fmt.Errorf("projection %s: consumer: %w", l.p.Name(), err))
		case <-l.saveTimer.C:
			if err := l.save(ctx); err != nil {
				return err
			}
		case m := <-d.msgs:
			batch = d.gather(append(batch[:0], m), l.r.cfg.BatchSize)
			if err := l.take(ctx, batch); err != nil {
				return err
			}
		}
	}
}

// take applies or skips one batch, acknowledges it, and tells this
// instance's waiters.
func (l *leader) take(ctx context.Context, batch []jetstream.Msg) error {
	name := l.p.Name()
	events, err := l.place(batch)
	if err != nil {
		return err
	}
	next, n, err := l.settle(ctx, events)
	if err != nil {
		return err
	}
	// AckAll: acknowledging the last message acknowledges the batch.
	if err := batch[len(batch)-1].Ack(); err != nil {
		l.r.log.Warn("ack failed; the batch will be redelivered and skipped", "projection", name, "err", err)
	}
	l.st.advance(next.Cursor)
	l.r.recovered(name, l.st)
	l.r.observe(name, events, n, next)
	return nil
}

// place reads the batch's messages as events of the log, in the stream's
// order from the checkpoint.
func (l *leader) place(batch []jetstream.Msg) ([]eventstore.Event, error) {
	events := make([]eventstore.Event, 0, len(batch))
	for _, m := range batch {
		meta, err := m.Metadata()
		if err != nil {
			return nil, streamError(fmt.Errorf("projection %s: %w", l.p.Name(), err))
		}
		if err := l.inOrder(meta.Sequence.Stream, meta.Sequence.Consumer); err != nil {
			return nil, streamError(err)
		}
		e, err := messageEvent(l.p, m)
		if err != nil {
			return nil, fmt.Errorf("projection %s: stream sequence %d: %w", l.p.Name(), meta.Sequence.Stream, err)
		}
		events = append(events, e)
	}
	return events, nil
}

// inOrder takes a message as delivered if it is the consumer sequence the
// leader expects and comes later in the stream than the last one taken:
// anything else (a message lost, or one from before a redelivery) could have
// the projection skip an event, so the leader starts again from the
// checkpoint. A gap in the stream's sequences is a message deleted, which
// JetStream skips: waiting for it stalled the projection for good.
func (l *leader) inOrder(stream, consumer uint64) error {
	if consumer != l.expect || stream <= l.taken {
		return fmt.Errorf("projection %s: JetStream delivered stream sequence %d as its %d, expected its %d after stream sequence %d: restarting from the checkpoint",
			l.p.Name(), stream, consumer, l.expect, l.taken)
	}
	l.expect, l.taken = consumer+1, stream
	return nil
}

// messageEvent reads m as an event of the log.
func messageEvent(p Projection, m jetstream.Msg) (eventstore.Event, error) {
	subject := m.Subject()
	eventType := subject[strings.LastIndexByte(subject, '.')+1:]
	if !uses(p, eventType) {
		// Placing an event p skips needs no more than its headers.
		if c, ok := eventstore.CommitFromHeaders(m.Headers().Get(eventstore.HeaderTx), m.Headers().Get(eventstore.HeaderPosition)); ok {
			return eventstore.Event{Type: eventType, Position: c.Position, Commit: c}, nil
		}
	}
	return eventstore.FromMessage(m.Headers(), m.Data())
}

// settle moves the checkpoint past events, the last delivered: in the
// transaction that applies them when p uses any, otherwise in memory, saved
// later. It returns the new checkpoint and how many events were applied.
func (l *leader) settle(ctx context.Context, events []eventstore.Event) (Checkpoint, int, error) {
	if !slices.ContainsFunc(events, func(e eventstore.Event) bool { return uses(l.p, e.Type) }) {
		return l.skip(events), 0, nil
	}
	// A batch in hand is finished even when shutdown begins meanwhile.
	applyCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	next, n, err := l.r.applyBatch(applyCtx, l.conn, l.p, events, l.taken, l.stored)
	if err != nil {
		return Checkpoint{}, 0, err
	}
	l.stored, l.unsaved = next, nil // the applied batch's checkpoint is later
	l.r.nudgeFollowers(l.p.Name())
	return next, n, nil
}

// skip moves the checkpoint past events p does not use, to be saved within
// skipSave.
func (l *leader) skip(events []eventstore.Event) Checkpoint {
	next := Checkpoint{Cursor: events[len(events)-1].Commit, StreamSeq: l.taken}
	if l.unsaved == nil {
		l.saveTimer.Reset(skipSave)
	}
	l.unsaved = &next
	return next
}

// save writes the checkpoint moved by skipped events, if any, and tells the
// followers.
func (l *leader) save(ctx context.Context) error {
	if l.unsaved == nil {
		return nil
	}
	now, err := advanceCheckpoint(ctx, l.conn, l.p.Name(), *l.unsaved)
	if err != nil {
		return err
	}
	l.stored, l.unsaved = now, nil
	l.r.nudgeFollowers(l.p.Name())
	return nil
}

// saveOnExit saves what skipped events moved when the term ends, even at
// shutdown, within a bound.
func (l *leader) saveOnExit(ctx context.Context) {
	saveCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := l.save(saveCtx); err != nil {
		l.r.log.Warn("saving the checkpoint of skipped events failed; they will be delivered again", "projection", l.p.Name(), "err", err)
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
	for _, e := range events {
		if e.OccurredAt.IsZero() {
			continue // skipped unread: its time is not known
		}
		h.Observe(now.Sub(e.OccurredAt).Seconds())
	}
}
