package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/authd/authd/internal/seal"
)

// Store appends to and reads from the event log.
type Store struct {
	pool      *pgxpool.Pool
	sealer    *seal.Sealer
	committed chan struct{}
	groups    groups
	// keys are users' data keys as reads and appends last saw them, opened:
	// the read of a command's aggregate brings its user's key (reads join
	// user_keys), so that the append after it seals with no round trip.
	keys *lru.Cache[uuid.UUID, userKey]

	appends   prometheus.Counter
	events    prometheus.Counter
	conflicts prometheus.Counter
	latency   prometheus.Histogram
	groupSize prometheus.Histogram
	deadlocks prometheus.Counter
}

// keyCacheSize bounds the data keys a Store keeps opened: an AEAD each,
// about a kilobyte. A user beyond it costs a read an open of their key under
// the master key, an append nothing more (its command's load brought it).
const keyCacheSize = 8192

// NewStore returns a Store over pool whose secret parts, and users' data
// keys, are sealed by sealer. A Store with no sealer (authctl's check and
// status, which read ids and places) leaves personal fields out of what it
// reads and refuses to append any.
// Its metrics are registered with reg when reg is not nil.
func NewStore(pool *pgxpool.Pool, sealer *seal.Sealer, reg prometheus.Registerer) *Store {
	f := promauto.With(reg)
	keys, _ := lru.New[uuid.UUID, userKey](keyCacheSize) // fails only for a size under 1
	return &Store{
		pool:      pool,
		sealer:    sealer,
		keys:      keys,
		committed: make(chan struct{}, 1),
		appends:   f.NewCounter(prometheus.CounterOpts{Name: "authd_eventstore_appends_total", Help: "Committed appends (one transaction each)."}),
		events:    f.NewCounter(prometheus.CounterOpts{Name: "authd_eventstore_events_total", Help: "Events committed to the log."}),
		conflicts: f.NewCounter(prometheus.CounterOpts{Name: "authd_eventstore_conflicts_total", Help: "Appends refused because a stream had moved on."}),
		latency: f.NewHistogram(prometheus.HistogramOpts{
			Name: "authd_eventstore_append_seconds", Help: "Time to commit an append.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14),
		}),
		groupSize: f.NewHistogram(prometheus.HistogramOpts{
			Name: "authd_eventstore_group_changes", Help: "Changes committed together in one transaction (group commit).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64},
		}),
		deadlocks: f.NewCounter(prometheus.CounterOpts{Name: "authd_eventstore_group_deadlocks_total", Help: "Transactions of changes aborted by a deadlock or a serialization failure and sent again (a group: one change at a time)."}),
	}
}

// Committed is signalled after every successful append, so the relay in this
// process wakes at once instead of waiting for its poll. A NOTIFY inside the
// append transaction would do the same across processes but serializes every
// commit on a global lock in Postgres.
func (s *Store) Committed() <-chan struct{} { return s.committed }

// AnyVersion appends whatever version a stream is at: for streams that only
// record (failed logins, say), where no decision depends on what came before.
const AnyVersion int64 = -1

// StreamAppend is the events one stream gets in a change, and the version the
// deciding command saw that stream at (0 for a new stream, or AnyVersion).
type StreamAppend struct {
	Stream   string
	Expected int64
	Events   []Event
}

// Claim is a write-side unique key (scope "email", key "a@b.c") held by an owner.
type Claim struct {
	Scope string
	Key   string
	Owner string
	// Held, in Change.Claims: the command found Owner holding the key and
	// decided on it; the change commits only if Owner still holds it then,
	// and fails with ErrConflict otherwise.
	Held bool
}

// Change is everything one command commits at once.
type Change struct {
	Appends  []StreamAppend
	Claims   []Claim // inserted with the events; a key another owner holds fails the change with ErrKeyTaken
	Releases []Claim // deleted with the events, when still held by Owner
	// Also runs after the appends, in their transaction: the short-lived
	// state a command used up (a login challenge, a counter it settles) is
	// gone exactly when its events are there, and it costs the request no
	// round trip or commit of its own.
	Also []Statement
}

// Statement is SQL of another part of the write side (twofactor,
// ratelimit) to commit with a Change or ahead of a load (LoadStreamsAfter).
// An error from it fails the change or the load.
type Statement struct {
	SQL  string
	Args []any
	// Scan, when set, reads the statement's row (pgx.ErrNoRows when there is
	// none) for the part that wrote it; its error fails the call like the
	// statement's own.
	Scan func(pgx.Row) error
	// erases is the user whose data key the statement destroys (Shred):
	// once the change commits, the store forgets the key it holds opened.
	erases uuid.UUID
}

