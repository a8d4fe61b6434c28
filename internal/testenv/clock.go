package testenv

import (
	"sync"
	"testing"
	"time"
)

// Clock is a time that a test moves by hand instead of sleeping; the code
// under test reads it through Now.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock standing at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock d forward (back, for a negative d).
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Eventually waits until ok, polling, and fails the test when it has not
// become true within the given time.
func Eventually(t testing.TB, within time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not true within %s", within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
