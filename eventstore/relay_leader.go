package eventstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// maxRecheck bounds the wait between two looks at events that an open
// transaction holds back from the relay.
const maxRecheck = 50 * time.Millisecond

// checkpointEvery is how often at most the relay saves its checkpoint: a few
// commits a second, however busy, and `authctl projections status`, which
// counts the relay's lag from it, is never more than that behind.
const checkpointEvery = 250 * time.Millisecond

// relayRoom is how many events a relay read makes room for at first.
const relayRoom = 16

// leadOnce takes the relay lock if it is free and relays until ctx ends or
// something fails; when flushing, only until it has caught up.
func (r *Relay) leadOnce(ctx context.Context, flushing bool) error {
	conn, err := r.store.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("relay: acquire connection: %w", err)
	}
	defer conn.Release()
	var got bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", relayLockKey).Scan(&got); err != nil {
		conn.Conn().Close(context.Background()) // the lock state is unknown: drop the session
		return fmt.Errorf("relay: take lock: %w", err)
	}
	if !got {
		return errNotLeader
	}
	r.setLeading(true)
	defer func() {
		r.setLeading(false)
		unlock, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := conn.Exec(unlock, "SELECT pg_advisory_unlock($1)", relayLockKey); err != nil {
			conn.Conn().Close(unlock)
		}
	}()
	return r.lead(ctx, conn, flushing)
}

func (r *Relay) setLeading(v bool) {
	r.mu.Lock()
	r.leading = v
	r.mu.Unlock()
	if v {
		r.leader.Set(1)
	} else {
		r.leader.Set(0)
	}
}

// lead continues from what the stream holds and relays the log, reading
// again whenever something may have committed.
func (r *Relay) lead(ctx context.Context, conn *pgxpool.Conn, flushing bool) error {
	start, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	stream, err := r.bus.EnsureStream(start)
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	cancel()
	cp, lastSeq, err := r.reconcile(ctx, conn, stream)
	if err != nil {
		return err
	}
	r.setPublished(cp.cp)
	nudged, stopListening, err := r.bus.Listen(committedSignal)
	if err != nil {
		return fmt.Errorf("relay: listen for other instances' appends: %w", err)
	}
	defer stopListening()
	poll := time.NewTicker(r.cfg.Poll)
	defer poll.Stop()
	purge, stopPurge := r.startPurge(ctx, stream)
	defer stopPurge()
	t := &relayTerm{r: r, conn: conn, cp: cp, lastSeq: lastSeq, saved: cp, savedAt: time.Now(), nudged: nudged, poll: poll.C, purge: purge}
	t.record = func(e Event, seq uint64) {
		t.cp = relayed{cp: e.Commit, seq: seq}
		if Erasable(e) {
			t.records = append(t.records, streamRecord{user: e.UserID, seq: seq})
		}
	}
	// A statement canceled midway has pgx close the connection, and with it
	// the relay lock, which the shutdown flush then raced to take again: so
	// the relay's statements run to their end (statement_timeout bounds them)
	// and shutdown is noticed between them.
	db := context.WithoutCancel(ctx)
	defer t.saveOnExit(db)
	for {
		n, held, err := t.relayBatch(ctx, db)
		switch {
		case err != nil:
			return err
		case n == r.cfg.BatchSize:
			continue
		case flushing:
			return t.save(db)
		}
		t.recheck = nextRecheck(t.recheck, held, n)
		if !t.idle(ctx) {
			return nil
		}
	}
}

// relayTerm is one term of this instance as the relay, from taking the lock
// to losing it, failing or shutting down.
type relayTerm struct {
	r       *Relay
	conn    *pgxpool.Conn
	cp      relayed // the last event published
	lastSeq uint64  // the stream's last sequence
	// The saved checkpoint is only where reconcile starts when the stream's
	// newest messages are not the relay's; otherwise the stream itself says
	// what was published. So it is saved at most every checkpointEvery and on
	// the way out, not with every batch: that was a commit per batch. The
	// records of the users' messages published since wait here to be saved
	// with it; reconcile reads them back from the stream if they never are.
	saved   relayed
	savedAt time.Time
	records []streamRecord
	record  func(e Event, seq uint64) // takes an acked event as published
	// A save due while publishing runs on a connection of its own, so that
	// the relay publishes on meanwhile: inserting a few thousand records
	// took the relay's connection 100 ms of every 250 and cost it 40 % of
	// its throughput. inFlight is that save while it runs, one at a time.
	inFlight *pendingSave
	purge    *purger
	// Events held back by an older transaction still open (another
	// writer's, a projection's checkpoint) may have no signal still to come
	// when it ends: while the read says some are held back, the relay looks
	// again soon, backing off to maxRecheck. Looking again blindly after every
	// signal and batch cost a busy commit several empty reads.
	recheck time.Duration
	nudged  <-chan struct{} // other instances' appends
	poll    <-chan time.Time
}

