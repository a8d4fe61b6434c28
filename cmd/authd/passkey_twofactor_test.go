package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/authd/authd/internal/softauthn"
	"github.com/authd/authd/internal/testenv"
)

// A passkey is a factor of its own: a user with TOTP on signs in with one
// and gets tokens, not a challenge, while a password login still gets one.
func TestPasskeyLoginOfATwoFactorUserNeedsNoChallenge(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	a := c.start(t)
	const email, pw = "pk-tf@example.com", "correct horse battery"
	access := c.signupVerified(t, a, email, pw, nil).str("access_token")

	auth := &softauthn.Authenticator{AAGUID: uuid.New()}
	if r, _ := pkRegister(t, a, access, auth, "laptop"); r.status != 201 {
		t.Fatalf("register passkey = %d %s", r.status, r.raw)
	}
	setup := a.must(t, 200, "POST", api+"/2fa/setup", access, nil)
	app := &testenv.TOTPApp{Secret: setup.str("secret")}
	a.must(t, 200, "POST", api+"/2fa/enable", access, map[string]any{"code": app.Next(t)})

	if r := a.must(t, 200, "POST", api+"/login", "", map[string]any{"email": email, "password": pw}); r.body["two_factor_required"] != true {
		t.Fatalf("a password login of a 2FA user got no challenge: %s", r.raw)
	}
	assertion, err := auth.Login(pkLoginOptions(t, a), pkClient, nil)
	if err != nil {
		t.Fatalf("authenticator: %v", err)
	}
	r := pkLoginWith(t, a, assertion)
	if r.status != 200 || r.str("access_token") == "" || r.body["two_factor_required"] != nil {
		t.Fatalf("passkey login of a 2FA user = %d %s; want tokens", r.status, r.raw)
	}
	if amr := pkAMR(t, r.str("access_token")); slices.Contains(amr, "pwd") || len(amr) == 0 {
		t.Fatalf("amr %v", amr)
	}
}

// A passkey sign-in replaces password and second factor, so it needs the
// authenticator to have verified the user (UV), not just a touch: a security
// key without a PIN, taken from a 2FA user's desk, must not open the account.
func TestPasskeyLoginWithoutUserVerificationIsRefused(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	a := c.start(t)
	const email, pw = "pk-nouv@example.com", "correct horse battery"
	access := c.signupVerified(t, a, email, pw, nil).str("access_token")

	key := &softauthn.Authenticator{AAGUID: uuid.New(), NoUserVerification: true, Transports: []string{"usb"}}
	if r, _ := pkRegister(t, a, access, key, "desk key"); r.status != 201 {
		t.Fatalf("register a key without user verification = %d %s; registration only prefers it", r.status, r.raw)
	}
	setup := a.must(t, 200, "POST", api+"/2fa/setup", access, nil)
	app := &testenv.TOTPApp{Secret: setup.str("secret")}
	a.must(t, 200, "POST", api+"/2fa/enable", access, map[string]any{"code": app.Next(t)})

	opts := pkLoginOptions(t, a)
	if !strings.Contains(string(opts), `"userVerification":"required"`) {
		t.Errorf("login options do not require user verification: %s", opts)
	}
	sessionsBefore := countEvents(t, c, "SessionStarted")
	assertion, err := key.Login(opts, pkClient, nil)
	if err != nil {
		t.Fatalf("authenticator: %v", err)
	}
	r := pkLoginWith(t, a, assertion)
	if r.status != 401 || r.errCode() != "invalid_credentials" {
		t.Fatalf("passkey login without user verification = %d %s; want 401 invalid_credentials", r.status, r.raw)
	}
	if n := countEvents(t, c, "SessionStarted") - sessionsBefore; n != 0 {
		t.Errorf("%d sessions started by a refused passkey login", n)
	}
	if got := pkList(t, a, access); len(got) != 1 || got[0]["last_used_at"] != nil {
		t.Errorf("a refused passkey login marked the passkey used: %v", got)
	}
}
