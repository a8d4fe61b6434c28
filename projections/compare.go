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
	LiveRows    int64  `json:"live_rows"`
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
// compares it with the live tables as they stood at that checkpoint, without
// pausing the live projection: one repeatable-read transaction reads the
// checkpoint and copies the live rows (all, or sample of them at random when
// sample > 0), which are consistent with each other since a projection moves
// its tables and its checkpoint in one transaction. The scratch schema is
// dropped before Compare returns.
func Compare(ctx context.Context, pool *pgxpool.Pool, store *eventstore.Store, p Projection, sample int64, batchSize int) (_ Comparison, err error) {
	name := p.Name()
	if batchSize <= 0 {
		batchSize = DefaultRebuildBatch
	}
	out := Comparison{Projection: name}
	scratch := pgx.Identifier{checkSchema(p)}.Sanitize()
	var live string
	if err := pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&live); err != nil {
		return out, fmt.Errorf("check %s: %w", name, err)
	}
	liveSchema := pgx.Identifier{live}.Sanitize()
	// Any copy left by a check that was killed goes first.
	stmts := []string{`DROP SCHEMA IF EXISTS ` + scratch + ` CASCADE`, `CREATE SCHEMA ` + scratch}
	for _, t := range p.Tables() {
		table := pgx.Identifier{t}.Sanitize()
		stmts = append(stmts, `CREATE TABLE `+scratch+`.`+table+` (LIKE `+liveSchema+`.`+table+` INCLUDING ALL)`)
	}
	for _, s := range stmts {
		if _, err := pool.Exec(ctx, s); err != nil {
			return out, fmt.Errorf("check %s: prepare scratch tables: %w", name, err)
		}
	}
	defer func() {
		drop, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, dropErr := pool.Exec(drop, `DROP SCHEMA IF EXISTS `+scratch+` CASCADE`); dropErr != nil {
			err = errors.Join(err, fmt.Errorf("check %s: drop scratch schema: %w", name, dropErr))
		}
	}()

	liveRows, err := snapshotLive(ctx, pool, p, scratch, liveSchema, sample, &out)
	if err != nil {
		return out, err
	}

	// Rebuild up to the checkpoint only: the live projection may have moved
	// on since, but its copy is of the checkpoint's moment.
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
		tc, err := compareTable(ctx, pool, scratch, liveSchema, t, sample > 0)
		if err != nil {
			return out, fmt.Errorf("check %s: compare %s: %w", name, t, err)
		}
		tc.LiveRows = liveRows[t].total
		if sample > 0 {
			tc.SampledRows = liveRows[t].copied
			if tc.LiveRows != tc.RebuiltRows {
				tc.Differences++
			}
		}
		out.Tables = append(out.Tables, tc)
	}
	return out, nil
}

// snapshotName is the copy of live table t in the scratch schema.
func snapshotName(t string) string { return "live_" + t }

// liveCount is what snapshotLive saw of a live table.
type liveCount struct{ copied, total int64 }

// snapshotLive reads the checkpoint into out and copies the live rows into the
// scratch schema, in one snapshot, and returns what it saw of each table.
func snapshotLive(ctx context.Context, pool *pgxpool.Pool, p Projection, scratch, live string, sample int64, out *Comparison) (map[string]liveCount, error) {
	name := p.Name()
	rows := map[string]liveCount{}
	err := pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		cp, err := readCheckpoint(ctx, tx, name, false)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			cp = Checkpoint{} // never run: its tables hold nothing from the log
		case err != nil:
			return err
		}
		out.Checkpoint = cp.Cursor
		for _, t := range p.Tables() {
			table := pgx.Identifier{t}.Sanitize()
			q := `CREATE TABLE ` + scratch + `.` + pgx.Identifier{snapshotName(t)}.Sanitize() + ` AS SELECT * FROM ` + live + `.` + table
			if sample > 0 {
				q += fmt.Sprintf(` ORDER BY random() LIMIT %d`, sample)
			}
			tag, err := tx.Exec(ctx, q)
			if err != nil {
				return fmt.Errorf("copy %s: %w", t, err)
			}
			c := liveCount{copied: tag.RowsAffected(), total: tag.RowsAffected()}
			if sample > 0 {
				if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+live+`.`+table).Scan(&c.total); err != nil {
					return fmt.Errorf("count %s: %w", t, err)
				}
			}
			rows[t] = c
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("check %s: read the live tables: %w", name, err)
	}
	return rows, nil
}

// compareTable finds the rows that differ between the copy of live table t
// and its rebuild. Rows are compared as jsonb (json columns have no equality)
// and matched by primary key to tell a changed row from an extra or a
// missing one. When sampled, only the rebuilt rows whose keys were sampled
// take part.
func compareTable(ctx context.Context, pool *pgxpool.Pool, scratch, live, t string, sampled bool) (TableComparison, error) {
	tc := TableComparison{Table: t}
	key, err := primaryKey(ctx, pool, live, t)
	if err != nil {
		return tc, err
	}
	liveCopy := scratch + `.` + pgx.Identifier{snapshotName(t)}.Sanitize()
	rebuilt := scratch + `.` + pgx.Identifier{t}.Sanitize()
	rebuiltRows := `SELECT to_jsonb(b) AS r FROM ` + rebuilt + ` b`
	if sampled {
		rebuiltRows += ` WHERE ` + key.of("to_jsonb(b)") + ` IN (SELECT ` + key.of("to_jsonb(l)") + ` FROM ` + liveCopy + ` l)`
	}
	q := `WITH l AS (SELECT to_jsonb(l) AS r FROM ` + liveCopy + ` l),
		b AS (` + rebuiltRows + `),
		lo AS (SELECT ` + key.of("r") + ` AS k FROM (SELECT r FROM l EXCEPT ALL SELECT r FROM b) x),
		bo AS (SELECT ` + key.of("r") + ` AS k FROM (SELECT r FROM b EXCEPT ALL SELECT r FROM l) x),
		d AS (SELECT CASE WHEN bo.k IS NULL THEN 'extra' WHEN lo.k IS NULL THEN 'missing' ELSE 'changed' END AS kind,
				coalesce(lo.k, bo.k) AS k
			FROM lo FULL JOIN bo ON lo.k = bo.k)
		SELECT kind, k::text, count(*) OVER (), (SELECT count(*) FROM ` + rebuilt + `) FROM d ORDER BY kind, k LIMIT ` + fmt.Sprint(maxRowExamples)
	rows, err := pool.Query(ctx, q)
	if err != nil {
		return tc, err
	}
	defer rows.Close()
	for rows.Next() {
		var d RowDifference
		var k string
		if err := rows.Scan(&d.Kind, &k, &tc.Differences, &tc.RebuiltRows); err != nil {
			return tc, err
		}
		d.Key = json.RawMessage(k)
		tc.Examples = append(tc.Examples, d)
	}
	if err := rows.Err(); err != nil {
		return tc, err
	}
	if tc.Differences == 0 {
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM `+rebuilt).Scan(&tc.RebuiltRows); err != nil {
			return tc, err
		}
	}
	return tc, nil
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

func primaryKey(ctx context.Context, pool *pgxpool.Pool, live, t string) (rowKey, error) {
	rows, err := pool.Query(ctx, `SELECT quote_literal(a.attname)
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
