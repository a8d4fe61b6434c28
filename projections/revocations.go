package projections

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
)

// The queries behind the in-memory revocation set (internal/revocation):
// the sessions read model is this package's, and so are the reads of the log
// that give what no read model keeps, so that the set reads neither table
// nor the events' JSON itself.

// RevokedSessions lists the sessions the sessions read model has seen
// revoked after since.
func RevokedSessions(ctx context.Context, q Querier, since time.Time) ([]uuid.UUID, error) {
	rows, err := q.Query(ctx, `SELECT id FROM sessions WHERE revoked_at > $1`, since)
	if err != nil {
		return nil, fmt.Errorf("read revoked sessions: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return nil, fmt.Errorf("read revoked sessions: %w", err)
	}
	return ids, nil
}

// SessionsCheckpoint is how far the sessions read model has applied the log:
// a reader of revocations from the log that starts at its transaction misses
// none that the read model lacks.
func SessionsCheckpoint(ctx context.Context, pool *pgxpool.Pool) (eventstore.Cursor, error) {
	cp, err := loadCheckpoint(ctx, pool, Sessions{}.Name())
	if err != nil {
		return eventstore.Cursor{}, err
	}
	return cp.Cursor, nil
}

// userCutsSQL names the event types in its text, not as parameters: only
// then can the planner use the partial index events_user_cuts (migration
// 00022) instead of reading the whole log.
const userCutsSQL = `SELECT id, type, data FROM events WHERE type IN ('` + domain.TypePasswordReset + `', '` +
	domain.TypeAccountDeleted + `') AND occurred_at > $1`

// UserCuts reads from the log the password resets and account deletions
// that happened after since, public parts only: no read model keeps them.
func UserCuts(ctx context.Context, q Querier, since time.Time) ([]eventstore.Event, error) {
	rows, err := q.Query(ctx, userCutsSQL, since)
	if err != nil {
		return nil, fmt.Errorf("read password resets and deleted accounts: %w", err)
	}
	events, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (eventstore.Event, error) {
		var e eventstore.Event
		err := row.Scan(&e.ID, &e.Type, &e.Data)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("read password resets and deleted accounts: %w", err)
	}
	return events, nil
}

// revocationsSQL names the event types in its text, not as parameters: only
// then can the planner use the partial index events_revocations_by_tx
// (migration 00022). The snapshot's xmin comes from the statement's own snapshot: every
// transaction older than it has ended, so all of its revocations were read.
const revocationsSQL = `SELECT s.xmin::text, e.id, e.type, e.data
	FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) s
	LEFT JOIN events e ON e.type IN ('` + domain.TypeSessionRevoked + `', '` + domain.TypePasswordReset + `', '` + domain.TypeAccountDeleted + `')
		AND e.tx_id >= $1::text::xid8`

// Revocations reads from the log, public parts only, every session
// revocation, password reset and account deletion written by transaction from or a later one,
// and the xmin of the read's snapshot: every revocation of an older
// transaction has been read, by this read or one that started at an
// earlier from.
func Revocations(ctx context.Context, q Querier, from uint64) (events []eventstore.Event, xmin uint64, err error) {
	rows, err := q.Query(ctx, revocationsSQL, strconv.FormatUint(from, 10))
	if err != nil {
		return nil, 0, fmt.Errorf("read revocations from the log: %w", err)
	}
	defer rows.Close()
	var snapshot string
	for rows.Next() {
		var id pgtype.UUID
		var typ *string
		var data []byte
		if err := rows.Scan(&snapshot, &id, &typ, &data); err != nil {
			return nil, 0, fmt.Errorf("read revocations from the log: %w", err)
		}
		if typ != nil { // the snapshot's row when no revocation matched
			events = append(events, eventstore.Event{ID: id.Bytes, Type: *typ, Data: data})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("read revocations from the log: %w", err)
	}
	xmin, err = eventstore.ParseTx(snapshot)
	if err != nil {
		return nil, 0, err
	}
	return events, xmin, nil
}
