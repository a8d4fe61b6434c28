package projections

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/authd/authd/domain"
)

// UserReader reads users from the users read model for GET /me and every
// Tokens answer. It runs one query at a time; the reads that arrive while it
// runs wait and go together in the next one, so that under load Postgres
// parses, plans and answers one query for many requests. One query per read
// was two thirds of the CPU a GET /me cost, and allowing two queries at once
// halved the batches and the throughput at 16 connections. Every query starts
// after the reads it answers arrived, so a read still sees every write that
// finished before it; a cache could not promise that across instances.
type UserReader struct {
	q    Querier
	turn chan struct{} // holds a token while a query runs

	mu      sync.Mutex
	pending []*userRead
}

type userRead struct {
	id   uuid.UUID
	done chan struct{}
	view UserView
	err  error
}

// readTimeout bounds a shared query, which runs on behalf of requests other
// than the one that sends it and so cannot use that request's context.
const readTimeout = 10 * time.Second

// NewUserReader returns a reader of the users read model through q.
func NewUserReader(q Querier) *UserReader {
	return &UserReader{q: q, turn: make(chan struct{}, 1)}
}

// Get returns the user with the given id; ErrNotFound when the read model
// has no such user, ErrBehind when the log holds a change to the user that
// the read model does not show yet.
func (r *UserReader) Get(ctx context.Context, id uuid.UUID) (UserView, error) {
	read := &userRead{id: id, done: make(chan struct{})}
	r.mu.Lock()
	r.pending = append(r.pending, read)
	r.mu.Unlock()
	select {
	case <-read.done:
	case r.turn <- struct{}{}:
		// What waits now includes this read, unless a query that held the
		// turn before took it, and that query has answered it.
		r.mu.Lock()
		batch := r.pending
		r.pending = nil
		r.mu.Unlock()
		if len(batch) > 0 {
			r.answer(context.WithoutCancel(ctx), batch)
		}
		<-r.turn
	case <-ctx.Done():
		return UserView{}, fmt.Errorf("read user %s: %w", id, ctx.Err())
	}
	return read.view, read.err
}

func (r *UserReader) answer(ctx context.Context, batch []*userRead) {
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	found, err := r.query(ctx, batch)
	for _, read := range batch {
		switch row, ok := found[read.id]; {
		case err != nil:
			read.err = err
		case !ok:
			read.err = ErrNotFound
		case row.behind:
			read.err = ErrBehind
		default:
			read.view = row.view
		}
		close(read.done)
	}
}

func (r *UserReader) query(ctx context.Context, batch []*userRead) (map[uuid.UUID]readRow, error) {
	// As in eventstore's loads, the ids go through a sub-select so that
	// Postgres plans the query once rather than for every array: planning
	// the join took twice as long as running it. Each row also says whether
	// the log holds an event of the user's or two-factor stream that the
	// projection of that part has not applied yet, of a type it applies (a
	// sign-in's TotpCodeAccepted changes nothing shown): a probe of each
	// stream's index, so that a read never shows less than the log has.
	ids := make([]pgtype.UUID, len(batch))
	for i, read := range batch {
		ids[i] = pgUUID(read.id)
	}
	rows, err := r.q.Query(ctx, userReadSQL,
		ids, streamPrefix(domain.UserStream), streamPrefix(domain.TwoFactorStream), Users{}.Name(), TwoFactor{}.Name(),
		Users{}.types(), TwoFactor{}.types())
	if err != nil {
		return nil, fmt.Errorf("read %d users: %w", len(batch), err)
	}
	defer rows.Close()
	found := make(map[uuid.UUID]readRow, len(batch))
	for rows.Next() {
		var u UserView
		var behind bool
		var id, tenant pgtype.UUID
		if err := rows.Scan(&id, &u.Email, &u.Name, &u.EmailVerified, &tenant, &u.Tenant.Name, &u.TwoFactorEnabled, &u.CreatedAt, &u.Locale, &behind); err != nil {
			return nil, fmt.Errorf("read %d users: %w", len(batch), err)
		}
		u.ID, u.Tenant.ID, u.CreatedAt = id.Bytes, tenant.Bytes, u.CreatedAt.UTC()
		found[u.ID] = readRow{view: u, behind: behind}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %d users: %w", len(batch), err)
	}
	return found, nil
}

// userReadSQL reads a batch of users ($1) with their tenant's name, their
// two-factor state and whether the log is ahead of them.
//
// The tenant and two-factor state are subqueries of each user's row, probed
// by primary key, rather than joins: the sub-select that hides the ids from
// the planner also hides how few they are (it guesses ten), so the joins
// were planned as hashes of the whole tenants and two_factor tables, built
// for every batch. Every signup adds a tenant, so GET /me slowed as the
// service grew (issue 19's soak: a third fewer answers a minute after 1,440
// signups). A batch now costs the same whatever the size of those tables.
var userReadSQL = `SELECT u.id, u.email, u.name, u.email_verified, u.tenant_id,
		coalesce((SELECT t.name FROM tenants t WHERE t.id = u.tenant_id), ''),
		coalesce((SELECT tf.enabled FROM two_factor tf WHERE tf.user_id = u.id), false), u.created_at, u.locale,
		` + behindSQL("$2 || u.id::text", "$4", "$6") + ` OR ` + behindSQL("$3 || u.id::text", "$5", "$7") + `
	FROM users u
	WHERE u.id = ANY((SELECT $1::uuid[])::uuid[])`

// streamPrefix is what the stream names of one kind start with, the id
// following.
func streamPrefix(name func(uuid.UUID) string) string {
	return strings.TrimSuffix(name(uuid.Nil), uuid.Nil.String())
}

type readRow struct {
	view   UserView
	behind bool
}

// behindSQL is a condition that holds when the stream named by the SQL
// expression stream has an event of one of the parameter types' types after
// the saved checkpoint of the projection named by the parameter projection. The saved checkpoint is at
// or behind the one in memory, so a doubt only costs a read of the log.
func behindSQL(stream, projection, types string) string {
	// OFFSET 0 keeps the stream's own events a subquery of their own, read
	// by the (stream_id, version) index: planned as one query, Postgres
	// may walk the commit-order index instead, through every event of
	// every stream since the checkpoint, which under load is thousands.
	return `EXISTS (SELECT 1 FROM (SELECT e.type, e.tx_id, e.position FROM events e WHERE e.stream_id = ` + stream + ` OFFSET 0) e
		WHERE e.type = ANY(` + types + `::text[]) AND (e.tx_id, e.position) >
		(coalesce((SELECT tx_id FROM projection_checkpoints WHERE name = ` + projection + `), '0'),
		 coalesce((SELECT position FROM projection_checkpoints WHERE name = ` + projection + `), 0)))`
}
