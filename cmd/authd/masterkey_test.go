package main

import (
	"bytes"
	"encoding/base64"
	"testing"

	"github.com/authd/authd/internal/testenv"
)

// Rotating the master key (README: a new key first, the old one after it)
// keeps what was keyed before it: backup codes, an emailed code and a
// login's 2FA challenge made by an instance on the old key work on one
// already on the new list, and the other way round with an instance that
// holds the new key after the old one, the README's first step of a
// rolling rotation. Derived from the first master key, as they once were,
// none of them did: the user's backup codes were gone.
func TestRotatingTheMasterKeyKeepsCodesWorking(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	before := c.start(t)
	const email, pw = "rotation@example.com", "correct horse battery staple"
	access := c.signupVerified(t, before, email, pw, nil).str("access_token")
	app := &testenv.TOTPApp{Secret: before.must(t, 200, "POST", api+"/2fa/setup", access, nil).str("secret")}
	backup := tfBackupCodes(t, before.must(t, 200, "POST", api+"/2fa/enable", access, map[string]any{"code": app.Next(t)}))
	challenge := tfChallenge(t, before.must(t, 200, "POST", api+"/login", "", map[string]any{"email": email, "password": pw}))
	sendCode := func(in *instance) string {
		t.Helper()
		seen := len(mailsTo(t, c, email))
		in.must(t, 202, "POST", api+"/otp/send", "", map[string]any{"email": email, "purpose": "login"})
		return c.nextCode(t, email, seen)
	}
	code := sendCode(before)

	oldKey, newKey := c.env["AUTHD_MASTER_KEY"], base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32))
	c.env["AUTHD_MASTER_KEY"] = newKey + "," + oldKey
	rotated := c.start(t)
	c.env["AUTHD_MASTER_KEY"] = oldKey + "," + newKey
	opening := c.start(t)

	v := rotated.must(t, 200, "POST", api+"/2fa/verify", "", map[string]any{"challenge_token": challenge, "code": backup[0]})
	checkTokens(t, v, email)
	byCode := tfChallenge(t, rotated.must(t, 200, "POST", api+"/otp/login", "", map[string]any{"email": email, "code": code}))
	checkTokens(t, rotated.must(t, 200, "POST", api+"/2fa/verify", "", map[string]any{"challenge_token": byCode, "code": backup[1]}), email)

	// What the rotated instance keys and seals, one that holds the new key
	// but still seals with the old checks.
	byCode = tfChallenge(t, opening.must(t, 200, "POST", api+"/otp/login", "", map[string]any{"email": email, "code": sendCode(rotated)}))
	checkTokens(t, opening.must(t, 200, "POST", api+"/2fa/verify", "", map[string]any{"challenge_token": byCode, "code": backup[2]}), email)
	tfStatus(t, rotated, v.str("access_token"), true, 7)
}
