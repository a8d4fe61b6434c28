package revocation

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
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

// revocationsSQL names the event types in its text, not as parameters: only
// then can the planner use the partial index events_revocations (migration
// 00017). The snapshot's xmin comes from the statement's own snapshot: every
// transaction older than it has ended, so all of its revocations were read.
const revocationsSQL = `SELECT s.xmin::text, e.type, e.data
	FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) s
	LEFT JOIN events e ON e.type IN ('` + domain.TypeSessionRevoked + `', '` + domain.TypePasswordReset + `')
		AND e.tx_id >= $1::text::xid8`

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
	sessions, err := nc.Subscribe(subject(domain.TypeSessionRevoked), func(m *nats.Msg) {
		var env struct {
			Data domain.SessionRevoked `json:"data"`
		}
		if err := json.Unmarshal(m.Data, &env); err != nil || env.Data.SessionID == uuid.Nil {
			f.log.Error("unreadable SessionRevoked message", "err", err)
			return
		}
		s.RevokeSession(env.Data.SessionID)
		f.published(m)
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to session revocations: %w", err)
	}
	f.subs = append(f.subs, sessions)
	resets, err := nc.Subscribe(subject(domain.TypePasswordReset), func(m *nats.Msg) {
		var env struct {
			Data domain.PasswordReset `json:"data"`
		}
		if err := json.Unmarshal(m.Data, &env); err != nil || env.Data.UserID == uuid.Nil {
			f.log.Error("unreadable PasswordReset message", "err", err)
			return
		}
		s.CutUser(env.Data.UserID, env.Data.At)
		f.published(m)
	})
	if err != nil {
		f.Stop()
		return nil, fmt.Errorf("subscribe to password resets: %w", err)
	}
	f.subs = append(f.subs, resets)
	return f, nil
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
func (f *Feed) published(m *nats.Msg) {
	tx, err := eventstore.ParseTx(m.Header.Get(eventstore.HeaderTx))
	if err != nil {
		return // the backstop reads it from the log when in doubt
	}
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
	var tx string
	err := pool.QueryRow(ctx, `SELECT coalesce((SELECT tx_id::text FROM projection_checkpoints WHERE name = 'sessions'), '0')`).Scan(&tx)
	if err != nil {
		return fmt.Errorf("read the sessions checkpoint: %w", err)
	}
	from, err := eventstore.ParseTx(tx)
	if err != nil {
		return err
	}
	if err := f.set.Load(ctx, pool); err != nil {
		return err
	}
	f.mu.Lock()
	f.horizon = from
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
	rows, err := pool.Query(ctx, revocationsSQL, strconv.FormatUint(from, 10))
	if err != nil {
		return fmt.Errorf("read revocations from the log: %w", err)
	}
	defer rows.Close()
	var xmin string
	for rows.Next() {
		var typ *string
		var data []byte
		if err := rows.Scan(&xmin, &typ, &data); err != nil {
			return fmt.Errorf("read revocations from the log: %w", err)
		}
		if typ != nil {
			f.apply(*typ, data)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read revocations from the log: %w", err)
	}
	to, err := eventstore.ParseTx(xmin)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.horizon = max(f.horizon, to)
	if live && g >= 0 && f.gen() == g {
		f.trusted = g
	}
	return nil
}

// apply adds a revocation read from the log. One it cannot read is logged
// and skipped, as the subscription does: stopping there would hold every
// later one back.
func (f *Feed) apply(typ string, data []byte) {
	switch typ {
	case domain.TypeSessionRevoked:
		var e domain.SessionRevoked
		if err := json.Unmarshal(data, &e); err != nil || e.SessionID == uuid.Nil {
			f.log.Error("unreadable SessionRevoked in the log", "err", err)
			return
		}
		f.set.RevokeSession(e.SessionID)
	case domain.TypePasswordReset:
		var e domain.PasswordReset
		if err := json.Unmarshal(data, &e); err != nil || e.UserID == uuid.Nil {
			f.log.Error("unreadable PasswordReset in the log", "err", err)
			return
		}
		f.set.CutUser(e.UserID, e.At)
	}
}
