package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// eventColumns takes the metadata's fields as text: decoding each event's
// metadata JSON in Go was a quarter of a rebuild's CPU. (An event written
// since personal parts are sealed has no ip or user agent in its metadata.)
// The last four are the sealed personal part and its user's key row, from
// eventsJoined: a read needs no round trip of its own for keys.
const eventColumns = `e.id, e.type, e.stream_id, e.version, e.position, e.tx_id::text, e.occurred_at,
	e.tenant_id, e.user_id, coalesce(e.metadata->>'ip', ''), coalesce(e.metadata->>'user_agent', ''),
	coalesce(e.metadata->>'request_id', ''), e.data, ` + PersonalColumns

// eventsJoined is what every read of events reads from: each event with its
// user's key row, if any.
const eventsJoined = `events e ` + PersonalJoin

// PersonalColumns are the columns of an event's sealed personal part and of
// its user's key, for a read of events e joined with PersonalJoin; a read
// outside the store (one that also reads a read model, in one query) scans
// them into a SealedPart and has Store.Unseal open it.
const PersonalColumns = `e.personal, k.kid, k.sealed_key, k.erased_at IS NOT NULL`

// PersonalJoin joins events e with their users' keys, for PersonalColumns:
// a probe of user_keys' primary key per event. (The LIMIT keeps Postgres
// from making it a plain join, which it planned as a hash join over every
// key, or in parallel, for a rebuild's batch.)
const PersonalJoin = `LEFT JOIN LATERAL (SELECT k.kid, k.sealed_key, k.erased_at FROM user_keys k WHERE k.user_id = e.user_id LIMIT 1) k ON true`

// SealedPart is what PersonalColumns hold for one event.
type SealedPart struct {
	personal []byte      // the sealed personal part, nil when none
	kid      pgtype.Text // of the user's key row
	key      []byte      // the user's data key sealed, nil when none or erased
	erased   bool
}

// Targets are what to scan PersonalColumns into.
func (p *SealedPart) Targets() []any { return []any{&p.personal, &p.kid, &p.key, &p.erased} }

// Unseal fills e, read with its sealed part p, with its personal fields, as
// the store's own reads do (see Event.Erased).
func (s *Store) Unseal(e *Event, p *SealedPart) error { return s.openPersonal(e, p) }

// Load returns a stream's events in version order, with their secret parts
// opened, for a command to rebuild its aggregate.
func (s *Store) Load(ctx context.Context, stream string) ([]Event, error) {
	return s.load(ctx, stream, `SELECT `+eventColumns+`, e.sealed, e.sealed_kid
		FROM `+eventsJoined+` WHERE e.stream_id = $1 ORDER BY e.version`, stream)
}

// SnapshotSuffix ends the type of every snapshot event: an event that
// restates its stream's aggregate whole, so that loading can start there.
const SnapshotSuffix = "SnapshotTaken"

// LoadStreams is Load for several streams in one round trip: it returns each
// stream's events, in the order the streams are named, each stream from its
// latest snapshot event on (the whole stream when it has none).
func (s *Store) LoadStreams(ctx context.Context, streams ...string) ([][]Event, error) {
	return s.LoadStreamsAfter(ctx, nil, streams...)
}

