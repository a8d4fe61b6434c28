// Package eventstore keeps authd's append-only event log in Postgres and relays
// it, in commit-safe order, to NATS JetStream.
package eventstore

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
)

// Metadata says who caused an event: it travels with every published event so
// audit consumers need nothing else.
type Metadata struct {
	IP        string `json:"ip"`
	UserAgent string `json:"user_agent"`
	RequestID string `json:"request_id"`
}

// Event is one entry of the log. A command fills in Type, Data, Personal
// and, where the event carries secrets, Secret, and UserID whenever it
// carries personal data (Personal or metadata ip and user agent): its
// owner, whose key seals it. The store assigns the rest on append.
type Event struct {
	ID         uuid.UUID
	Type       string
	StreamID   string
	Version    int64
	Position   int64
	Commit     Cursor
	OccurredAt time.Time
	TenantID   uuid.UUID // uuid.Nil when the event belongs to no tenant
	UserID     uuid.UUID // uuid.Nil when the event belongs to no user
	Metadata   Metadata

	// Data is the part published on NATS and readable by projections. An
	// event from a read has its personal fields in it (none once Erased).
	Data json.RawMessage
	// Personal is, in an event from Encode, the personal fields of its data
	// (domain's personal tag), which the store seals with the metadata's ip
	// and user agent under the user's data key; Decode and MarshalEnvelope
	// take them as part of Data. Reads merge them into Data.
	Personal json.RawMessage
	// Erased: the event's user was erased, and its personal fields (data
	// and metadata ip, user agent) can no longer be read: they are empty.
	Erased bool
	// Secret is the part sealed at rest (password hashes, TOTP secrets, token
	// hashes). Only Load opens it; it is never read by the relay or published.
	Secret json.RawMessage
}

// Cursor is a place in the log in the order the relay follows it: by writing
// transaction, then by position. Unlike a position alone, a cursor never has
// an event committed behind it later (see Store.ReadLog).
type Cursor struct {
	Tx       uint64 `json:"tx"`
	Position int64  `json:"position"`
}

// Before reports whether c comes strictly before o in log order.
func (c Cursor) Before(o Cursor) bool {
	if c.Tx != o.Tx {
		return c.Tx < o.Tx
	}
	return c.Position < o.Position
}

// IsZero reports whether c is the start of the log.
func (c Cursor) IsZero() bool { return c == Cursor{} }

func (c Cursor) String() string { return fmt.Sprintf("%d/%d", c.Tx, c.Position) }

// txText renders the transaction id the way Postgres parses an xid8.
func (c Cursor) txText() string { return strconv.FormatUint(c.Tx, 10) }

// ParseTx parses a transaction id as Postgres prints an xid8.
func ParseTx(s string) (uint64, error) {
	tx, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse transaction id %q: %w", s, err)
	}
	return tx, nil
}
