package main

// Fresh authentication end to end (API.md: "Fresh" endpoints, issue 17's
// takeover story): real HTTP, Postgres, NATS and Mailpit, with the commands
// deciding by a test clock that starts an hour back, so that a token can be
// made older than AUTHD_REAUTH_MAX_AGE without waiting, and stays valid by
// the real clock its signature is checked against.

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/internal/softauthn"
	"github.com/authd/authd/internal/testenv"
	"github.com/authd/authd/internal/totp"
)

// freshInstance starts an authd whose commands decide by the returned clock.
func freshInstance(t *testing.T) (*cluster, *instance, *testenv.Clock) {
	t.Helper()
	clk := testenv.NewClock(time.Now().Add(-time.Hour))
	c := newCluster(t, nil)
	return c, c.startWith(t, options{now: clk.Now, limitsNow: time.Now, sweepEvery: time.Minute}), clk
}

// staleBy is past the default AUTHD_REAUTH_MAX_AGE (10 minutes).
const staleBy = 11 * time.Minute

// authTime reads the auth_time claim of an access token (its signature is
// checked elsewhere: verifyWithJWKS); zero when it has none.
func authTime(t *testing.T, access string) time.Time {
	t.Helper()
	parts := strings.Split(access, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", access)
	}
	var claims struct {
		AuthTime *json.Number `json:"auth_time"`
	}
	decodeSeg(t, parts[1], &claims)
	if claims.AuthTime == nil {
		return time.Time{}
	}
	n, err := claims.AuthTime.Int64()
	if err != nil {
		t.Fatalf("auth_time %v is not a NumericDate of whole seconds", *claims.AuthTime)
	}
	return time.Unix(n, 0)
}

// freshStep is one "fresh" endpoint with a body it would accept and one it
// would not.
type freshStep struct {
	method, path string
	good, bad    any
}

func freshSteps(passkeyID string) []freshStep {
	return []freshStep{
		{"POST", "/2fa/setup", nil, "{"},
		{"POST", "/2fa/disable", map[string]any{"code": "123456"}, "{"},
		{"POST", "/2fa/backup-codes/regenerate", nil, "{"},
		{"POST", "/passkey/register/options", nil, "{"},
		{"POST", "/passkey/register/verify", map[string]any{"credential": map[string]any{}}, `{"credential": 7}`},
		{"DELETE", "/passkey/" + passkeyID, nil, nil},
		{"DELETE", "/passkey/not-a-uuid", nil, nil},
		{"DELETE", "/sessions", nil, "{"},
		{"POST", "/me/password", map[string]any{"new_password": "a whole new passphrase"}, map[string]any{"new_password": 7}},
		{"POST", "/me/email", map[string]any{"new_email": "elsewhere@example.com"}, "{"},
		{"DELETE", "/me", nil, nil},
	}
}

// A sign-in is fresh: straight to 2FA setup and passkey registration with no
// extra step. Once auth_time is older than the max age, every sensitive step
// answers 403 reauthentication_required, whatever its body, and changes
// nothing; the endpoints that are not sensitive still work.
func TestStaleTokenIsRefusedAtEverySensitiveStep(t *testing.T) {
	t.Parallel()
	c, in, clk := freshInstance(t)
	run := strings.ToLower(uuid.NewString()[:8])
	email, pw := "fresh-"+run+"@example.com", "correct horse battery"
	signup := c.signupVerified(t, in, email, pw, nil)
	access := signup.str("access_token")
	if at := authTime(t, access); !at.Equal(clk.Now().Truncate(time.Second)) {
		t.Fatalf("signup's auth_time = %v, want %v", at, clk.Now())
	}
	in.must(t, 200, "POST", api+"/2fa/setup", access, nil)
	r, _ := pkRegister(t, in, access, &softauthn.Authenticator{AAGUID: uuid.New()}, "key")
	if r.status != 201 {
		t.Fatalf("passkey registration right after signing up = %d %s", r.status, r.raw)
	}
	passkeyID := r.str("id")
	other := in.must(t, 200, "POST", api+"/login", "", map[string]any{"email": email, "password": pw})

	clk.Advance(staleBy)
	pool := c.dbPool(t)
	before, mails := readDBState(t, pool), c.mailCount(t)
	for _, s := range freshSteps(passkeyID) {
		for _, body := range []any{s.good, s.bad} {
			if r := in.call(t, s.method, api+s.path, access, body); r.status != 403 || r.errCode() != "reauthentication_required" {
				t.Errorf("%s %s with a stale token and body %v = %d %s; want 403 reauthentication_required", s.method, s.path, body, r.status, r.raw)
			}
		}
	}
	if after := readDBState(t, pool); after.events != before.events || c.mailCount(t) != mails {
		t.Fatalf("refused steps appended %v, mailed %d", after.eventTypes[before.events:], c.mailCount(t)-mails)
	}
	if got := pkList(t, in, access); len(got) != 1 || got[0]["id"] != passkeyID {
		t.Fatalf("passkeys after refused steps: %v", got)
	}
	in.must(t, 200, "GET", api+"/me", other.str("access_token"), nil) // the other session lives
	in.must(t, 200, "GET", api+"/me", access, nil)
	in.must(t, 200, "GET", api+"/sessions", access, nil)
}

