package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/eventstore"
)

// maxRowExamples bounds the differing rows a comparison names per table.
const maxRowExamples = 10

// Comparison is a projection's read model compared with what a rebuild from
// the log, up to the same checkpoint, produces.
type Comparison struct {
	Projection string            `json:"name"`
	Checkpoint eventstore.Cursor `json:"checkpoint"`
	Events     int64             `json:"rebuilt_from_events"`
	Tables     []TableComparison `json:"tables"`
}

// Consistent reports whether every table equals its rebuild.
func (c Comparison) Consistent() bool {
	for _, t := range c.Tables {
		if t.Differences > 0 {
			return false
		}
	}
	return true
}

// TableComparison is one read-model table against its rebuild.
type TableComparison struct {
	Table       string `json:"table"`
	LiveRows    int64  `json:"live_rows"` // at the checkpoint
	RebuiltRows int64  `json:"rebuilt_rows"`
	// SampledRows is how many live rows were compared row by row; 0 when
	// every row was.
	SampledRows int64 `json:"sampled_rows,omitempty"`
	// Differences counts the rows that differ; a sampled comparison also
	// counts a difference in the number of rows.
	Differences int64           `json:"differences"`
	Examples    []RowDifference `json:"examples,omitempty"`
}

// RowDifference names one differing row by its primary key only: the rows of
// a read model are a user's data, which an audit report has no need to copy.
type RowDifference struct {
	// Kind is "changed" (both have the key, with different values), "extra"
	// (only the live table has it) or "missing" (only the rebuild has it).
	Kind string          `json:"kind"`
	Key  json.RawMessage `json:"key"`
}

// checkSchema is where Compare builds its copies; it differs from a rebuild's
// scratch schema so that a check never disturbs a rebuild running beside it.
func checkSchema(p Projection) string { return "authd_check_" + p.Name() }

