// Package domain holds authd's aggregates, their events and the rules they
// keep. It is pure Go: no I/O, no clock and no randomness of its own.
package domain

//go:generate go run ../internal/eventgen

// Event is something that happened to an aggregate. Its exported fields with
// JSON tags are the public part: published on NATS and seen by projections.
// A field tagged `personal:"true"` (an email, a name, an IP address) is
// personal data: the log keeps it sealed under its user's own key, so that
// destroying that key erases it from every copy of the log (API.md,
// "Erasure"). It is still published and applied in clear while the user
// lives; after the erasure it reads as empty.
type Event interface {
	EventType() string
}

// SecretCarrier is an event with a part that must be sealed at rest and never
// published. Secrets returns a pointer to that part, which the event's own
// JSON encoding leaves out.
type SecretCarrier interface {
	Event
	Secrets() any
}

// Kind is an event type as the log knows it: the name it is stored and
// published under, and how to make an empty one of its Go type to decode
// into.
type Kind struct {
	Name string
	New  func() Event
}

// kind is the Kind of the event type T: its name is the one T's EventType
// gives, so the two cannot disagree.
func kind[T any, P interface {
	*T
	Event
}]() Kind {
	return Kind{Name: P(new(T)).EventType(), New: func() Event { return P(new(T)) }}
}

// Kinds returns every event type the log holds. Each aggregate's file lists
// its events as constants Type<X> = "<name>", one per struct type X; that is
// the one place an event type is named. "go generate ./domain"
// (internal/eventgen) writes events_gen.go from them, which gives X its
// EventType and lists it here. Until then X is no Event, so a decision that
// records it does not compile; and a constant added without generating
// fails the test of internal/eventgen.
func Kinds() []Kind { return generatedKinds() }

// kinds is Kinds by name: a lookup table, built once and never written.
var kinds = byName(Kinds())

func byName(ks []Kind) map[string]Kind {
	m := make(map[string]Kind, len(ks))
	for _, k := range ks {
		m[k.Name] = k
	}
	return m
}

// NewEvent returns an empty event of the named type to decode into; ok is
// false for a name no Type constant declares.
func NewEvent(name string) (e Event, ok bool) {
	k, ok := kinds[name]
	if !ok {
		return nil, false
	}
	return k.New(), true
}
