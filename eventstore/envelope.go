package eventstore

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
)

// HeaderTx carries an event's transaction id on NATS, so a consumer can place
// it in log order (Cursor) without asking Postgres.
const HeaderTx = "Authd-Tx"

// HeaderPosition carries an event's position on NATS: with HeaderTx, a
// consumer can place an event it does not use without decoding its envelope.
const HeaderPosition = "Authd-Position"

// CommitFromHeaders returns a published event's cursor from its HeaderTx and
// HeaderPosition headers; ok is false when they do not hold one (a message
// published before HeaderPosition existed).
func CommitFromHeaders(tx, position string) (c Cursor, ok bool) {
	t, err := ParseTx(tx)
	if err != nil {
		return Cursor{}, false
	}
	pos, err := strconv.ParseInt(position, 10, 64)
	if err != nil {
		return Cursor{}, false
	}
	return Cursor{Tx: t, Position: pos}, true
}

// envelope is the published form of an event, as API.md defines it. It has no
// field for the secret part. A live user's personal fields are in data and
// metadata; an erased user's are gone, and the envelope says so (erased).
type envelope struct {
	ID         uuid.UUID       `json:"id"`
	Type       string          `json:"type"`
	StreamID   string          `json:"stream_id"`
	Version    int64           `json:"version"`
	Position   int64           `json:"position"`
	OccurredAt time.Time       `json:"occurred_at"`
	TenantID   *uuid.UUID      `json:"tenant_id"`
	UserID     *uuid.UUID      `json:"user_id"`
	Metadata   Metadata        `json:"metadata"`
	Data       json.RawMessage `json:"data"`
	Erased     bool            `json:"erased,omitempty"`
}

// MarshalEnvelope returns the event's public JSON envelope.
func (e Event) MarshalEnvelope() ([]byte, error) {
	env := envelope{
		ID: e.ID, Type: e.Type, StreamID: e.StreamID, Version: e.Version, Position: e.Position,
		OccurredAt: e.OccurredAt.UTC(), Metadata: e.Metadata, Data: mergeObjects(e.Data, e.Personal), Erased: e.Erased,
	}
	if e.TenantID != uuid.Nil {
		env.TenantID = &e.TenantID
	}
	if e.UserID != uuid.Nil {
		env.UserID = &e.UserID
	}
	if len(env.Data) == 0 {
		env.Data = json.RawMessage("{}")
	}
	b, err := json.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("marshal envelope of event %s: %w", e.ID, err)
	}
	return b, nil
}

// FromMessage reads an event from a message the relay published (the inverse
// of its publish, and the one place the wire form is read): the envelope in
// the body, and its place in the log from the HeaderTx header. The secret
// part never travels, so Decode of what it returns has no secrets.
func FromMessage(h nats.Header, body []byte) (Event, error) {
	txHeader := h.Get(HeaderTx)
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		return Event{}, fmt.Errorf("parse event envelope: %w", err)
	}
	tx, err := ParseTx(txHeader)
	if err != nil {
		return Event{}, fmt.Errorf("event %s: %s header: %w", env.ID, HeaderTx, err)
	}
	e := Event{
		ID: env.ID, Type: env.Type, StreamID: env.StreamID, Version: env.Version, Position: env.Position,
		Commit: Cursor{Tx: tx, Position: env.Position}, OccurredAt: env.OccurredAt,
		Metadata: env.Metadata, Data: env.Data, Erased: env.Erased,
	}
	if env.TenantID != nil {
		e.TenantID = *env.TenantID
	}
	if env.UserID != nil {
		e.UserID = *env.UserID
	}
	return e, nil
}
