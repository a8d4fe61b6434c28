package tokens

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/internal/seal"
)

// Reseal re-seals under sealer's first key the signing keys' private halves
// (retired ones too: they are still sealed under the old key) and the
// token_secrets that are sealed under another of its keys, so that after a
// rotation of the master key the old one can be dropped. Running Keyrings
// are unaffected: they hold the opened keys, and the plaintexts stay the
// same. Each row is written only where it still holds what was read. It
// returns a report per table, signing_keys first.
func Reseal(ctx context.Context, pool *pgxpool.Pool, sealer *seal.Sealer, o seal.ResealOptions) ([]seal.ResealReport, error) {
	var out []seal.ResealReport
	r, err := seal.Reseal(ctx, sealer, signingKeysTable(pool), o)
	out = append(out, r)
	if err != nil {
		return out, fmt.Errorf("tokens: %w", err)
	}
	r, err = seal.Reseal(ctx, sealer, tokenSecretsTable(pool), o)
	out = append(out, r)
	if err != nil {
		return out, fmt.Errorf("tokens: %w", err)
	}
	return out, nil
}

// sealedText is a table whose rows are named by a text primary key and
// hold one sealed value: signing_keys and token_secrets.
type sealedText struct {
	table, key, kid, box string
	aad                  func(key string) []byte
}

func signingKeysTable(pool *pgxpool.Pool) seal.ResealTable[string] {
	return sealedText{table: "signing_keys", key: "kid", kid: "private_kid", box: "private_sealed", aad: keyAAD}.resealTable(pool)
}

func tokenSecretsTable(pool *pgxpool.Pool) seal.ResealTable[string] {
	return sealedText{table: "token_secrets", key: "name", kid: "seal_kid", box: "sealed", aad: secretAAD}.resealTable(pool)
}

// resealTable walks t by its key, batch by batch.
func (t sealedText) resealTable(pool *pgxpool.Pool) seal.ResealTable[string] {
	// The names are this package's constants, never input.
	next := fmt.Sprintf(`SELECT %[2]s, %[3]s, %[4]s FROM %[1]s WHERE %[2]s > $1 AND %[3]s <> $2 ORDER BY %[2]s LIMIT $3`,
		t.table, t.key, t.kid, t.box)
	swap := fmt.Sprintf(`UPDATE %[1]s t SET %[3]s = u.kid, %[4]s = u.box
		FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::bytea[]) AS u(key, old_kid, old_box, kid, box)
		WHERE t.%[2]s = u.key AND t.%[3]s = u.old_kid AND t.%[4]s = u.old_box
		RETURNING t.%[2]s`, t.table, t.key, t.kid, t.box)
	stale := fmt.Sprintf(`SELECT count(*) FROM %[1]s WHERE %[2]s = ANY($1) AND %[3]s <> $2`, t.table, t.key, t.kid)
	return seal.ResealTable[string]{
		Name: t.table,
		Next: func(ctx context.Context, after string, n int, current string) ([]seal.ResealRow[string], string, bool, error) {
			rows, err := pool.Query(ctx, next, after, current, n)
			if err != nil {
				return nil, after, false, fmt.Errorf("read %s: %w", t.table, err)
			}
			out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (seal.ResealRow[string], error) {
				var r seal.ResealRow[string]
				err := row.Scan(&r.Key, &r.KID, &r.Box)
				r.AAD = t.aad(r.Key)
				return r, err
			})
			if err != nil {
				return nil, after, false, fmt.Errorf("read %s: %w", t.table, err)
			}
			if len(out) < n {
				return out, after, true, nil
			}
			return out, out[len(out)-1].Key, false, nil
		},
		Swap: func(ctx context.Context, rows []seal.ResealRow[string]) ([]string, error) {
			keys, oldKIDs, oldBoxes, kids, boxes := seal.ResealColumns(rows)
			out, err := pool.Query(ctx, swap, keys, oldKIDs, oldBoxes, kids, boxes)
			if err != nil {
				return nil, fmt.Errorf("update %s: %w", t.table, err)
			}
			written, err := pgx.CollectRows(out, pgx.RowTo[string])
			if err != nil {
				return nil, fmt.Errorf("update %s: %w", t.table, err)
			}
			return written, nil
		},
		Stale: func(ctx context.Context, keys []string, current string) (int64, error) {
			var n int64
			if err := pool.QueryRow(ctx, stale, keys, current).Scan(&n); err != nil {
				return 0, fmt.Errorf("recount %s: %w", t.table, err)
			}
			return n, nil
		},
	}
}