// ExpectVersion is a Statement that fails its change with ErrConflict when
// stream is no longer at version: for a change that decided on a stream it
// does not append to (a sign-in decided on its user, whose password may
// change meanwhile). In Change.Also it runs after the appends, so a change
// that also appends to stream names the version after them.
func ExpectVersion(stream string, version int64) Statement {
	return Statement{SQL: `SELECT eventstore_expect_version($1, $2)`, Args: []any{stream, version}}
}

// run reads st's result from br.
func (st Statement) run(br pgx.BatchResults) error {
	if st.Scan != nil {
		return st.Scan(br.QueryRow())
	}
	_, err := br.Exec()
	return err
}

// Committed is what an append wrote: the events as stored and the cursor of the
// last one, which a command waits on for read-your-writes.
type Committed struct {
	Events []Event
	Last   Cursor
}

// Append appends events to one stream that the command saw at version expected.
func (s *Store) Append(ctx context.Context, stream string, expected int64, events ...Event) (Committed, error) {
	return s.Write(ctx, Change{Appends: []StreamAppend{{Stream: stream, Expected: expected, Events: events}}})
}

// claimSQL claims a key, or checks it is still held (Claim.Held), in one
// statement of the same text either way (see migration 00016).
const claimSQL = `SELECT eventstore_claim($1, $2, $3, $4)`

const releaseSQL = `DELETE FROM unique_keys WHERE scope = $1 AND key = $2 AND owner = $3`

// The scalar subquery runs the version check once, before any row is inserted.
// Versions follow the order of the events in the call, and so do positions.
//
// A data key made for a user in the change goes in with the first append
// that seals with it, by the same statement: so an append costs the same
// statements whether or not its user had a key (a signup with a new address
// and one with a taken address do the same work), and an erasure in
// Change.Also (Shred) finds the key to destroy. It is a plain INSERT: a user
// with a key, or a tombstone, fails it (user_keys_pkey) and never gets a
// second one.
const appendSQL = `
WITH new_keys AS (INSERT INTO user_keys (user_id, kid, sealed_key)
	SELECT * FROM unnest($13::uuid[], $14::text[], $15::bytea[]))
INSERT INTO events (id, stream_id, version, type, occurred_at, tenant_id, user_id, metadata, data, sealed, sealed_kid, personal)
SELECT e.id, $1, base.v + e.n, e.type, e.occurred_at, e.tenant_id, e.user_id, e.metadata, e.data, e.sealed, e.sealed_kid, e.personal
FROM unnest($3::uuid[], $4::text[], $5::timestamptz[], $6::uuid[], $7::uuid[], $8::jsonb[], $9::jsonb[], $10::bytea[], $11::text[], $12::bytea[])
     WITH ORDINALITY AS e(id, type, occurred_at, tenant_id, user_id, metadata, data, sealed, sealed_kid, personal, n),
     (SELECT CASE WHEN $2 = -1
                  THEN (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1)
                  ELSE $2 END AS v) AS base
WHERE (SELECT eventstore_expect_version($1, $2))
ORDER BY e.n
RETURNING id, position, tx_id::text, version`

// appendOneSQL is appendSQL for a single event, with scalar parameters: most
// appends on the hot paths (a refresh, a failed login) are one event, and
// encoding and unnesting nine arrays of one element was a good part of what
// an append cost both sides.
const appendOneSQL = `
WITH new_key AS (INSERT INTO user_keys (user_id, kid, sealed_key)
	SELECT $7, $13, $14::bytea WHERE $14::bytea IS NOT NULL)
INSERT INTO events (id, stream_id, version, type, occurred_at, tenant_id, user_id, metadata, data, sealed, sealed_kid, personal)
SELECT $3, $1, CASE WHEN $2::bigint = -1
                    THEN (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1)
                    ELSE $2::bigint END + 1,
       $4, $5, $6, $7, $8, $9, $10, $11, $12::bytea
WHERE (SELECT eventstore_expect_version($1, $2::bigint))
RETURNING id, position, tx_id::text, version`

