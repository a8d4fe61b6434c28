package main

// Sign in with Google against real authd instances, with Google's key
// endpoint played by testenv.GoogleIdP: a JWKS server on loopback that the
// test runs, with RSA keys it rotates and a count of its fetches.

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/authd/authd/internal/testenv"
)

func googleCluster(t *testing.T, g *testenv.GoogleIdP) *cluster {
	return newCluster(t, map[string]string{"GOOGLE_CLIENT_ID": "another-client.apps.googleusercontent.com," + testenv.GoogleClientID, "GOOGLE_JWKS_URL": g.URL()})
}

func googleSignIn(t *testing.T, in *instance, idToken string) response {
	t.Helper()
	return in.must(t, 200, "POST", api+"/google", "", map[string]any{"id_token": idToken})
}

// googleAMR reads the amr claim of an access token.
func googleAMR(t *testing.T, access string) []string {
	t.Helper()
	parts := strings.Split(access, ".")
	if len(parts) != 3 {
		t.Fatalf("access token is not a JWT: %q", access)
	}
	var claims struct {
		AMR []string `json:"amr"`
	}
	decodeSeg(t, parts[1], &claims)
	return claims.AMR
}

func TestGoogleSignUpLoginAndLinking(t *testing.T) {
	t.Parallel()
	idp := testenv.NewGoogleIdP(t)
	c := googleCluster(t, idp)
	a, b := c.start(t), c.start(t)
	pool := c.dbPool(t)
	const sub = "110169484474386276334"

	// A new email signs up: a verified user with a default tenant, linked.
	before := readDBState(t, pool).events
	signup := googleSignIn(t, a, idp.Token(t, sub, " Grace.Hopper@Example.COM"))
	checkTokens(t, signup, "grace.hopper@example.com")
	user := signup.body["user"].(map[string]any)
	if user["email_verified"] != true || signup.str("user", "name") != "Grace Hopper" || signup.str("user", "tenant", "name") != "Grace Hopper's organization" {
		t.Fatalf("signed-up user: %s", signup.raw)
	}
	if got := eventsAfter(t, pool, before); !slices.Equal(got, []string{"UserRegistered", "EmailVerified", "TenantCreated", "GoogleLinked", "SessionStarted", "LoginSucceeded"}) {
		t.Fatalf("signup events: %v", got)
	}
	if amr := googleAMR(t, signup.str("access_token")); !slices.Equal(amr, []string{"fed"}) {
		t.Fatalf("amr %v, want [fed]", amr)
	}
	userID := signup.str("user", "id")
	var linked struct {
		UserID  string `json:"user_id"`
		Subject string `json:"subject"`
	}
	var data []byte
	if err := pool.QueryRow(t.Context(), `SELECT data FROM events WHERE type = 'GoogleLinked'`).Scan(&data); err != nil {
		t.Fatal(err)
	}
	// The subject names a person: sealed with the user's key, not in the clear.
	if err := json.Unmarshal(data, &linked); err != nil || linked.UserID != userID || linked.Subject != "" {
		t.Fatalf("GoogleLinked data %s", data)
	}
	me := b.must(t, 200, "GET", api+"/me", signup.str("access_token"), nil)
	if me.str("id") != userID || me.str("email") != "grace.hopper@example.com" {
		t.Fatalf("me: %s", me.raw)
	}

	// Signing in again finds the same user, on any instance, and changes
	// nothing but a new session.
	before = readDBState(t, pool).events
	again := googleSignIn(t, b, idp.Token(t, sub, "grace.hopper@example.com"))
	if again.str("user", "id") != userID || again.str("session_id") == signup.str("session_id") {
		t.Fatalf("second sign-in: %s", again.raw)
	}
	if got := eventsAfter(t, pool, before); !slices.Equal(got, []string{"SessionStarted", "LoginSucceeded"}) {
		t.Fatalf("second sign-in events: %v", got)
	}
	// The subject comes first: a Google account whose address changed is
	// still the same account.
	moved := googleSignIn(t, a, idp.Token(t, sub, "grace@navy.example.mil"))
	if moved.str("user", "id") != userID || moved.str("user", "email") != "grace.hopper@example.com" {
		t.Fatalf("sign-in after the Google address changed: %s", moved.raw)
	}
	// A user signed up with Google has no password to log in with.
	if r := a.call(t, "POST", api+"/login", "", map[string]any{"email": "grace.hopper@example.com", "password": "any password at all"}); r.status != 401 || r.errCode() != "invalid_credentials" {
		t.Fatalf("password login of a Google-only user = %d %s", r.status, r.raw)
	}

	// An existing password account with the same (verified) email is linked
	// and keeps its password.
	const pw = "correct horse battery staple"
	reg := c.signupVerified(t, a, "linus@example.com", pw, nil)
	before = readDBState(t, pool).events
	link := googleSignIn(t, b, idp.Token(t, "200000000000000000002", "Linus@Example.com"))
	if link.str("user", "id") != reg.str("user", "id") {
		t.Fatalf("linking found user %s, want the password account %s", link.str("user", "id"), reg.str("user", "id"))
	}
	if got := eventsAfter(t, pool, before); !slices.Equal(got, []string{"GoogleLinked", "SessionStarted", "LoginSucceeded"}) {
		t.Fatalf("linking events: %v", got)
	}
	if pl := a.must(t, 200, "POST", api+"/login", "", map[string]any{"email": "linus@example.com", "password": pw}); pl.str("user", "id") != reg.str("user", "id") {
		t.Fatalf("password login after linking: %s", pl.raw)
	}
	if l := googleSignIn(t, a, idp.Token(t, "200000000000000000002", "linus@example.com")); l.str("user", "id") != reg.str("user", "id") {
		t.Fatalf("sign-in of the linked account: %s", l.raw)
	}

	// Another Google account presenting a linked address is refused, not
	// relinked.
	before = readDBState(t, pool).events
	if r := a.call(t, "POST", api+"/google", "", map[string]any{"id_token": idp.Token(t, "300000000000000000003", "linus@example.com")}); r.status != 401 || r.errCode() != "invalid_token" {
		t.Fatalf("another Google account for a linked email = %d %s", r.status, r.raw)
	}
	if got := eventsAfter(t, pool, before); len(got) != 0 {
		t.Fatalf("the refused relink appended %v", got)
	}

	// A signup nobody verified belongs to whoever proves the address: Google
	// sign-in takes it over, and the password it was registered with (by
	// anyone) stops working.
	a.must(t, 202, "POST", api+"/register", "", map[string]any{"email": "pending@example.com", "password": "someone else's password", "name": "Mallory", "tenant_name": "Mallory Inc"})
	code := c.nextCode(t, "pending@example.com", 0)
	takeover := googleSignIn(t, a, idp.Token(t, "400000000000000000004", "pending@example.com"))
	if takeover.str("user", "name") != "Grace Hopper" || takeover.str("user", "tenant", "name") != "Grace Hopper's organization" {
		t.Fatalf("taken-over account: %s", takeover.raw)
	}
	if r := a.call(t, "POST", api+"/login", "", map[string]any{"email": "pending@example.com", "password": "someone else's password"}); r.status != 401 {
		t.Fatalf("the pending signup's password still works: %d %s", r.status, r.raw)
	}
	if r := a.call(t, "POST", api+"/register/verify", "", map[string]any{"email": "pending@example.com", "code": code}); r.errCode() != "invalid_code" {
		t.Fatalf("the pending signup's code after the takeover = %d %s", r.status, r.raw)
	}

	// Cache-Control honoured: every sign-in above, on both instances, with
	// one fetch each.
	if n := idp.Fetches(); n != 2 {
		t.Fatalf("%d JWKS fetches by 2 instances; want 2 (one each, max-age=21600)", n)
	}
}

