package testenv

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// GoogleClientID is the OAuth client the GoogleIdP's tokens are issued to.
const GoogleClientID = "1234567890-authd.apps.googleusercontent.com"

// GoogleKey is one of Google's RSA signing keys.
type GoogleKey struct {
	Kid string
	Key *rsa.PrivateKey
}

// NewGoogleKey draws a signing key with the key id kid.
func NewGoogleKey(t testing.TB, kid string) GoogleKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return GoogleKey{Kid: kid, Key: k}
}

// GoogleIdP plays Google for sign-in: a JWKS server on loopback that
// publishes its keys as Google's certs endpoint does, counting its fetches,
// and the signer of ID tokens under them.
type GoogleIdP struct {
	srv     *httptest.Server
	mu      sync.Mutex
	keys    []GoogleKey // published
	current GoogleKey   // signs new tokens
	fetches atomic.Int64
}

// NewGoogleIdP starts a GoogleIdP with one key, until the test ends.
func NewGoogleIdP(t testing.TB) *GoogleIdP {
	t.Helper()
	g := &GoogleIdP{current: NewGoogleKey(t, "google-1")}
	g.keys = []GoogleKey{g.current}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.fetches.Add(1)
		g.mu.Lock()
		defer g.mu.Unlock()
		var set []map[string]any
		for _, k := range g.keys {
			set = append(set, map[string]any{
				"kty": "RSA", "use": "sig", "alg": "RS256", "kid": k.Kid,
				"n": base64.RawURLEncoding.EncodeToString(k.Key.N.Bytes()),
				"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.Key.E)).Bytes()),
			})
		}
		// What Google's certs endpoint sends.
		w.Header().Set("Cache-Control", "public, max-age=21600, must-revalidate, no-transform")
		w.Header().Set("Content-Type", "application/json; charset=UTF-8")
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": set})
	}))
	t.Cleanup(g.srv.Close)
	return g
}

// URL is the JWKS endpoint's address (GOOGLE_JWKS_URL).
func (g *GoogleIdP) URL() string { return g.srv.URL + "/oauth2/v3/certs" }

// Fetches is how many times the keys were fetched.
func (g *GoogleIdP) Fetches() int64 { return g.fetches.Load() }

// Current is the key new tokens are signed with.
func (g *GoogleIdP) Current() GoogleKey {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.current
}

// Rotate publishes a new key beside the current one and signs with it.
func (g *GoogleIdP) Rotate(t testing.TB, kid string) {
	k := NewGoogleKey(t, kid)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.keys = append(g.keys, k)
	g.current = k
}

// Claims are those of a good ID token for the Google account sub with a
// verified email, valid for an hour from now.
func (g *GoogleIdP) Claims(sub, email string) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"iss": "https://accounts.google.com", "azp": GoogleClientID, "aud": GoogleClientID,
		"sub": sub, "email": email, "email_verified": true, "name": "Grace Hopper",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}
}

// Sign signs claims with the current key.
func (g *GoogleIdP) Sign(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	return GoogleSignWith(t, g.Current(), claims)
}

// Token is a good ID token for the Google account sub with email.
func (g *GoogleIdP) Token(t testing.TB, sub, email string) string {
	return g.Sign(t, g.Claims(sub, email))
}

// GoogleSignWith signs claims with k, published or not.
func GoogleSignWith(t testing.TB, k GoogleKey, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = k.Kid
	s, err := tok.SignedString(k.Key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