// Write commits a change atomically. Its statements go as one pipelined
// batch, which Postgres runs as a single implicit transaction, so a failed
// claim or a version conflict leaves nothing behind. Under load the batch
// also carries the changes of other callers (see group.go); a change that
// fails is taken out and fails alone.
func (s *Store) Write(ctx context.Context, ch Change) (Committed, error) {
	keyAttempts := 0
	for attempt := 1; ; attempt++ {
		p, err := s.prepare(ch)
		if err != nil {
			return Committed{}, err
		}
		c, err := s.commit(ctx, p)
		// Two appends at AnyVersion can pick the same version; going again is
		// safe because they expected nothing, and each round has a winner.
		if errors.Is(err, ErrConflict) && attempt < 20 && onlyAnyVersion(ch) {
			continue
		}
		// A user this Store had no key for has one already (made elsewhere,
		// or erased): take it, or its erasure, and seal again. A third
		// failure is a key still being made by a transaction not yet
		// committed, twice over: it fails.
		if errors.Is(err, errKeyExists) && keyAttempts < 2 {
			keyAttempts++
			if err := s.loadKeys(ctx, p.newKeyUsers()); err != nil {
				return Committed{}, err
			}
			continue
		}
		if err == nil {
			for user, k := range p.newKeys {
				s.keys.Add(user, userKey{aead: k})
			}
			for _, st := range ch.Also {
				if st.erases != uuid.Nil {
					s.keys.Add(st.erases, userKey{})
				}
			}
		}
		return c, err
	}
}

func onlyAnyVersion(ch Change) bool {
	for _, a := range ch.Appends {
		if a.Expected != AnyVersion {
			return false
		}
	}
	return true
}

// prepare builds the statements of ch, ready to join a group.
func (s *Store) prepare(ch Change) (*pending, error) {
	p := &pending{ch: ch, start: time.Now(), done: make(chan struct{}), lead: make(chan []*pending, 1)}
	for _, c := range ch.Claims {
		p.batch = append(p.batch, Statement{SQL: claimSQL, Args: []any{c.Scope, c.Key, c.Owner, c.Held}})
	}
	for _, c := range ch.Releases {
		p.batch = append(p.batch, Statement{SQL: releaseSQL, Args: []any{c.Scope, c.Key, c.Owner}})
	}
	for i := range ch.Appends {
		a := &ch.Appends[i]
		if len(a.Events) == 0 {
			return nil, fmt.Errorf("append to %q: no events", a.Stream)
		}
		query, args, err := s.appendArgs(a, p)
		if err != nil {
			return nil, err
		}
		p.batch = append(p.batch, Statement{SQL: query, Args: args})
	}
	p.batch = append(p.batch, ch.Also...)
	return p, nil
}

// appendArgs fills in what the store assigns to a's events, seals their
// personal parts, and returns the statement that appends them, with its
// arguments.
func (s *Store) appendArgs(a *StreamAppend, p *pending) (string, []any, error) {
	n := len(a.Events)
	ids := make([]pgtype.UUID, n)
	types := make([]string, n)
	times := make([]time.Time, n)
	tenants := make([]pgtype.UUID, n)
	users := make([]pgtype.UUID, n)
	metas := make([]json.RawMessage, n)
	datas := make([]json.RawMessage, n)
	sealed := make([][]byte, n)
	kids := make([]pgtype.Text, n)
	personal := make([][]byte, n)
	for i := range a.Events {
		e := &a.Events[i]
		if e.Type == "" {
			return "", nil, fmt.Errorf("append to %q: event %d has no type", a.Stream, i)
		}
		if e.ID == uuid.Nil {
			e.ID = uuid.New()
		}
		if e.OccurredAt.IsZero() {
			e.OccurredAt = p.start
		}
		e.StreamID = a.Stream
		// The ip and user agent are personal: only the request id stays
		// in the clear.
		meta, err := json.Marshal(struct {
			RequestID string `json:"request_id"`
		}{e.Metadata.RequestID})
		if err != nil {
			return "", nil, fmt.Errorf("append to %q: metadata: %w", a.Stream, err)
		}
		data := e.Data
		if len(data) == 0 {
			data = json.RawMessage("{}")
		}
		if personal[i], err = s.sealPersonal(e, p); err != nil {
			return "", nil, fmt.Errorf("append to %q: %w", a.Stream, err)
		}
		if len(e.Secret) > 0 {
			kid, box, err := s.sealer.Seal(e.Secret, e.ID[:])
			if err != nil {
				return "", nil, fmt.Errorf("append to %q: %w", a.Stream, err)
			}
			sealed[i], kids[i] = box, pgtype.Text{String: kid, Valid: true}
		}
		ids[i] = pgtype.UUID{Bytes: e.ID, Valid: true}
		types[i] = e.Type
		times[i] = e.OccurredAt
		tenants[i] = pgtype.UUID{Bytes: e.TenantID, Valid: e.TenantID != uuid.Nil}
		users[i] = pgtype.UUID{Bytes: e.UserID, Valid: e.UserID != uuid.Nil}
		metas[i] = meta
		datas[i] = data
	}
	keys := p.unsaved
	p.unsaved = nil
	if n == 1 {
		var kid pgtype.Text
		var box []byte
		if len(keys) == 1 { // the event's own user's
			kid, box = pgtype.Text{String: keys[0].kid, Valid: true}, keys[0].box
		}
		return appendOneSQL, []any{a.Stream, a.Expected, ids[0], types[0], times[0], tenants[0], users[0], metas[0], datas[0], sealed[0], kids[0], personal[0], kid, box}, nil
	}
	keyUsers, keyKids, keyBoxes := make([]uuid.UUID, len(keys)), make([]string, len(keys)), make([][]byte, len(keys))
	for i, k := range keys {
		keyUsers[i], keyKids[i], keyBoxes[i] = k.user, k.kid, k.box
	}
	return appendSQL, []any{a.Stream, a.Expected, ids, types, times, tenants, users, metas, datas, sealed, kids, personal, keyUsers, keyKids, keyBoxes}, nil
}

