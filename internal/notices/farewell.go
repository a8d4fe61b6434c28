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

// farewellsTable is the farewells as a re-seal walks them; there are only
// the accounts deleted in the last FarewellTTL.
func farewellsTable(pool *pgxpool.Pool) seal.ResealTable[uuid.UUID] {
	return seal.SealedColumn[uuid.UUID]{Table: "farewells", Key: "user_id", KeyType: "uuid", KID: "kid", Box: "sealed", AAD: farewellAAD}.ResealTable(pool)
}
