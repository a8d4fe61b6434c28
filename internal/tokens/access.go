package tokens

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// ErrInvalidToken is wrapped by every error of Verify and ParseRefreshToken;
// the wrapping text says why, for logs, and never contains the token.
var ErrInvalidToken = errors.New("invalid token")

// Claims are what an access token says. AMR holds RFC 8176 values: pwd, otp,
// fed, hwk, user, and mfa after a second factor.
type Claims struct {
	UserID    uuid.UUID // sub
	TenantID  uuid.UUID // tid
	SessionID uuid.UUID // sid
	AMR       []string
	IssuedAt  time.Time // iat, whole seconds on the wire
	ExpiresAt time.Time // exp, whole seconds on the wire
	ID        string    // jti
	// AuthTime (auth_time, whole seconds on the wire) is when the user last
	// proved who they are in this session: the sign-in or a
	// re-authentication. Zero leaves the claim out; such a token is never
	// fresh (API.md: "Fresh" endpoints).
	AuthTime time.Time
}

// wireClaims is the JWT payload: iss, sub, tid, sid, iat, exp, jti,
// auth_time, amr and nothing else (RegisteredClaims omits its empty fields).
type wireClaims struct {
	jwt.RegisteredClaims
	TenantID  string           `json:"tid"`
	SessionID string           `json:"sid"`
	AuthTime  *jwt.NumericDate `json:"auth_time,omitempty"`
	AMR       []string         `json:"amr"`
}

// Issue signs an access token with the signing key active at the clock's now.
// A zero IssuedAt means now, a zero ExpiresAt IssuedAt+AccessTTL (a later one
// is an error: Verify would refuse it), an empty ID a random UUID.
func (k *Keyring) Issue(c Claims) (token string, err error) {
	if c.UserID == uuid.Nil || c.TenantID == uuid.Nil || c.SessionID == uuid.Nil {
		return "", errors.New("tokens: issue: user, tenant and session ids are required")
	}
	if c.IssuedAt.IsZero() {
		c.IssuedAt = k.now()
	}
	if c.ExpiresAt.IsZero() {
		c.ExpiresAt = c.IssuedAt.Add(k.accessTTL)
	}
	if c.ExpiresAt.Sub(c.IssuedAt) > k.accessTTL {
		return "", fmt.Errorf("tokens: issue: lifetime %v exceeds %v", c.ExpiresAt.Sub(c.IssuedAt), k.accessTTL)
	}
	if c.ID == "" {
		id, err := uuid.NewRandom()
		if err != nil {
			return "", fmt.Errorf("tokens: issue: jti: %w", err)
		}
		c.ID = id.String()
	}
	amr := c.AMR
	if amr == nil {
		amr = []string{} // "amr":[] rather than null, for strict clients
	}
	if c.AuthTime.After(c.IssuedAt) {
		return "", errors.New("tokens: issue: auth_time is after iat")
	}
	var authTime *jwt.NumericDate
	if !c.AuthTime.IsZero() {
		authTime = jwt.NewNumericDate(c.AuthTime)
	}
	s := k.keys.Load().signer(k.now())
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, wireClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    k.issuer,
			Subject:   c.UserID.String(),
			IssuedAt:  jwt.NewNumericDate(c.IssuedAt),
			ExpiresAt: jwt.NewNumericDate(c.ExpiresAt),
			ID:        c.ID,
		},
		TenantID:  c.TenantID.String(),
		SessionID: c.SessionID.String(),
		AuthTime:  authTime,
		AMR:       amr,
	})
	t.Header["kid"] = s.kid
	token, err = t.SignedString(s.key)
	if err != nil {
		return "", fmt.Errorf("tokens: sign: %w", err)
	}
	return token, nil
}

// Verify checks an access token's signature (EdDSA only, by a key of the
// JWKS), issuer, expiry and lifetime (exp − iat at most AccessTTL), that it
// names no crit header, and returns its claims. It reads the DB only when
// the kid is unknown, at most once a second, to catch another instance's
// rotation. It does not know about revoked sessions: that is the caller's.
func (k *Keyring) Verify(ctx context.Context, token string) (Claims, error) {
	if len(token) > maxTokenLen {
		return Claims{}, fmt.Errorf("%w: longer than %d bytes", ErrInvalidToken, maxTokenLen)
	}
	// A client sends the same token with every request for up to a day, and
	// the signature check is most of the cost of an authenticated request, so
	// tokens that verified are remembered by their hash. The cache belongs to
	// the key set: a rotation or retirement starts an empty one.
	ks := k.keys.Load()
	sum := sha256.Sum256([]byte(token))
	if c, ok := ks.verified.get(sum); ok {
		if !k.now().Before(c.ExpiresAt.Add(Leeway)) {
			return Claims{}, fmt.Errorf("%w: %w", ErrInvalidToken, jwt.ErrTokenExpired)
		}
		c.AMR = slices.Clone(c.AMR)
		return c, nil
	}
	c, err := k.verify(ctx, token)
	if err != nil {
		return Claims{}, err
	}
	ks.verified.put(sum, c)
	c.AMR = slices.Clone(c.AMR)
	return c, nil
}

