package main

import (
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/authd/authd/internal/softauthn"
)

// A passkey is a factor of its own: a user with TOTP on signs in with one
// and gets tokens, not a challenge, while a password login still gets one.
func TestPasskeyLoginOfATwoFactorUserNeedsNoChallenge(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	a := c.start(t)
	const email, pw = "pk-tf@example.com", "correct horse battery"
	access := c.signupVerified(t, a, email, pw, nil).str("access_token")

	auth := &softauthn.Authenticator{AAGUID: uuid.New(), UserVerified: true}
	if r, _ := pkRegister(t, a, access, auth, "laptop"); r.status != 201 {
		t.Fatalf("register passkey = %d %s", r.status, r.raw)
	}
	setup := a.must(t, 200, "POST", api+"/2fa/setup", access, nil)
	app := &tfAuthenticator{secret: setup.str("secret")}
	a.must(t, 200, "POST", api+"/2fa/enable", access, map[string]any{"code": app.next(t)})

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
