package eventstore

import (
	"context"
	"crypto/cipher"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Group commit: changes that arrive while others are being committed wait
// and are then committed together, in one transaction. A commit's fixed cost
// (its round trip, the WAL flush, taking and giving back a connection) was
// about half of what Postgres spent on an append of one event, and under load
// that cost is now shared by every change in the transaction. A change that
// arrives when fewer than maxGroups transactions are in flight is sent at
// once, so a lone append waits for nothing.
const (
	// maxGroups bounds the transactions of grouped changes in flight. Two
	// keep Postgres busy (one executes while the other waits for its flush)
	// and leave the rest of the pool to reads, the relay and projections.
	maxGroups = 2
	// maxGroupSize bounds the changes in one transaction.
	maxGroupSize = 64
	// transientAttempts bounds the sends of a change that a deadlock or a
	// serialization failure keeps aborting.
	transientAttempts = 3
	// groupTimeout bounds a group's transaction, which is not tied to the
	// request of the change that happens to send it.
	groupTimeout = 30 * time.Second
)

// pending is a change waiting for its turn in a group, with its statements
// already built.
type pending struct {
	ch    Change
	batch []Statement
	start time.Time
	// newKeys are the data keys made for the users of the change this Store
	// had none for; unsaved those the append statement being built is to
	// insert (each with the first statement that seals with it).
	newKeys map[uuid.UUID]cipher.AEAD
	unsaved []newKey

	out  Committed
	err  error
	done chan struct{}   // closed once out and err are set
	lead chan []*pending // a group this change's caller is to send
}

// groups is the queue of changes waiting to be committed.
type groups struct {
	mu       sync.Mutex
	queue    []*pending
	inFlight int
}

// commit waits until p is committed as part of a group, or fails with it.
func (s *Store) commit(ctx context.Context, p *pending) (Committed, error) {
	if err := ctx.Err(); err != nil {
		return Committed{}, fmt.Errorf("append: %w", err)
	}
	g := &s.groups
	g.mu.Lock()
	if g.inFlight < maxGroups {
		g.inFlight++
		g.mu.Unlock()
		s.sendGroups(ctx, []*pending{p})
		return p.out, p.err
	}
	g.queue = append(g.queue, p)
	g.mu.Unlock()

	select {
	case <-p.done:
		return p.out, p.err
	case group := <-p.lead:
		s.sendGroups(ctx, group)
		return p.out, p.err
	case <-ctx.Done():
	}
	g.mu.Lock()
	if i := slices.Index(g.queue, p); i >= 0 {
		g.queue = slices.Delete(g.queue, i, i+1)
		g.mu.Unlock()
		return Committed{}, fmt.Errorf("append: waiting for a commit: %w", ctx.Err())
	}
	g.mu.Unlock()
	// Already taken into a group: its outcome is on the way, and if this
	// caller was picked to send the next group, others wait on it.
	select {
	case <-p.done:
	case group := <-p.lead:
		s.sendGroups(ctx, group)
	}
	return p.out, p.err
}

// sendGroups commits group, then hands the changes queued meanwhile to the
// first of them to send, or gives its place back when none are.
func (s *Store) sendGroups(ctx context.Context, group []*pending) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), groupTimeout)
	s.send(ctx, group)
	cancel()

	g := &s.groups
	g.mu.Lock()
	if len(g.queue) == 0 {
		g.inFlight--
		g.mu.Unlock()
		return
	}
	n := min(len(g.queue), maxGroupSize)
	next := slices.Clone(g.queue[:n])
	g.queue = slices.Delete(g.queue, 0, n)
	g.mu.Unlock()
	next[0].lead <- next
}

// send commits the changes of group in one transaction. When a statement of
// one change fails, Postgres rolls the transaction back: that change gets the
// error, and the others go again without it. It is the same outcome as had
// the changes been committed one after another, in the group's order.
func (s *Store) send(ctx context.Context, group []*pending) {
	// Changes that raced each other are in no order yet. Sorted by their
	// first stream, two groups in flight take the rows of the streams they
	// share in the same order, and wait for each other instead of
	// deadlocking.
	group = slices.SortedStableFunc(slices.Values(group), func(a, b *pending) int {
		return strings.Compare(a.firstStream(), b.firstStream())
	})
	for attempt := 1; len(group) > 0; attempt++ {
		batch := &pgx.Batch{}
		for _, p := range group {
			for _, st := range p.batch {
				batch.Queue(st.SQL, st.Args...)
			}
		}
		br := s.pool.SendBatch(ctx, batch)
		errs := make([]error, len(group))
		failed := -1
		for i, p := range group {
			p.out = Committed{}
			errs[i] = s.readResults(br, p)
			var pgErr *pgconn.PgError
			if errors.As(errs[i], &pgErr) {
				failed = i
				break
			}
		}
		closeErr := br.Close()
		switch {
		case failed >= 0 && transient(errs[failed]) && attempt < transientAttempts:
			// Two transactions in flight locked rows (a stream's next
			// version, a claim, a counter) in opposite orders, and Postgres
			// broke the cycle by aborting this one: no change is at fault,
			// and nothing of it committed. One at a time, the changes of a
			// group cannot deadlock each other; a lone change goes again
			// as it was.
			s.deadlocks.Inc()
			if len(group) == 1 {
				continue
			}
			for _, p := range group {
				s.send(ctx, []*pending{p})
			}
			return
		case failed >= 0:
			group[failed].finish(s.mapError(errs[failed], group[failed].ch))
			group = slices.Delete(slices.Clone(group), failed, failed+1)
			continue
		case closeErr != nil:
			// The connection or the commit failed: nobody knows better than
			// this error whether the transaction committed.
			for _, p := range group {
				p.finish(s.mapError(closeErr, p.ch))
			}
			return
		}
		// Committed. A change whose results could not be read (no Postgres
		// error, so it committed too) says so alone.
		s.committedGroup(group, errs)
		return
	}
}

func (p *pending) firstStream() string {
	if len(p.ch.Appends) == 0 {
		return ""
	}
	return p.ch.Appends[0].Stream
}

// transient reports a Postgres error that fails a transaction for what ran
// beside it rather than for what it holds.
func transient(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001") // deadlock_detected, serialization_failure
}

func (s *Store) committedGroup(group []*pending, errs []error) {
	s.groupSize.Observe(float64(len(group)))
	events := false
	for i, p := range group {
		events = events || len(p.ch.Appends) > 0
		if errs[i] != nil {
			p.finish(fmt.Errorf("append: committed, but reading what was stored failed: %w", errs[i]))
			continue
		}
		if len(p.out.Events) > 0 {
			s.appends.Inc()
			s.events.Add(float64(len(p.out.Events)))
			s.latency.Observe(time.Since(p.start).Seconds())
		}
		p.finish(nil)
	}
	if events {
		select {
		case s.committed <- struct{}{}:
		default:
		}
	}
}

func (p *pending) finish(err error) {
	if err != nil {
		p.out = Committed{}
	}
	p.err = err
	close(p.done)
}