// verify is Verify without the cache.
func (k *Keyring) verify(ctx context.Context, token string) (Claims, error) {
	var wc wireClaims
	_, err := k.parser.ParseWithClaims(token, &wc, func(t *jwt.Token) (any, error) {
		// The parser already enforces the method list; this guards against a
		// change of parser options letting another algorithm reach our key.
		if t.Method != jwt.SigningMethodEdDSA {
			return nil, fmt.Errorf("unexpected signing method %q", t.Method.Alg())
		}
		// RFC 7515 §4.1.11: a recipient must refuse a crit extension it does
		// not understand, and authd understands none.
		if _, ok := t.Header["crit"]; ok {
			return nil, errors.New("crit header: no extension is understood")
		}
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, errors.New("no kid in header")
		}
		return k.publicKey(ctx, kid)
	})
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	c, err := wc.claims()
	if err != nil {
		return Claims{}, err
	}
	// A token living longer than authd issues them was not made by Issue:
	// a leaked key, or a bug, must not mint tokens that outlive revocations.
	if life := c.ExpiresAt.Sub(c.IssuedAt); life > k.accessTTL {
		return Claims{}, fmt.Errorf("%w: lifetime %v exceeds %v", ErrInvalidToken, life, k.accessTTL)
	}
	return c, nil
}

// verifiedCacheSize bounds the memory of the cache (about 300 bytes a token);
// a full cache is emptied rather than managed, which costs one signature
// check per live token each time it fills.
const verifiedCacheSize = 1 << 16

// verifiedCache maps the SHA-256 of a token that verified to its claims. Only
// tokens we signed get in, so a flood of forged tokens cannot churn it.
type verifiedCache struct {
	mu sync.RWMutex
	m  map[[sha256.Size]byte]Claims
}

func newVerifiedCache() *verifiedCache {
	return &verifiedCache{m: make(map[[sha256.Size]byte]Claims)}
}

func (v *verifiedCache) get(sum [sha256.Size]byte) (Claims, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	c, ok := v.m[sum]
	return c, ok
}

func (v *verifiedCache) put(sum [sha256.Size]byte, c Claims) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.m) >= verifiedCacheSize {
		clear(v.m)
	}
	v.m[sum] = c
}

func (wc *wireClaims) claims() (Claims, error) {
	user, err := uuid.Parse(wc.Subject)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: sub is not a UUID", ErrInvalidToken)
	}
	tenant, err := uuid.Parse(wc.TenantID)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: tid is not a UUID", ErrInvalidToken)
	}
	session, err := uuid.Parse(wc.SessionID)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: sid is not a UUID", ErrInvalidToken)
	}
	if wc.IssuedAt == nil || wc.ID == "" {
		return Claims{}, fmt.Errorf("%w: missing iat or jti", ErrInvalidToken)
	}
	var authTime time.Time
	if wc.AuthTime != nil {
		// Issue never signs a proof later than the token: one would be a
		// token made elsewhere, claiming a freshness it never had.
		if wc.AuthTime.After(wc.IssuedAt.Time) {
			return Claims{}, fmt.Errorf("%w: auth_time is after iat", ErrInvalidToken)
		}
		authTime = wc.AuthTime.Time
	}
	return Claims{
		UserID:    user,
		TenantID:  tenant,
		SessionID: session,
		AMR:       wc.AMR,
		IssuedAt:  wc.IssuedAt.Time,
		ExpiresAt: wc.ExpiresAt.Time,
		ID:        wc.ID,
		AuthTime:  authTime,
	}, nil
}

// publicKey finds the verification key for kid, reading the keys again when
// it is unknown, unless that was done less than a second ago.
func (k *Keyring) publicKey(ctx context.Context, kid string) (ed25519.PublicKey, error) {
	if pub, ok := k.keys.Load().public[kid]; ok {
		return pub, nil
	}
	k.missMu.Lock()
	defer k.missMu.Unlock()
	// Another caller may have reloaded while we waited for the lock.
	if pub, ok := k.keys.Load().public[kid]; ok {
		return pub, nil
	}
	if now := time.Now(); now.Sub(k.lastMissReload) >= unknownKIDReloadEvery {
		k.lastMissReload = now
		if err := k.Reload(ctx); err != nil {
			return nil, fmt.Errorf("unknown kid, reload failed: %w", err)
		}
		if pub, ok := k.keys.Load().public[kid]; ok {
			return pub, nil
		}
	}
	return nil, errors.New("unknown kid")
}
