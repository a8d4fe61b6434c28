package codes

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/internal/testenv"
)

const ttl = 10 * time.Minute

func newStore(t *testing.T) (*Store, *testenv.Clock, *pgxpool.Pool) {
	t.Helper()
	pool, _ := testenv.Database(t)
	key := make([]byte, KeySize)
	_, _ = rand.Read(key)
	c := testenv.NewClock(time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC))
	return New(pool, key, c.Now), c, pool
}

func issue(t *testing.T, s *Store, email, purpose string, payload []byte) string {
	t.Helper()
	code, err := s.Issue(context.Background(), email, purpose, ttl, payload)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	return code
}

// consume checks code and, when it is right, commits its use alone, as a
// caller commits it with its events.
func consume(s *Store, email, purpose, code string) ([]byte, error) {
	ctx := context.Background()
	payload, use, err := s.Check(ctx, email, purpose, code)
	if err != nil {
		return nil, err
	}
	if err := use.Scan(s.pool.QueryRow(ctx, use.SQL, use.Args...)); err != nil {
		return nil, err
	}
	return payload, nil
}

// wrong returns a well-formed code other than code.
func wrong(code string, i int) string {
	w := fmt.Sprintf("%06d", i)
	if w == code {
		w = fmt.Sprintf("%06d", i+1)
	}
	return w
}

func tries(t *testing.T, pool *pgxpool.Pool, email, purpose string) (n int, exists bool) {
	t.Helper()
	err := pool.QueryRow(context.Background(),
		"SELECT tries FROM email_codes WHERE email = $1 AND purpose = $2", email, purpose).Scan(&n)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		t.Fatal(err)
	}
	return n, err == nil
}

func TestCodeWorksOnce(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t)
	code := issue(t, s, "a@example.com", "register", []byte("sealed registration"))
	payload, err := consume(s, "a@example.com", "register", code)
	if err != nil {
		t.Fatalf("first use: %v", err)
	}
	if string(payload) != "sealed registration" {
		t.Fatalf("payload = %q", payload)
	}
	if _, err := consume(s, "a@example.com", "register", code); !errors.Is(err, ErrInvalidCode) {
		t.Fatalf("second use: err = %v, want ErrInvalidCode", err)
	}
}

func TestCodeIsBoundToEmailAndPurpose(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t)
	code := issue(t, s, "a@example.com", "login", nil)
	if _, err := consume(s, "b@example.com", "login", code); !errors.Is(err, ErrInvalidCode) {
		t.Fatalf("other email: err = %v", err)
	}
	if _, err := consume(s, "a@example.com", "reset", code); !errors.Is(err, ErrInvalidCode) {
		t.Fatalf("other purpose: err = %v", err)
	}
	// Emails compare case-insensitively after trimming.
	if _, err := consume(s, "  A@Example.COM ", "login", code); err != nil {
		t.Fatalf("same email spelled differently: %v", err)
	}
}

func TestFiveWrongTriesBurnTheCode(t *testing.T) {
	t.Parallel()
	s, _, pool := newStore(t)
	code := issue(t, s, "a@example.com", "login", nil)
	for i := range MaxTries - 1 {
		if _, err := consume(s, "a@example.com", "login", wrong(code, i)); !errors.Is(err, ErrInvalidCode) {
			t.Fatalf("wrong try %d: err = %v", i+1, err)
		}
		if n, ok := tries(t, pool, "a@example.com", "login"); !ok || n != i+1 {
			t.Fatalf("after wrong try %d: tries = %d (row present %v)", i+1, n, ok)
		}
	}
	if _, err := consume(s, "a@example.com", "login", wrong(code, 99)); !errors.Is(err, ErrInvalidCode) {
		t.Fatalf("fifth wrong try: err = %v", err)
	}
	if _, ok := tries(t, pool, "a@example.com", "login"); ok {
		t.Fatal("code still stored after five wrong tries")
	}
	if _, err := consume(s, "a@example.com", "login", code); !errors.Is(err, ErrInvalidCode) {
		t.Fatalf("right code after it was burned: err = %v", err)
	}
}

func TestMalformedInputIsRefusedWithoutCountingATry(t *testing.T) {
	t.Parallel()
	s, _, pool := newStore(t)
	code := issue(t, s, "a@example.com", "login", nil)
	for _, bad := range []string{"", "12345", "1234567", "12a456", "١٢٣٤٥٦", "123456\x00", strings.Repeat("1", 1000), "+12345"} {
		if _, err := consume(s, "a@example.com", "login", bad); !errors.Is(err, ErrInvalidCode) {
			t.Fatalf("Check(%q): err = %v", bad, err)
		}
	}
	if n, _ := tries(t, pool, "a@example.com", "login"); n != 0 {
		t.Fatalf("malformed input counted %d tries", n)
	}
	spaced := code[:3] + " - " + code[3:]
	if _, err := consume(s, "a@example.com", "login", spaced); err != nil {
		t.Fatalf("Check(%q) with separators: %v", spaced, err)
	}
}

