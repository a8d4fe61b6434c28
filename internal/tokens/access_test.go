package tokens

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

func testClaims() Claims {
	return Claims{
		UserID:    uuid.New(),
		TenantID:  uuid.New(),
		SessionID: uuid.New(),
		AMR:       []string{"pwd", "mfa"},
	}
}

func headerKID(t *testing.T, token string) string {
	t.Helper()
	tok, _, err := jwt.NewParser().ParseUnverified(token, jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	kid, _ := tok.Header["kid"].(string)
	return kid
}

// signWith makes a token the way Issue does, but with any key and kid.
func signWith(k *Keyring, kid string, key ed25519.PrivateKey, c Claims) (string, error) {
	if c.IssuedAt.IsZero() {
		c.IssuedAt = k.now()
	}
	if c.ExpiresAt.IsZero() {
		c.ExpiresAt = c.IssuedAt.Add(k.accessTTL)
	}
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, wireClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    k.issuer,
			Subject:   c.UserID.String(),
			IssuedAt:  jwt.NewNumericDate(c.IssuedAt),
			ExpiresAt: jwt.NewNumericDate(c.ExpiresAt),
			ID:        "jti",
		},
		TenantID:  c.TenantID.String(),
		SessionID: c.SessionID.String(),
		AMR:       c.AMR,
	})
	t.Header["kid"] = kid
	return t.SignedString(key)
}

