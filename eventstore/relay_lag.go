package eventstore

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// measureLag measures the relay's lag every LagEvery until ctx ends, apart
// from whatever the relay is doing.
func (r *Relay) measureLag(ctx context.Context) {
	t := time.NewTicker(r.cfg.LagEvery)
	defer t.Stop()
	for {
		r.measureOnce(ctx)
		r.measureErasures(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// measureOnce finds the oldest committed event past both what this instance
// saw acknowledged and the saved checkpoint (whichever is further: another
// instance may be relaying), within LagEvery.
func (r *Relay) measureOnce(ctx context.Context) {
	q, cancel := context.WithTimeout(ctx, r.cfg.LagEvery)
	defer cancel()
	published := r.Published()
	var oldest time.Time
	// The further cursor is chosen before the events are read so that
	// finding the next event is one index probe: with both bounds in the
	// event's condition, Postgres walked the log from the nearer one.
	err := r.store.pool.QueryRow(q, `SELECT e.occurred_at FROM relay_checkpoint c,
		LATERAL (SELECT
			CASE WHEN (c.tx_id, c.position) > ($1::text::xid8, $2) THEN c.tx_id ELSE $1::text::xid8 END AS tx_id,
			CASE WHEN (c.tx_id, c.position) > ($1::text::xid8, $2) THEN c.position ELSE $2 END AS position) f,
		LATERAL (SELECT e.occurred_at FROM events e WHERE (e.tx_id, e.position) > (f.tx_id, f.position)
			ORDER BY e.tx_id, e.position LIMIT 1) e`, published.txText(), published.Position).Scan(&oldest)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		oldest = time.Time{}
	case err != nil:
		if ctx.Err() == nil {
			r.log.Debug("measuring the relay's lag failed", "err", err)
		}
		// The last measure stands, and the gauge keeps ageing from it.
		return
	}
	r.mu.Lock()
	r.oldest = oldest
	r.mu.Unlock()
}

// measureErasures counts the erasures whose messages are still in the
// stream and finds when the oldest was asked for, within LagEvery.
func (r *Relay) measureErasures(ctx context.Context) {
	q, cancel := context.WithTimeout(ctx, r.cfg.LagEvery)
	defer cancel()
	var n int64
	var oldest *time.Time
	if err := r.store.pool.QueryRow(q, `SELECT count(*), min(requested_at) FROM stream_erasures`).Scan(&n, &oldest); err != nil {
		if ctx.Err() == nil {
			r.log.Debug("measuring the pending stream erasures failed", "err", err)
		}
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.erasures = n
	if oldest != nil {
		r.oldestErasure = *oldest
	}
}
