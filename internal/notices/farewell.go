package notices

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/seal"
)

// FarewellTTL bounds how long a deleted account's address outlives the
// deletion: its farewell notice is sent by then, or never (Sweep).
const FarewellTTL = 10 * time.Minute

// Farewells keeps what the farewell notice of a deleted account needs (the
// address, the locale, and the device and IP of the request that deleted
// it), sealed under the master key in the farewells table, because the
// account's events can no longer be read and AccountDeleted carries ids
// only. The row is written in the erasing commit and deleted with the
// record of the notice's send, or by SweepFarewells after FarewellTTL.
type Farewells struct {
	sealer *seal.Sealer
}

// NewFarewells keeps farewells sealed by sealer.
func NewFarewells(sealer *seal.Sealer) *Farewells { return &Farewells{sealer: sealer} }

// farewell is the sealed content of a row of farewells.
type farewell struct {
	Email  string `json:"email"`
	Locale string `json:"locale,omitempty"`
	Device string `json:"device,omitempty"`
	IP     string `json:"ip,omitempty"`
}

// farewellAAD binds a sealed farewell to its user's row.
func farewellAAD(user uuid.UUID) []byte { return []byte("farewells:" + user.String()) }

// Keep returns the statement that keeps user's farewell, to commit with the
// account's deletion (eventstore.Change.Also).
func (f *Farewells) Keep(user uuid.UUID, email, locale, device, ip string) (eventstore.Statement, error) {
	plain, err := json.Marshal(farewell{Email: email, Locale: locale, Device: device, IP: ip})
	if err != nil {
		return eventstore.Statement{}, fmt.Errorf("farewell of %s: %w", user, err)
	}
	kid, sealed, err := f.sealer.Seal(plain, farewellAAD(user))
	if err != nil {
		return eventstore.Statement{}, fmt.Errorf("farewell of %s: %w", user, err)
	}
	return eventstore.Statement{SQL: `INSERT INTO farewells (user_id, kid, sealed) VALUES ($1, $2, $3)
		ON CONFLICT (user_id) DO UPDATE SET kid = $2, sealed = $3, created_at = now()`, Args: []any{user, kid, sealed}}, nil
}

// open reads user's farewell; found is false when there is none (sent
// already, swept, or never kept: notices were off where it was deleted).
func (f *Farewells) open(ctx context.Context, pool *pgxpool.Pool, user uuid.UUID) (fw farewell, found bool, err error) {
	var kid string
	var sealed []byte
	err = pool.QueryRow(ctx, `SELECT kid, sealed FROM farewells WHERE user_id = $1`, user).Scan(&kid, &sealed)
	if errors.Is(err, pgx.ErrNoRows) {
		return farewell{}, false, nil
	}
	if err != nil {
		return farewell{}, false, fmt.Errorf("read the farewell of %s: %w", user, err)
	}
	plain, err := f.sealer.Open(kid, sealed, farewellAAD(user))
	if err == nil {
		err = json.Unmarshal(plain, &fw)
	}
	if err != nil {
		return farewell{}, false, fmt.Errorf("open the farewell of %s: %w", user, err)
	}
	return fw, true, nil
}

// SweepFarewells deletes the farewells kept longer than FarewellTTL,
// whether or not their notice went, and says how many.
func SweepFarewells(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
	tag, err := pool.Exec(ctx, `DELETE FROM farewells WHERE created_at < now() - make_interval(secs => $1)`, FarewellTTL.Seconds())
	if err != nil {
		return 0, fmt.Errorf("sweep farewells: %w", err)
	}
	return tag.RowsAffected(), nil
}

// Reseal re-seals under the master key's first key the farewells sealed
// under another of its keys, so that after a rotation the old key can be
// dropped without losing a notice still to send. Each row is written only
// where it still holds what was read: a farewell sent, swept or kept again
// meanwhile stays as that made it.
func (f *Farewells) Reseal(ctx context.Context, pool *pgxpool.Pool, o seal.ResealOptions) (seal.ResealReport, error) {
	r, err := seal.Reseal(ctx, f.sealer, farewellsTable(pool), o)
	if err != nil {
		return r, fmt.Errorf("notices: %w", err)
	}
	return r, nil
}

// farewellsTable walks farewells by user id; there are only the accounts
// deleted in the last FarewellTTL.
func farewellsTable(pool *pgxpool.Pool) seal.ResealTable[uuid.UUID] {
	return seal.ResealTable[uuid.UUID]{
		Name: "farewells",
		Next: func(ctx context.Context, after uuid.UUID, n int, current string) ([]seal.ResealRow[uuid.UUID], uuid.UUID, bool, error) {
			rows, err := pool.Query(ctx, `SELECT user_id, kid, sealed FROM farewells
				WHERE user_id > $1 AND kid <> $2 ORDER BY user_id LIMIT $3`, after, current, n)
			if err != nil {
				return nil, after, false, fmt.Errorf("read farewells: %w", err)
			}
			out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (seal.ResealRow[uuid.UUID], error) {
				var r seal.ResealRow[uuid.UUID]
				err := row.Scan(&r.Key, &r.KID, &r.Box)
				r.AAD = farewellAAD(r.Key)
				return r, err
			})
			if err != nil {
				return nil, after, false, fmt.Errorf("read farewells: %w", err)
			}
			if len(out) < n {
				return out, after, true, nil
			}
			return out, out[len(out)-1].Key, false, nil
		},
		Swap: func(ctx context.Context, rows []seal.ResealRow[uuid.UUID]) ([]uuid.UUID, error) {
			users, oldKIDs, oldBoxes, kids, boxes := seal.ResealColumns(rows)
			out, err := pool.Query(ctx, `UPDATE farewells f SET kid = u.kid, sealed = u.box
				FROM unnest($1::uuid[], $2::text[], $3::bytea[], $4::text[], $5::bytea[]) AS u(user_id, old_kid, old_box, kid, box)
				WHERE f.user_id = u.user_id AND f.kid = u.old_kid AND f.sealed = u.old_box
				RETURNING f.user_id`, users, oldKIDs, oldBoxes, kids, boxes)
			if err != nil {
				return nil, fmt.Errorf("update farewells: %w", err)
			}
			written, err := pgx.CollectRows(out, pgx.RowTo[uuid.UUID])
			if err != nil {
				return nil, fmt.Errorf("update farewells: %w", err)
			}
			return written, nil
		},
		Stale: func(ctx context.Context, users []uuid.UUID, current string) (int64, error) {
			var n int64
			if err := pool.QueryRow(ctx, `SELECT count(*) FROM farewells WHERE user_id = ANY($1) AND kid <> $2`, users, current).Scan(&n); err != nil {
				return 0, fmt.Errorf("recount farewells: %w", err)
			}
			return n, nil
		},
	}
}
