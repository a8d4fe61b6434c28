// Package projections builds authd's read models from the event log: each
// projection follows the JetStream stream with its own durable consumer, and
// can be rebuilt from the Postgres log while the service runs.
package projections

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
)

// Projection turns events into a read model.
type Projection interface {
	// Name identifies the projection: its checkpoint, consumer and CLI name.
	Name() string
	// Tables are the read model's tables; a rebuild fills fresh copies of
	// them and swaps them in. Apply must name them unqualified.
	Tables() []string
	// Apply queues on b the statements that apply a batch of events in log
	// order; the caller runs them in the transaction that moves the
	// checkpoint, in the same round trip. It is given every event type and
	// ignores those it does not use. An error stops the projection: the batch
	// is never skipped.
	Apply(b *Batch, events []eventstore.Event) error
}

// Selective is a projection that says which event types it uses. The runner
// places an event it does not use from the message's headers alone, and a
// batch with none of them only moves the checkpoint, saved with the next
// applied batch or soon after: most events concern one projection, and each
// projection's checkpoint must still pass every event for read-your-writes.
type Selective interface {
	Uses(eventType string) bool
}

// uses reports whether p's read model can change with an event of the given
// type: a projection that is not Selective may use any.
func uses(p Projection, eventType string) bool {
	s, ok := p.(Selective)
	return !ok || s.Uses(eventType)
}

// All returns every projection authd runs, in one place so the server and
// authctl agree on the list.
func All() []Projection {
	return []Projection{Users{}, Sessions{}, TwoFactor{}, Passkeys{}, Activity{}}
}

// Find returns the projection with the given name.
func Find(name string) (Projection, bool) {
	for _, p := range All() {
		if p.Name() == name {
			return p, true
		}
	}
	return nil, false
}

// eachUsed decodes, with the codec every reader of the log shares, each
// event of a batch that s uses and hands it to apply, in log order. It skips
// the others, which may carry no data: the runner places them by their
// headers alone.
func eachUsed(s Selective, events []eventstore.Event, apply func(e eventstore.Event, d domain.Event) error) error {
	for _, e := range events {
		if !s.Uses(e.Type) {
			continue
		}
		d, err := eventstore.Decode(e)
		if err != nil {
			return err
		}
		if err := apply(e, d); err != nil {
			return err
		}
	}
	return nil
}

// ends says whether an event of the type ends an account (an expired
// signup, a deletion): every read model then forgets the user's rows, so a
// read model holds nothing of a person who is gone (README: "Erasure").
func ends(eventType string) bool {
	return eventType == domain.TypeSignupExpired || eventType == domain.TypeAccountDeleted
}

// endedUser is the user an ending event (ends) is about.
func endedUser(d domain.Event) (uuid.UUID, bool) {
	switch v := d.(type) {
	case *domain.SignupExpired:
		return v.UserID, true
	case *domain.AccountDeleted:
		return v.UserID, true
	}
	return uuid.Nil, false
}

// forget queues the delete of the rows of an account that ended (ends) from
// one of a read model's tables: as many as there are, none included.
func forget(b *Batch, e eventstore.Event, d domain.Event, table string) {
	if user, ok := endedUser(d); ok {
		b.Any(e.Type+" "+e.ID.String(), `DELETE FROM `+table+` WHERE user_id = $1`, user)
	}
}

// Checkpoint is how far a projection has applied the log.
type Checkpoint struct {
	Cursor    eventstore.Cursor
	StreamSeq uint64 // a JetStream sequence at or before Cursor: where its consumer resumes
}

// createCheckpoint makes sure a projection has a checkpoint row, at the
// start of the log the first time.
func createCheckpoint(ctx context.Context, tx pgx.Tx, name string) error {
	if _, err := tx.Exec(ctx, `INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING`, name); err != nil {
		return fmt.Errorf("projection %s: create checkpoint: %w", name, err)
	}
	return nil
}

// readCheckpoint reads a projection's checkpoint; with lock it is held until
// tx ends, which is how appliers of the same projection take turns.
func readCheckpoint(ctx context.Context, tx pgx.Tx, name string, lock bool) (Checkpoint, error) {
	q := `SELECT tx_id::text, position, stream_seq FROM projection_checkpoints WHERE name = $1`
	if lock {
		q += ` FOR UPDATE`
	}
	return scanCheckpoint(tx.QueryRow(ctx, q, name), name)
}

// loadCheckpoint reads a checkpoint without a transaction or lock.
func loadCheckpoint(ctx context.Context, pool *pgxpool.Pool, name string) (Checkpoint, error) {
	cp, err := scanCheckpoint(pool.QueryRow(ctx,
		`SELECT tx_id::text, position, stream_seq FROM projection_checkpoints WHERE name = $1`, name), name)
	if err != nil && err == pgx.ErrNoRows {
		return Checkpoint{}, nil
	}
	return cp, err
}

