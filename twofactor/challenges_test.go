package twofactor

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/testenv"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newStore(t *testing.T) (*Challenges, *clock) {
	t.Helper()
	pool, _ := testenv.Database(t)
	clk := &clock{t: time.Now().Truncate(time.Second)}
	return NewChallenges(pool, clk.Now, 5*time.Minute, 5), clk
}

func TestChallengeLifecycle(t *testing.T) {
	t.Parallel()
	s, clk := newStore(t)
	ctx := context.Background()
	user := uuid.New()
	token, err := s.Issue(ctx, user, []string{"pwd"})
	if err != nil {
		t.Fatal(err)
	}
	if raw, err := base64.RawURLEncoding.DecodeString(token); err != nil || len(raw) != 32 {
		t.Fatalf("token %q: %d bytes, %v", token, len(raw), err)
	}
	// Only a hash of the token is stored.
	var stored []byte
	if err := s.pool.QueryRow(ctx, `SELECT token_hash FROM two_factor_challenges`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256([]byte(token)); !bytes.Equal(stored, sum[:]) || bytes.Contains(stored, []byte(token)) {
		t.Fatal("the table holds something other than the token's hash")
	}
	c, err := s.Answer(ctx, token)
	if err != nil || c.UserID != user || !slices.Equal(c.AMR, []string{"pwd"}) || c.Tries != 1 || c.ID == uuid.Nil || !c.CreatedAt.Equal(clk.Now()) {
		t.Fatalf("Answer = %+v, %v", c, err)
	}
	again, _ := s.Answer(ctx, token)
	if again.ID != c.ID || again.Tries != 2 {
		t.Fatalf("second answer %+v", again)
	}
	finish := s.FinishStatement(token)
	if _, err := s.pool.Exec(ctx, finish.SQL, finish.Args...); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Answer(ctx, token); !errors.Is(err, ErrInvalidChallenge) {
		t.Fatalf("a finished challenge: %v", err)
	}
	for _, bad := range []string{"", "x", token + "x", string(make([]byte, 200))} {
		if _, err := s.Answer(ctx, bad); !errors.Is(err, ErrInvalidChallenge) {
			t.Fatalf("Answer(%.10q): %v", bad, err)
		}
	}

	// Expiry.
	token, _ = s.Issue(ctx, user, []string{"otp"})
	clk.Advance(5*time.Minute - time.Second)
	if _, err := s.Answer(ctx, token); err != nil {
		t.Fatalf("just before expiry: %v", err)
	}
	clk.Advance(time.Second)
	if _, err := s.Answer(ctx, token); !errors.Is(err, ErrInvalidChallenge) {
		t.Fatalf("at expiry: %v", err)
	}
	if n, err := s.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep = %d, %v", n, err)
	}
}

// However many answers arrive at once, five are admitted.
func TestChallengeTakesFiveAnswersEvenAtOnce(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := context.Background()
	token, err := s.Issue(ctx, uuid.New(), []string{"pwd"})
	if err != nil {
		t.Fatal(err)
	}
	var admitted atomic.Int32
	var wg sync.WaitGroup
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Answer(ctx, token); err == nil {
				admitted.Add(1)
			} else if !errors.Is(err, ErrInvalidChallenge) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if admitted.Load() != 5 {
		t.Fatalf("%d answers admitted, want 5", admitted.Load())
	}
}