// Compare rebuilds p into a scratch schema, up to the live checkpoint, and
// compares it with the live tables as they stood at that checkpoint. A
// repeatable-read, read-only transaction reads the checkpoint and, once the
// rebuild is done, the live rows: they agree, since a projection moves its
// tables and its checkpoint in one transaction. That transaction writes
// nothing, so it takes no transaction id and never holds back the relay,
// which reads below the oldest running one; and the live projection goes on
// applying throughout. With sample > 0, that many live rows of each table,
// picked at random, are compared row by row, and the tables' row counts. The
// scratch schema is dropped before Compare returns.
func Compare(ctx context.Context, pool *pgxpool.Pool, store *eventstore.Store, p Projection, sample int64, batchSize int) (_ Comparison, err error) {
	name := p.Name()
	if batchSize <= 0 {
		batchSize = DefaultRebuildBatch
	}
	out := Comparison{Projection: name}
	snap, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return out, fmt.Errorf("check %s: %w", name, err)
	}
	defer snap.Rollback(context.WithoutCancel(ctx))
	// The snapshot waits, idle, while the rebuild runs: as long as the
	// check's own deadline allows, not the pool's default.
	idle := "0"
	if dl, ok := ctx.Deadline(); ok {
		idle = fmt.Sprint(max(time.Until(dl).Milliseconds(), 1))
	}
	if _, err := snap.Exec(ctx, `SELECT set_config('idle_in_transaction_session_timeout', $1, true), set_config('statement_timeout', $1, true)`, idle); err != nil {
		return out, fmt.Errorf("check %s: %w", name, err)
	}
	cp, err := readCheckpoint(ctx, snap, name, false)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		cp = Checkpoint{} // never run: its tables hold nothing from the log
	case err != nil:
		return out, err
	}
	out.Checkpoint = cp.Cursor
	var live string
	if err := snap.QueryRow(ctx, `SELECT current_schema()`).Scan(&live); err != nil {
		return out, fmt.Errorf("check %s: %w", name, err)
	}
	liveSchema := pgx.Identifier{live}.Sanitize()

	scratch := pgx.Identifier{checkSchema(p)}.Sanitize()
	// Any copy left by a check that was killed goes first.
	stmts := []string{`DROP SCHEMA IF EXISTS ` + scratch + ` CASCADE`, `CREATE SCHEMA ` + scratch}
	for _, t := range p.Tables() {
		table := pgx.Identifier{t}.Sanitize()
		stmts = append(stmts, `CREATE TABLE `+scratch+`.`+table+` (LIKE `+liveSchema+`.`+table+` INCLUDING ALL)`)
	}
	defer func() {
		drop, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, dropErr := pool.Exec(drop, `DROP SCHEMA IF EXISTS `+scratch+` CASCADE`); dropErr != nil {
			err = errors.Join(err, fmt.Errorf("check %s: drop scratch schema: %w", name, dropErr))
		}
	}()
	for _, s := range stmts {
		if _, err := pool.Exec(ctx, s); err != nil {
			return out, fmt.Errorf("check %s: prepare scratch tables: %w", name, err)
		}
	}

	// Rebuild up to the checkpoint only: the live projection may have moved
	// on since, but the snapshot shows it at the checkpoint.
	var cursor eventstore.Cursor
	for cursor.Before(out.Checkpoint) {
		events, err := store.ReadLog(ctx, cursor, batchSize)
		if err != nil {
			return out, fmt.Errorf("check %s: %w", name, err)
		}
		if len(events) == 0 {
			return out, fmt.Errorf("check %s: the log's readable end %s is before the checkpoint %s", name, cursor, out.Checkpoint)
		}
		cursor = events[len(events)-1].Commit
		for i, e := range events {
			if out.Checkpoint.Before(e.Commit) {
				events, cursor = events[:i], out.Checkpoint
				break
			}
		}
		if len(events) == 0 {
			break
		}
		if err := applyInSchema(ctx, pool, p, scratch, liveSchema, events); err != nil {
			return out, fmt.Errorf("check %s: %w", name, err)
		}
		out.Events += int64(len(events))
	}

	for _, t := range p.Tables() {
		key, err := primaryKey(ctx, snap, liveSchema, t)
		if err != nil {
			return out, fmt.Errorf("check %s: %w", name, err)
		}
		table := pgx.Identifier{t}.Sanitize()
		tc := TableComparison{Table: t}
		if sample > 0 {
			err = compareSample(ctx, snap, pool, liveSchema+`.`+table, scratch+`.`+table, key, sample, &tc)
		} else {
			err = compareAll(ctx, snap, pool, liveSchema+`.`+table, scratch+`.`+table, key, &tc)
		}
		if err != nil {
			return out, fmt.Errorf("check %s: compare %s: %w", name, t, err)
		}
		out.Tables = append(out.Tables, tc)
	}
	return out, nil
}

// keyedRows selects a table's rows as the text of their key and of the whole
// row, both jsonb (json columns have no equality; jsonb's text is canonical),
// ordered by the key's bytes so that Go can merge two of them.
func keyedRows(table string, key rowKey) string {
	k := key.of(`to_jsonb(t)`)
	return `SELECT ` + k + `::text AS k, to_jsonb(t)::text FROM ` + table + ` t`
}

func orderedByKey(q string) string { return `SELECT * FROM (` + q + `) s ORDER BY k COLLATE "C"` }

// compareAll compares every row, merging the live rows, read in the
// snapshot, with the rebuilt ones, both in key order.
func compareAll(ctx context.Context, snap pgx.Tx, pool *pgxpool.Pool, live, rebuilt string, key rowKey, tc *TableComparison) error {
	lrows, err := snap.Query(ctx, orderedByKey(keyedRows(live, key)))
	if err != nil {
		return err
	}
	defer lrows.Close()
	brows, err := pool.Query(ctx, orderedByKey(keyedRows(rebuilt, key)))
	if err != nil {
		return err
	}
	defer brows.Close()
	l, b := rowCursor{rows: lrows}, rowCursor{rows: brows}
	l.next()
	b.next()
	for (l.ok || b.ok) && l.err == nil && b.err == nil {
		switch {
		case !b.ok || (l.ok && l.key < b.key):
			tc.differ("extra", l.key)
			tc.LiveRows++
			l.next()
		case !l.ok || b.key < l.key:
			tc.differ("missing", b.key)
			tc.RebuiltRows++
			b.next()
		default:
			if l.row != b.row {
				tc.differ("changed", l.key)
			}
			tc.LiveRows++
			tc.RebuiltRows++
			l.next()
			b.next()
		}
	}
	return errors.Join(l.err, b.err)
}

