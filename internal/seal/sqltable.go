package seal

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// SealedColumn is a table that holds one sealed value per row, named by a
// key column: the SQL side of its re-seal (ResealTable), which every such
// table walks the same way. The names are constants of the package that
// owns the table, never input. KeyType is the key's SQL type (uuid, text),
// Where more of the condition a row to re-seal meets ("" for none), and AAD
// the associated data a row's value is sealed with.
type SealedColumn[K comparable] struct {
	Table, Key, KeyType, KID, Box, Where string
	AAD                                  func(key K) []byte
}

// ResealTable walks the table in key order, batch by batch; a row is
// written only where it still holds the kid and box that were read.
func (c SealedColumn[K]) ResealTable(pool *pgxpool.Pool) ResealTable[K] {
	where := ""
	if c.Where != "" {
		where = " AND (" + c.Where + ")"
	}
	// kid IS DISTINCT FROM: a kid may be NULL where its box is (a tombstone).
	next := fmt.Sprintf(`SELECT %[2]s, %[3]s, %[4]s FROM %[1]s
		WHERE %[2]s > $1 AND %[3]s IS DISTINCT FROM $2%[5]s ORDER BY %[2]s LIMIT $3`,
		c.Table, c.Key, c.KID, c.Box, where)
	swap := fmt.Sprintf(`UPDATE %[1]s t SET %[3]s = u.kid, %[4]s = u.box
		FROM unnest($1::%[5]s[], $2::text[], $3::bytea[], $4::text[], $5::bytea[]) AS u(key, old_kid, old_box, kid, box)
		WHERE t.%[2]s = u.key AND t.%[3]s = u.old_kid AND t.%[4]s = u.old_box
		RETURNING t.%[2]s`, c.Table, c.Key, c.KID, c.Box, c.KeyType)
	stale := fmt.Sprintf(`SELECT count(*) FROM %[1]s WHERE %[2]s = ANY($1) AND %[3]s IS DISTINCT FROM $2%[4]s`,
		c.Table, c.Key, c.KID, where)
	return ResealTable[K]{
		Name: c.Table,
		Next: func(ctx context.Context, after K, n int, current string) ([]ResealRow[K], K, bool, error) {
			rows, err := pool.Query(ctx, next, after, current, n)
			if err != nil {
				return nil, after, false, fmt.Errorf("read %s: %w", c.Table, err)
			}
			out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (ResealRow[K], error) {
				var r ResealRow[K]
				var kid *string
				if err := row.Scan(&r.Key, &kid, &r.Box); err != nil {
					return r, err
				}
				if kid != nil {
					r.KID = *kid
				}
				r.AAD = c.AAD(r.Key)
				return r, nil
			})
			if err != nil {
				return nil, after, false, fmt.Errorf("read %s: %w", c.Table, err)
			}
			if len(out) < n {
				return out, after, true, nil
			}
			return out, out[len(out)-1].Key, false, nil
		},
		Swap: func(ctx context.Context, rows []ResealRow[K]) ([]K, error) {
			keys, oldKIDs, oldBoxes, kids, boxes := ResealColumns(rows)
			out, err := pool.Query(ctx, swap, keys, oldKIDs, oldBoxes, kids, boxes)
			if err != nil {
				return nil, fmt.Errorf("update %s: %w", c.Table, err)
			}
			written, err := pgx.CollectRows(out, pgx.RowTo[K])
			if err != nil {
				return nil, fmt.Errorf("update %s: %w", c.Table, err)
			}
			return written, nil
		},
		Stale: func(ctx context.Context, keys []K, current string) (int64, error) {
			var n int64
			if err := pool.QueryRow(ctx, stale, keys, current).Scan(&n); err != nil {
				return 0, fmt.Errorf("recount %s: %w", c.Table, err)
			}
			return n, nil
		},
	}
}
