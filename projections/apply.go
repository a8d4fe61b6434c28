package projections

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/eventstore"
)

// applyBatch applies the events after the checkpoint and moves it, in one
// transaction. When the checkpoint in Postgres is still stored, as this
// leader last saw it, that is one round trip for the statements and one for
// the commit: the checkpoint's update comes first, takes its row lock (which
// a rebuild's swap also takes) and finds out whether the row moved. If it
// did (a rebuild, or another applier before this one took the lead), the
// transaction is rolled back and the batch applied as before: the checkpoint
// read under its lock, what it covers skipped.
func (r *Runner) applyBatch(ctx context.Context, conn *pgxpool.Conn, p Projection, events []eventstore.Event, lastSeq uint64, stored Checkpoint) (Checkpoint, int, error) {
	next, fresh := after(stored, events, lastSeq)
	var b Batch
	if len(fresh) > 0 {
		if err := p.Apply(&b, fresh); err != nil {
			return Checkpoint{}, 0, fmt.Errorf("projection %s: apply %d events from %s: %w", p.Name(), len(fresh), fresh[0].Commit, err)
		}
	}
	moved, err := applyOnce(ctx, conn, p.Name(), &b, stored, next)
	if err != nil {
		return Checkpoint{}, 0, err
	}
	if !moved {
		return next, len(fresh), nil
	}
	return r.applyLocked(ctx, conn, p, events, lastSeq)
}

// after returns the checkpoint past events (never behind cp) and the events
// cp does not cover yet.
func after(cp Checkpoint, events []eventstore.Event, lastSeq uint64) (Checkpoint, []eventstore.Event) {
	fresh := events[:0:0]
	for _, e := range events {
		if cp.Cursor.Before(e.Commit) {
			fresh = append(fresh, e)
			cp.Cursor = e.Commit
		}
	}
	cp.StreamSeq = max(cp.StreamSeq, lastSeq)
	return cp, fresh
}

// applyOnce runs b and moves the checkpoint from stored to next in one
// transaction of two round trips, or reports that the checkpoint is no longer
// at stored and changes nothing.
func applyOnce(ctx context.Context, conn *pgxpool.Conn, name string, b *Batch, stored, next Checkpoint) (moved bool, err error) {
	moved, err = sendOnce(ctx, conn, name, b, stored, next)
	if err != nil || moved {
		// The connection is in the transaction (or was lost with it).
		if _, rerr := conn.Exec(context.WithoutCancel(ctx), `ROLLBACK`); rerr != nil {
			conn.Conn().Close(context.WithoutCancel(ctx))
		}
		if err != nil {
			return false, fmt.Errorf("projection %s: apply and move the checkpoint to %s: %w", name, next.Cursor, err)
		}
		return true, nil
	}
	if _, err := conn.Exec(ctx, `COMMIT`); err != nil {
		return false, fmt.Errorf("projection %s: commit: %w", name, err)
	}
	return false, nil
}

// sendOnce is applyOnce's first round trip: it opens the transaction, moves
// the checkpoint if it is still at stored, and runs b's statements only then.
func sendOnce(ctx context.Context, conn *pgxpool.Conn, name string, b *Batch, stored, next Checkpoint) (moved bool, err error) {
	var pb pgx.Batch
	pb.Queue(`BEGIN`)
	pb.Queue(`UPDATE projection_checkpoints SET tx_id = $4::text::xid8, position = $5, stream_seq = $6, updated_at = now()
		WHERE name = $1 AND tx_id = $2::text::xid8 AND position = $3`,
		name, fmt.Sprint(stored.Cursor.Tx), stored.Cursor.Position, fmt.Sprint(next.Cursor.Tx), next.Cursor.Position, int64(next.StreamSeq))
	b.queueOn(&pb)
	br := conn.SendBatch(ctx, &pb)
	moved, err = onceResults(br, name, b)
	if cerr := br.Close(); err == nil && !moved {
		err = cerr
	}
	return moved, err
}

// onceResults reads sendOnce's answers: b's are there only when the
// checkpoint's update found its row.
func onceResults(br pgx.BatchResults, name string, b *Batch) (moved bool, err error) {
	if _, err := br.Exec(); err != nil {
		return false, err
	}
	tag, err := br.Exec()
	if err != nil {
		return false, err
	}
	if tag.RowsAffected() != 1 {
		return true, nil
	}
	return false, b.results(br, name)
}

// applyLocked applies events in a transaction that reads the checkpoint
// under its lock first and skips what it already covers.
func (r *Runner) applyLocked(ctx context.Context, conn *pgxpool.Conn, p Projection, events []eventstore.Event, lastSeq uint64) (Checkpoint, int, error) {
	name := p.Name()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return Checkpoint{}, 0, fmt.Errorf("projection %s: begin: %w", name, err)
	}
	defer tx.Rollback(ctx)
	cp, err := readCheckpoint(ctx, tx, name, true)
	if err != nil {
		return Checkpoint{}, 0, err
	}
	cp, fresh := after(cp, events, lastSeq)
	if len(fresh) > 0 {
		if err := apply(ctx, tx, p, fresh); err != nil {
			return Checkpoint{}, 0, fmt.Errorf("projection %s: apply %d events from %s: %w", name, len(fresh), fresh[0].Commit, err)
		}
	}
	if err := writeCheckpoint(ctx, tx, name, cp); err != nil {
		return Checkpoint{}, 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return Checkpoint{}, 0, fmt.Errorf("projection %s: commit: %w", name, err)
	}
	return cp, len(fresh), nil
}
