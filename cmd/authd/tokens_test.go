package main

import (
	"context"
	"crypto/ed25519"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// authdSigningKey is the private key authd signs access tokens with now,
// unsealed from the cluster's database: what a forger holding the key has.
func authdSigningKey(t *testing.T, c *cluster) (kid string, key ed25519.PrivateKey) {
	t.Helper()
	var sealed []byte
	var sealKID string
	if err := c.dbPool(t).QueryRow(context.Background(), `
		SELECT kid, private_sealed, private_kid FROM signing_keys
		WHERE retired_at IS NULL AND activates_at <= now() ORDER BY seq DESC LIMIT 1`).Scan(&kid, &sealed, &sealKID); err != nil {
		t.Fatalf("read the signing key: %v", err)
	}
	seed, err := c.sealer(t).Open(sealKID, sealed, []byte("signing_keys:"+kid))
	if err != nil {
		t.Fatalf("open the signing key: %v", err)
	}
	return kid, ed25519.NewKeyFromSeed(seed)
}

// The lifetimes are configured (AUTHD_ACCESS_TOKEN_TTL,
// AUTHD_REFRESH_TOKEN_TTL) and the answers follow them; a token signed with
// authd's own key is still refused when it names a crit header or lives
// longer than the configured lifetime (API.md, "Tokens").
func TestTokenLifetimesAndJWTLeniency(t *testing.T) {
	t.Parallel()
	c := newCluster(t, map[string]string{"AUTHD_ACCESS_TOKEN_TTL": "1h", "AUTHD_REFRESH_TOKEN_TTL": "48h"})
	in := c.start(t)
	const email, pw = "lifetimes@example.com", "correct horse battery"
	signup := c.signupVerified(t, in, email, pw, nil)

	checkLifetimes := func(what string, r response) {
		t.Helper()
		if r.body["expires_in"] != float64(3600) || r.body["refresh_expires_in"] != float64(172800) {
			t.Fatalf("%s: expires_in %v, refresh_expires_in %v; want 3600 and 172800", what, r.body["expires_in"], r.body["refresh_expires_in"])
		}
		var claims jwt.RegisteredClaims
		if _, _, err := jwt.NewParser().ParseUnverified(r.str("access_token"), &claims); err != nil {
			t.Fatal(err)
		}
		if life := claims.ExpiresAt.Sub(claims.IssuedAt.Time); life != time.Hour {
			t.Fatalf("%s: the access token lives %v, want 1h", what, life)
		}
	}
	checkLifetimes("signup", signup)
	refreshed := in.must(t, 200, "POST", api+"/refresh", "", map[string]any{"refresh_token": signup.str("refresh_token")})
	checkLifetimes("refresh", refreshed)

	// Forge tokens for the signed-in session with authd's own key.
	kid, key := authdSigningKey(t, c)
	var real jwt.MapClaims
	if _, _, err := jwt.NewParser().ParseUnverified(refreshed.str("access_token"), &real); err != nil {
		t.Fatal(err)
	}
	forge := func(header map[string]any, lifetime time.Duration) string {
		t.Helper()
		claims := jwt.MapClaims{}
		for k, v := range real {
			claims[k] = v
		}
		now := time.Now()
		claims["iat"], claims["exp"] = now.Unix(), now.Add(lifetime).Unix()
		tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
		tok.Header["kid"] = kid
		for k, v := range header {
			tok.Header[k] = v
		}
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// The forger's craft works: without a defect, its token is accepted.
	if r := in.call(t, "GET", api+"/me", forge(nil, time.Hour), nil); r.status != 200 {
		t.Fatalf("GET /me with a well-formed token signed by authd's key = %d %s; the forgery itself is broken", r.status, r.raw)
	}
	for name, tok := range map[string]string{
		"an unknown crit header":                  forge(map[string]any{"crit": []string{"urn:example:policy"}, "urn:example:policy": "x"}, time.Hour),
		"a 10-year exp":                           forge(nil, 10*365*24*time.Hour),
		"a day-long token with a 1 h lifetime":    forge(nil, 24*time.Hour),
		"one second over the configured lifetime": forge(nil, time.Hour+time.Second),
	} {
		r := in.call(t, "GET", api+"/me", tok, nil)
		if r.status != 401 || r.errCode() != "unauthorized" {
			t.Errorf("GET /me with %s = %d %s; want 401 unauthorized", name, r.status, r.raw)
		}
		if strings.Contains(r.raw, tok) {
			t.Errorf("the answer to %s repeats the token", name)
		}
	}
}
