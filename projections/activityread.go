package projections

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
)

// Bounds of a page of activity (GET /me/activity's limit).
const (
	DefaultActivityLimit = 20
	MaxActivityLimit     = 100
)

// ErrBadCursor means a page cursor is not one UserActivity handed out.
var ErrBadCursor = errors.New("projections: malformed cursor")

// ActivityView is one event as GET /me/activity lists it.
type ActivityView struct {
	ID         uuid.UUID  `json:"id"`
	Type       string     `json:"type"`
	OccurredAt time.Time  `json:"occurred_at"`
	IP         string     `json:"ip"`
	Device     string     `json:"device"`
	UserAgent  string     `json:"user_agent"`
	SessionID  *uuid.UUID `json:"session_id"`
	Method     []string   `json:"method"` // the amr values, on sign-ins only

	cursor eventstore.Cursor // the event's place in the log: the page order
}

// ActivityPage is a page of a user's activity, newest first. Next is the
// cursor of the page's last row when more may follow, nil at the end.
type ActivityPage struct {
	Events []ActivityView `json:"events"`
	Next   *string        `json:"next"`
}

// activityCursor is the opaque form of a place in the log: base64url of the
// transaction id and position, 8 bytes each.
func activityCursor(c eventstore.Cursor) string {
	b := binary.BigEndian.AppendUint64(nil, c.Tx)
	return base64.RawURLEncoding.EncodeToString(binary.BigEndian.AppendUint64(b, uint64(c.Position)))
}

// ParseActivityCursor reads a cursor of ActivityPage.Next; ErrBadCursor when
// s is not one.
func ParseActivityCursor(s string) (eventstore.Cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != 16 {
		return eventstore.Cursor{}, ErrBadCursor
	}
	c := eventstore.Cursor{Tx: binary.BigEndian.Uint64(b), Position: int64(binary.BigEndian.Uint64(b[8:]))}
	if c.Position <= 0 {
		return eventstore.Cursor{}, ErrBadCursor
	}
	return c, nil
}

// activityPageSQL reads, in one snapshot, a page of the read model and the
// user's listed events the read model has not applied yet. Commands do not
// wait for this projection (every sign-in would), so a user who looks right
// after acting may be ahead of it; the log answers for what it lacks (DESIGN
// rule 10), and since the projection applies the log in order, those events
// are newer than every row. Their scan starts at the checkpoint: its cost is
// the projection's lag, not the log's size.
const activityPageSQL = `WITH cp AS (
		SELECT coalesce((SELECT tx_id FROM projection_checkpoints WHERE name = $3), '0') AS tx_id,
		       coalesce((SELECT position FROM projection_checkpoints WHERE name = $3), 0) AS position)
	(SELECT e.id, e.type, e.tx_id::text, e.position, e.occurred_at, coalesce(e.metadata->>'ip', ''),
		coalesce(e.metadata->>'user_agent', ''), '', NULL::uuid, NULL::text[], e.data, ` + eventstore.PersonalColumns + `
	FROM cp, events e ` + eventstore.PersonalJoin + `
	WHERE (e.tx_id, e.position) > (cp.tx_id, cp.position) AND e.user_id = $1 AND e.type = ANY($2::text[]))
	UNION ALL
	(SELECT a.id, a.type, a.tx_id::text, a.position, a.occurred_at, a.ip, a.user_agent, a.device, a.session_id, a.method, NULL,
		NULL, NULL, NULL, false
	FROM activity a
	WHERE a.user_id = $1 AND (a.tx_id, a.position) < ($4::text::xid8, $5)
	ORDER BY a.tx_id DESC, a.position DESC
	LIMIT $6)`

