package projections

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/eventstore"
)

// DefaultRebuildBatch is the events a rebuild applies per transaction when
// not told. While a batch's transaction runs, the relay can read nothing
// newer (see eventstore.Store.ReadLog), so every read-your-writes wait of the
// live service may wait out a batch: batches of 1,000 keep that to a few tens
// of milliseconds, at 74,000 events/s against 83,000–86,000 for 10,000.
const DefaultRebuildBatch = 1000

// RebuildStats reports a finished rebuild.
type RebuildStats struct {
	Events   int64
	Duration time.Duration
}

// Rebuild recomputes a projection from the Postgres log while authd keeps
// running. It fills fresh copies of the projection's tables in a scratch
// schema, batch by batch, while the live projection goes on serving and
// applying. At the end it takes the checkpoint's row lock, which pauses the
// live applier between two batches, applies what is left, swaps the new tables
// in and moves the checkpoint to where the rebuild ended. The live applier then
// carries on from the same JetStream sequence and skips what the rebuild
// covered: no gap and no event applied twice.
//
// progress, when not nil, is called after every batch with the events done and
// the total the log held when the rebuild began.
func Rebuild(ctx context.Context, pool *pgxpool.Pool, store *eventstore.Store, p Projection, batchSize int, progress func(done, total int64)) (_ RebuildStats, err error) {
	start := time.Now()
	name := p.Name()
	if batchSize <= 0 {
		batchSize = DefaultRebuildBatch
	}
	scratch := pgx.Identifier{scratchSchema(p)}.Sanitize()
	var live string
	if err := pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&live); err != nil {
		return RebuildStats{}, fmt.Errorf("rebuild %s: %w", name, err)
	}
	liveSchema := pgx.Identifier{live}.Sanitize()
	indexes, err := createScratch(ctx, pool, p, scratch, liveSchema)
	if err != nil {
		return RebuildStats{}, err
	}
	swapped := false
	defer func() {
		if swapped {
			return
		}
		// A failed or cancelled rebuild leaves no half-filled copy behind.
		drop, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, dropErr := pool.Exec(drop, `DROP SCHEMA IF EXISTS `+scratch+` CASCADE`); dropErr != nil {
			err = errors.Join(err, fmt.Errorf("rebuild %s: drop scratch schema: %w", name, dropErr))
		}
	}()
	total, _, err := store.Backlog(ctx, eventstore.Cursor{})
	if err != nil {
		return RebuildStats{}, fmt.Errorf("rebuild %s: %w", name, err)
	}

	var cursor eventstore.Cursor
	var done int64
	for {
		events, err := store.ReadLog(ctx, cursor, batchSize)
		if err != nil {
			return RebuildStats{}, fmt.Errorf("rebuild %s: %w", name, err)
		}
		if len(events) == 0 {
			break
		}
		if err := applyInSchema(ctx, pool, p, scratch, liveSchema, events); err != nil {
			return RebuildStats{}, err
		}
		cursor = events[len(events)-1].Commit
		done += int64(len(events))
		if progress != nil {
			progress(done, max(total, done))
		}
		if len(events) < batchSize {
			break
		}
	}

	for _, def := range indexes {
		if _, err := pool.Exec(ctx, def); err != nil {
			return RebuildStats{}, fmt.Errorf("rebuild %s: build index: %w", name, err)
		}
	}
	tail, err := swap(ctx, pool, store, p, scratch, liveSchema, cursor, batchSize)
	if err != nil {
		return RebuildStats{}, err
	}
	swapped = true
	done += tail
	if progress != nil {
		progress(done, max(total, done))
	}
	return RebuildStats{Events: done, Duration: time.Since(start)}, nil
}

// scratchSchema is where a rebuild of p fills its tables.
func scratchSchema(p Projection) string { return "authd_rebuild_" + p.Name() }

