package googleauth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/authd/authd/internal/googleauth"
	"github.com/authd/authd/internal/testenv"
)

func newClock() *testenv.Clock { return testenv.NewClock(time.Now().Truncate(time.Second)) }

// signer is one RSA key of the JWKS server.
type signer struct {
	kid string
	key *rsa.PrivateKey
}

func newSigner(t *testing.T, kid string) signer {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return signer{kid: kid, key: k}
}

func jwkOf(s signer) map[string]any {
	pub := s.key.PublicKey
	return map[string]any{
		"kty": "RSA", "use": "sig", "alg": "RS256", "kid": s.kid,
		"n": base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}
}

// jwksServer is Google's certs endpoint on loopback: it publishes the keys
// it is given, with the headers it is given, and counts its fetches.
type jwksServer struct {
	*httptest.Server
	mu      sync.Mutex
	keys    []map[string]any
	header  http.Header
	status  int
	fetches atomic.Int64
}

func newJWKSServer(t *testing.T, cacheControl string, signers ...signer) *jwksServer {
	t.Helper()
	s := &jwksServer{status: http.StatusOK, header: http.Header{}}
	if cacheControl != "" {
		s.header.Set("Cache-Control", cacheControl)
	}
	s.publish(signers...)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		defer s.mu.Unlock()
		for k, v := range s.header {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(s.status)
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": s.keys})
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) publish(signers ...signer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = nil
	for _, sg := range signers {
		s.keys = append(s.keys, jwkOf(sg))
	}
}

func (s *jwksServer) set(status int, header http.Header) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.header = status, header
}

const clientID = "1234-abc.apps.googleusercontent.com"

func goodClaims(now time.Time) jwt.MapClaims {
	return jwt.MapClaims{
		"iss": "https://accounts.google.com", "aud": clientID, "azp": clientID,
		"sub": "110169484474386276334", "email": "ada@example.com", "email_verified": true,
		"name": "Ada Lovelace", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}
}