// LoadStreamsAfter is LoadStreams behind statements of other write-side parts
// (a challenge's try, a throttle's count), in the same round trip and
// implicit transaction: they commit with the load, and a statement that fails
// fails it and commits nothing. Their results reach their parts through
// Statement.Scan.
func (s *Store) LoadStreamsAfter(ctx context.Context, first []Statement, streams ...string) ([][]Event, error) {
	what := strings.Join(streams, ", ")
	b := &pgx.Batch{}
	for _, st := range first {
		b.Queue(st.SQL, st.Args...)
	}
	// The LIKE lets Postgres find a stream's latest snapshot in the partial
	// index events_snapshots with one probe: a load reads what followed it,
	// however long the stream. The streams reach the query through a
	// sub-select, which hides their values from the planner: otherwise,
	// seeing a different array each time, Postgres made a custom plan for
	// every load, and planning took three times as long as the load.
	// Hidden, every plan is the same and it settles on a generic one. (The
	// outer cast makes ANY take the sub-select's one array, not its rows.)
	b.Queue(`SELECT `+eventColumns+`, e.sealed, e.sealed_kid
		FROM `+eventsJoined+`
		WHERE e.stream_id = ANY((SELECT $1::text[])::text[])
		  AND e.version >= coalesce((SELECT l.version FROM events l
			WHERE l.stream_id = e.stream_id AND l.type LIKE '%`+SnapshotSuffix+`'
			ORDER BY l.version DESC LIMIT 1), 1)
		ORDER BY e.stream_id, e.version`, streams)
	br := s.pool.SendBatch(ctx, b)
	defer br.Close()
	for i, st := range first {
		if err := st.run(br); err != nil {
			return nil, fmt.Errorf("load streams %s: statement %d before the load: %w", what, i+1, err)
		}
	}
	rows, err := br.Query()
	if err != nil {
		return nil, fmt.Errorf("load stream %q: %w", what, err)
	}
	events, err := s.scanEvents(what, rows)
	if err != nil {
		return nil, err
	}
	if err := br.Close(); err != nil {
		return nil, fmt.Errorf("load stream %q: %w", what, err)
	}
	out := make([][]Event, len(streams))
	for i, name := range streams {
		for _, e := range events {
			if e.StreamID == name {
				out[i] = append(out[i], e)
			}
		}
	}
	return out, nil
}

func (s *Store) load(ctx context.Context, stream, query string, args ...any) ([]Event, error) {
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("load stream %q: %w", stream, err)
	}
	return s.scanEvents(stream, rows)
}

// scanEvents reads events with their sealed parts, opened, and closes rows.
func (s *Store) scanEvents(stream string, rows pgx.Rows) ([]Event, error) {
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var r eventRow
		var sealed []byte
		var kid pgtype.Text
		if err := rows.Scan(append(r.targets(), &sealed, &kid)...); err != nil {
			return nil, fmt.Errorf("load stream %q: %w", stream, err)
		}
		e, err := s.finish(&r)
		if err != nil {
			return nil, err
		}
		if sealed != nil {
			e.Secret, err = s.sealer.Open(kid.String, sealed, e.ID[:])
			if err != nil {
				return nil, fmt.Errorf("load stream %q: event %s: %w", stream, e.ID, err)
			}
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load stream %q: %w", stream, err)
	}
	return out, nil
}

// LoadEnds loads a stream's first event and its last tail events, secrets
// opened, in version order: for an aggregate whose state depends only on how
// its stream began and on its latest events, so that loading it does not grow
// with the stream (a session refreshed a thousand times, say).
func (s *Store) LoadEnds(ctx context.Context, stream string, tail int) ([]Event, error) {
	return s.load(ctx, stream, loadEndsSQL, stream, tail)
}

// loadEndsSQL is two index range reads: a condition on the stream's max
// version made Postgres fetch every event of the stream, so refreshes slowed
// down as their session grew.
var loadEndsSQL = `SELECT ` + eventColumns + `, e.sealed, e.sealed_kid FROM ` + eventsJoined + `
		WHERE e.stream_id = $1 AND e.version = 1
		UNION ALL
		SELECT * FROM (SELECT ` + eventColumns + `, e.sealed, e.sealed_kid FROM ` + eventsJoined + `
			WHERE e.stream_id = $1 AND e.version > 1 ORDER BY e.version DESC LIMIT $2) last
		ORDER BY version`