// relayBatch reads the next events the log lets the relay read, publishes
// them and saves the checkpoint when due. It returns how many it read and
// whether an open transaction holds more back.
func (t *relayTerm) relayBatch(ctx, db context.Context) (n int, held bool, err error) {
	// Room for a few events, not a whole batch: the relay reads after
	// every few commits, and room for a thousand (300 KB, zeroed) each time
	// was half of what a refresh-heavy authd allocated.
	events, held, err := t.r.store.readLog(db, t.conn, t.cp.cp, t.r.cfg.BatchSize, relayRoom)
	if err != nil {
		return 0, false, fmt.Errorf("relay: %w", err)
	}
	if len(events) > 0 {
		err := t.r.publish(ctx, events, t.lastSeq, t.record)
		// What was acked before a failure is in the stream: the checkpoint
		// saved on the way out covers it.
		if err != nil {
			return 0, false, err
		}
		t.lastSeq += uint64(len(events))
		t.r.setPublished(t.cp.cp)
		t.r.publishedTotal.Add(float64(len(events)))
	}
	if err := t.saveInBackground(db); err != nil {
		return 0, false, err
	}
	return len(events), held, nil
}

// nextRecheck is how soon to read the log again without a signal: not at all
// when nothing is held back, at once after events came, and backing off
// while the reads find nothing.
func nextRecheck(prev time.Duration, held bool, read int) time.Duration {
	switch {
	case !held:
		return 0
	case read > 0 || prev == 0:
		return time.Millisecond
	default:
		return min(2*prev, maxRecheck)
	}
}

// idle waits until something may have committed: an append here or on
// another instance, the recheck of held back events, or the poll. It is false
// when ctx ended.
func (t *relayTerm) idle(ctx context.Context) bool {
	var again <-chan time.Time
	if t.recheck > 0 {
		again = time.After(t.recheck)
	}
	select {
	case <-ctx.Done():
		return false
	case <-t.r.store.Committed():
		t.recheck = 0
	case <-t.nudged:
		t.recheck = 0
	case <-again:
	case <-t.poll:
	}
	return true
}

// pendingSave is a save of the checkpoint to, with records, running on a
// connection of the pool.
type pendingSave struct {
	to      relayed
	records []streamRecord
	done    chan error
}

// saveInBackground takes the result of the save in flight, if it has
// ended, and starts the next one when due.
func (t *relayTerm) saveInBackground(db context.Context) error {
	if t.inFlight != nil {
		select {
		case err := <-t.inFlight.done:
			if err := t.settle(err); err != nil {
				return err
			}
		default:
			return nil
		}
	}
	if t.cp == t.saved || time.Since(t.savedAt) < checkpointEvery {
		return nil
	}
	p := &pendingSave{to: t.cp, records: t.records, done: make(chan error, 1)}
	t.inFlight, t.records = p, nil
	go func() {
		// Bounded, the wait for a connection included: the term's end
		// waits for this save before it lets the relay lock go, so that a
		// late save never moves a new leader's checkpoint back.
		ctx, cancel := context.WithTimeout(db, backgroundSaveTimeout)
		defer cancel()
		p.done <- saveCheckpoint(ctx, t.r.store.pool, p.to, p.records, false)
	}()
	return nil
}

// backgroundSaveTimeout bounds a checkpoint save made beside the relay's
// work.
const backgroundSaveTimeout = 5 * time.Second

// settle takes the end of the save in flight. Its records go back to be
// saved with the next checkpoint when it failed: that checkpoint is past
// them.
func (t *relayTerm) settle(err error) error {
	p := t.inFlight
	t.inFlight = nil
	if err != nil {
		t.records = append(p.records, t.records...)
		return err
	}
	t.saved, t.savedAt = p.to, time.Now()
	t.purge.saved()
	return nil
}

// save waits for the save in flight, if any (backgroundSaveTimeout bounds
// it), then saves the checkpoint and the records not saved yet, on the
// relay's connection.
func (t *relayTerm) save(ctx context.Context) error {
	if t.inFlight != nil {
		if err := t.settle(<-t.inFlight.done); err != nil {
			return err
		}
	}
	if t.cp == t.saved {
		return nil
	}
	if err := saveCheckpoint(ctx, t.conn, t.cp, t.records, false); err != nil {
		return err
	}
	t.saved, t.savedAt, t.records = t.cp, time.Now(), nil
	t.purge.saved()
	return nil
}

func (t *relayTerm) saveOnExit(db context.Context) {
	final, cancel := context.WithTimeout(db, time.Second)
	defer cancel()
	if err := t.save(final); err != nil {
		t.r.log.Warn("relay checkpoint not saved at exit; the stream still says what was published", "err", err)
	}
}