// totpAt is the authenticator app's code at the commands' clock, a step past
// the last one it gave: authd takes each step once.
func totpAt(t *testing.T, clk *testenv.Clock, secret string) string {
	t.Helper()
	clk.Advance(totp.Period * time.Second)
	code, err := totp.CodeAt(secret, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// Issue 17's takeover: with only the victim's access token, older than
// AUTHD_REAUTH_MAX_AGE, the attacker is refused at the first sensitive step
// and cannot re-authenticate; the owner, with the password and a TOTP code,
// gets a fresh pair for the same session and goes on.
func TestAStolenTokenAloneCannotTakeTheAccountOver(t *testing.T) {
	t.Parallel()
	c, in, clk := freshInstance(t)
	run := strings.ToLower(uuid.NewString()[:8])
	email, pw := "victim-"+run+"@example.com", "correct horse battery"
	signup := c.signupVerified(t, in, email, pw, nil)
	stolen := signup.str("access_token")
	secret := in.must(t, 200, "POST", api+"/2fa/setup", stolen, nil).str("secret")
	in.must(t, 200, "POST", api+"/2fa/enable", stolen, map[string]any{"code": totpAt(t, clk, secret)})

	clk.Advance(staleBy)
	pool := c.dbPool(t)
	before := readDBState(t, pool)
	for _, s := range []freshStep{
		{method: "POST", path: "/2fa/backup-codes/regenerate"},
		{method: "DELETE", path: "/sessions"},
		{method: "POST", path: "/passkey/register/options"},
		{method: "POST", path: "/2fa/disable", good: map[string]any{"code": "123456"}},
		{method: "POST", path: "/2fa/setup"},
	} {
		if r := in.call(t, s.method, api+s.path, stolen, s.good); r.status != 403 || r.errCode() != "reauthentication_required" {
			t.Fatalf("the attacker's %s %s = %d %s; want 403 reauthentication_required", s.method, s.path, r.status, r.raw)
		}
	}
	if after := readDBState(t, pool); after.events != before.events {
		t.Fatalf("the refused steps appended %v", after.eventTypes[before.events:])
	}
	// Without the password, or without the second factor, no fresh pair.
	if r := in.call(t, "POST", api+"/reauthenticate", stolen, map[string]any{"password": "a guess", "code": totpAt(t, clk, secret)}); r.status != 401 || r.errCode() != "invalid_credentials" {
		t.Fatalf("a wrong password = %d %s; want 401 invalid_credentials", r.status, r.raw)
	}
	if r := in.call(t, "POST", api+"/reauthenticate", stolen, map[string]any{"password": pw}); r.status != 400 || r.errCode() != "validation_failed" {
		t.Fatalf("no code with 2FA on = %d %s; want 400 validation_failed", r.status, r.raw)
	}
	if r := in.call(t, "POST", api+"/reauthenticate", stolen, map[string]any{"password": pw, "code": "000000"}); r.status != 400 || r.errCode() != "invalid_code" {
		t.Fatalf("a wrong code = %d %s; want 400 invalid_code", r.status, r.raw)
	}
	if r := in.call(t, "POST", api+"/reauthenticate", "", map[string]any{"password": pw}); r.status != 401 || r.errCode() != "unauthorized" {
		t.Fatalf("no token = %d %s; want 401 unauthorized", r.status, r.raw)
	}

	// The owner proves who they are and goes on in the same session.
	fresh := in.must(t, 200, "POST", api+"/reauthenticate", stolen, map[string]any{"password": pw, "code": totpAt(t, clk, secret)})
	checkTokens(t, fresh, email)
	access := fresh.str("access_token")
	if fresh.str("session_id") != signup.str("session_id") || fresh.str("refresh_token") == signup.str("refresh_token") {
		t.Fatalf("re-authentication answered %s; want a new pair for session %s", fresh.raw, signup.str("session_id"))
	}
	if at := authTime(t, access); !at.Equal(clk.Now().Truncate(time.Second)) || !at.After(authTime(t, stolen)) {
		t.Fatalf("auth_time %v; want now, %v", at, clk.Now())
	}
	if amr := pkAMR(t, access); !slices.Equal(amr, []string{"pwd", "mfa"}) {
		t.Fatalf("amr %v; want [pwd mfa]", amr)
	}
	in.must(t, 200, "GET", api+"/me", access, nil)
	// The user's history lists the re-authentication with its proof.
	if events, _ := activityOf(t, in, access, ""); len(events) == 0 || events[0]["type"] != "Reauthenticated" ||
		fmt.Sprint(events[0]["method"]) != "[pwd mfa]" || events[0]["session_id"] != signup.str("session_id") {
		t.Fatalf("activity %v; want the re-authentication first, method [pwd mfa], in the session", events)
	}
	if codes := tfStrings(in.must(t, 200, "POST", api+"/2fa/backup-codes/regenerate", access, nil).body["backup_codes"]); len(codes) != 10 {
		t.Fatalf("backup codes after re-authenticating: %v", codes)
	}
	in.must(t, 200, "DELETE", api+"/sessions", access, nil)
	// A refresh keeps the new auth_time.
	refreshed := in.must(t, 200, "POST", api+"/refresh", "", map[string]any{"refresh_token": fresh.str("refresh_token")})
	if at := authTime(t, refreshed.str("access_token")); !at.Equal(authTime(t, access)) {
		t.Fatalf("auth_time after a refresh %v; want %v", at, authTime(t, access))
	}
}

// A code mailed to the user's address (the way back for a user without a
// password) re-authenticates once; asking for it changes no freshness.
func TestReauthenticateWithAnEmailedCodeOverHTTP(t *testing.T) {
	t.Parallel()
	c, in, clk := freshInstance(t)
	run := strings.ToLower(uuid.NewString()[:8])
	email := "reauth-code-" + run + "@example.com"
	signup := c.signupVerified(t, in, email, "correct horse battery", nil)
	stale := signup.str("access_token")
	clk.Advance(staleBy)

	seen := len(mailsTo(t, c, email))
	if r := in.must(t, 202, "POST", api+"/reauthenticate/code", stale, nil); r.str("status") != "sent" {
		t.Fatalf("send = %s", r.raw)
	}
	code := c.nextCode(t, email, seen)
	if r := in.call(t, "POST", api+"/2fa/setup", stale, nil); r.status != 403 {
		t.Fatalf("a mailed code alone made the token fresh: %d %s", r.status, r.raw)
	}
	fresh := in.must(t, 200, "POST", api+"/reauthenticate", stale, map[string]any{"email_code": code})
	if fresh.str("session_id") != signup.str("session_id") || !slices.Equal(pkAMR(t, fresh.str("access_token")), []string{"otp"}) {
		t.Fatalf("re-authentication with a mailed code = %s", fresh.raw)
	}
	in.must(t, 200, "POST", api+"/2fa/setup", fresh.str("access_token"), nil)
	if r := in.call(t, "POST", api+"/reauthenticate", stale, map[string]any{"email_code": code}); r.status != 400 || r.errCode() != "invalid_code" {
		t.Fatalf("the code again = %d %s; want 400 invalid_code", r.status, r.raw)
	}
}

// A passkey of the user, with user verification, re-authenticates with no
// second factor asked for even with two-factor on; its ceremony is the
// user's own: a sign-in's ceremony does not re-authenticate, nor does a
// re-authentication's sign in.
func TestReauthenticateWithAPasskey(t *testing.T) {
	t.Parallel()
	c, in, clk := freshInstance(t)
	run := strings.ToLower(uuid.NewString()[:8])
	email := "reauth-passkey-" + run + "@example.com"
	signup := c.signupVerified(t, in, email, "correct horse battery", nil)
	stale := signup.str("access_token")
	if r := in.call(t, "POST", api+"/passkey/reauthenticate/options", stale, nil); r.status != 404 || r.errCode() != "not_found" {
		t.Fatalf("options with no passkey = %d %s; want 404 not_found", r.status, r.raw)
	}
	auth := &softauthn.Authenticator{AAGUID: uuid.New()}
	if r, _ := pkRegister(t, in, stale, auth, "key"); r.status != 201 {
		t.Fatalf("register = %d %s", r.status, r.raw)
	}
	secret := in.must(t, 200, "POST", api+"/2fa/setup", stale, nil).str("secret")
	in.must(t, 200, "POST", api+"/2fa/enable", stale, map[string]any{"code": totpAt(t, clk, secret)})
	clk.Advance(staleBy)

	opts := in.must(t, 200, "POST", api+"/passkey/reauthenticate/options", stale, nil)
	var o struct {
		PublicKey struct {
			UserVerification string           `json:"userVerification"`
			Allow            []map[string]any `json:"allowCredentials"`
		} `json:"publicKey"`
	}
	if err := json.Unmarshal([]byte(opts.raw), &o); err != nil || o.PublicKey.UserVerification != "required" || len(o.PublicKey.Allow) != 1 ||
		o.PublicKey.Allow[0]["id"] != base64.RawURLEncoding.EncodeToString(auth.Credentials()[0].ID) {
		t.Fatalf("reauthenticate options %s (%v); want UV required and the one passkey allowed", opts.raw, err)
	}

	// A sign-in's ceremony is not the user's: it cannot re-authenticate.
	login, err := auth.Login(pkLoginOptions(t, in), pkClient, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := in.call(t, "POST", api+"/reauthenticate", stale, map[string]any{"credential": login}); r.status != 401 || r.errCode() != "invalid_challenge" {
		t.Fatalf("a sign-in's assertion at /reauthenticate = %d %s; want 401 invalid_challenge", r.status, r.raw)
	}
	// Nor a re-authentication's sign in.
	assertion, err := auth.Login([]byte(opts.raw), pkClient, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := pkLoginWith(t, in, assertion); r.status != 401 || r.errCode() != "invalid_challenge" {
		t.Fatalf("a re-authentication's assertion at /passkey/login/verify = %d %s; want 401 invalid_challenge", r.status, r.raw)
	}

	opts = in.must(t, 200, "POST", api+"/passkey/reauthenticate/options", stale, nil)
	if assertion, err = auth.Login([]byte(opts.raw), pkClient, nil); err != nil {
		t.Fatal(err)
	}
	fresh := in.must(t, 200, "POST", api+"/reauthenticate", stale, map[string]any{"credential": assertion})
	access := fresh.str("access_token")
	if fresh.str("session_id") != signup.str("session_id") || !authTime(t, access).Equal(clk.Now().Truncate(time.Second)) {
		t.Fatalf("passkey re-authentication = %s; want session %s, auth_time now", fresh.raw, signup.str("session_id"))
	}
	if amr := pkAMR(t, access); !slices.Equal(amr, []string{"hwk", "user"}) {
		t.Fatalf("amr %v; want a device-bound passkey's [hwk user]", amr)
	}
	in.must(t, 200, "POST", api+"/2fa/backup-codes/regenerate", access, nil)
	// The ceremony was used up.
	if r := in.call(t, "POST", api+"/reauthenticate", stale, map[string]any{"credential": assertion}); r.status != 401 || r.errCode() != "invalid_challenge" {
		t.Fatalf("the assertion again = %d %s; want 401 invalid_challenge", r.status, r.raw)
	}
}