func TestIssueVerifyRoundTrip(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c := testClaims()
	token, err := f.k.Issue(c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.k.Verify(context.Background(), token)
	if err != nil {
		t.Fatal(err)
	}
	now := f.clock.Now()
	if got.UserID != c.UserID || got.TenantID != c.TenantID || got.SessionID != c.SessionID {
		t.Fatalf("ids: got %+v, want %+v", got, c)
	}
	if !slices.Equal(got.AMR, c.AMR) {
		t.Fatalf("amr = %v, want %v", got.AMR, c.AMR)
	}
	if !got.IssuedAt.Equal(now) || !got.ExpiresAt.Equal(now.Add(24*time.Hour)) {
		t.Fatalf("iat %v exp %v, want %v and 24 h later", got.IssuedAt, got.ExpiresAt, now)
	}
	if _, err := uuid.Parse(got.ID); err != nil {
		t.Fatalf("jti %q is not a UUID: %v", got.ID, err)
	}

	// The payload carries exactly the contract's claims, and the header the kid.
	parts := strings.Split(token, ".")
	var header, payload map[string]any
	decodeSegment(t, parts[0], &header)
	decodeSegment(t, parts[1], &payload)
	if header["alg"] != "EdDSA" || header["kid"] != f.k.SigningKID() {
		t.Fatalf("header = %v", header)
	}
	var keys []string
	for key := range payload {
		keys = append(keys, key)
	}
	slices.Sort(keys)
	if want := []string{"amr", "exp", "iat", "iss", "jti", "sid", "sub", "tid"}; !slices.Equal(keys, want) {
		t.Fatalf("claims %v, want %v", keys, want)
	}
	if payload["iss"] != testIssuer || payload["sub"] != c.UserID.String() ||
		payload["tid"] != c.TenantID.String() || payload["sid"] != c.SessionID.String() {
		t.Fatalf("payload = %v", payload)
	}
	if exp, iat := payload["exp"].(float64), payload["iat"].(float64); exp-iat != 86400 {
		t.Fatalf("exp - iat = %v, want 86400", exp-iat)
	}

	// Given times and jti are kept.
	c.IssuedAt = now.Add(-time.Hour)
	c.ExpiresAt = now.Add(time.Hour)
	c.ID = "given-id"
	token, err = f.k.Issue(c)
	if err != nil {
		t.Fatal(err)
	}
	got, err = f.k.Verify(context.Background(), token)
	if err != nil {
		t.Fatal(err)
	}
	if !got.IssuedAt.Equal(c.IssuedAt) || !got.ExpiresAt.Equal(c.ExpiresAt) || got.ID != "given-id" {
		t.Fatalf("given times and id: got %+v", got)
	}

	// No AMR is an empty list, not null.
	c.AMR = nil
	token, err = f.k.Issue(c)
	if err != nil {
		t.Fatal(err)
	}
	decodeSegment(t, strings.Split(token, ".")[1], &payload)
	if amr, ok := payload["amr"].([]any); !ok || len(amr) != 0 {
		t.Fatalf("amr of no methods = %#v, want []", payload["amr"])
	}
}

func TestIssueRequiresIDs(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, c := range []Claims{
		{TenantID: uuid.New(), SessionID: uuid.New()},
		{UserID: uuid.New(), SessionID: uuid.New()},
		{UserID: uuid.New(), TenantID: uuid.New()},
	} {
		if _, err := f.k.Issue(c); err == nil {
			t.Fatalf("Issue(%+v) succeeded without an id", c)
		}
	}
}

func decodeSegment(t *testing.T, seg string, v any) {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

func encodeSegment(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestVerifyRejects(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	c := testClaims()
	good, err := f.k.Issue(c)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, ".")
	kid := f.k.SigningKID()
	pub := f.k.keys.Load().public[kid]

	var payload map[string]any
	decodeSegment(t, parts[1], &payload)
	payload["sub"] = uuid.NewString()
	tamperedPayload := parts[0] + "." + encodeSegment(t, payload) + "." + parts[2]

	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sig[0] ^= 1
	tamperedSig := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)

	noneToken := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims(payload))
		tok.Header["kid"] = kid
		s, err := tok.SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()
	// alg "none" spelled so that a case-insensitive check would let it through.
	noneHeader := encodeSegment(t, map[string]any{"alg": "None", "kid": kid}) + "." + parts[1] + "."

	hmacWith := func(secret []byte) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(payload))
		tok.Header["kid"] = kid
		s, err := tok.SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	// Signed by a key the keyring never had, under its real kid and an unknown one.
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	strangerSameKID, err := signWith(f.k, kid, stranger, c)
	if err != nil {
		t.Fatal(err)
	}
	strangerKID, err := signWith(f.k, thumbprint(stranger.Public().(ed25519.PublicKey)), stranger, c)
	if err != nil {
		t.Fatal(err)
	}
	noKID, err := signWith(f.k, "", f.k.signingKey(), c)
	if err != nil {
		t.Fatal(err)
	}

	otherIssuer := openKeyringIssuer(t, f, "https://evil.example")
	wrongIssuer, err := otherIssuer.Issue(c)
	if err != nil {
		t.Fatal(err)
	}

	expiredClaims := c
	expiredClaims.IssuedAt = f.clock.Now().Add(-25 * time.Hour)
	expired, err := f.k.Issue(expiredClaims)
	if err != nil {
		t.Fatal(err)
	}
	futureClaims := c
	futureClaims.IssuedAt = f.clock.Now().Add(time.Hour)
	future, err := f.k.Issue(futureClaims)
	if err != nil {
		t.Fatal(err)
	}
	noExp := signRaw(t, f.k.signingKey(), map[string]any{"alg": "EdDSA", "kid": kid},
		map[string]any{"iss": testIssuer, "sub": c.UserID.String(), "tid": c.TenantID.String(), "sid": c.SessionID.String(),
			"iat": f.clock.Now().Unix(), "jti": "x", "amr": []string{}})
	badSub := signRaw(t, f.k.signingKey(), map[string]any{"alg": "EdDSA", "kid": kid},
		map[string]any{"iss": testIssuer, "sub": "root", "tid": c.TenantID.String(), "sid": c.SessionID.String(),
			"iat": f.clock.Now().Unix(), "exp": f.clock.Now().Add(time.Hour).Unix(), "jti": "x", "amr": []string{}})

	for name, tok := range map[string]string{
		"empty":                        "",
		"garbage":                      "not.a.jwt",
		"two segments":                 parts[0] + "." + parts[1],
		"oversize":                     good + strings.Repeat("A", maxTokenLen),
		"tampered payload":             tamperedPayload,
		"tampered signature":           tamperedSig,
		"no signature":                 parts[0] + "." + parts[1] + ".",
		"alg none":                     noneToken,
		"alg None":                     noneHeader,
		"HS256 with raw public key":    hmacWith(pub),
		"HS256 with JWKS":              hmacWith(f.k.JWKS()),
		"stranger key with our kid":    strangerSameKID,
		"unknown kid":                  strangerKID,
		"no kid":                       noKID,
		"wrong issuer":                 wrongIssuer,
		"expired":                      expired,
		"issued in the future":         future,
		"no exp":                       noExp,
		"sub not a UUID":               badSub,
		"padding in signature segment": good + "==",
	} {
		_, err := f.k.Verify(ctx, tok)
		if !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: err = %v, want ErrInvalidToken", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
}

