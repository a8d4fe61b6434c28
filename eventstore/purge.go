package eventstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
)

// purgeBatch is how many erasures a round of the purge takes at most.
const purgeBatch = 100

// purger deletes erased users' messages from the stream, on the relaying
// instance, once the relay has published everything of the erasure: the
// records it reads are saved with the relay's checkpoint.
type purger struct {
	r      *Relay
	stream jetstream.Stream
	wake   chan struct{}
}

// startPurge runs the purge until stop, which returns once it has ended.
func (r *Relay) startPurge(ctx context.Context, stream jetstream.Stream) (p *purger, stop func()) {
	p = &purger{r: r, stream: stream, wake: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { p.run(ctx); close(done) }()
	return p, func() { cancel(); <-done }
}

// saved tells the purge that the relay saved its checkpoint: erasures the
// relay held up may be ready.
func (p *purger) saved() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// run purges what is ready at once (erasures may be waiting from another
// term), then whenever the relay saves its checkpoint, and while erasures
// are waiting for the projections, every checkpointEvery: no more often
// than the relay's own saves.
func (p *purger) run(ctx context.Context) {
	again := time.NewTimer(0)
	defer again.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		case <-again.C:
		}
		pending, err := p.once(ctx)
		if err != nil && ctx.Err() == nil {
			p.r.log.Warn("stream erasure interrupted; will retry", "err", err)
		}
		if pending || err != nil {
			again.Reset(checkpointEvery)
		}
	}
}

// erasure is a row of stream_erasures as a round of the purge sees it.
type erasure struct {
	user  uuid.UUID
	tx    string
	ready bool
}

// once deletes the messages of every erasure that is ready, and says
// whether any is left to do.
func (p *purger) once(ctx context.Context) (pending bool, err error) {
	// An erasure is ready when every transaction up to its own has ended
	// and the relay's saved checkpoint, and so the records saved with it,
	// is past every event of them (which holds for an erasing transaction
	// with no event of its own too), and the projections are past them as
	// well or have had ProjectionWait. Each NOT EXISTS is one probe of the
	// log's commit order index from a checkpoint, stated as an OR for the
	// reason readLog gives. Messages from the checkpoint's sequence on are
	// never deleted: the relay continues from the stream's newest messages.
	rows, err := p.r.store.pool.Query(ctx, `SELECT e.user_id, e.tx_id::text, c.stream_seq,
			e.tx_id < pg_snapshot_xmin(pg_current_snapshot())
			AND NOT EXISTS (SELECT 1 FROM events v WHERE v.tx_id >= c.tx_id
				AND (v.tx_id > c.tx_id OR v.position > c.position) AND v.tx_id <= e.tx_id)
			AND (e.requested_at < now() - make_interval(secs => $1) OR NOT EXISTS (
				SELECT 1 FROM projection_checkpoints p WHERE EXISTS (SELECT 1 FROM events v WHERE v.tx_id >= p.tx_id
					AND (v.tx_id > p.tx_id OR v.position > p.position) AND v.tx_id <= e.tx_id)))
		FROM stream_erasures e, relay_checkpoint c
		ORDER BY e.requested_at LIMIT $2`, p.r.cfg.ProjectionWait.Seconds(), purgeBatch)
	if err != nil {
		return true, fmt.Errorf("stream erasure: read erasures: %w", err)
	}
	var erasures []erasure
	var before int64
	for rows.Next() {
		var e erasure
		if err := rows.Scan(&e.user, &e.tx, &before, &e.ready); err != nil {
			rows.Close()
			return true, fmt.Errorf("stream erasure: read erasures: %w", err)
		}
		erasures = append(erasures, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return true, fmt.Errorf("stream erasure: read erasures: %w", err)
	}
	pending = len(erasures) == purgeBatch
	for _, e := range erasures {
		if !e.ready {
			pending = true
			continue
		}
		done, err := p.erase(ctx, e, before)
		if err != nil {
			return true, err
		}
		pending = pending || !done
	}
	return pending, nil
}

// erase deletes the recorded messages of e's user before the sequence
// before from the stream, overwriting them, then forgets them and the
// erasure in one statement: a crash before it has the next round delete
// them again, finding some gone. The erasure stays while the user has
// messages from before on (published after it; rare), until the relay's
// checkpoint has passed them. It says whether the erasure is done.
func (p *purger) erase(ctx context.Context, e erasure, before int64) (bool, error) {
	began := time.Now()
	rows, err := p.r.store.pool.Query(ctx, `SELECT seq FROM stream_messages WHERE user_id = $1 AND seq < $2 ORDER BY seq`, e.user, before)
	if err != nil {
		return false, fmt.Errorf("stream erasure of user %s: %w", e.user, err)
	}
	var seqs []int64
	for rows.Next() {
		var seq int64
		if err := rows.Scan(&seq); err != nil {
			rows.Close()
			return false, fmt.Errorf("stream erasure of user %s: %w", e.user, err)
		}
		seqs = append(seqs, seq)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("stream erasure of user %s: %w", e.user, err)
	}
	if err := p.deleteAll(ctx, seqs); err != nil {
		return false, fmt.Errorf("stream erasure of user %s: %w", e.user, err)
	}
	tag, err := p.r.store.pool.Exec(ctx, `WITH purged AS (DELETE FROM stream_messages WHERE user_id = $1 AND seq = ANY($2))
		DELETE FROM stream_erasures e WHERE e.user_id = $1 AND e.tx_id = $3::text::xid8
			AND NOT EXISTS (SELECT 1 FROM stream_messages m WHERE m.user_id = $1 AND m.seq >= $4)`,
		e.user, seqs, e.tx, before)
	if err != nil {
		return false, fmt.Errorf("stream erasure of user %s: forget its messages: %w", e.user, err)
	}
	done := tag.RowsAffected() == 1
	p.r.log.Info("erased user's messages from the stream", "user_id", e.user, "messages", len(seqs), "done", done, "took", time.Since(began))
	return done, nil
}

// deletesInFlight is how many deletes the purge has in flight at once: one
// at a time, a user with a few thousand messages took longer than the 10 s
// API.md allows, each delete a round trip to the stream's leader.
const deletesInFlight = 32

// deleteAll deletes the messages at seqs, deletesInFlight at a time.
func (p *purger) deleteAll(ctx context.Context, seqs []int64) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	slots := make(chan struct{}, deletesInFlight)
	var wg sync.WaitGroup
	for _, seq := range seqs {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			if err := p.delete(ctx, uint64(seq)); err != nil {
				cancel(err)
			}
		}()
	}
	wg.Wait()
	return context.Cause(ctx)
}

// delete overwrites a message and removes it from the stream, within
// AckTimeout; one already gone is fine. The servers say so in words that
// differ with the version and clustering, which the client passes on as
// text only: so a refused delete asks whether the message is there.
func (p *purger) delete(ctx context.Context, seq uint64) error {
	ctx, cancel := context.WithTimeout(ctx, p.r.cfg.AckTimeout)
	defer cancel()
	err := p.stream.SecureDeleteMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgDeleteUnsuccessful) {
		if _, getErr := p.stream.GetMsg(ctx, seq); errors.Is(getErr, jetstream.ErrMsgNotFound) {
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("delete stream message %d: %w", seq, err)
	}
	return nil
}