// LoadEndsOf is LoadEnds of several streams in one round trip, each
// stream's events in the order the streams are named: for a command that
// decides on many sessions at once (revoking all of a user's).
func (s *Store) LoadEndsOf(ctx context.Context, streams []string, tail int) ([][]Event, error) {
	if len(streams) == 0 {
		return nil, nil
	}
	b := &pgx.Batch{}
	for _, stream := range streams {
		b.Queue(loadEndsSQL, stream, tail)
	}
	br := s.pool.SendBatch(ctx, b)
	defer br.Close()
	out := make([][]Event, len(streams))
	for i, stream := range streams {
		rows, err := br.Query()
		if err != nil {
			return nil, fmt.Errorf("load stream %q: %w", stream, err)
		}
		if out[i], err = s.scanEvents(stream, rows); err != nil {
			return nil, err
		}
	}
	if err := br.Close(); err != nil {
		return nil, fmt.Errorf("load the ends of %d streams: %w", len(streams), err)
	}
	return out, nil
}

// ReadStream returns a stream's events in version order without their
// secrets, for operators (authctl events ls): personal fields are opened with
// the store's master key, and a store without one leaves them out.
func (s *Store) ReadStream(ctx context.Context, stream string) ([]Event, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+eventColumns+` FROM `+eventsJoined+` WHERE e.stream_id = $1 ORDER BY e.version`, stream)
	if err != nil {
		return nil, fmt.Errorf("read stream %q: %w", stream, err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var r eventRow
		if err := rows.Scan(r.targets()...); err != nil {
			return nil, fmt.Errorf("read stream %q: %w", stream, err)
		}
		e, err := s.finish(&r)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read stream %q: %w", stream, err)
	}
	return out, nil
}

// ReadLog returns up to limit events after cursor in log order, without
// their secrets. It is how the relay and projection rebuilds follow the
// whole log.
//
// Positions come from a sequence and are taken before commit, so under
// concurrent writers a transaction can commit a lower position after a higher
// one is already visible; a reader that had moved past the higher one would
// never see the lower. So the read stops below the oldest transaction still
// running (the snapshot's xmin): every transaction with a smaller id has
// finished, so no row can ever appear behind a cursor taken from this read.
// Ordering by (tx_id, position) makes that cursor total. A long-running
// transaction holds the relay back, which is why authd's connections set
// statement and idle-in-transaction timeouts.
func (s *Store) ReadLog(ctx context.Context, after Cursor, limit int) ([]Event, error) {
	events, _, err := s.readLog(ctx, s.pool, after, limit, limit)
	return events, err
}

// ReadLogIn is ReadLog through a given connection or transaction, for a
// reader that must see the log and its own writes in one snapshot.
func (s *Store) ReadLogIn(ctx context.Context, q Querier, after Cursor, limit int) ([]Event, error) {
	events, _, err := s.readLog(ctx, q, after, limit, limit)
	return events, err
}

// Querier is what ReadLog needs of a pool, connection or transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// readLog reads what ReadLog returns, and also whether events committed after
// cursor are held back by an older transaction still open: the relay needs
// to know, since nothing signals that end when the transaction is a
// projection's, and it looks again soon while, and only while, something is
// held back. The second branch finds the first such event, if any, in the
// same snapshot. It states "after cursor" as an OR, not a row comparison:
// given both, Postgres started the index scan at the cursor and walked every
// readable event to the first held one, where a lone bound on tx_id makes it
// one probe. room is how many events to make room for before reading:
// a rebuild's batches come full, the relay's mostly hold a few events.
func (s *Store) readLog(ctx context.Context, q Querier, after Cursor, limit, room int) (events []Event, held bool, err error) {
	// The batch is taken first and joined with its users' keys after: with
	// the join inside, Postgres planned the batch's scan in parallel, and a
	// rebuild read its log three times slower.
	rows, err := q.Query(ctx, `(SELECT `+eventColumns+`, false
			FROM (SELECT * FROM events e
				WHERE (e.tx_id, e.position) > ($1::text::xid8, $2)
				  AND e.tx_id < pg_snapshot_xmin(pg_current_snapshot())
				ORDER BY e.tx_id, e.position
				LIMIT $3) e `+PersonalJoin+`
			ORDER BY e.tx_id, e.position)
		UNION ALL
		(SELECT `+eventColumns+`, true
			FROM `+eventsJoined+`
			WHERE e.tx_id >= greatest($1::text::xid8, pg_snapshot_xmin(pg_current_snapshot()))
			  AND (e.tx_id > $1::text::xid8 OR e.position > $2)
			ORDER BY e.tx_id, e.position
			LIMIT 1)`, after.txText(), after.Position, limit)
	if err != nil {
		return nil, false, fmt.Errorf("read log after %s: %w", after, err)
	}
	defer rows.Close()
	events = make([]Event, 0, min(limit, room))
	for rows.Next() {
		var r eventRow
		var heldRow bool
		if err := rows.Scan(append(r.targets(), &heldRow)...); err != nil {
			return nil, false, fmt.Errorf("read log after %s: %w", after, err)
		}
		if heldRow {
			held = true
			continue
		}
		e, err := s.finish(&r)
		if err != nil {
			return nil, false, err
		}
		events = append(events, e)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("read log after %s: %w", after, err)
	}
	return events, held, nil
}