// compareSample compares sample live rows picked at random with the rebuilt
// rows of the same keys, and the two tables' row counts.
func compareSample(ctx context.Context, snap pgx.Tx, pool *pgxpool.Pool, live, rebuilt string, key rowKey, sample int64, tc *TableComparison) error {
	if err := snap.QueryRow(ctx, `SELECT count(*) FROM `+live).Scan(&tc.LiveRows); err != nil {
		return err
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM `+rebuilt).Scan(&tc.RebuiltRows); err != nil {
		return err
	}
	rows, err := snap.Query(ctx, keyedRows(live, key)+` ORDER BY random() LIMIT $1`, sample)
	if err != nil {
		return err
	}
	liveRows := map[string]string{}
	var keys []string
	for rows.Next() {
		var k, r string
		if err := rows.Scan(&k, &r); err != nil {
			rows.Close()
			return err
		}
		liveRows[k] = r
		keys = append(keys, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	tc.SampledRows = int64(len(keys))
	rows, err = pool.Query(ctx, keyedRows(rebuilt, key)+` WHERE `+key.of(`to_jsonb(t)`)+` = ANY($1::jsonb[])`, keys)
	if err != nil {
		return err
	}
	found := map[string]string{}
	for rows.Next() {
		var k, r string
		if err := rows.Scan(&k, &r); err != nil {
			rows.Close()
			return err
		}
		found[k] = r
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, k := range keys {
		switch r, ok := found[k]; {
		case !ok:
			tc.differ("extra", k)
		case r != liveRows[k]:
			tc.differ("changed", k)
		}
	}
	if tc.LiveRows != tc.RebuiltRows {
		tc.Differences++
	}
	return nil
}

// differ counts a differing row and names it, up to maxRowExamples.
func (tc *TableComparison) differ(kind, key string) {
	tc.Differences++
	if len(tc.Examples) < maxRowExamples {
		tc.Examples = append(tc.Examples, RowDifference{Kind: kind, Key: json.RawMessage(key)})
	}
}

// rowCursor steps through (key, row) text pairs.
type rowCursor struct {
	rows     pgx.Rows
	ok       bool
	key, row string
	err      error
}

func (c *rowCursor) next() {
	c.ok = c.rows.Next()
	if c.ok {
		c.err = c.rows.Scan(&c.key, &c.row)
		return
	}
	c.err = c.rows.Err()
}

// rowKey is a table's primary key columns, as SQL string literals.
type rowKey []string

// of is the jsonb object of the key's fields of the jsonb row r; with no
// primary key the whole row is its key.
func (k rowKey) of(r string) string {
	if len(k) == 0 {
		return r
	}
	parts := make([]string, 0, 2*len(k))
	for _, c := range k {
		parts = append(parts, c, r+`->`+c)
	}
	return `jsonb_build_object(` + strings.Join(parts, ", ") + `)`
}

func primaryKey(ctx context.Context, q pgx.Tx, live, t string) (rowKey, error) {
	rows, err := q.Query(ctx, `SELECT quote_literal(a.attname)
		FROM pg_index i
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
		WHERE i.indrelid = ($1 || '.' || $2)::regclass AND i.indisprimary
		ORDER BY array_position(i.indkey::int2[], a.attnum)`, live, pgx.Identifier{t}.Sanitize())
	if err != nil {
		return nil, fmt.Errorf("primary key of %s: %w", t, err)
	}
	key, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("primary key of %s: %w", t, err)
	}
	return key, nil
}
