package tokens

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/lestrrat-go/jwx/v3/jwk"
	jwxjwt "github.com/lestrrat-go/jwx/v3/jwt"
)

func TestJWKSShape(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var set map[string][]map[string]string
	if err := json.Unmarshal(f.k.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	if len(set) != 1 || len(set["keys"]) != 1 {
		t.Fatalf("JWKS = %s", f.k.JWKS())
	}
	key := set["keys"][0]
	pub := f.k.signingKey().Public().(ed25519.PublicKey)
	want := map[string]string{
		"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
		"kid": f.k.SigningKID(), "x": base64.RawURLEncoding.EncodeToString(pub),
	}
	if fmt.Sprint(key) != fmt.Sprint(want) {
		t.Fatalf("JWK = %v, want %v", key, want)
	}
	// The kid is the RFC 7638 thumbprint, which any JWK library computes alike.
	set2, err := jwk.Parse(f.k.JWKS())
	if err != nil {
		t.Fatal(err)
	}
	parsed, ok := set2.Key(0)
	if !ok {
		t.Fatal("jwx finds no key in the JWKS")
	}
	tp, err := parsed.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if got := base64.RawURLEncoding.EncodeToString(tp); got != f.k.SigningKID() {
		t.Fatalf("kid %s is not the RFC 7638 thumbprint %s", f.k.SigningKID(), got)
	}
}

// stdlibKeys reads a JWKS with the standard library alone.
func stdlibKeys(t *testing.T, jwks []byte) map[string]ed25519.PublicKey {
	t.Helper()
	var set struct {
		Keys []struct {
			Kty, Crv, X, Kid, Alg, Use string
		} `json:"keys"`
	}
	if err := json.Unmarshal(jwks, &set); err != nil {
		t.Fatal(err)
	}
	keys := make(map[string]ed25519.PublicKey)
	for _, k := range set.Keys {
		if k.Kty != "OKP" || k.Crv != "Ed25519" || k.Alg != "EdDSA" || k.Use != "sig" {
			t.Fatalf("unexpected JWK %+v", k)
		}
		x, err := base64.RawURLEncoding.DecodeString(k.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			t.Fatalf("JWK x: %d bytes, %v", len(x), err)
		}
		keys[k.Kid] = ed25519.PublicKey(x)
	}
	return keys
}

// TestVerifyFromJWKSAlone verifies issued tokens knowing nothing but the JWKS
// JSON, once with the standard library and golang-jwt, once with jwx.
func TestVerifyFromJWKSAlone(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c := testClaims()
	first, err := f.k.Issue(c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.k.RotateNow(context.Background()); err != nil {
		t.Fatal(err)
	}
	second, err := f.k.Issue(c)
	if err != nil {
		t.Fatal(err)
	}
	jwks := f.k.JWKS()

	keys := stdlibKeys(t, jwks)
	for _, token := range []string{first, second} {
		var mc jwt.MapClaims
		_, err := jwt.ParseWithClaims(token, &mc, func(tok *jwt.Token) (any, error) {
			kid, _ := tok.Header["kid"].(string)
			if key, ok := keys[kid]; ok {
				return key, nil
			}
			return nil, errors.New("kid not in JWKS")
		}, jwt.WithValidMethods([]string{"EdDSA"}), jwt.WithIssuer(testIssuer), jwt.WithExpirationRequired())
		if err != nil {
			t.Fatalf("golang-jwt with the stdlib-parsed JWKS: %v", err)
		}
		if mc["sub"] != c.UserID.String() || mc["sid"] != c.SessionID.String() || mc["tid"] != c.TenantID.String() {
			t.Fatalf("claims = %v", mc)
		}
	}

	set, err := jwk.Parse(jwks)
	if err != nil {
		t.Fatalf("jwx cannot parse the JWKS: %v", err)
	}
	for _, token := range []string{first, second} {
		tok, err := jwxjwt.Parse([]byte(token), jwxjwt.WithKeySet(set), jwxjwt.WithIssuer(testIssuer),
			jwxjwt.WithRequiredClaim("exp"))
		if err != nil {
			t.Fatalf("jwx from the JWKS: %v", err)
		}
		sub, _ := tok.Subject()
		var sid, tid string
		var amr []any
		if err := errors.Join(tok.Get("sid", &sid), tok.Get("tid", &tid), tok.Get("amr", &amr)); err != nil {
			t.Fatal(err)
		}
		if sub != c.UserID.String() || sid != c.SessionID.String() || tid != c.TenantID.String() ||
			!slices.Equal(amr, []any{"pwd", "mfa"}) {
			t.Fatalf("jwx claims: sub %s sid %s tid %s amr %v", sub, sid, tid, amr)
		}
	}

	// And jwx refuses what the keyring refuses: a token by a key not in the set.
	_, stranger, _ := ed25519.GenerateKey(nil)
	forged, err := signWith(f.k, f.k.SigningKID(), stranger, c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwxjwt.Parse([]byte(forged), jwxjwt.WithKeySet(set)); err == nil {
		t.Fatal("jwx accepted a token signed by a key outside the JWKS")
	}
}
