package projections

import (
	"context"
	"time"
)

// lagEvery is how often each instance measures every projection's lag.
const lagEvery = time.Second

// measureLag sets each projection's lag gauge every lagEvery until ctx ends.
// It runs on every instance, whatever this one does with a projection, so
// that a projection nobody moves shows its lag growing wherever it is
// scraped (DESIGN rule 13).
func (r *Runner) measureLag(ctx context.Context) {
	t := time.NewTicker(lagEvery)
	defer t.Stop()
	for {
		if err := r.measureLagOnce(ctx); err != nil && ctx.Err() == nil {
			r.log.Debug("measuring the projections' lag failed; the last measure stands", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// measureLagOnce sets each projection's lag to the age of the oldest
// committed event past its saved checkpoint, 0 when there is none. It was
// the delay of the last event a projection applied, which stood still at
// its last small value while the projection stopped moving. Events a
// projection skips count too: its checkpoint passes them within skipSave.
func (r *Runner) measureLagOnce(ctx context.Context) error {
	q, cancel := context.WithTimeout(ctx, lagEvery)
	defer cancel()
	names := make([]string, len(r.order))
	for i, p := range r.order {
		names[i] = p.Name()
	}
	// One index probe per projection: the next event in log order after
	// its checkpoint, as the relay's reader orders them.
	rows, err := r.pool.Query(q, `SELECT c.name, e.occurred_at FROM projection_checkpoints c
		LEFT JOIN LATERAL (SELECT e.occurred_at FROM events e WHERE (e.tx_id, e.position) > (c.tx_id, c.position)
			ORDER BY e.tx_id, e.position LIMIT 1) e ON true
		WHERE c.name = ANY($1)`, names)
	if err != nil {
		return err
	}
	defer rows.Close()
	now := time.Now()
	for rows.Next() {
		var name string
		var oldest *time.Time
		if err := rows.Scan(&name, &oldest); err != nil {
			return err
		}
		lag := 0.0
		if oldest != nil {
			lag = max(now.Sub(*oldest).Seconds(), 0)
		}
		r.lag.WithLabelValues(name).Set(lag)
	}
	return rows.Err()
}
