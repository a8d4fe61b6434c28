// Package challenges keeps the ephemeral state of two-factor logins: the
// challenges a first factor earns, to be answered at /2fa/verify. They live
// minutes, so they sit in a TTL table rather than in the event log (DESIGN
// rule 1); what a challenge's answer changes is decided on the event-sourced
// two-factor aggregate.
package challenges

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/eventstore"
)

// ErrInvalidChallenge means the token names no live challenge: never issued,
// expired, out of tries or already answered.
var ErrInvalidChallenge = errors.New("challenges: invalid challenge")

// A challenge token is the id of the user it was issued to, a 256-bit secret
// and a MAC of both under the server's key, in base64url. The user it names
// can be trusted before the challenge is looked up, so an answer counts its
// try, counts against the user's throttle and loads their account in one
// round trip, and a made-up token costs nothing but the MAC.
const (
	tokenSecretBytes = 32
	tokenMACBytes    = 16
	tokenBytes       = len(uuid.UUID{}) + tokenSecretBytes + tokenMACBytes
)

// Challenge is a pending second factor: who passed a first factor, how
// (their amr), and which answer this is.
type Challenge struct {
	ID     uuid.UUID // names the challenge in events; not the token
	UserID uuid.UUID
	AMR    []string
	Tries  int // answers so far, this one included
	// CreatedAt is when the first factor was passed.
	CreatedAt time.Time
}

// Challenges keeps challenges in the two_factor_challenges table, each under
// a hash of its token: a dump of the table gives no token away.
type Challenges struct {
	pool  *pgxpool.Pool
	key   []byte // the tokens' MAC key
	now   func() time.Time
	ttl   time.Duration
	tries int

	mu        sync.Mutex
	lastSweep time.Time
}

// NewChallenges returns a store over pool whose challenges live ttl and take
// tries answers, with the time read from now and tokens authenticated under
// key.
func NewChallenges(pool *pgxpool.Pool, key []byte, now func() time.Time, ttl time.Duration, tries int) *Challenges {
	return &Challenges{pool: pool, key: key, now: now, ttl: ttl, tries: tries}
}

func (s *Challenges) mac(userAndSecret []byte) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write(userAndSecret)
	return m.Sum(nil)[:tokenMACBytes]
}

// User returns the user a token was issued to, or ErrInvalidChallenge for a
// token this server did not issue. It says nothing of whether the challenge
// is still live.
func (s *Challenges) User(token string) (uuid.UUID, error) {
	if len(token) != base64.RawURLEncoding.EncodedLen(tokenBytes) {
		return uuid.Nil, ErrInvalidChallenge
	}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return uuid.Nil, ErrInvalidChallenge
	}
	signed, mac := raw[:tokenBytes-tokenMACBytes], raw[tokenBytes-tokenMACBytes:]
	if !hmac.Equal(mac, s.mac(signed)) {
		return uuid.Nil, ErrInvalidChallenge
	}
	return uuid.UUID(signed[:len(uuid.UUID{})]), nil
}

func hashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

const issueSQL = `INSERT INTO two_factor_challenges (token_hash, id, user_id, amr, tries, expires_at, created_at)
VALUES ($1, $2, $3, $4, 0, $5, $6)`

// Issue starts a challenge for user, who signed in with amr, and returns its
// opaque token.
func (s *Challenges) Issue(ctx context.Context, user uuid.UUID, amr []string) (string, error) {
	b := append(user[:], make([]byte, tokenSecretBytes)...)
	if _, err := rand.Read(b[len(user):]); err != nil {
		return "", fmt.Errorf("challenges: draw a challenge token: %w", err)
	}
	token := base64.RawURLEncoding.EncodeToString(append(b, s.mac(b)...))
	now := s.now()
	if _, err := s.pool.Exec(ctx, issueSQL, hashToken(token), uuid.New(), user, amr, now.Add(s.ttl), now); err != nil {
		return "", fmt.Errorf("challenges: store a challenge: %w", err)
	}
	s.maybeSweep(ctx, now)
	return token, nil
}

// Counts an answer before it is checked, in one statement under the row's
// lock: concurrent answers are counted one after another, so no more than
// the allowed number are ever checked, and none once the challenge expired.
const answerSQL = `UPDATE two_factor_challenges SET tries = tries + 1
WHERE token_hash = $1 AND expires_at > $2 AND tries < $3
RETURNING id, user_id, amr, tries, created_at`

// AnswerStatement admits one answer to the challenge of token, as a statement
// to run ahead of loading the account that answers it
// (eventstore.Store.LoadStreamsAfter). Once it has run, answered returns the
// challenge, or ErrInvalidChallenge. The answer counts as a try whatever it
// turns out to be.
func (s *Challenges) AnswerStatement(token string) (st eventstore.Statement, answered func() (Challenge, error)) {
	var c Challenge
	found := false
	st = eventstore.Statement{
		SQL:  answerSQL,
		Args: []any{hashToken(token), s.now(), s.tries},
		Scan: func(row pgx.Row) error {
			found = false // what an earlier, rolled-back run found is void
			err := row.Scan(&c.ID, &c.UserID, &c.AMR, &c.Tries, &c.CreatedAt)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("challenges: answer a challenge: %w", err)
			}
			found = true
			return nil
		},
	}
	return st, func() (Challenge, error) {
		if !found {
			return Challenge{}, ErrInvalidChallenge
		}
		return c, nil
	}
}

// FinishStatement deletes an answered challenge, as a statement to commit
// with the events of the session the answer opens (eventstore.Change.Also).
// What makes a challenge single-use is the event that records its answer;
// deleting it just makes a second answer fail early.
func (s *Challenges) FinishStatement(token string) eventstore.Statement {
	return eventstore.Statement{SQL: `DELETE FROM two_factor_challenges WHERE token_hash = $1`, Args: []any{hashToken(token)}}
}

// Sweep deletes the challenges nobody can answer any more.
func (s *Challenges) Sweep(ctx context.Context) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM two_factor_challenges WHERE expires_at <= $1 OR tries >= $2`, s.now(), s.tries)
	if err != nil {
		return 0, fmt.Errorf("challenges: sweep challenges: %w", err)
	}
	return tag.RowsAffected(), nil
}

// maybeSweep sweeps at most once a minute per instance, on the back of an
// issue, so the table stays small without a chore of its own.
func (s *Challenges) maybeSweep(ctx context.Context, now time.Time) {
	s.mu.Lock()
	due := now.Sub(s.lastSweep) >= time.Minute
	if due {
		s.lastSweep = now
	}
	s.mu.Unlock()
	if due {
		_, _ = s.Sweep(ctx) // best effort: Answer ignores dead rows anyway
	}
}
