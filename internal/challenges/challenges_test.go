package challenges

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/internal/testenv"
)

func newStore(t *testing.T) (*Challenges, *testenv.Clock) {
	t.Helper()
	pool, _ := testenv.Database(t)
	clk := testenv.NewClock(time.Now().Truncate(time.Second))
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	return NewChallenges(pool, key, clk.Now, 5*time.Minute, 5), clk
}

// answer does what /2fa/verify does with a token before it looks at the code.
func answer(ctx context.Context, s *Challenges, token string) (Challenge, error) {
	user, err := s.User(token)
	if err != nil {
		return Challenge{}, err
	}
	st, answered := s.AnswerStatement(token)
	if err := st.Scan(s.pool.QueryRow(ctx, st.SQL, st.Args...)); err != nil {
		return Challenge{}, err
	}
	c, err := answered()
	if err == nil && c.UserID != user {
		return Challenge{}, fmt.Errorf("the token names %s, its challenge %s", user, c.UserID)
	}
	return c, err
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
	if raw, err := base64.RawURLEncoding.DecodeString(token); err != nil || len(raw) != tokenBytes {
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
	c, err := answer(ctx, s, token)
	if err != nil || c.UserID != user || !slices.Equal(c.AMR, []string{"pwd"}) || c.Tries != 1 || c.ID == uuid.Nil || !c.CreatedAt.Equal(clk.Now()) {
		t.Fatalf("Answer = %+v, %v", c, err)
	}
	again, _ := answer(ctx, s, token)
	if again.ID != c.ID || again.Tries != 2 {
		t.Fatalf("second answer %+v", again)
	}
	finish := s.FinishStatement(token)
	if _, err := s.pool.Exec(ctx, finish.SQL, finish.Args...); err != nil {
		t.Fatal(err)
	}
	if _, err := answer(ctx, s, token); !errors.Is(err, ErrInvalidChallenge) {
		t.Fatalf("a finished challenge: %v", err)
	}
	for _, bad := range []string{"", "x", token + "x", string(make([]byte, 200))} {
		if _, err := answer(ctx, s, bad); !errors.Is(err, ErrInvalidChallenge) {
			t.Fatalf("Answer(%.10q): %v", bad, err)
		}
	}

	// Expiry.
	token, _ = s.Issue(ctx, user, []string{"otp"})
	clk.Advance(5*time.Minute - time.Second)
	if _, err := answer(ctx, s, token); err != nil {
		t.Fatalf("just before expiry: %v", err)
	}
	clk.Advance(time.Second)
	if _, err := answer(ctx, s, token); !errors.Is(err, ErrInvalidChallenge) {
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
			if _, err := answer(ctx, s, token); err == nil {
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

// A token names its user under the server's MAC: one this server did not
// issue, or one with its user changed, names nobody.
func TestTokenNamesItsUserUnderTheMAC(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	other, _ := newStore(t)
	ctx := context.Background()
	user := uuid.New()
	token, err := s.Issue(ctx, user, []string{"pwd"})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.User(token); err != nil || got != user {
		t.Fatalf("User = %s, %v; want %s", got, err, user)
	}
	if _, err := other.User(token); !errors.Is(err, ErrInvalidChallenge) {
		t.Fatalf("another key's User: %v, want ErrInvalidChallenge", err)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(token)
	victim := uuid.New()
	copy(raw, victim[:])
	if _, err := s.User(base64.RawURLEncoding.EncodeToString(raw)); !errors.Is(err, ErrInvalidChallenge) {
		t.Fatalf("a token with its user swapped: %v, want ErrInvalidChallenge", err)
	}
	for _, bad := range []string{"", "x", token[:len(token)-1], token + "A", "!!" + token[2:]} {
		if _, err := s.User(bad); !errors.Is(err, ErrInvalidChallenge) {
			t.Fatalf("User(%q): %v, want ErrInvalidChallenge", bad, err)
		}
	}
}
