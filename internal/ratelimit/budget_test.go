package ratelimit

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
)

func spend(t *testing.T, l *Limiter, key string, perDay int) (bool, time.Duration) {
	t.Helper()
	ok, wait, err := l.Spend(context.Background(), key, perDay)
	if err != nil {
		t.Fatal(err)
	}
	return ok, wait
}

// A budget allows perDay guesses from the first one for a day, refuses the
// rest until the day ends, gives back refunded guesses, and keeps each key
// (account and class) apart.
func TestGuessBudget(t *testing.T) {
	t.Parallel()
	l, c := newLimiter(t)
	for i := range 3 {
		if ok, _ := spend(t, l, "2fa:unknown:u", 3); !ok {
			t.Fatalf("guess %d refused, want allowed", i+1)
		}
	}
	c.Advance(time.Hour)
	ok, wait := spend(t, l, "2fa:unknown:u", 3)
	if ok || wait != 23*time.Hour {
		t.Fatalf("4th guess: ok %v, wait %v; want refused for 23h", ok, wait)
	}
	if ok, _ := spend(t, l, "2fa:known:u", 3); !ok {
		t.Fatal("the other class's budget was spent too")
	}
	if err := l.Refund(context.Background(), "2fa:unknown:u"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := spend(t, l, "2fa:unknown:u", 3); !ok {
		t.Fatal("a refunded guess was not given back")
	}
	c.Advance(23 * time.Hour)
	if ok, _ := spend(t, l, "2fa:unknown:u", 3); !ok {
		t.Fatal("a new day did not bring a new budget")
	}
}

// Miss counts a user's wrong codes in a day that begins at the first, and a
// new day starts afresh and untold.
func TestMissCountsADay(t *testing.T) {
	t.Parallel()
	l, c := newLimiter(t)
	ctx := context.Background()
	u := uuid.New()
	first := c.Now()
	for i := 1; i <= 3; i++ {
		m, err := l.Miss(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		if m.Failures != i || !m.WindowStart.Equal(first) || m.Notified {
			t.Fatalf("miss %d = %+v", i, m)
		}
		c.Advance(time.Hour)
	}
	if _, err := l.pool.Exec(ctx, NotifiedStatement(u, first).SQL, NotifiedStatement(u, first).Args...); err != nil {
		t.Fatal(err)
	}
	if m, _ := l.Miss(ctx, u); !m.Notified || m.Failures != 4 {
		t.Fatalf("after the notice: %+v", m)
	}
	c.Advance(GuessWindow)
	if m, _ := l.Miss(ctx, u); m.Failures != 1 || m.Notified || !m.WindowStart.Equal(c.Now()) {
		t.Fatalf("a new day: %+v", m)
	}
}