// UserActivity reads a page of the user's activity, newest first: at most
// limit events from before the cursor before, or from the newest when before
// is nil. The events it reads from the log have their personal parts opened
// by store.
func UserActivity(ctx context.Context, q Querier, store *eventstore.Store, user uuid.UUID, before *eventstore.Cursor, limit int) (ActivityPage, error) {
	// The first page is before the end of all logs, so that every page's
	// bound is an index condition rather than a filter.
	bound := eventstore.Cursor{Tx: math.MaxUint64, Position: math.MaxInt64}
	if before != nil {
		bound = *before
	}
	rows, err := q.Query(ctx, activityPageSQL, user, Activity{}.types(), Activity{}.Name(), fmt.Sprint(bound.Tx), bound.Position, limit+1)
	if err != nil {
		return ActivityPage{}, fmt.Errorf("activity of %s: %w", user, err)
	}
	list, signIns, err := scanActivity(rows, store, user, bound)
	if err != nil {
		return ActivityPage{}, fmt.Errorf("activity of %s: %w", user, err)
	}
	slices.SortFunc(list, func(x, y ActivityView) int { // newest first
		return cmp.Or(cmp.Compare(y.cursor.Tx, x.cursor.Tx), cmp.Compare(y.cursor.Position, x.cursor.Position))
	})
	page := ActivityPage{Events: list}
	if len(list) > limit {
		page.Events = list[:limit]
		next := activityCursor(list[limit-1].cursor)
		page.Next = &next
	}
	if err := sessionDevices(ctx, q, user, page.Events, signIns); err != nil {
		return ActivityPage{}, err
	}
	return page, nil
}

// scanActivity reads activityPageSQL's rows: those of the read model as
// they are, those of the log through the codec, as the projection would
// apply them, keeping the ones before before. It also returns the devices
// of the sign-ins the log gave, which later rows of their sessions show.
func scanActivity(rows pgx.Rows, store *eventstore.Store, user uuid.UUID, before eventstore.Cursor) ([]ActivityView, map[uuid.UUID]string, error) {
	defer rows.Close()
	list := []ActivityView{}
	signIns := map[uuid.UUID]string{}
	for rows.Next() {
		var v ActivityView
		var tx string
		var data []byte
		var sealed eventstore.SealedPart
		if err := rows.Scan(append([]any{&v.ID, &v.Type, &tx, &v.cursor.Position, &v.OccurredAt, &v.IP, &v.UserAgent, &v.Device,
			&v.SessionID, &v.Method, &data}, sealed.Targets()...)...); err != nil {
			return nil, nil, err
		}
		t, err := eventstore.ParseTx(tx)
		if err != nil {
			return nil, nil, err
		}
		v.cursor.Tx, v.OccurredAt = t, v.OccurredAt.UTC()
		if data != nil {
			e := eventstore.Event{ID: v.ID, Type: v.Type, Commit: v.cursor, OccurredAt: v.OccurredAt, UserID: user,
				Metadata: eventstore.Metadata{IP: v.IP, UserAgent: v.UserAgent}, Data: data}
			if err := store.Unseal(&e, &sealed); err != nil {
				return nil, nil, err
			}
			d, err := eventstore.Decode(e)
			if err != nil {
				return nil, nil, err
			}
			if v, _, err = activityRow(e, d); err != nil {
				return nil, nil, err
			}
			if v.Type == domain.TypeSessionStarted {
				signIns[*v.SessionID] = v.Device
			}
		}
		if v.cursor.Before(before) {
			list = append(list, v)
		}
	}
	return list, signIns, rows.Err()
}

// sessionDevices fills in the device of the rows that concern a session but
// are not its sign-in: the device the session signed in from, which only
// SessionStarted carries. The sign-ins the log gave are in signIns; the
// others are rows of the read model.
func sessionDevices(ctx context.Context, q Querier, user uuid.UUID, list []ActivityView, signIns map[uuid.UUID]string) error {
	var missing []uuid.UUID
	for _, v := range list {
		if v.SessionID != nil && v.Type != domain.TypeSessionStarted {
			if _, ok := signIns[*v.SessionID]; !ok && !slices.Contains(missing, *v.SessionID) {
				missing = append(missing, *v.SessionID)
			}
		}
	}
	if len(missing) > 0 {
		// The type is written out, not a parameter, so that a generic plan
		// can still use the partial index of sign-ins (migration 00019).
		rows, err := q.Query(ctx, `SELECT session_id, device FROM activity
			WHERE session_id = ANY($1) AND type = '`+domain.TypeSessionStarted+`' AND user_id = $2`, missing, user)
		if err != nil {
			return fmt.Errorf("devices of the sessions of %s: %w", user, err)
		}
		var id uuid.UUID
		var device string
		if _, err := pgx.ForEachRow(rows, []any{&id, &device}, func() error {
			signIns[id] = device
			return nil
		}); err != nil {
			return fmt.Errorf("devices of the sessions of %s: %w", user, err)
		}
	}
	for i, v := range list {
		if v.SessionID != nil && v.Type != domain.TypeSessionStarted {
			list[i].Device = signIns[*v.SessionID]
		}
	}
	return nil
}
