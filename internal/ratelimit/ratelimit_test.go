package ratelimit

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/internal/pgpool"
	"github.com/authd/authd/internal/testenv"
)

// newClock starts on a minute boundary, so the windows' ends are easy to read.
func newClock() *testenv.Clock {
	return testenv.NewClock(time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC))
}

func newLimiter(t *testing.T) (*Limiter, *testenv.Clock) {
	t.Helper()
	pool, _ := testenv.Database(t)
	c := newClock()
	return New(pool, testSecret, c.Now), c
}

func allow(t *testing.T, l *Limiter, key string, lim Limit) (bool, time.Duration) {
	t.Helper()
	ok, retry, err := l.Allow(context.Background(), key, lim)
	if err != nil {
		t.Fatalf("Allow(%q): %v", key, err)
	}
	return ok, retry
}

var perMinute3 = Limit{Requests: 3, Window: time.Minute}

// testSecret keys the HMAC of the stored keys.
var testSecret = []byte("ratelimit test secret, 32 bytes!")

func TestAllowRefusesBeyondTheLimit(t *testing.T) {
	t.Parallel()
	l, c := newLimiter(t)
	c.Advance(10 * time.Second)
	for i := range 3 {
		if ok, retry := allow(t, l, "ip:login:192.0.2.1", perMinute3); !ok || retry != 0 {
			t.Fatalf("request %d: ok=%v retry=%v, want allowed", i+1, ok, retry)
		}
	}
	if ok, retry := allow(t, l, "ip:login:192.0.2.1", perMinute3); ok || retry != 50*time.Second {
		t.Fatalf("request 4: ok=%v retry=%v, want refused for 50s", ok, retry)
	}
	c.Advance(20 * time.Second)
	if ok, retry := allow(t, l, "ip:login:192.0.2.1", perMinute3); ok || retry != 30*time.Second {
		t.Fatalf("request 5: ok=%v retry=%v, want refused for 30s", ok, retry)
	}
	c.Advance(30*time.Second - time.Millisecond)
	if ok, retry := allow(t, l, "ip:login:192.0.2.1", perMinute3); ok || retry != time.Millisecond {
		t.Fatalf("last moment of the window: ok=%v retry=%v, want refused for 1ms", ok, retry)
	}
}

func TestAllowStartsAfreshInTheNextWindow(t *testing.T) {
	t.Parallel()
	l, c := newLimiter(t)
	for range 5 { // the refused ones are counted too
		allow(t, l, "k", perMinute3)
	}
	c.Advance(time.Minute)
	for i := range 3 {
		if ok, _ := allow(t, l, "k", perMinute3); !ok {
			t.Fatalf("request %d of the new window refused", i+1)
		}
	}
	if ok, retry := allow(t, l, "k", perMinute3); ok || retry != time.Minute {
		t.Fatalf("4th request of the new window: ok=%v retry=%v", ok, retry)
	}
}

func TestAllowKeysAreIndependent(t *testing.T) {
	t.Parallel()
	l, _ := newLimiter(t)
	for range 3 {
		allow(t, l, "ip:register:192.0.2.1", perMinute3)
	}
	if ok, _ := allow(t, l, "ip:register:192.0.2.1", perMinute3); ok {
		t.Fatal("exhausted key allowed")
	}
	if ok, _ := allow(t, l, "ip:register:192.0.2.2", perMinute3); !ok {
		t.Fatal("another IP refused")
	}
	if ok, _ := allow(t, l, "ip:login:192.0.2.1", perMinute3); !ok {
		t.Fatal("another endpoint group refused")
	}
}

func TestAllowRejectsAnInvalidLimit(t *testing.T) {
	t.Parallel()
	l, _ := newLimiter(t)
	for _, lim := range []Limit{{0, time.Minute}, {-1, time.Minute}, {5, 0}, {5, -time.Second}} {
		if _, _, err := l.Allow(context.Background(), "k", lim); err == nil {
			t.Errorf("Allow with %+v: no error", lim)
		}
	}
}

// The counter is one row updated under its lock, so concurrent requests are
// counted exactly: no two of them read the same count.
func TestAllowConcurrentRequestsShareOneCounter(t *testing.T) {
	t.Parallel()
	l, _ := newLimiter(t)
	lim := Limit{Requests: 10, Window: time.Minute}
	var allowed atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			ok, _, err := l.Allow(context.Background(), "hot", lim)
			if err != nil {
				t.Error(err)
			}
			if ok {
				allowed.Add(1)
			}
		})
	}
	wg.Wait()
	if n := allowed.Load(); n != 10 {
		t.Fatalf("%d of 20 concurrent requests allowed, want exactly 10", n)
	}
}

// twoInstances returns the limiters of two instances on one database, each
// with its own pool, sharing a clock.
func twoInstances(t *testing.T) (a, b *Limiter, c *testenv.Clock, pool *pgxpool.Pool) {
	t.Helper()
	pool, url := testenv.Database(t)
	other, err := pgpool.Open(context.Background(), url, 10)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Close)
	c = newClock()
	return New(pool, testSecret, c.Now), New(other, testSecret, c.Now), c, pool
}