func TestGoogleBadTokensChangeNothing(t *testing.T) {
	t.Parallel()
	idp := testenv.NewGoogleIdP(t)
	c := googleCluster(t, idp)
	in := c.start(t)
	pool := c.dbPool(t)
	// An account, and Google's keys in the cache.
	googleSignIn(t, in, idp.Token(t, "111", "ada@example.com"))
	fetches := idp.Fetches()

	stranger := testenv.NewGoogleKey(t, "google-1") // the right kid, the wrong key
	claims := func(edit func(jwt.MapClaims)) jwt.MapClaims {
		cl := idp.Claims("222", "new@example.com")
		edit(cl)
		return cl
	}
	tok := func(edit func(jwt.MapClaims)) string { return idp.Sign(t, claims(edit)) }
	good := tok(func(jwt.MapClaims) {})
	parts := strings.Split(good, ".")
	hs256 := func() string {
		tk := jwt.NewWithClaims(jwt.SigningMethodHS256, claims(func(jwt.MapClaims) {}))
		tk.Header["kid"] = "google-1"
		s, _ := tk.SignedString(idp.Current().Key.N.Bytes())
		return s
	}()
	none := func() string {
		tk := jwt.NewWithClaims(jwt.SigningMethodNone, claims(func(jwt.MapClaims) {}))
		tk.Header["kid"] = "google-1"
		s, _ := tk.SignedString(jwt.UnsafeAllowNoneSignatureType)
		return s
	}()
	bad := map[string]string{
		"empty":       "",
		"malformed":   "not.a.jwt",
		"one segment": "eyJhbGciOiJSUzI1NiJ9",
		"expired": tok(func(c jwt.MapClaims) {
			c["iat"], c["exp"] = time.Now().Add(-2*time.Hour).Unix(), time.Now().Add(-time.Hour).Unix()
		}),
		"issued in the future": tok(func(c jwt.MapClaims) { c["iat"] = time.Now().Add(time.Hour).Unix() }),
		"wrong audience": tok(func(c jwt.MapClaims) {
			c["aud"], c["azp"] = "evil.apps.googleusercontent.com", "evil.apps.googleusercontent.com"
		}),
		"wrong issuer":           tok(func(c jwt.MapClaims) { c["iss"] = "https://accounts.google.com.evil.example" }),
		"unverified email":       tok(func(c jwt.MapClaims) { c["email_verified"] = false }),
		`email_verified "false"`: tok(func(c jwt.MapClaims) { c["email_verified"] = "false" }),
		"no email_verified":      tok(func(c jwt.MapClaims) { delete(c, "email_verified") }),
		"non-ASCII email":        tok(func(c jwt.MapClaims) { c["email"] = "jos\u00e9@example.com" }),
		"not an email":           tok(func(c jwt.MapClaims) { c["email"] = "not an email" }),
		"badly signed":           testenv.GoogleSignWith(t, stranger, claims(func(jwt.MapClaims) {})),
		"tampered":               parts[0] + "." + base64.RawURLEncoding.EncodeToString(jsonBody(t, claims(func(c jwt.MapClaims) { c["email"] = "ada@example.com" }))) + "." + parts[2],
		"unknown kid":            testenv.GoogleSignWith(t, testenv.GoogleKey{Kid: "forged-kid", Key: idp.Current().Key}, claims(func(jwt.MapClaims) {})),
		"alg none":               none,
		"HS256":                  hs256,
		"subject of another Google account for a linked email": idp.Token(t, "333", "ada@example.com"),
	}
	var probes []probe
	for name, token := range bad {
		probes = append(probes, probe{name: name, method: "POST", path: api + "/google", body: jsonBody(t, map[string]any{"id_token": token}), wantCode: "invalid_token"})
	}
	probes = append(probes,
		probe{name: "no id_token", method: "POST", path: api + "/google", body: []byte(`{}`), wantCode: "invalid_token"},
		probe{name: "id_token null", method: "POST", path: api + "/google", body: []byte(`{"id_token":null}`), wantCode: "invalid_token"},
		probe{name: "malformed body", method: "POST", path: api + "/google", body: []byte(`{"id_token":`), wantCode: "validation_failed"},
		probe{name: "empty body", method: "POST", path: api + "/google", body: nil, wantCode: "validation_failed"},
		probe{name: "id_token a number", method: "POST", path: api + "/google", body: []byte(`{"id_token":42}`), wantCode: "validation_failed"},
	)
	runProbes(t, in, pool, probes)
	for _, p := range probes {
		if p.wantCode == "invalid_token" {
			if r := in.rawCall(t, p.method, p.path, nil, p.body); r.status != 401 {
				t.Errorf("%s: status %d, want 401", p.name, r.status)
			}
		}
	}
	// The good token was good all along.
	googleSignIn(t, in, good)

	// The forged kid made one refetch; many more make none.
	if n := idp.Fetches() - fetches; n != 1 {
		t.Errorf("%d JWKS fetches for the bad tokens; want 1 (the unknown kid)", n)
	}
	before := readDBState(t, pool)
	for i := range 40 {
		forged := testenv.GoogleSignWith(t, testenv.GoogleKey{Kid: fmt.Sprintf("forged-%d", i), Key: idp.Current().Key}, claims(func(jwt.MapClaims) {}))
		if r := in.call(t, "POST", api+"/google", "", map[string]any{"id_token": forged}); r.status != 401 || r.errCode() != "invalid_token" {
			t.Fatalf("forged kid %d = %d %s", i, r.status, r.raw)
		}
	}
	if n := idp.Fetches() - fetches; n > 2 {
		t.Errorf("%d JWKS fetches after 41 forged kids; want at most 2", n)
	}
	if after := readDBState(t, pool); after.events != before.events || after.uniqueKeys != before.uniqueKeys {
		t.Errorf("forged kids changed the log: %v", after.eventTypes[before.events:])
	}

	// GOOGLE_CLIENT_ID empty: the endpoint is not there, whatever the body.
	off := c.startGoogleVariant(t, map[string]string{"GOOGLE_CLIENT_ID": ""})
	for _, body := range [][]byte{jsonBody(t, map[string]any{"id_token": good}), []byte(`{"id_token":`), nil} {
		if r := off.rawCall(t, "POST", api+"/google", nil, body); r.status != 404 || r.errCode() != "not_found" {
			t.Errorf("Google off, body %q = %d %s", body, r.status, r.raw)
		}
	}

	// Google's keys unreachable (and none cached): 503, nothing changed.
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	down := c.startGoogleVariant(t, map[string]string{"GOOGLE_JWKS_URL": dead.URL + "/certs"})
	before = readDBState(t, pool)
	r := down.call(t, "POST", api+"/google", "", map[string]any{"id_token": idp.Token(t, "444", "down@example.com")})
	if r.status != 503 || r.errCode() != "unavailable" || retryAfterSeconds(r) < 1 {
		t.Errorf("JWKS unreachable = %d %s (Retry-After %q)", r.status, r.raw, r.header.Get("Retry-After"))
	}
	if after := readDBState(t, pool); after.events != before.events {
		t.Errorf("a sign-in without keys appended %v", after.eventTypes[before.events:])
	}
}