func sign(t *testing.T, s signer, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = s.kid
	out, err := tok.SignedString(s.key)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func newVerifier(t *testing.T, url string, clk *testenv.Clock, o googleauth.KeySetOptions) *googleauth.Verifier {
	t.Helper()
	o.Now = clk.Now
	v, err := googleauth.New(googleauth.Options{JWKSURL: url, ClientIDs: []string{"other.apps.googleusercontent.com", clientID}, Keys: o})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerifyAcceptsGoodTokens(t *testing.T) {
	t.Parallel()
	clk := newClock()
	k := newSigner(t, "k1")
	srv := newJWKSServer(t, "public, max-age=3600", k)
	v := newVerifier(t, srv.URL, clk, googleauth.KeySetOptions{})
	now := clk.Now()
	cases := map[string]func(jwt.MapClaims){
		"as Google sends it":             func(jwt.MapClaims) {},
		"issuer without the scheme":      func(c jwt.MapClaims) { c["iss"] = "accounts.google.com" },
		`email_verified "true"`:          func(c jwt.MapClaims) { c["email_verified"] = "true" },
		"audience in a list":             func(c jwt.MapClaims) { c["aud"] = []string{"someone-else", clientID} },
		"expired within the leeway":      func(c jwt.MapClaims) { c["exp"] = now.Add(-30 * time.Second).Unix() },
		"issued just ahead (clock skew)": func(c jwt.MapClaims) { c["iat"] = now.Add(30 * time.Second).Unix() },
		"no name":                        func(c jwt.MapClaims) { delete(c, "name") },
	}
	for name, edit := range cases {
		c := goodClaims(now)
		edit(c)
		id, err := v.Verify(context.Background(), sign(t, k, c))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if id.Subject != "110169484474386276334" || id.Email != "ada@example.com" {
			t.Errorf("%s: identity %+v", name, id)
		}
	}
	if n := srv.fetches.Load(); n != 1 {
		t.Errorf("%d JWKS fetches for %d tokens; want 1 (max-age=3600)", n, len(cases))
	}
}

func TestVerifyRefusesBadTokens(t *testing.T) {
	t.Parallel()
	clk := newClock()
	k, stranger := newSigner(t, "k1"), newSigner(t, "k1")
	srv := newJWKSServer(t, "public, max-age=3600", k)
	v := newVerifier(t, srv.URL, clk, googleauth.KeySetOptions{})
	now := clk.Now()
	with := func(edit func(jwt.MapClaims)) string {
		c := goodClaims(now)
		edit(c)
		return sign(t, k, c)
	}
	good := with(func(jwt.MapClaims) {})
	parts := strings.Split(good, ".")
	forgedKid := func(kid string) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, goodClaims(now))
		tok.Header["kid"] = kid
		s, _ := tok.SignedString(k.key)
		return s
	}
	hs256 := func() string {
		// The algorithm-confusion attack: HMAC keyed with the public key.
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, goodClaims(now))
		tok.Header["kid"] = k.kid
		pub, _ := json.Marshal(jwkOf(k))
		s, _ := tok.SignedString(pub)
		return s
	}()
	otherAlg := func(m jwt.SigningMethod) string {
		tok := jwt.NewWithClaims(m, goodClaims(now))
		tok.Header["kid"] = k.kid
		s, err := tok.SignedString(k.key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	none := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodNone, goodClaims(now))
		tok.Header["kid"] = k.kid
		s, _ := tok.SignedString(jwt.UnsafeAllowNoneSignatureType)
		return s
	}()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	es256 := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodES256, goodClaims(now))
		tok.Header["kid"] = k.kid
		s, _ := tok.SignedString(ec)
		return s
	}()
	tamperedPayload := func() string {
		c := goodClaims(now)
		c["email"] = "mallory@example.com"
		body, _ := json.Marshal(c)
		return parts[0] + "." + base64.RawURLEncoding.EncodeToString(body) + "." + parts[2]
	}()
	cases := map[string]string{
		"missing":                   "",
		"blank":                     "   ",
		"not a JWT":                 "not-a-token",
		"two segments":              parts[0] + "." + parts[1],
		"garbage segments":          "a.b.c",
		"expired":                   with(func(c jwt.MapClaims) { c["exp"] = now.Add(-10 * time.Minute).Unix() }),
		"no exp":                    with(func(c jwt.MapClaims) { delete(c, "exp") }),
		"no iat":                    with(func(c jwt.MapClaims) { delete(c, "iat") }),
		"issued in the future":      with(func(c jwt.MapClaims) { c["iat"] = now.Add(10 * time.Minute).Unix() }),
		"not valid yet":             with(func(c jwt.MapClaims) { c["nbf"] = now.Add(10 * time.Minute).Unix() }),
		"expiring in a year":        with(func(c jwt.MapClaims) { c["exp"] = now.Add(365 * 24 * time.Hour).Unix() }),
		"wrong audience":            with(func(c jwt.MapClaims) { c["aud"] = "someone-else.apps.googleusercontent.com" }),
		"no audience":               with(func(c jwt.MapClaims) { delete(c, "aud") }),
		"wrong issuer":              with(func(c jwt.MapClaims) { c["iss"] = "https://evil.example.com" }),
		"issuer http://":            with(func(c jwt.MapClaims) { c["iss"] = "http://accounts.google.com" }),
		"no issuer":                 with(func(c jwt.MapClaims) { delete(c, "iss") }),
		"email not verified":        with(func(c jwt.MapClaims) { c["email_verified"] = false }),
		`email_verified "false"`:    with(func(c jwt.MapClaims) { c["email_verified"] = "false" }),
		"email_verified missing":    with(func(c jwt.MapClaims) { delete(c, "email_verified") }),
		"email_verified 1":          with(func(c jwt.MapClaims) { c["email_verified"] = 1 }),
		"no email":                  with(func(c jwt.MapClaims) { delete(c, "email") }),
		"no subject":                with(func(c jwt.MapClaims) { delete(c, "sub") }),
		"subject with spaces":       with(func(c jwt.MapClaims) { c["sub"] = "a b" }),
		"signed by another key":     sign(t, stranger, goodClaims(now)),
		"payload changed":           tamperedPayload,
		"signature stripped":        parts[0] + "." + parts[1] + ".",
		"unknown kid":               forgedKid("not-a-google-kid"),
		"no kid":                    forgedKid(""),
		"alg none":                  none,
		"HS256 with the public key": hs256,
		"RS512":                     otherAlg(jwt.SigningMethodRS512),
		"PS256":                     otherAlg(jwt.SigningMethodPS256),
		"ES256":                     es256,
	}
	for name, tok := range cases {
		_, err := v.Verify(context.Background(), tok)
		if !errors.Is(err, googleauth.ErrInvalidToken) || errors.Is(err, googleauth.ErrKeysUnavailable) {
			t.Errorf("%s: err = %v; want ErrInvalidToken", name, err)
		}
		if err != nil && tok != "" && len(tok) > 20 && strings.Contains(err.Error(), tok) {
			t.Errorf("%s: the error repeats the token", name)
		}
	}
	if _, err := v.Verify(context.Background(), good); err != nil {
		t.Fatalf("the good token: %v", err)
	}
	// The forged kids cost one refetch at most.
	if n := srv.fetches.Load(); n > 2 {
		t.Errorf("%d JWKS fetches; want at most 2", n)
	}
}

