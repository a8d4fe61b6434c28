package domain

import "time"

// Aggregate is state rebuilt from the events of one stream. Apply counts
// every event it folds, so StreamVersion is the version of the stream the
// aggregate has seen: the version a decision made on it expects to append
// at. A command that records events for an aggregate applies them to it as
// it records them, so that what it records next, and what it reads back,
// follow from the same state the log will hold.
type Aggregate interface {
	Apply(e Event, at time.Time)
	StreamVersion() int64
}

// StreamVersion is the version of the user's stream the user was rebuilt to.
func (u *User) StreamVersion() int64 { return u.Version }

// StreamVersion is the version of the session's stream the session was
// rebuilt to.
func (s *Session) StreamVersion() int64 { return s.Version }

// StreamVersion is the version of the two-factor stream the aggregate was
// rebuilt to.
func (t *TwoFactor) StreamVersion() int64 { return t.Version }

// StreamVersion is the version of the user's stream the passkeys were
// rebuilt to.
func (p *UserPasskeys) StreamVersion() int64 { return p.Version }