func TestVerifyExpiryLeeway(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	token, err := f.k.Issue(testClaims())
	if err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(DefaultAccessTTL + Leeway - time.Second)
	if _, err := f.k.Verify(ctx, token); err != nil {
		t.Fatalf("within the leeway after exp: %v", err)
	}
	f.clock.Advance(2 * time.Second)
	_, err = f.k.Verify(ctx, token)
	if !errors.Is(err, ErrInvalidToken) || !errors.Is(err, jwt.ErrTokenExpired) {
		t.Fatalf("past the leeway: err = %v, want ErrInvalidToken wrapping jwt.ErrTokenExpired", err)
	}
}

// openKeyringIssuer opens another keyring on f's database with another issuer.
func openKeyringIssuer(t *testing.T, f *fixture, issuer string) *Keyring {
	t.Helper()
	k, err := Open(context.Background(), f.pool, f.sealer, Options{Issuer: issuer, Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// signRaw signs any header and payload, for tokens Issue would never make.
func signRaw(t *testing.T, key ed25519.PrivateKey, header, payload map[string]any) string {
	t.Helper()
	input := encodeSegment(t, header) + "." + encodeSegment(t, payload)
	return input + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(key, []byte(input)))
}

func TestVerifyCache(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	c := testClaims()
	token, err := f.k.Issue(c)
	if err != nil {
		t.Fatal(err)
	}
	first, err := f.k.Verify(ctx, token)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := f.k.keys.Load().verified.get(sha256.Sum256([]byte(token))); !ok {
		t.Fatal("a verified token is not cached")
	}
	first.AMR[0] = "changed by the caller"
	second, err := f.k.Verify(ctx, token)
	if err != nil {
		t.Fatal(err)
	}
	if second.UserID != c.UserID || !slices.Equal(second.AMR, c.AMR) {
		t.Fatalf("cached claims %+v, want %+v", second, c)
	}

	// Forged and tampered tokens stay out of it.
	parts := strings.Split(token, ".")
	tampered := parts[0] + "." + parts[1] + "x." + parts[2]
	if _, err := f.k.Verify(ctx, tampered); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("tampered: %v", err)
	}
	if _, ok := f.k.keys.Load().verified.get(sha256.Sum256([]byte(tampered))); ok {
		t.Fatal("a token that failed was cached")
	}

	// A cached token still expires.
	f.clock.Advance(DefaultAccessTTL + Leeway)
	_, err = f.k.Verify(ctx, token)
	if !errors.Is(err, ErrInvalidToken) || !errors.Is(err, jwt.ErrTokenExpired) {
		t.Fatalf("cached token past exp: err = %v, want ErrInvalidToken wrapping jwt.ErrTokenExpired", err)
	}

	// A full cache starts over instead of growing.
	v := newVerifiedCache()
	for i := range verifiedCacheSize + 10 {
		v.put(sha256.Sum256([]byte{byte(i), byte(i >> 8), byte(i >> 16)}), Claims{})
	}
	if len(v.m) > verifiedCacheSize {
		t.Fatalf("cache holds %d entries, limit %d", len(v.m), verifiedCacheSize)
	}
}

// signingKey is the private key Issue signs with now.
func (k *Keyring) signingKey() ed25519.PrivateKey {
	return k.keys.Load().signer(k.now()).key
}

// Signed with authd's own key, these are still refused: a crit header names
// an extension authd would have to understand, and a lifetime longer than
// the configured one is not a token Issue makes (API.md, "Tokens").
func TestVerifyRefusesCritAndOverlongLifetimes(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	c := testClaims()
	kid := f.k.SigningKID()
	now := f.clock.Now()
	payload := func(lifetime time.Duration) map[string]any {
		return map[string]any{"iss": testIssuer, "sub": c.UserID.String(), "tid": c.TenantID.String(), "sid": c.SessionID.String(),
			"iat": now.Unix(), "exp": now.Add(lifetime).Unix(), "jti": uuid.NewString(), "amr": []string{"pwd"}}
	}
	header := map[string]any{"alg": "EdDSA", "kid": kid, "typ": "JWT"}
	with := func(m map[string]any, k string, v any) map[string]any {
		out := map[string]any{k: v}
		for key, val := range m {
			out[key] = val
		}
		return out
	}
	key := f.k.signingKey()

	// The same forgery without the defect verifies, so each refusal below is
	// the defect's.
	for name, tok := range map[string]string{
		"plain":              signRaw(t, key, header, payload(time.Hour)),
		"the whole lifetime": signRaw(t, key, header, payload(DefaultAccessTTL)),
		"a cty header":       signRaw(t, key, with(header, "cty", "JWT"), payload(time.Hour)),
	} {
		if _, err := f.k.Verify(ctx, tok); err != nil {
			t.Fatalf("%s: %v; want it verified", name, err)
		}
	}
	for name, tok := range map[string]string{
		"unknown crit":          signRaw(t, key, with(with(header, "crit", []string{"urn:example:policy"}), "urn:example:policy", "x"), payload(time.Hour)),
		"crit naming exp":       signRaw(t, key, with(header, "crit", []string{"exp"}), payload(time.Hour)),
		"empty crit":            signRaw(t, key, with(header, "crit", []string{}), payload(time.Hour)),
		"10-year exp":           signRaw(t, key, header, payload(10*365*24*time.Hour)),
		"a second over the TTL": signRaw(t, key, header, payload(DefaultAccessTTL+time.Second)),
	} {
		_, err := f.k.Verify(ctx, tok)
		if !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: err = %v, want ErrInvalidToken", name, err)
		}
		if _, ok := f.k.keys.Load().verified.get(sha256.Sum256([]byte(tok))); ok {
			t.Errorf("%s: a refused token was cached", name)
		}
	}
}

