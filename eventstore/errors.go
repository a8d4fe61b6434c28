package eventstore

import (
	"errors"
	"fmt"
)

// ErrConflict means a stream was not at the version the command expected:
// another writer got there first. The command should reload and decide again.
var ErrConflict = errors.New("eventstore: stream version conflict")

// ErrKeyTaken means a unique key (an email, say) is already claimed.
var ErrKeyTaken = errors.New("eventstore: unique key already claimed")

// ErrNotFound means a lookup found nothing.
var ErrNotFound = errors.New("eventstore: not found")

// ConflictError names the stream that moved on.
type ConflictError struct{ Stream string }

func (e *ConflictError) Error() string {
	return fmt.Sprintf("eventstore: stream %q is not at the expected version", e.Stream)
}

func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// KeyTakenError names the key that another owner holds.
type KeyTakenError struct{ Scope string }

func (e *KeyTakenError) Error() string {
	return fmt.Sprintf("eventstore: a %s key is already claimed", e.Scope)
}

func (e *KeyTakenError) Is(target error) bool { return target == ErrKeyTaken }
