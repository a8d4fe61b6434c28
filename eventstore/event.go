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

// Event is one entry of the log. A command fills in Type, Data and, where the
// event carries secrets, Secret; the store assigns the rest on append.
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

	// Data is the public part: published on NATS and readable by projections.
	Data json.RawMessage
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