func (s *Store) readResults(br pgx.BatchResults, p *pending) error {
	ch, out := p.ch, &p.out
	for range ch.Claims {
		if _, err := br.Exec(); err != nil {
			return err
		}
	}
	for range ch.Releases {
		if _, err := br.Exec(); err != nil {
			return err
		}
	}
	for _, a := range ch.Appends {
		rows, err := br.Query()
		if err != nil {
			return err
		}
		type stored struct {
			at      Cursor
			version int64
		}
		byID := make(map[uuid.UUID]stored, len(a.Events))
		for rows.Next() {
			var id uuid.UUID
			var pos, version int64
			var tx string
			if err := rows.Scan(&id, &pos, &tx, &version); err != nil {
				rows.Close()
				return err
			}
			t, err := ParseTx(tx)
			if err != nil {
				rows.Close()
				return err
			}
			byID[id] = stored{Cursor{Tx: t, Position: pos}, version}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, e := range a.Events {
			st, ok := byID[e.ID]
			if !ok {
				return fmt.Errorf("append to %q: event %s was not returned", a.Stream, e.ID)
			}
			e.Commit, e.Position, e.Version = st.at, st.at.Position, st.version
			out.Events = append(out.Events, e)
			if out.Last.Before(st.at) {
				out.Last = st.at
			}
		}
	}
	for i, st := range ch.Also {
		if err := st.run(br); err != nil {
			return fmt.Errorf("statement %d committed with the events: %w", i+1, err)
		}
	}
	return nil
}

func (s *Store) mapError(err error, ch Change) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return fmt.Errorf("append: %w", err)
	}
	switch {
	case pgErr.Code == "AU409" || (pgErr.Code == "23505" && pgErr.ConstraintName == "events_stream_version"):
		s.conflicts.Inc()
		return &ConflictError{Stream: conflictStream(pgErr, ch)}
	case pgErr.Code == "23505" && pgErr.ConstraintName == "unique_keys_pkey":
		return &KeyTakenError{Scope: claimScope(pgErr, ch)}
	case pgErr.Code == "23505" && pgErr.ConstraintName == "user_keys_pkey":
		return fmt.Errorf("append: %w", errKeyExists)
	}
	return fmt.Errorf("append: %w", err)
}

// conflictStream names the stream in a conflict when the change had several.
func conflictStream(pgErr *pgconn.PgError, ch Change) string {
	for _, a := range ch.Appends {
		if len(ch.Appends) == 1 || strings.Contains(pgErr.Message, a.Stream) || strings.Contains(pgErr.Detail, a.Stream) {
			return a.Stream
		}
	}
	return ""
}

func claimScope(pgErr *pgconn.PgError, ch Change) string {
	for _, c := range ch.Claims {
		if len(ch.Claims) == 1 || strings.Contains(pgErr.Detail, c.Scope) {
			return c.Scope
		}
	}
	return ""
}