func TestGoogleKeyRotation(t *testing.T) {
	t.Parallel()
	idp := testenv.NewGoogleIdP(t)
	c := googleCluster(t, idp)
	in := c.start(t)
	first := googleSignIn(t, in, idp.Token(t, "555", "rotate@example.com"))
	if n := idp.Fetches(); n != 1 {
		t.Fatalf("%d fetches; want 1", n)
	}
	old := idp.Current()

	// Google publishes a new key and signs with it before our copy expires:
	// the unknown kid is fetched once, and then known.
	idp.Rotate(t, "google-2")
	for i := range 3 {
		r := googleSignIn(t, in, idp.Token(t, "555", "rotate@example.com"))
		if r.str("user", "id") != first.str("user", "id") {
			t.Fatalf("sign-in %d with the new key: %s", i, r.raw)
		}
	}
	if n := idp.Fetches(); n != 2 {
		t.Fatalf("%d fetches after the rotation; want 2 (one refetch for the new kid)", n)
	}
	// Tokens of the old key, still published, are still good.
	googleSignIn(t, in, testenv.GoogleSignWith(t, old, idp.Claims("555", "rotate@example.com")))
	if n := idp.Fetches(); n != 2 {
		t.Fatalf("%d fetches; want still 2", n)
	}
}

// startGoogleVariant starts an instance of the cluster with some settings changed.
func (c *cluster) startGoogleVariant(t *testing.T, env map[string]string) *instance {
	t.Helper()
	changed := &cluster{env: make(map[string]string, len(c.env)), mail: c.mail}
	for k, v := range c.env {
		changed.env[k] = v
	}
	for k, v := range env {
		changed.env[k] = v
	}
	return changed.start(t)
}
