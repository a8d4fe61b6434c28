package projections

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/authd/authd/eventstore"
)

// ErrUnknownProjection is returned by Wait for a name the runner does not run.
var ErrUnknownProjection = errors.New("projections: unknown projection")

// Wait returns once the runner's projection named as p has applied the log up
// to and including cursor, or with ctx's error. Commands call it after an
// append so that the client's next read sees its write; they name the
// projection by its value, so that a misspelt name does not compile, where a
// string compiled and the wait answered ErrUnknownProjection.
func (r *Runner) Wait(ctx context.Context, p Projection, cursor eventstore.Cursor) error {
	name := p.Name()
	st, ok := r.states[name]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownProjection, name)
	}
	defer st.arrive()()
	for {
		done, changed := st.reached(cursor)
		if done {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("wait for projection %s to reach %s: %w", name, cursor, ctx.Err())
		}
	}
}

// state is what this instance knows of one projection: what its leader or
// follower last saw, and who waits for it to move.
type state struct {
	mu      sync.Mutex
	cp      eventstore.Cursor
	changed chan struct{} // closed and replaced whenever cp advances
	waiting chan struct{} // signalled when a waiter arrives
	waiters int
	leading bool
	err     error
}

func newState() *state {
	return &state{changed: make(chan struct{}), waiting: make(chan struct{}, 1)}
}

// arrive counts a waiter, and returns what counts it out again. An instance
// that does not lead the projection re-reads its checkpoint only while
// someone waits, so it is told at once.
func (s *state) arrive() (leave func()) {
	s.set(func(s *state) { s.waiters++ })
	select {
	case s.waiting <- struct{}{}:
	default:
	}
	return func() { s.set(func(s *state) { s.waiters-- }) }
}

// reached reports whether the checkpoint is at or past cursor, and the
// channel closed when it next moves.
func (s *state) reached(cursor eventstore.Cursor) (bool, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.cp.Before(cursor), s.changed
}

// hasWaiters reports whether anyone waits for the projection to move.
func (s *state) hasWaiters() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waiters > 0
}

// advance moves the checkpoint forward, never back, and wakes the waiters.
func (s *state) advance(c eventstore.Cursor) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cp.Before(c) {
		s.cp = c
		close(s.changed)
		s.changed = make(chan struct{})
	}
}

func (s *state) set(f func(*state)) {
	s.mu.Lock()
	f(s)
	s.mu.Unlock()
}
