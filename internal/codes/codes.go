// Package codes issues and checks the 6-digit one-time codes authd sends by
// email.
package codes

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/ratelimit"
)

// ErrInvalidCode means the code was wrong, expired, already used, burned by
// too many wrong tries, or never issued. The caller is not told which, so an
// answer reveals nothing about the code or the email.
var ErrInvalidCode = errors.New("codes: invalid code")

// KeySize is the length of the HMAC key New takes.
const KeySize = 32

// MaxTries is how many wrong codes burn a code.
const MaxTries = 5

// Store keeps the live code of each (email, purpose, class) in the
// email_codes table. The class (ratelimit.Known or Unknown) is the network
// the code was asked from: a code sent to a network the account signed in
// from lately lives apart from the ones sent elsewhere, so that codes asked
// for and guessed at from elsewhere neither replace nor burn it.
type Store struct {
	pool *pgxpool.Pool
	key  []byte
	now  func() time.Time
}

// New returns a Store over pool that hashes codes with key, a KeySize-byte
// secret, and reads the time from now. It panics when key has the wrong size:
// that is a wiring mistake, not a runtime condition.
func New(pool *pgxpool.Pool, key []byte, now func() time.Time) *Store {
	if len(key) != KeySize {
		panic(fmt.Sprintf("codes: HMAC key is %d bytes, want %d", len(key), KeySize))
	}
	return &Store{pool: pool, key: append([]byte(nil), key...), now: now}
}

// hash binds the code to its email and purpose under the server key. Keyed,
// because a million codes are hashed in no time: a plain hash in a database
// dump would give every code away. The NUL separators keep the fields apart;
// Postgres text cannot hold a NUL, so no field can forge one.
func (s *Store) hash(email, purpose, code string) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(purpose))
	m.Write([]byte{0})
	m.Write([]byte(email))
	m.Write([]byte{0})
	m.Write([]byte(code))
	return m.Sum(nil)
}

// newCode draws a uniform code from 000000 to 999999; rand.Int rejects
// out-of-range draws instead of reducing them modulo, which would favour the
// low codes.
func newCode() (string, error) {
	n, err := rand.Int(rand.Reader, big.NewInt(1_000_000))
	if err != nil {
		return "", fmt.Errorf("codes: draw a code: %w", err)
	}
	return fmt.Sprintf("%06d", n.Int64()), nil
}

// normalizeEmail applies the project's rule (emails compare case-insensitively
// after trimming) here too, so that a code issued to one spelling of an
// address can be consumed with another.
func normalizeEmail(email string) string {
	return strings.ToLower(strings.TrimSpace(email))
}

// Puts the new code in place of any earlier one for the same email, purpose
// and class: only the latest code sent works, and its tries start from zero.
const issueSQL = `
INSERT INTO email_codes AS c (email, purpose, code_hash, expires_at, tries, created_at, payload, class)
VALUES ($1, $2, $3, $4, 0, $5, $6, $7)
ON CONFLICT (email, purpose, class) DO UPDATE SET
    code_hash  = excluded.code_hash,
    expires_at = excluded.expires_at,
    tries      = 0,
    created_at = excluded.created_at,
    payload    = excluded.payload`

// Issue draws a new code for email and purpose, valid for ttl, and stores it
// with payload in place of any earlier code. The code itself is returned to be
// sent and is stored only as a keyed hash. payload is kept as given: a caller
// that keeps secrets in it seals them first.
//
// Every Issue grants MaxTries fresh guesses, so callers must rate-limit
// issuing per email, or the limit on guesses would be per send.
//
// The code is of the Unknown class: IssueIn issues one of a given class.
func (s *Store) Issue(ctx context.Context, email, purpose string, ttl time.Duration, payload []byte) (code string, err error) {
	return s.IssueIn(ctx, ratelimit.Unknown, email, purpose, ttl, payload)
}

// IssueIn is Issue of a code of class, which only CheckIn of the same class
// can use.
func (s *Store) IssueIn(ctx context.Context, class ratelimit.Class, email, purpose string, ttl time.Duration, payload []byte) (code string, err error) {
	email = normalizeEmail(email)
	if email == "" || purpose == "" || ttl <= 0 {
		return "", errors.New("codes: issue needs an email, a purpose and a positive lifetime")
	}
	code, err = newCode()
	if err != nil {
		return "", err
	}
	now := s.now()
	if _, err := s.pool.Exec(ctx, issueSQL, email, purpose, s.hash(email, purpose, code), now.Add(ttl), now, payload, string(class)); err != nil {
		return "", fmt.Errorf("codes: store a %s code: %w", purpose, err)
	}
	return code, nil
}