// Backlog counts the events after cursor that a reader of the log could
// already read, and how old the oldest of them is.
func (s *Store) Backlog(ctx context.Context, after Cursor) (n int64, oldestAgeSeconds float64, err error) {
	err = s.pool.QueryRow(ctx, `SELECT count(*), coalesce(extract(epoch FROM now() - min(e.occurred_at)), 0)::float8
		FROM events e
		WHERE (e.tx_id, e.position) > ($1::text::xid8, $2)
		  AND e.tx_id < pg_snapshot_xmin(pg_current_snapshot())`, after.txText(), after.Position).Scan(&n, &oldestAgeSeconds)
	if err != nil {
		return 0, 0, fmt.Errorf("count backlog after %s: %w", after, err)
	}
	return n, oldestAgeSeconds, nil
}

// Lookup returns the owner of a unique key, or ErrNotFound.
func (s *Store) Lookup(ctx context.Context, scope, key string) (string, error) {
	var owner string
	err := s.pool.QueryRow(ctx, `SELECT owner FROM unique_keys WHERE scope = $1 AND key = $2`, scope, key).Scan(&owner)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("look up %s key: %w", scope, err)
	}
	return owner, nil
}

// eventRow is what a read scans one row into; finish turns it into the Event.
type eventRow struct {
	Event
	tx           string
	tenant, user pgtype.UUID
	sealed       SealedPart
}

// targets scans the nullable uuids as pgtype.UUID: as sql.Scanners they went
// through text and cost a tenth of a rebuild's CPU.
func (r *eventRow) targets() []any {
	e := &r.Event
	return []any{&e.ID, &e.Type, &e.StreamID, &e.Version, &e.Position, &r.tx, &e.OccurredAt,
		&r.tenant, &r.user, &e.Metadata.IP, &e.Metadata.UserAgent, &e.Metadata.RequestID, (*rawJSON)(&e.Data),
		&r.sealed.personal, &r.sealed.kid, &r.sealed.key, &r.sealed.erased}
}

func (s *Store) finish(r *eventRow) (Event, error) {
	t, err := ParseTx(r.tx)
	if err != nil {
		return Event{}, err
	}
	e := r.Event
	e.Commit = Cursor{Tx: t, Position: e.Position}
	e.TenantID, e.UserID = orNil(r.tenant), orNil(r.user)
	if err := s.openPersonal(&e, &r.sealed); err != nil {
		return Event{}, err
	}
	return e, nil
}

func orNil(u pgtype.UUID) uuid.UUID {
	if !u.Valid {
		return uuid.Nil
	}
	return u.Bytes
}

// rawJSON takes a jsonb column as it comes: Postgres has already checked it,
// and checking it again (as json.RawMessage's UnmarshalJSON does) was the
// biggest cost of reading the log in bulk.
type rawJSON json.RawMessage

func (r *rawJSON) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*r = nil
	case []byte:
		*r = append((*r)[:0], v...)
	case string:
		*r = rawJSON(v)
	default:
		return fmt.Errorf("scan jsonb: unexpected %T", src)
	}
	return nil
}