func TestKeysAreKeptAsCacheControlSays(t *testing.T) {
	t.Parallel()
	k := newSigner(t, "k1")
	cases := []struct {
		name   string
		header http.Header
		fresh  time.Duration // still cached after this
		stale  time.Duration // fetched again after this
	}{
		{"max-age", http.Header{"Cache-Control": {"public, max-age=600, must-revalidate, no-transform"}}, 590 * time.Second, 601 * time.Second},
		{"max-age less Age", http.Header{"Cache-Control": {"max-age=600"}, "Age": {"500"}}, 90 * time.Second, 101 * time.Second},
		{"no-store", http.Header{"Cache-Control": {"no-store"}}, 50 * time.Second, 61 * time.Second},              // MinTTL
		{"no-cache", http.Header{"Cache-Control": {"no-cache, max-age=600"}}, 50 * time.Second, 61 * time.Second}, // MinTTL
		{"max-age=0", http.Header{"Cache-Control": {"max-age=0"}}, 50 * time.Second, 61 * time.Second},            // MinTTL
		{"huge max-age", http.Header{"Cache-Control": {"max-age=99999999999"}}, 23 * time.Hour, 24*time.Hour + time.Second},
		{"Expires", http.Header{"Date": {"Mon, 02 Jan 2006 15:04:05 GMT"}, "Expires": {"Mon, 02 Jan 2006 15:14:05 GMT"}}, 590 * time.Second, 601 * time.Second},
		{"no cache headers", http.Header{}, 59 * time.Minute, 61 * time.Minute}, // DefaultTTL
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clk := newClock()
			srv := newJWKSServer(t, "", k)
			srv.set(http.StatusOK, tc.header)
			v := newVerifier(t, srv.URL, clk, googleauth.KeySetOptions{})
			verify := func() {
				t.Helper()
				if _, err := v.Verify(context.Background(), sign(t, k, goodClaims(clk.Now()))); err != nil {
					t.Fatal(err)
				}
			}
			verify()
			verify()
			start := clk.Now()
			clk.Advance(tc.fresh)
			verify()
			if n := srv.fetches.Load(); n != 1 {
				t.Fatalf("%d fetches within %s; want 1", n, tc.fresh)
			}
			clk.Advance(start.Add(tc.stale).Sub(clk.Now()))
			verify()
			verify()
			if n := srv.fetches.Load(); n != 2 {
				t.Fatalf("%d fetches after %s; want 2", n, tc.stale)
			}
		})
	}
}

