package ratelimit

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func attempt(t *testing.T, l *Limiter, account string) time.Duration {
	t.Helper()
	wait, err := l.Attempt(context.Background(), account)
	if err != nil {
		t.Fatalf("Attempt: %v", err)
	}
	return wait
}

// fail makes n failed logins in a row, each admitted without waiting.
func fail(t *testing.T, l *Limiter, account string, n int) {
	t.Helper()
	for i := range n {
		if wait := attempt(t, l, account); wait != 0 {
			t.Fatalf("attempt %d waits %v, want admitted", i+1, wait)
		}
		if err := l.Fail(context.Background(), account); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDelayAfter(t *testing.T) {
	t.Parallel()
	want := map[int]time.Duration{
		0: 0, 1: 0, 5: 0,
		6: time.Second, 7: 2 * time.Second, 8: 4 * time.Second, 9: 8 * time.Second,
		10: 16 * time.Second, 11: 32 * time.Second, 12: time.Minute, 13: time.Minute,
		1000: time.Minute, int(^uint(0) >> 1): time.Minute,
	}
	for n, d := range want {
		if got := delayAfter(n); got != d {
			t.Errorf("delayAfter(%d) = %v, want %v", n, got, d)
		}
	}
	if tab := delayTable(); len(tab) != 12 || tab[0] != 0 || tab[5] != time.Second || tab[11] != time.Minute {
		t.Errorf("delayTable() = %v", tab)
	}
}

func TestAttemptSlowsDownProgressively(t *testing.T) {
	t.Parallel()
	l, c := newLimiter(t)
	const acct = "victim@example.com"
	fail(t, l, acct, 6) // five free, and the sixth: the one that earns the first delay
	for _, want := range []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60} {
		want *= time.Second
		if wait := attempt(t, l, acct); wait != want {
			t.Fatalf("wait = %v, want %v", wait, want)
		}
		c.Advance(want - time.Millisecond)
		if wait := attempt(t, l, acct); wait != time.Millisecond {
			t.Fatalf("1ms before the end of a %v delay: wait = %v", want, wait)
		}
		c.Advance(time.Millisecond)
		fail(t, l, acct, 1) // admitted at the end of the delay, and wrong again
	}
}

// Attempts refused while waiting do not count: a guesser hammering the login
// earns no longer delay for the owner than one guessing as fast as allowed.
func TestRefusedAttemptsDoNotCount(t *testing.T) {
	t.Parallel()
	l, c := newLimiter(t)
	const acct = "a@example.com"
	fail(t, l, acct, 6)
	c.Advance(time.Second)
	fail(t, l, acct, 1)
	for range 50 {
		if wait := attempt(t, l, acct); wait <= 0 {
			t.Fatal("admitted while waiting")
		}
	}
	c.Advance(2 * time.Second)
	fail(t, l, acct, 1)
	if wait := attempt(t, l, acct); wait != 4*time.Second {
		t.Fatalf("after the 8th failure: wait = %v, want 4s", wait)
	}
}

func TestFailuresAreForgottenAfterFifteenMinutes(t *testing.T) {
	t.Parallel()
	l, c := newLimiter(t)
	const acct = "a@example.com"
	fail(t, l, acct, 6)
	c.Advance(time.Second)
	fail(t, l, acct, 1)
	c.Advance(15*time.Minute - time.Microsecond)
	fail(t, l, acct, 1) // the 2 s delay has passed long ago: admitted, and wrong
	if wait := attempt(t, l, acct); wait != 4*time.Second {
		t.Fatalf("failures forgotten too early: wait = %v, want 4s", wait)
	}
	c.Advance(15 * time.Minute)
	fail(t, l, acct, 6) // a fresh run: five free again
	if wait := attempt(t, l, acct); wait != time.Second {
		t.Fatalf("after forgetting and six new failures: wait = %v, want 1s", wait)
	}
}

func TestResetClearsFailures(t *testing.T) {
	t.Parallel()
	l, _ := newLimiter(t)
	const acct = "a@example.com"
	fail(t, l, acct, 6)
	if wait := attempt(t, l, acct); wait != time.Second {
		t.Fatalf("wait = %v, want 1s", wait)
	}
	if err := l.Reset(context.Background(), acct); err != nil {
		t.Fatal(err)
	}
	fail(t, l, acct, 6)
	if err := l.Reset(context.Background(), "nobody@example.com"); err != nil {
		t.Fatalf("Reset of an account without failures: %v", err)
	}
}

func TestAccountsAreIndependent(t *testing.T) {
	t.Parallel()
	l, _ := newLimiter(t)
	fail(t, l, "a@example.com", 6)
	if wait := attempt(t, l, "a@example.com"); wait == 0 {
		t.Fatal("a not slowed down")
	}
	fail(t, l, "b@example.com", 6)
}

// Attempts in flight count as failures for admission, under the row's lock,
// so a burst of concurrent guesses gets exactly the five free attempts and the
// one after them, never a check per request; the rest wait for those to fail
// and are then refused.
func TestConcurrentGuessesGetTheFreeAttemptsAndOneMore(t *testing.T) {
	t.Parallel()
	l, c := newLimiter(t)
	run := func(account string) int32 {
		var admitted atomic.Int32
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				wait, err := l.Attempt(context.Background(), account)
				if err != nil {
					t.Error(err)
				}
				if wait == 0 {
					admitted.Add(1)
					if err := l.Fail(context.Background(), account); err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		return admitted.Load()
	}
	if n := run("burst@example.com"); n != 6 {
		t.Fatalf("%d of 20 concurrent guesses admitted, want 6", n)
	}
	c.Advance(time.Second)
	if n := run("burst@example.com"); n != 1 {
		t.Fatalf("%d of 20 concurrent guesses admitted when the delay ended, want 1", n)
	}
}

// The owner's own burst of logins looks like guesses in flight at first; the
// ones beyond the free attempts wait for those to prove right, and get in.
func TestABurstOfRightPasswordsGetsIn(t *testing.T) {
	t.Parallel()
	l, _ := newLimiter(t)
	var refused atomic.Int32
	var wg sync.WaitGroup
	for range 12 {
		wg.Go(func() {
			wait, err := l.Attempt(context.Background(), "owner@example.com")
			if err != nil {
				t.Error(err)
				return
			}
			if wait > 0 {
				refused.Add(1)
				return
			}
			time.Sleep(30 * time.Millisecond) // the password check
			if err := l.Reset(context.Background(), "owner@example.com"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := refused.Load(); n != 0 {
		t.Fatalf("%d of 12 right passwords at once were refused", n)
	}
}

// An attempt whose process died never reports; after a while it no longer
// keeps the account's next attempts waiting.
func TestAnAttemptThatNeverEndsIsForgotten(t *testing.T) {
	t.Parallel()
	l, c := newLimiter(t)
	for range 6 {
		if wait := attempt(t, l, "a@example.com"); wait != 0 {
			t.Fatalf("wait = %v, want admitted", wait)
		}
	}
	c.Advance(inFlightMemory + time.Second)
	if wait := attempt(t, l, "a@example.com"); wait != 0 {
		t.Fatalf("after the attempts in flight were presumed dead: wait = %v, want admitted", wait)
	}
}

func TestForgiveTakesBackOneAttempt(t *testing.T) {
	t.Parallel()
	l, _ := newLimiter(t)
	ctx := context.Background()
	for range 6 {
		if _, err := l.Attempt(ctx, "acct"); err != nil {
			t.Fatal(err)
		}
		if err := l.Forgive(ctx, "acct"); err != nil {
			t.Fatal(err)
		}
	}
	if wait, err := l.Attempt(ctx, "acct"); err != nil || wait != 0 {
		t.Fatalf("after forgiven attempts the account waits %s (%v)", wait, err)
	}
}

// However long the attempts in flight take to prove right (hashes on a
// loaded machine, say), an attempt kept out only by them waits for them
// rather than be refused: a wait bounded by a guess of the hash time turned
// the owner's own burst of logins away.
func TestAnAttemptWaitsForSlowAttemptsInFlight(t *testing.T) {
	t.Parallel()
	l, _ := newLimiter(t)
	const acct = "owner@example.com"
	for range 6 { // the free attempts and one more: all in flight
		if wait := attempt(t, l, acct); wait != 0 {
			t.Fatalf("wait = %v, want admitted", wait)
		}
	}
	got := make(chan time.Duration, 1)
	go func() {
		wait, err := l.Attempt(context.Background(), acct)
		if err != nil {
			t.Error(err)
		}
		got <- wait
	}()
	time.Sleep(6 * time.Second) // longer than any fixed bound of a few seconds
	select {
	case wait := <-got:
		t.Fatalf("the 7th attempt ended (wait %v) while the others were still in flight; want it to wait for them", wait)
	default:
	}
	if err := l.Reset(context.Background(), acct); err != nil { // the first proves right
		t.Fatal(err)
	}
	if wait := <-got; wait != 0 {
		t.Fatalf("once an attempt in flight proved right, the waiting one got wait %v; want admitted", wait)
	}
}

// Package-level networks: an IPv4 address's /24, an IPv6 address's /64.
func TestNetwork(t *testing.T) {
	t.Parallel()
	for ip, want := range map[string]string{
		"192.0.2.77":           "192.0.2.0/24",
		"::ffff:192.0.2.77":    "192.0.2.0/24",
		"2001:db8:1:2:3:4:5:6": "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::1": "2001:db8:1:2::/64",
		"not an address":       "",
	} {
		if got := NetworkOf(ip); got != want {
			t.Errorf("NetworkOf(%q) = %q, want %q", ip, got, want)
		}
	}
}