// Two Limiters with their own pools on one database stand for two authd
// instances: a client cannot double its allowance by alternating between them.
func TestAllowIsSharedBetweenInstances(t *testing.T) {
	t.Parallel()
	a, b, _, _ := twoInstances(t)

	lim := Limit{Requests: 4, Window: time.Minute}
	for i, l := range []*Limiter{a, b, a, b} {
		if ok, _ := allow(t, l, "ip:otp:192.0.2.7", lim); !ok {
			t.Fatalf("request %d refused", i+1)
		}
	}
	for i, l := range []*Limiter{a, b} {
		if ok, _ := allow(t, l, "ip:otp:192.0.2.7", lim); ok {
			t.Fatalf("instance %d allowed a 5th request", i+1)
		}
	}

	var allowed atomic.Int32
	var wg sync.WaitGroup
	for i := range 20 {
		l := []*Limiter{a, b}[i%2]
		wg.Go(func() {
			ok, _, err := l.Allow(context.Background(), "ip:otp:198.51.100.1", Limit{Requests: 10, Window: time.Minute})
			if err != nil {
				t.Error(err)
			}
			if ok {
				allowed.Add(1)
			}
		})
	}
	wg.Wait()
	if n := allowed.Load(); n != 10 {
		t.Fatalf("%d of 20 concurrent requests on two instances allowed, want 10", n)
	}
}

// Once an instance has refused a key, it refuses the key's requests for the
// rest of the window without counting them in Postgres; another instance
// still counts, and the next window starts afresh.
func TestAllowRemembersAKeyOverItsLimit(t *testing.T) {
	t.Parallel()
	a, b, c, pool := twoInstances(t)
	count := func() (n int) {
		t.Helper()
		if err := pool.QueryRow(context.Background(), `SELECT coalesce(sum(count), 0) FROM rate_limits WHERE key = $1`, a.stored("ip:login:192.0.2.9")).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for range 4 {
		allow(t, a, "ip:login:192.0.2.9", perMinute3)
	}
	c.Advance(15 * time.Second)
	for range 10 {
		if ok, retry := allow(t, a, "ip:login:192.0.2.9", perMinute3); ok || retry != 45*time.Second {
			t.Fatalf("a refused key: ok=%v retry=%v, want refused for 45s", ok, retry)
		}
	}
	if n := count(); n != 4 {
		t.Fatalf("the window counted %d requests, want 4: refusals of a known key reach Postgres", n)
	}
	if ok, _ := allow(t, b, "ip:login:192.0.2.9", perMinute3); ok || count() != 5 {
		t.Fatalf("the other instance: ok=%v, count %d; want refused and counted", ok, count())
	}
	c.Advance(45 * time.Second)
	if ok, _ := allow(t, a, "ip:login:192.0.2.9", perMinute3); !ok {
		t.Fatal("the first request of the next window was refused")
	}
}

func TestSweepDeletesOnlyWhatHasExpired(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	c := newClock()
	l := New(pool, testSecret, c.Now)
	ctx := context.Background()
	sweep := func() int64 {
		t.Helper()
		n, err := l.Sweep(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	allow(t, l, "minute", perMinute3)
	allow(t, l, "hour", Limit{Requests: 3, Window: time.Hour})
	if _, err := l.Attempt(ctx, "user@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := l.Fail(ctx, "user@example.com"); err != nil {
		t.Fatal(err)
	}

	c.Advance(time.Minute - time.Microsecond)
	if n := sweep(); n != 0 {
		t.Fatalf("swept %d rows before anything expired", n)
	}
	c.Advance(time.Microsecond)
	if n := sweep(); n != 1 {
		t.Fatalf("swept %d rows when the minute window ended, want 1", n)
	}
	c.Advance(14 * time.Minute)
	if n := sweep(); n != 1 {
		t.Fatalf("swept %d rows when the failure was forgotten, want 1", n)
	}
	var keys []string
	rows, err := pool.Query(ctx, "SELECT key FROM rate_limits")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0] != l.stored("hour") {
		t.Fatalf("rows left: %q, want only the hour window", keys)
	}
	if ok, _ := allow(t, l, "minute", perMinute3); !ok {
		t.Fatal("key refused after its window was swept")
	}
}

// No row of the limiter's tables names the address or email it counts, and
// Forget deletes every count of the keys it is given, and only those.
func TestKeysAreStoredAsHMACsAndForgotten(t *testing.T) {
	t.Parallel()
	l, _ := newLimiter(t)
	ctx := context.Background()
	allow(t, l, "ip:login:192.0.2.9", perMinute3)
	allow(t, l, "codes:unknown:ada@example.com", perMinute3)
	allow(t, l, "codes:unknown:bo@example.com", perMinute3)
	if _, err := l.Attempt(ctx, "login:unknown:ada@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := l.Fail(ctx, "login:unknown:ada@example.com"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.Spend(ctx, "email_code:unknown:ada@example.com", 10); err != nil {
		t.Fatal(err)
	}
	var clear int
	if err := l.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM rate_limits WHERE key ~ '@|192')
		+ (SELECT count(*) FROM login_failures WHERE account ~ '@')
		+ (SELECT count(*) FROM guess_budgets WHERE key ~ '@')`).Scan(&clear); err != nil {
		t.Fatal(err)
	}
	if clear != 0 {
		t.Errorf("%d rows name an address or an email in clear", clear)
	}
	st := l.Forget("codes:unknown:ada@example.com", "login:unknown:ada@example.com", "email_code:unknown:ada@example.com")
	if _, err := l.pool.Exec(ctx, st.SQL, st.Args...); err != nil {
		t.Fatal(err)
	}
	var left int
	if err := l.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM rate_limits) + (SELECT count(*) FROM login_failures)
		+ (SELECT count(*) FROM guess_budgets)`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 2 {
		t.Errorf("%d rows left after forgetting ada's keys, want the address's and bo's", left)
	}
}
