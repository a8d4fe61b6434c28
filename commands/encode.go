// Package commands holds one handler per intent: each loads the aggregates it
// needs from their events, lets the domain decide, and appends the outcome.
package commands

import (
	"encoding/json"
	"fmt"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
)

// Encode turns a domain event into a log entry: its JSON fields become the
// public data, and a SecretCarrier's secrets the part sealed at rest.
func Encode(e domain.Event) (eventstore.Event, error) {
	data, err := json.Marshal(e)
	if err != nil {
		return eventstore.Event{}, fmt.Errorf("encode %s: %w", e.EventType(), err)
	}
	out := eventstore.Event{Type: e.EventType(), Data: data}
	if sc, ok := e.(domain.SecretCarrier); ok {
		if out.Secret, err = json.Marshal(sc.Secrets()); err != nil {
			return eventstore.Event{}, fmt.Errorf("encode secrets of %s: %w", e.EventType(), err)
		}
	}
	return out, nil
}