func TestNormalizeCode(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"123456": "123456", " 123 456 ": "123456", "123-456": "123456", "1-2-3-4-5-6": "123456", "\t000001": "000001",
		"12345": "", "1234567": "", "12345x": "", "１２３４５６": "", "": "",
	} {
		got, ok := normalizeCode(in)
		if ok != (want != "") || got != want {
			t.Errorf("normalizeCode(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func TestCodeExpiresAfterTenMinutes(t *testing.T) {
	t.Parallel()
	s, c, _ := newStore(t)
	early := issue(t, s, "early@example.com", "login", nil)
	late := issue(t, s, "late@example.com", "login", nil)
	c.Advance(ttl - time.Microsecond)
	if _, err := consume(s, "early@example.com", "login", early); err != nil {
		t.Fatalf("just before expiry: %v", err)
	}
	c.Advance(time.Microsecond)
	if _, err := consume(s, "late@example.com", "login", late); !errors.Is(err, ErrInvalidCode) {
		t.Fatalf("at expiry: err = %v, want ErrInvalidCode", err)
	}
}

func TestNewCodeReplacesTheOld(t *testing.T) {
	t.Parallel()
	s, _, pool := newStore(t)
	old := issue(t, s, "a@example.com", "reset", []byte("old"))
	if _, err := consume(s, "a@example.com", "reset", wrong(old, 0)); !errors.Is(err, ErrInvalidCode) {
		t.Fatal(err)
	}
	var code string
	for code = old; code == old; { // a repeat of the same code, one in a million, would prove nothing
		code = issue(t, s, "a@example.com", "reset", []byte("new"))
	}
	if n, _ := tries(t, pool, "a@example.com", "reset"); n != 0 {
		t.Fatalf("tries not reset by a new code: %d", n)
	}
	if _, err := consume(s, "a@example.com", "reset", old); !errors.Is(err, ErrInvalidCode) {
		t.Fatalf("old code: err = %v, want ErrInvalidCode", err)
	}
	payload, err := consume(s, "a@example.com", "reset", code)
	if err != nil || string(payload) != "new" {
		t.Fatalf("new code: payload %q, err %v", payload, err)
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t)
	binary := make([]byte, 300)
	_, _ = rand.Read(binary) // like a sealed box: any bytes, NULs included
	binary[7] = 0
	for i, want := range [][]byte{binary, nil} {
		email := fmt.Sprintf("p%d@example.com", i)
		code := issue(t, s, email, "register", want)
		got, err := consume(s, email, "register", code)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) || (want == nil) != (got == nil) {
			t.Fatalf("payload %d: got %x, want %x", i, got, want)
		}
	}
}

// The row lock serialises concurrent guesses: of twenty requests with the
// right code exactly one succeeds.
func TestConcurrentConsumeSucceedsOnce(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t)
	code := issue(t, s, "a@example.com", "register", []byte("p"))
	var ok, invalid atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			_, err := consume(s, "a@example.com", "register", code)
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrInvalidCode):
				invalid.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 || invalid.Load() != 19 {
		t.Fatalf("%d successes and %d refusals, want 1 and 19", ok.Load(), invalid.Load())
	}
}

// Concurrent wrong guesses are all counted: none reads the tries another is
// about to write, so a burst cannot buy more than MaxTries guesses.
func TestConcurrentWrongGuessesAreAllCounted(t *testing.T) {
	t.Parallel()
	s, _, pool := newStore(t)
	guess := func(email, code string, n int) {
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				if _, err := consume(s, email, "login", wrong(code, i)); !errors.Is(err, ErrInvalidCode) {
					t.Errorf("wrong guess: err = %v", err)
				}
			})
		}
		wg.Wait()
	}

	code := issue(t, s, "four@example.com", "login", nil)
	guess("four@example.com", code, MaxTries-1)
	if n, ok := tries(t, pool, "four@example.com", "login"); !ok || n != MaxTries-1 {
		t.Fatalf("after %d concurrent wrong guesses: tries = %d (row present %v)", MaxTries-1, n, ok)
	}
	if _, err := consume(s, "four@example.com", "login", code); err != nil {
		t.Fatalf("right code after %d wrong: %v", MaxTries-1, err)
	}

	code = issue(t, s, "many@example.com", "login", nil)
	guess("many@example.com", code, 20)
	if _, ok := tries(t, pool, "many@example.com", "login"); ok {
		t.Fatal("code survived 20 concurrent wrong guesses")
	}
	if _, err := consume(s, "many@example.com", "login", code); !errors.Is(err, ErrInvalidCode) {
		t.Fatalf("right code after a burst of wrong ones: err = %v", err)
	}
}