// Checks a guess and counts it in one statement. target locks the live code
// row (an expired one is as good as absent), so concurrent guesses of one code
// run one after another, each seeing the tries the one before left: wrong
// guesses cannot get past MaxTries. A right guess leaves the row for the
// caller's commit to use up (useSQL) and returns its payload; the wrong guess
// that reaches MaxTries deletes it (the code is burned); any other wrong
// guess counts a try. No row comes back unless the guess was right.
//
// The hashes are compared with = rather than in constant time. That is safe
// because both sides are HMACs under a key the guesser does not have: how far
// the comparison got says nothing about which code to try next.
const checkSQL = `
WITH target AS (
    SELECT email, purpose, tries, code_hash = $3 AS matched, payload
    FROM email_codes
    WHERE email = $1 AND purpose = $2 AND class = $6 AND expires_at > $4
    FOR UPDATE
), burned AS (
    DELETE FROM email_codes c USING target t
    WHERE c.email = t.email AND c.purpose = t.purpose AND c.class = $6
      AND NOT t.matched AND t.tries + 1 >= $5
), tried AS (
    UPDATE email_codes c SET tries = t.tries + 1
    FROM target t
    WHERE c.email = t.email AND c.purpose = t.purpose AND c.class = $6
      AND NOT t.matched AND t.tries + 1 < $5
)
SELECT payload FROM target WHERE matched`

// Uses up a code that Check found right: single use, because of two commits
// holding the same right code only the first finds the row.
const useSQL = `DELETE FROM email_codes WHERE email = $1 AND purpose = $2 AND class = $3 AND code_hash = $4 RETURNING true`

// Check checks code against the live code for email and purpose. On a match
// it returns the payload the code was issued with and the statement that
// uses the code up, for the caller to commit with what the code earned
// (eventstore.Change.Also): should that commit fail (the database restarted
// under it), the code still works when the client tries again. That
// statement fails its change with ErrInvalidCode when the code was used
// meanwhile. Every failure of Check itself is ErrInvalidCode.
//
// Spaces and dashes in code are ignored ("123 456", "123-456"). Input that is
// then not six digits cannot be the code, so it is refused without counting a
// try: a typo does not burn the user's code, and it tells a guesser nothing.
//
// It checks the Unknown class's code: CheckIn checks a given class's.
func (s *Store) Check(ctx context.Context, email, purpose, code string) (payload []byte, use eventstore.Statement, err error) {
	return s.CheckIn(ctx, ratelimit.Unknown, email, purpose, code)
}

// CheckIn is Check of the code of class.
func (s *Store) CheckIn(ctx context.Context, class ratelimit.Class, email, purpose, code string) (payload []byte, use eventstore.Statement, err error) {
	code, ok := normalizeCode(code)
	if !ok {
		return nil, eventstore.Statement{}, ErrInvalidCode
	}
	email = normalizeEmail(email)
	hash := s.hash(email, purpose, code)
	err = s.pool.QueryRow(ctx, checkSQL, email, purpose, hash, s.now(), MaxTries, string(class)).Scan(&payload)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, eventstore.Statement{}, ErrInvalidCode
	}
	if err != nil {
		return nil, eventstore.Statement{}, fmt.Errorf("codes: check a %s code: %w", purpose, err)
	}
	use = eventstore.Statement{SQL: useSQL, Args: []any{email, purpose, string(class), hash}, Scan: func(row pgx.Row) error {
		var used bool
		if err := row.Scan(&used); errors.Is(err, pgx.ErrNoRows) {
			return ErrInvalidCode
		} else if err != nil {
			return fmt.Errorf("codes: use a %s code: %w", purpose, err)
		}
		return nil
	}}
	return payload, use, nil
}

// WellFormed says whether code could be a code at all: six digits, give or
// take the separators Check ignores. One that cannot is no guess.
func WellFormed(code string) bool {
	_, ok := normalizeCode(code)
	return ok
}

// normalizeCode strips the separators people type or paste and reports
// whether six ASCII digits are left.
func normalizeCode(code string) (string, bool) {
	if len(code) > 32 { // far more than any spelling of six digits
		return "", false
	}
	var b [6]byte
	n := 0
	for i := 0; i < len(code); i++ {
		switch c := code[i]; {
		case c == ' ' || c == '-' || c == '\t':
		case c >= '0' && c <= '9' && n < len(b):
			b[n] = c
			n++
		default:
			return "", false
		}
	}
	if n != len(b) {
		return "", false
	}
	return string(b[:]), true
}

// Deletes the codes nobody can use any more.
const sweepSQL = `DELETE FROM email_codes WHERE expires_at <= $1`

// Sweep deletes expired codes and returns how many. Check ignores them
// anyway; sweeping keeps the table small and drops their payloads.
func (s *Store) Sweep(ctx context.Context) (int64, error) {
	tag, err := s.pool.Exec(ctx, sweepSQL, s.now())
	if err != nil {
		return 0, fmt.Errorf("codes: sweep: %w", err)
	}
	return tag.RowsAffected(), nil
}
