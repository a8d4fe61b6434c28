package revocation

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/projections"
)

// PollEvery is how often at most the backstop reads the log, and only while
// the feed is in doubt: revocations then reach the set this much after they
// commit, well inside the one second API.md promises.
const PollEvery = 250 * time.Millisecond

// LagLimit is the relay lag past which NATS can no longer be counted on to
// bring a revocation within the promised second: the backstop then reads the
// log. The relay measures its lag once a second, so a busy instance may read
// the log a few times more than it had to, never more often than PollEvery.
const LagLimit = 500 * time.Millisecond

// flushWait bounds the round trip that confirms the NATS server holds this
// instance's subscriptions again after a reconnect.
const flushWait = 250 * time.Millisecond

// Feed brings revocations into a Set: from NATS as the relay publishes them
// and, while that path is in doubt, from the log (Backstop).
//
// It keeps a horizon: a transaction id such that every revocation committed
// by an older transaction is in the set. A read of the log starts there and
// moves it to its snapshot's xmin; a message from NATS moves it to its own
// transaction, since the relay publishes in log order, but only while the
// subscription has missed nothing since the last read of the log that
// started with the server holding it (no reconnect, no message dropped).
type Feed struct {
	set  *Set
	nc   *nats.Conn
	subs []*nats.Subscription
	log  *slog.Logger

	mu      sync.Mutex
	horizon uint64
	// trusted is the feed's generation (gen) when it was last known to have
	// missed nothing; -1 until then.
	trusted int64
}

// Follow subscribes the set to revocations published by any instance. Core
// NATS subscribers see each message as the relay publishes it, so this needs
// no consumer and adds no lag beyond the relay's. Call Load next.
func (s *Set) Follow(nc *nats.Conn, subject func(eventType string) string, log *slog.Logger) (*Feed, error) {
	f := &Feed{set: s, nc: nc, log: log.With("component", "revocation"), trusted: -1}
	for _, typ := range types() {
		sub, err := nc.Subscribe(subject(typ), f.receive)
		if err != nil {
			f.Stop()
			return nil, fmt.Errorf("subscribe to %s: %w", typ, err)
		}
		f.subs = append(f.subs, sub)
	}
	return f, nil
}

// receive applies a revocation the relay published. One it cannot read is
// logged and skipped: the backstop reads it from the log when in doubt.
func (f *Feed) receive(m *nats.Msg) {
	e, err := eventstore.FromMessage(m.Header, m.Data)
	if err == nil {
		err = f.apply(e)
	}
	if err != nil {
		f.log.Error("unreadable revocation message", "subject", m.Subject, "err", err)
		return
	}
	f.published(e.Commit.Tx)
}

// apply decodes a revocation, from NATS or the log, into the set.
func (f *Feed) apply(e eventstore.Event) error {
	d, err := eventstore.Decode(e)
	if err != nil {
		return err
	}
	return f.set.Apply(d)
}

// Stop ends the subscriptions.
func (f *Feed) Stop() {
	for _, sub := range f.subs {
		_ = sub.Unsubscribe()
	}
}

// gen counts what can make the subscription miss messages: reconnects (core
// NATS does not replay what was published meanwhile) and messages dropped
// for a slow consumer. While it stays the same, nothing was missed.
func (f *Feed) gen() int64 {
	n := int64(f.nc.Stats().Reconnects)
	for _, sub := range f.subs {
		d, err := sub.Dropped()
		if err != nil { // closed: it will miss everything from now on
			return -2
		}
		n += int64(d)
	}
	return n
}

// published moves the horizon to a message's transaction when the feed has
// missed nothing since it was last trusted.
func (f *Feed) published(tx uint64) {
	g := f.gen()
	f.mu.Lock()
	if g == f.trusted && tx > f.horizon {
		f.horizon = tx
	}
	f.mu.Unlock()
}

// Load fills the set with what happened before this instance started, then
// reads the log from the sessions read model's checkpoint: revocations
// published before the subscription and not yet projected are in neither.
func (f *Feed) Load(ctx context.Context, pool *pgxpool.Pool) error {
	from, err := projections.SessionsCheckpoint(ctx, pool)
	if err != nil {
		return fmt.Errorf("read the sessions checkpoint: %w", err)
	}
	if err := f.set.Load(ctx, pool); err != nil {
		return err
	}
	f.mu.Lock()
	f.horizon = from.Tx
	f.mu.Unlock()
	return f.readLog(ctx, pool)
}

// Backstop reads the log for revocations, at most every PollEvery, while
// the feed is in doubt (this instance's NATS connection down, a reconnect or
// a drop not yet caught up on, or the relay lagging past LagLimit as lag
// reports it), until ctx ends. While NATS is healthy it costs no query.
func (f *Feed) Backstop(ctx context.Context, pool *pgxpool.Pool, lag func() time.Duration) {
	t := time.NewTicker(PollEvery)
	defer t.Stop()
	polling := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		why := f.doubt(lag)
		if why == "" {
			if polling {
				f.log.Info("revocation feed healthy again: no longer reading the log")
				polling = false
			}
			continue
		}
		if !polling {
			f.log.Warn("revocation feed in doubt: reading revocations from the log until it is healthy", "reason", why)
			polling = true
		}
		read, cancel := context.WithTimeout(ctx, 5*PollEvery)
		err := f.readLog(read, pool)
		cancel()
		if err != nil && ctx.Err() == nil {
			f.log.Warn("reading revocations from the log failed", "err", err)
		}
	}
}

// doubt says why NATS cannot be counted on to bring revocations in time, or
// "" when it can.
func (f *Feed) doubt(lag func() time.Duration) string {
	if !f.nc.IsConnected() {
		return "nats disconnected"
	}
	g := f.gen()
	f.mu.Lock()
	missed := g != f.trusted
	f.mu.Unlock()
	if missed {
		return "messages may have been missed"
	}
	if l := lag(); l > LagLimit {
		return "relay lag " + l.Round(time.Millisecond).String()
	}
	return ""
}

// readLog applies every revocation at or past the horizon, then moves the
// horizon to the read's xmin. When the feed was in doubt but the server is
// now known to hold its subscriptions, the read covers what was missed, and
// the feed is trusted again.
func (f *Feed) readLog(ctx context.Context, pool *pgxpool.Pool) error {
	g := f.gen()
	f.mu.Lock()
	from, trusted := f.horizon, f.trusted
	f.mu.Unlock()
	// A flush is a round trip: once it returns, the server has our
	// subscriptions, and what it gets from now on reaches us.
	live := g == trusted || (f.nc.IsConnected() && f.nc.FlushTimeout(flushWait) == nil)
	events, to, err := projections.Revocations(ctx, pool, from)
	if err != nil {
		return err
	}
	for _, e := range events {
		// One it cannot read is logged and skipped, as the subscription
		// does: stopping there would hold every later one back.
		if err := f.apply(e); err != nil {
			f.log.Error("unreadable revocation in the log", "event", e.ID, "type", e.Type, "err", err)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.horizon = max(f.horizon, to)
	if live && g >= 0 && f.gen() == g {
		f.trusted = g
	}
	return nil
}
