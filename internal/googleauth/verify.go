// Package googleauth verifies Google ID tokens (Sign in with Google): the
// RS256 signature against Google's published keys (JWKS), and the claims a
// sign-in relies on: issuer, audience, expiry, issue time, subject and a
// verified email address.
package googleauth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Errors of Verify. Every refused token is ErrInvalidToken; the keys'
// errors say why more precisely and are ErrInvalidToken too, except
// ErrKeysUnavailable, which is about us, not the token.
var (
	ErrInvalidToken    = errors.New("googleauth: invalid ID token")
	ErrUnknownKey      = fmt.Errorf("%w: signed with a key Google does not publish", ErrInvalidToken)
	ErrKeysUnavailable = errors.New("googleauth: Google's signing keys cannot be fetched")
)

// Issuers are the iss values Google's ID tokens carry.
var Issuers = []string{"accounts.google.com", "https://accounts.google.com"}

// maxTokenLen refuses absurd input before any parsing; Google's ID tokens
// are about 1 KiB.
const maxTokenLen = 16 << 10

// Identity is who a verified ID token says signed in.
type Identity struct {
	// Subject is the Google account's stable id (sub).
	Subject string
	// Email is the account's address as Google sent it; Google has verified it.
	Email string
	// Name is the display name, possibly empty.
	Name string
}

// Options configure a Verifier.
type Options struct {
	// JWKSURL is where Google's keys are published.
	JWKSURL string
	// ClientIDs are the accepted audiences (GOOGLE_CLIENT_ID); at least one.
	ClientIDs []string
	// Leeway allows for clock skew on exp, iat and nbf: 1 minute by default.
	Leeway time.Duration
	// MaxLifetime refuses tokens whose exp is further than this from now
	// (Google's last an hour): 24 hours by default.
	MaxLifetime time.Duration
	// Keys tunes the key cache; its Now is also the verifier's clock.
	Keys KeySetOptions
}

// Verifier checks Google ID tokens. It is safe for concurrent use.
type Verifier struct {
	keys        *KeySet
	clientIDs   []string
	parser      *jwt.Parser
	now         func() time.Time
	leeway      time.Duration
	maxLifetime time.Duration
}

// New returns a verifier; it fetches nothing until the first token.
func New(o Options) (*Verifier, error) {
	if o.JWKSURL == "" {
		return nil, errors.New("googleauth: no JWKS URL")
	}
	var ids []string
	for _, id := range o.ClientIDs {
		if id = strings.TrimSpace(id); id != "" {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil, errors.New("googleauth: no client ID")
	}
	if o.Leeway <= 0 {
		o.Leeway = time.Minute
	}
	if o.MaxLifetime <= 0 {
		o.MaxLifetime = 24 * time.Hour
	}
	keys := NewKeySet(o.JWKSURL, o.Keys)
	return &Verifier{
		keys:      keys,
		clientIDs: ids,
		now:       keys.now,
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{"RS256"}),
			jwt.WithAudience(ids...), // any one of them
			jwt.WithLeeway(o.Leeway),
			jwt.WithIssuedAt(),
			jwt.WithExpirationRequired(),
			jwt.WithTimeFunc(keys.now),
		),
		leeway:      o.Leeway,
		maxLifetime: o.MaxLifetime,
	}, nil
}

// ClientIDs are the accepted audiences.
func (v *Verifier) ClientIDs() []string { return slices.Clone(v.clientIDs) }

// TakeFetchError returns the last failure to fetch Google's keys once, so it
// can be logged; see KeySet.TakeFetchError.
func (v *Verifier) TakeFetchError() error { return v.keys.TakeFetchError() }

// Verify checks an ID token and returns who it identifies. A token that is
// not good for signing in fails with an error that is ErrInvalidToken (its
// text says why, never the token); ErrKeysUnavailable means Google's keys
// could not be had to check it.
func (v *Verifier) Verify(ctx context.Context, idToken string) (Identity, error) {
	idToken = strings.TrimSpace(idToken)
	if idToken == "" {
		return Identity{}, fmt.Errorf("%w: missing", ErrInvalidToken)
	}
	if len(idToken) > maxTokenLen {
		return Identity{}, fmt.Errorf("%w: over %d bytes", ErrInvalidToken, maxTokenLen)
	}
	var c claims
	_, err := v.parser.ParseWithClaims(idToken, &c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, fmt.Errorf("%w: no kid", ErrInvalidToken)
		}
		return v.keys.Key(ctx, kid)
	})
	if err != nil {
		if errors.Is(err, ErrKeysUnavailable) {
			return Identity{}, err
		}
		return Identity{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	if exp := c.ExpiresAt.Time; exp.After(v.now().Add(v.maxLifetime)) {
		return Identity{}, fmt.Errorf("%w: expires too far in the future", ErrInvalidToken)
	}
	return Identity{Subject: c.Subject, Email: c.Email, Name: c.Name}, nil
}

// claims are the ID token's claims that matter here. Validate runs after
// the signature and the registered claims (exp, iat, nbf, aud) check out.
type claims struct {
	jwt.RegisteredClaims
	Email         string   `json:"email"`
	EmailVerified flexBool `json:"email_verified"`
	Name          string   `json:"name"`
}

func (c *claims) Validate() error {
	if !slices.Contains(Issuers, c.Issuer) {
		return fmt.Errorf("issuer %q is not Google's", clip(c.Issuer))
	}
	if c.IssuedAt == nil {
		return errors.New("no iat")
	}
	if c.Subject == "" || len(c.Subject) > 255 || !printable(c.Subject) {
		return errors.New("missing or malformed sub")
	}
	if c.Email == "" {
		return errors.New("no email")
	}
	if !c.EmailVerified {
		return errors.New("email is not verified")
	}
	return nil
}

// flexBool is email_verified, which Google has sent as a JSON bool and as
// the string "true"; anything else is false.
type flexBool bool

func (b *flexBool) UnmarshalJSON(data []byte) error {
	switch string(data) {
	case `true`, `"true"`:
		*b = true
	default:
		*b = false
	}
	return nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}
