// Package domain holds authd's aggregates, their events and the rules they
// keep. It is pure Go: no I/O, no clock and no randomness of its own.
package domain

// Event is something that happened to an aggregate. Its exported fields with
// JSON tags are the public part: published on NATS and seen by projections.
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