// createScratch makes empty copies of the projection's tables and returns the
// statements that build their secondary indexes, which it leaves out: building
// an index once after loading is cheaper than keeping it up to date row by
// row. Apply finds rows by key constraints only, which the copies keep.
func createScratch(ctx context.Context, pool *pgxpool.Pool, p Projection, scratch, live string) ([]string, error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("rebuild %s: %w", p.Name(), err)
	}
	defer tx.Rollback(ctx)
	stmts := []string{`DROP SCHEMA IF EXISTS ` + scratch + ` CASCADE`, `CREATE SCHEMA ` + scratch}
	for _, t := range p.Tables() {
		table := pgx.Identifier{t}.Sanitize()
		stmts = append(stmts, `CREATE TABLE `+scratch+`.`+table+` (LIKE `+live+`.`+table+` INCLUDING ALL)`)
	}
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s); err != nil {
			return nil, fmt.Errorf("rebuild %s: prepare scratch tables: %w", p.Name(), err)
		}
	}
	rows, err := tx.Query(ctx, `SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), pg_get_indexdef(i.indexrelid)
		FROM pg_index i
		JOIN pg_class c ON c.oid = i.indexrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)`, scratchSchema(p))
	if err != nil {
		return nil, fmt.Errorf("rebuild %s: list scratch indexes: %w", p.Name(), err)
	}
	var names, defs []string
	for rows.Next() {
		var name, def string
		if err := rows.Scan(&name, &def); err != nil {
			return nil, fmt.Errorf("rebuild %s: list scratch indexes: %w", p.Name(), err)
		}
		names, defs = append(names, name), append(defs, def)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("rebuild %s: list scratch indexes: %w", p.Name(), err)
	}
	for _, name := range names {
		if _, err := tx.Exec(ctx, `DROP INDEX `+name); err != nil {
			return nil, fmt.Errorf("rebuild %s: prepare scratch tables: %w", p.Name(), err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("rebuild %s: prepare scratch tables: %w", p.Name(), err)
	}
	return defs, nil
}

// applyInSchema applies events to the scratch copies: the projection names
// its tables unqualified, so the transaction's search_path picks the copies
// first and finds the rest (the log) in the live schema.
func applyInSchema(ctx context.Context, pool *pgxpool.Pool, p Projection, scratch, live string, events []eventstore.Event) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		// A lost scratch batch costs nothing but a rebuild started again, so
		// these commits need not wait for the WAL to reach the disk.
		if _, err := tx.Exec(ctx, `SET LOCAL search_path TO `+scratch+`, `+live+`; SET LOCAL synchronous_commit = off`); err != nil {
			return fmt.Errorf("rebuild %s: %w", p.Name(), err)
		}
		if err := apply(ctx, tx, p, events); err != nil {
			return fmt.Errorf("rebuild %s: apply events from %s: %w", p.Name(), events[0].Commit, err)
		}
		return nil
	})
}

// swap finishes the rebuild under the checkpoint lock and returns how many
// events it applied on the way.
func swap(ctx context.Context, pool *pgxpool.Pool, store *eventstore.Store, p Projection, scratch, live string, cursor eventstore.Cursor, batchSize int) (int64, error) {
	name := p.Name()
	tx, err := pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("rebuild %s: %w", name, err)
	}
	defer tx.Rollback(ctx)
	if err := createCheckpoint(ctx, tx, name); err != nil {
		return 0, err
	}
	cp, err := readCheckpoint(ctx, tx, name, true)
	if err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, `SET LOCAL search_path TO `+scratch+`, `+live); err != nil {
		return 0, fmt.Errorf("rebuild %s: %w", name, err)
	}
	// Whatever committed since the last batch, read through this transaction
	// so that nothing can slip between the read and the swap.
	var tail int64
	for {
		events, err := store.ReadLogIn(ctx, tx, cursor, batchSize)
		if err != nil {
			return 0, fmt.Errorf("rebuild %s: %w", name, err)
		}
		if len(events) == 0 {
			break
		}
		if err := apply(ctx, tx, p, events); err != nil {
			return 0, fmt.Errorf("rebuild %s: apply events from %s: %w", name, events[0].Commit, err)
		}
		cursor = events[len(events)-1].Commit
		tail += int64(len(events))
	}
	if cursor.Before(cp.Cursor) {
		// The live projection is ahead of what the log lets a reader see now,
		// which cannot happen; refuse rather than move its checkpoint back.
		return 0, fmt.Errorf("rebuild %s: the live checkpoint %s is ahead of the log's readable end %s", name, cp.Cursor, cursor)
	}
	if _, err := tx.Exec(ctx, `SET LOCAL search_path TO `+live); err != nil {
		return 0, fmt.Errorf("rebuild %s: %w", name, err)
	}
	for _, t := range p.Tables() {
		table := pgx.Identifier{t}.Sanitize()
		for _, s := range []string{`DROP TABLE ` + live + `.` + table, `ALTER TABLE ` + scratch + `.` + table + ` SET SCHEMA ` + live} {
			if _, err := tx.Exec(ctx, s); err != nil {
				return 0, fmt.Errorf("rebuild %s: swap in %s: %w", name, t, err)
			}
		}
	}
	if _, err := tx.Exec(ctx, `DROP SCHEMA `+scratch); err != nil {
		return 0, fmt.Errorf("rebuild %s: drop scratch schema: %w", name, err)
	}
	cp.Cursor = cursor
	if err := writeCheckpoint(ctx, tx, name, cp); err != nil {
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("rebuild %s: commit swap: %w", name, err)
	}
	return tail, nil
}