func TestKeyRotationIsPickedUpWithOneFetch(t *testing.T) {
	t.Parallel()
	clk := newClock()
	old, next := newSigner(t, "old"), newSigner(t, "new")
	srv := newJWKSServer(t, "public, max-age=21600", old)
	v := newVerifier(t, srv.URL, clk, googleauth.KeySetOptions{})
	if _, err := v.Verify(context.Background(), sign(t, old, goodClaims(clk.Now()))); err != nil {
		t.Fatal(err)
	}
	srv.publish(old, next)
	clk.Advance(time.Second)
	for i := range 5 {
		if _, err := v.Verify(context.Background(), sign(t, next, goodClaims(clk.Now()))); err != nil {
			t.Fatalf("token %d with the new kid: %v", i, err)
		}
	}
	if _, err := v.Verify(context.Background(), sign(t, old, goodClaims(clk.Now()))); err != nil {
		t.Fatalf("the old key, still published: %v", err)
	}
	if n := srv.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches; want 2 (the first, and one for the new kid)", n)
	}
	// The old key retired: tokens it signed are refused once the copy is refetched.
	srv.publish(next)
	clk.Advance(6 * time.Hour)
	if _, err := v.Verify(context.Background(), sign(t, old, goodClaims(clk.Now()))); !errors.Is(err, googleauth.ErrInvalidToken) {
		t.Fatalf("a retired key: %v", err)
	}
}

func TestUnknownKIDRefetchIsRateLimited(t *testing.T) {
	t.Parallel()
	clk := newClock()
	k := newSigner(t, "k1")
	srv := newJWKSServer(t, "public, max-age=21600", k)
	v := newVerifier(t, srv.URL, clk, googleauth.KeySetOptions{UnknownKIDInterval: 30 * time.Second})
	forged := func(kid string) string {
		return sign(t, signer{kid: kid, key: k.key}, goodClaims(clk.Now()))
	}
	if _, err := v.Verify(context.Background(), sign(t, k, goodClaims(clk.Now()))); err != nil {
		t.Fatal(err)
	}
	// Many forged kids, one after another and at once.
	for i := range 50 {
		if _, err := v.Verify(context.Background(), forged(fmt.Sprintf("forged-%d", i))); !errors.Is(err, googleauth.ErrUnknownKey) {
			t.Fatalf("forged kid: %v", err)
		}
	}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := v.Verify(context.Background(), forged(fmt.Sprintf("concurrent-%d", i)))
			if !errors.Is(err, googleauth.ErrUnknownKey) {
				t.Errorf("forged kid: %v", err)
			}
		}()
	}
	wg.Wait()
	if n := srv.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches for 100 forged kids; want 2 (the first, one refetch)", n)
	}
	// Known kids are not held back meanwhile.
	if _, err := v.Verify(context.Background(), sign(t, k, goodClaims(clk.Now()))); err != nil {
		t.Fatal(err)
	}
	// A genuinely new key inside the interval waits for the interval...
	next := newSigner(t, "k2")
	srv.publish(k, next)
	if _, err := v.Verify(context.Background(), sign(t, next, goodClaims(clk.Now()))); !errors.Is(err, googleauth.ErrUnknownKey) {
		t.Fatalf("a new kid within the interval: %v", err)
	}
	// ...and is found after it.
	clk.Advance(31 * time.Second)
	if _, err := v.Verify(context.Background(), sign(t, next, goodClaims(clk.Now()))); err != nil {
		t.Fatalf("a new kid after the interval: %v", err)
	}
	if n := srv.fetches.Load(); n != 3 {
		t.Fatalf("%d fetches; want 3", n)
	}
}

func TestConcurrentFirstUsesShareOneFetch(t *testing.T) {
	t.Parallel()
	clk := newClock()
	k := newSigner(t, "k1")
	srv := newJWKSServer(t, "max-age=3600", k)
	v := newVerifier(t, srv.URL, clk, googleauth.KeySetOptions{})
	tok := sign(t, k, goodClaims(clk.Now()))
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := v.Verify(context.Background(), tok); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := srv.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches; want 1", n)
	}
}