// The configured lifetime is what Issue gives and what Verify allows: a
// keyring configured for 15 minutes refuses a day-long token of the same key.
func TestAccessTTLIsConfigurable(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	short, err := Open(ctx, f.pool, f.sealer, Options{Issuer: testIssuer, AccessTTL: 15 * time.Minute, Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if short.AccessTTL() != 15*time.Minute || f.k.AccessTTL() != DefaultAccessTTL {
		t.Fatalf("AccessTTL = %v and %v, want 15m and the default", short.AccessTTL(), f.k.AccessTTL())
	}
	tok, err := short.Issue(testClaims())
	if err != nil {
		t.Fatal(err)
	}
	got, err := short.Verify(ctx, tok)
	if err != nil || got.ExpiresAt.Sub(got.IssuedAt) != 15*time.Minute {
		t.Fatalf("a 15-minute token: %+v, %v", got, err)
	}
	day, err := f.k.Issue(testClaims())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := short.Verify(ctx, day); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("a day-long token on a 15-minute keyring: err = %v, want ErrInvalidToken", err)
	}
	long := testClaims()
	long.IssuedAt = f.clock.Now()
	long.ExpiresAt = long.IssuedAt.Add(16 * time.Minute)
	if _, err := short.Issue(long); err == nil {
		t.Fatal("Issue signed a token living longer than the configured lifetime")
	}
	for _, ttl := range []time.Duration{-time.Minute, MaxAccessTTL + time.Second} {
		if _, err := Open(ctx, f.pool, f.sealer, Options{Issuer: testIssuer, AccessTTL: ttl}); err == nil {
			t.Errorf("Open accepted an access-token lifetime of %v", ttl)
		}
	}
}

func TestAuthTime(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	now := f.clock.Now()
	c := testClaims()
	c.AuthTime = now.Add(-time.Hour)
	token, err := f.k.Issue(c)
	if err != nil {
		t.Fatal(err)
	}
	var payload map[string]any
	decodeSegment(t, strings.Split(token, ".")[1], &payload)
	if at, ok := payload["auth_time"].(float64); !ok || int64(at) != c.AuthTime.Unix() {
		t.Fatalf("auth_time on the wire = %#v, want %d (a NumericDate)", payload["auth_time"], c.AuthTime.Unix())
	}
	got, err := f.k.Verify(ctx, token)
	if err != nil {
		t.Fatal(err)
	}
	if !got.AuthTime.Equal(c.AuthTime) {
		t.Fatalf("auth_time = %v, want %v", got.AuthTime, c.AuthTime)
	}

	// A proof later than the token is not one authd makes, nor accepts.
	c.AuthTime = now.Add(time.Minute)
	if _, err := f.k.Issue(c); err == nil {
		t.Fatal("Issue signed an auth_time after iat")
	}
	kid := f.k.SigningKID()
	later := signRaw(t, f.k.signingKey(), map[string]any{"alg": "EdDSA", "kid": kid},
		map[string]any{"iss": testIssuer, "sub": c.UserID.String(), "tid": c.TenantID.String(), "sid": c.SessionID.String(),
			"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "jti": "x", "amr": []string{}, "auth_time": now.Add(time.Minute).Unix()})
	if _, err := f.k.Verify(ctx, later); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("auth_time after iat: err = %v, want ErrInvalidToken", err)
	}
}