func scanCheckpoint(row pgx.Row, name string) (Checkpoint, error) {
	var cp Checkpoint
	var tx string
	var seq int64
	if err := row.Scan(&tx, &cp.Cursor.Position, &seq); err != nil {
		if err == pgx.ErrNoRows {
			return Checkpoint{}, err
		}
		return Checkpoint{}, fmt.Errorf("projection %s: read checkpoint: %w", name, err)
	}
	t, err := eventstore.ParseTx(tx)
	if err != nil {
		return Checkpoint{}, err
	}
	cp.Cursor.Tx, cp.StreamSeq = t, uint64(seq)
	return cp, nil
}

// advanceCheckpoint moves a checkpoint forward to cp, never back (a rebuild
// may have moved it further), and returns where it is.
func advanceCheckpoint(ctx context.Context, q Querier, name string, cp Checkpoint) (Checkpoint, error) {
	return scanCheckpoint(q.QueryRow(ctx, `UPDATE projection_checkpoints SET
		    (tx_id, position) = (SELECT CASE WHEN (tx_id, position) < ($2::text::xid8, $3) THEN $2::text::xid8 ELSE tx_id END,
		                                CASE WHEN (tx_id, position) < ($2::text::xid8, $3) THEN $3 ELSE position END),
		    stream_seq = greatest(stream_seq, $4), updated_at = now()
		WHERE name = $1
		RETURNING tx_id::text, position, stream_seq`,
		name, fmt.Sprint(cp.Cursor.Tx), cp.Cursor.Position, int64(cp.StreamSeq)), name)
}

func writeCheckpoint(ctx context.Context, tx pgx.Tx, name string, cp Checkpoint) error {
	_, err := tx.Exec(ctx, `UPDATE projection_checkpoints
		SET tx_id = $2::text::xid8, position = $3, stream_seq = $4, updated_at = now() WHERE name = $1`,
		name, fmt.Sprint(cp.Cursor.Tx), cp.Cursor.Position, int64(cp.StreamSeq))
	if err != nil {
		return fmt.Errorf("projection %s: save checkpoint %s: %w", name, cp.Cursor, err)
	}
	return nil
}

// Batch is the statements that apply a batch of events, each with the number
// of rows it must touch: any other count means the read model and the log
// disagree, which stops the projection.
type Batch struct {
	queued []queued
}

type queued struct {
	what string
	rows int64
	sql  string
	args []any
}

// Row queues a statement for event e that must touch exactly one row.
func (b *Batch) Row(e eventstore.Event, sql string, args ...any) {
	b.Rows(e.Type+" "+e.ID.String(), 1, sql, args...)
}

// Rows queues a statement, described by what, that must touch exactly n rows.
func (b *Batch) Rows(what string, n int, sql string, args ...any) {
	b.queued = append(b.queued, queued{what: what, rows: int64(n), sql: sql, args: args})
}

// anyRows is the count of a statement that may touch any number of rows.
const anyRows = -1

// Any queues a statement, described by what, that may touch any number of
// rows: a delete of whatever a user left.
func (b *Batch) Any(what string, sql string, args ...any) {
	b.queued = append(b.queued, queued{what: what, rows: anyRows, sql: sql, args: args})
}

// queueOn appends b's statements to pb.
func (b *Batch) queueOn(pb *pgx.Batch) {
	for _, q := range b.queued {
		pb.Queue(q.sql, q.args...)
	}
}

// results reads the results of b's statements from br, in order.
func (b *Batch) results(br pgx.BatchResults, projection string) error {
	for _, q := range b.queued {
		tag, err := br.Exec()
		if err != nil {
			return fmt.Errorf("%s: %s: %w", projection, q.what, err)
		}
		if q.rows != anyRows && tag.RowsAffected() != q.rows {
			return fmt.Errorf("%s: %s touched %d rows, want %d", projection, q.what, tag.RowsAffected(), q.rows)
		}
	}
	return nil
}

// send runs b on tx in one round trip.
func (b *Batch) send(ctx context.Context, tx pgx.Tx, projection string) error {
	if len(b.queued) == 0 {
		return nil
	}
	var pb pgx.Batch
	b.queueOn(&pb)
	br := tx.SendBatch(ctx, &pb)
	if err := b.results(br, projection); err != nil {
		br.Close()
		return err
	}
	return br.Close()
}

// apply runs what p queues for events on tx.
func apply(ctx context.Context, tx pgx.Tx, p Projection, events []eventstore.Event) error {
	var b Batch
	if err := p.Apply(&b, events); err != nil {
		return err
	}
	return b.send(ctx, tx, p.Name())
}