// A database dump gives away neither the code nor which rows share a code.
func TestStoredHashIsKeyedAndBound(t *testing.T) {
	t.Parallel()
	s, _, pool := newStore(t)
	code := issue(t, s, "a@example.com", "login", nil)
	var stored []byte
	var row string
	err := pool.QueryRow(context.Background(),
		"SELECT code_hash, c::text FROM email_codes c WHERE email = 'a@example.com'").Scan(&stored, &row)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(stored, s.hash("a@example.com", "login", code)) {
		t.Fatal("stored hash is not the HMAC of purpose, email and code")
	}
	plain := sha256.Sum256([]byte(code))
	if bytes.Contains(stored, []byte(code)) || strings.Contains(row, code) || bytes.Equal(stored, plain[:]) {
		t.Fatalf("row %s reveals the code", row)
	}
	h := s.hash("a@example.com", "login", code)
	for _, other := range [][]byte{
		s.hash("b@example.com", "login", code),
		s.hash("a@example.com", "reset", code),
		New(pool, bytes.Repeat([]byte{1}, KeySize), time.Now).hash("a@example.com", "login", code),
	} {
		if bytes.Equal(h, other) {
			t.Fatal("the same code hashes the same for another email, purpose or key")
		}
	}
}

func TestCodesAreSixUniformDigits(t *testing.T) {
	t.Parallel()
	const draws = 5000
	seen := make(map[string]bool)
	var first [10]int
	for range draws {
		code, err := newCode()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := normalizeCode(code); !ok || len(code) != 6 {
			t.Fatalf("code %q is not six digits", code)
		}
		seen[code] = true
		first[code[0]-'0']++
	}
	if len(seen) < draws*99/100 {
		t.Fatalf("only %d distinct codes in %d draws", len(seen), draws)
	}
	// Each leading digit, 0 included (the padding works), expects 500 draws;
	// 350..650 is more than six standard deviations either way.
	for d, n := range first {
		if n < 350 || n > 650 {
			t.Fatalf("leading digit %d drawn %d times in %d: %v", d, n, draws, first)
		}
	}
}

func TestSweepDeletesExpiredCodes(t *testing.T) {
	t.Parallel()
	s, c, _ := newStore(t)
	issue(t, s, "old@example.com", "login", nil)
	c.Advance(5 * time.Minute)
	fresh := issue(t, s, "fresh@example.com", "login", nil)
	c.Advance(5 * time.Minute)
	n, err := s.Sweep(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want 1", n, err)
	}
	if _, err := consume(s, "fresh@example.com", "login", fresh); err != nil {
		t.Fatalf("unexpired code swept: %v", err)
	}
}

func TestIssueRejectsBadArguments(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t)
	for _, a := range []struct {
		email, purpose string
		ttl            time.Duration
	}{{"", "login", ttl}, {"  ", "login", ttl}, {"a@example.com", "", ttl}, {"a@example.com", "login", 0}} {
		if _, err := s.Issue(context.Background(), a.email, a.purpose, a.ttl, nil); err == nil {
			t.Errorf("Issue(%q, %q, %v): no error", a.email, a.purpose, a.ttl)
		}
	}
}

func TestNewPanicsOnABadKey(t *testing.T) {
	t.Parallel()
	defer func() {
		if recover() == nil {
			t.Fatal("New accepted a 16-byte key")
		}
	}()
	New(nil, make([]byte, 16), time.Now)
}

// A right code is used up by the commit it is given to, not by the check:
// when that commit never happens (the database restarted under it), the
// client's retry with the same code still works, once.
func TestARightCodeLivesUntilItsUseCommits(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t)
	code := issue(t, s, "retry@example.com", "register", []byte("p"))
	if _, _, err := s.Check(context.Background(), "retry@example.com", "register", code); err != nil {
		t.Fatalf("first check, whose commit then fails: %v", err)
	}
	if _, err := consume(s, "retry@example.com", "register", code); err != nil {
		t.Fatalf("the retry with the same code: %v; want it to work", err)
	}
	if _, err := consume(s, "retry@example.com", "register", code); !errors.Is(err, ErrInvalidCode) {
		t.Fatalf("a third use: %v; want ErrInvalidCode", err)
	}
}
