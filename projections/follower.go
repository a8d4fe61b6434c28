package projections

import (
	"context"
	"time"
)

// checkpointSignal names the nudge a projection's leader sends after it saves
// the projection's checkpoint, so that waiters on other instances read it at
// once rather than at their next poll.
func checkpointSignal(projection string) string { return "checkpoint." + projection }

// follow keeps waiters moving on an instance that does not apply p, by
// re-reading the checkpoint the leader writes, for the given time.
func (r *Runner) follow(ctx context.Context, p Projection, st *state, d time.Duration) {
	t := time.NewTicker(r.cfg.Poll)
	defer t.Stop()
	nudged, stopListening := r.hearLeader(p.Name())
	defer stopListening()
	until := time.After(d)
	// The first look is at once: a move made before the subscription was not
	// heard. It is also for the checkpoint metric, which on an instance that
	// does not apply p reports the checkpoint it sees, about once per
	// Takeover; waiters need every move.
	r.look(ctx, p.Name(), st)
	for {
		select {
		case <-ctx.Done():
			return
		case <-until:
			return
		case <-nudged:
		case <-st.waiting:
		case <-t.C:
		}
		if st.hasWaiters() {
			r.look(ctx, p.Name(), st)
		}
	}
}

// hearLeader listens for the nudges of p's leader. Without them the follower
// still polls: nudged is then nil, and never ready.
func (r *Runner) hearLeader(name string) (nudged <-chan struct{}, stop func()) {
	nudged, stop, err := r.bus.Listen(checkpointSignal(name))
	if err != nil {
		r.log.Warn("cannot hear the leader's checkpoints; polling only", "projection", name, "err", err)
		return nil, func() {}
	}
	return nudged, stop
}

// look reads the checkpoint the leader saved, for this instance's waiters
// and its checkpoint metric.
func (r *Runner) look(ctx context.Context, name string, st *state) {
	if cp, err := loadCheckpoint(ctx, r.pool, name); err == nil {
		st.advance(cp.Cursor)
		r.position.WithLabelValues(name).Set(float64(cp.Cursor.Position))
	}
}
