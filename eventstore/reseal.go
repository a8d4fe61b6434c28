package eventstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/authd/authd/internal/seal"
)

// Reseal re-seals under the master key's first key the users' data keys
// (user_keys) and the events' secret parts (events.sealed) that are sealed
// under another of its keys, so that after a rotation the old key can be
// dropped. It is safe while authd runs: the plaintexts stay the same (a
// Store that cached a data key goes on using it), each row is written only
// where it still holds what was read (an erasure that comes between wins,
// and a tombstone is never read), and each batch is a transaction of its
// own. It returns a report per table, user_keys first.
func (s *Store) Reseal(ctx context.Context, o seal.ResealOptions) ([]seal.ResealReport, error) {
	if s.sealer == nil {
		return nil, errors.New("reseal: this store has no master key")
	}
	var out []seal.ResealReport
	r, err := seal.Reseal(ctx, s.sealer, s.userKeysTable(), o)
	out = append(out, r)
	if err != nil {
		return out, err
	}
	r, err = seal.Reseal(ctx, s.sealer, s.eventSecretsTable(), o)
	return append(out, r), err
}

// userKeysTable walks user_keys by user id. A tombstone (sealed_key NULL)
// is never read, and the update's compare on sealed_key fails once Shred
// has emptied it, so an erasure is never undone.
func (s *Store) userKeysTable() seal.ResealTable[uuid.UUID] {
	return seal.SealedColumn[uuid.UUID]{Table: "user_keys", Key: "user_id", KeyType: "uuid", KID: "kid", Box: "sealed_key",
		Where: "sealed_key IS NOT NULL", AAD: func(user uuid.UUID) []byte { return user[:] }}.ResealTable(s.pool)
}

// eventSecretsTable walks events by position, a window of n positions at a
// time up to the last position when it started, so that each read is a
// short range of the primary key however few secrets there are. Events
// appended after it started are sealed by authd under its first key.
func (s *Store) eventSecretsTable() seal.ResealTable[int64] {
	var last int64 = -1 // read at the first call; owned by this walk
	return seal.ResealTable[int64]{
		Name: "events",
		Next: func(ctx context.Context, after int64, n int, current string) ([]seal.ResealRow[int64], int64, bool, error) {
			if last < 0 {
				if err := s.pool.QueryRow(ctx, `SELECT coalesce(max(position), 0) FROM events`).Scan(&last); err != nil {
					return nil, after, false, fmt.Errorf("read the last event: %w", err)
				}
			}
			upTo := min(after+int64(n), last)
			rows, err := s.pool.Query(ctx, `SELECT position, id, sealed_kid, sealed FROM events
				WHERE position > $1 AND position <= $2 AND sealed IS NOT NULL AND sealed_kid IS DISTINCT FROM $3
				ORDER BY position`, after, upTo, current)
			if err != nil {
				return nil, after, false, fmt.Errorf("read events: %w", err)
			}
			out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (seal.ResealRow[int64], error) {
				var r seal.ResealRow[int64]
				var id uuid.UUID
				var kid *string
				if err := row.Scan(&r.Key, &id, &kid, &r.Box); err != nil {
					return r, err
				}
				if kid != nil {
					r.KID = *kid
				}
				r.AAD = id[:]
				return r, nil
			})
			if err != nil {
				return nil, after, false, fmt.Errorf("read events: %w", err)
			}
			return out, upTo, upTo >= last, nil
		},
		Swap: func(ctx context.Context, rows []seal.ResealRow[int64]) ([]int64, error) {
			positions, oldKIDs, oldBoxes, kids, boxes := seal.ResealColumns(rows)
			out, err := s.pool.Query(ctx, `UPDATE events e SET sealed_kid = u.kid, sealed = u.box
				FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::text[], $5::bytea[]) AS u(position, old_kid, old_box, kid, box)
				WHERE e.position = u.position AND e.sealed_kid = u.old_kid AND e.sealed = u.old_box
				RETURNING e.position`, positions, oldKIDs, oldBoxes, kids, boxes)
			if err != nil {
				return nil, fmt.Errorf("update events: %w", err)
			}
			written, err := pgx.CollectRows(out, pgx.RowTo[int64])
			if err != nil {
				return nil, fmt.Errorf("update events: %w", err)
			}
			return written, nil
		},
		Stale: func(ctx context.Context, positions []int64, current string) (int64, error) {
			var n int64
			if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM events
				WHERE position = ANY($1) AND sealed IS NOT NULL AND sealed_kid IS DISTINCT FROM $2`, positions, current).Scan(&n); err != nil {
				return 0, fmt.Errorf("recount events: %w", err)
			}
			return n, nil
		},
	}
}
