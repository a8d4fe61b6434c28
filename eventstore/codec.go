package eventstore

import (
	"encoding/json"
	"fmt"

	"github.com/authd/authd/domain"
)

// The codec between domain events and log entries lives here, beside the
// entry it fills, so that commands, projections and revocation read events
// one way. The import goes from eventstore to domain, never back: domain
// stays pure, and the registry it keeps (domain.Kinds) is all the codec
// needs to know of event types.

// Encode turns a domain event into a log entry: its JSON fields become the
// data, those tagged personal apart from the rest (Event.Personal), and a
// SecretCarrier's secrets the part sealed at rest.
func Encode(e domain.Event) (Event, error) {
	data, err := json.Marshal(e)
	if err != nil {
		return Event{}, fmt.Errorf("encode %s: %w", e.EventType(), err)
	}
	out := Event{Type: e.EventType()}
	if out.Data, out.Personal, err = splitPersonal(out.Type, data); err != nil {
		return Event{}, fmt.Errorf("encode %s: personal fields: %w", e.EventType(), err)
	}
	if sc, ok := e.(domain.SecretCarrier); ok {
		if out.Secret, err = json.Marshal(sc.Secrets()); err != nil {
			return Event{}, fmt.Errorf("encode secrets of %s: %w", e.EventType(), err)
		}
	}
	return out, nil
}

// Decode turns a log entry back into its domain event: with its secrets when
// the entry carries them (Store.Load opens them), without them when it does
// not (ReadLog, the relay and NATS never carry them). An erased event
// decodes with its personal fields empty.
func Decode(e Event) (domain.Event, error) {
	d, ok := domain.NewEvent(e.Type)
	if !ok {
		return nil, fmt.Errorf("decode event %s: unknown type %q", e.ID, e.Type)
	}
	if err := json.Unmarshal(e.Data, d); err != nil {
		return nil, fmt.Errorf("decode event %s (%s at %s): %w", e.ID, e.Type, e.Commit, err)
	}
	if len(e.Personal) > 0 {
		if err := json.Unmarshal(e.Personal, d); err != nil {
			return nil, fmt.Errorf("decode personal fields of event %s (%s): %w", e.ID, e.Type, err)
		}
	}
	if sc, ok := d.(domain.SecretCarrier); ok && len(e.Secret) > 0 {
		if err := json.Unmarshal(e.Secret, sc.Secrets()); err != nil {
			return nil, fmt.Errorf("decode secrets of event %s (%s): %w", e.ID, e.Type, err)
		}
	}
	return d, nil
}