func TestUnreachableKeys(t *testing.T) {
	t.Parallel()
	clk := newClock()
	k := newSigner(t, "k1")
	srv := newJWKSServer(t, "max-age=600", k)
	srv.set(http.StatusInternalServerError, http.Header{})
	v := newVerifier(t, srv.URL, clk, googleauth.KeySetOptions{})
	tok := func() string { return sign(t, k, goodClaims(clk.Now())) }

	// Never fetched: unavailable, and retried only after RetryAfterFailure.
	for range 10 {
		if _, err := v.Verify(context.Background(), tok()); !errors.Is(err, googleauth.ErrKeysUnavailable) || errors.Is(err, googleauth.ErrInvalidToken) {
			t.Fatalf("err = %v; want ErrKeysUnavailable", err)
		}
	}
	if n := srv.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches while failing; want 1", n)
	}
	if err := v.TakeFetchError(); err == nil || v.TakeFetchError() != nil {
		t.Fatalf("TakeFetchError: %v, then not nil", err)
	}
	// A token that is malformed needs no keys to be refused.
	if _, err := v.Verify(context.Background(), "garbage"); !errors.Is(err, googleauth.ErrInvalidToken) {
		t.Fatalf("garbage while unavailable: %v", err)
	}

	clk.Advance(6 * time.Second)
	srv.set(http.StatusOK, http.Header{"Cache-Control": {"max-age=600"}})
	if _, err := v.Verify(context.Background(), tok()); err != nil {
		t.Fatalf("after recovery: %v", err)
	}

	// Expired and Google down: the keys in hand serve for MaxStale (1 h).
	srv.set(http.StatusServiceUnavailable, http.Header{})
	clk.Advance(10*time.Minute + time.Second)
	before := srv.fetches.Load()
	for range 5 {
		if _, err := v.Verify(context.Background(), tok()); err != nil {
			t.Fatalf("stale keys while the JWKS is down: %v", err)
		}
	}
	if n := srv.fetches.Load() - before; n != 1 {
		t.Fatalf("%d fetches while down; want 1 per RetryAfterFailure", n)
	}
	if v.TakeFetchError() == nil {
		t.Fatal("the failure to refresh was not reported")
	}
	clk.Advance(time.Hour)
	if _, err := v.Verify(context.Background(), tok()); !errors.Is(err, googleauth.ErrKeysUnavailable) {
		t.Fatalf("keys past MaxStale: %v", err)
	}
}

func TestParseKeysKeepsOnlyRSASigningKeys(t *testing.T) {
	t.Parallel()
	good := newSigner(t, "good")
	short, _ := rsa.GenerateKey(rand.Reader, 1024)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecJWK := map[string]any{
		"kty": "EC", "crv": "P-256", "kid": "ec", "use": "sig",
		"x": base64.RawURLEncoding.EncodeToString(ec.X.FillBytes(make([]byte, 32))),
		"y": base64.RawURLEncoding.EncodeToString(ec.Y.FillBytes(make([]byte, 32))),
	}
	enc, noKid, rs512, dup := jwkOf(newSigner(t, "enc")), jwkOf(newSigner(t, "")), jwkOf(newSigner(t, "rs512")), jwkOf(newSigner(t, "good"))
	enc["use"] = "enc"
	rs512["alg"] = "RS512"
	doc, _ := json.Marshal(map[string]any{"keys": []any{
		jwkOf(good), jwkOf(signer{kid: "short", key: short}), ecJWK, enc, noKid, rs512, dup,
		map[string]any{"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
	}})
	keys, err := googleauth.ParseKeys(doc)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys["good"] == nil || keys["good"].N.Cmp(good.key.N) != 0 {
		t.Fatalf("keys: %v", keys)
	}
	for _, bad := range []string{`{"keys":[]}`, `{}`, `not json`, `{"keys":[{"kty":"oct","k":"AAAA","kid":"x"}]}`} {
		if _, err := googleauth.ParseKeys([]byte(bad)); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

func TestNewNeedsAClientIDAndAURL(t *testing.T) {
	if _, err := googleauth.New(googleauth.Options{JWKSURL: "http://127.0.0.1:1/certs", ClientIDs: []string{" ", ""}}); err == nil {
		t.Error("no client ID accepted")
	}
	if _, err := googleauth.New(googleauth.Options{ClientIDs: []string{clientID}}); err == nil {
		t.Error("no URL accepted")
	}
}
