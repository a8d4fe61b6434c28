package main

// Account self-service end to end (API.md: "Account self-service and fresh
// authentication"): real HTTP, Postgres, NATS and Mailpit, two instances
// where a change must show on both.

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/internal/mail"
	"github.com/authd/authd/internal/testenv"
)

// A password change keeps the caller's session and ends every other: their
// access tokens are refused at once on the instance that changed it and
// soon on the other, their refresh tokens stop working. The old password
// no longer signs in, the new one does.
func TestChangePasswordKeepsThisSessionAndEndsTheOthers(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	a, b := c.start(t), c.start(t)
	run := strings.ToLower(uuid.NewString()[:8])
	email, pw, newPW := "pw-"+run+"@example.com", "correct horse battery", "a brand new passphrase"
	mine := c.signupVerified(t, a, email, pw, nil)
	other := b.must(t, 200, "POST", api+"/login", "", map[string]any{"email": email, "password": pw})
	third := a.must(t, 200, "POST", api+"/login", "", map[string]any{"email": email, "password": pw})
	access := mine.str("access_token")

	if r := a.call(t, "POST", api+"/me/password", access, map[string]any{"new_password": "short"}); r.status != 400 || r.errCode() != "validation_failed" {
		t.Fatalf("a short password = %d %s; want 400 validation_failed", r.status, r.raw)
	}
	r := a.must(t, 200, "POST", api+"/me/password", access, map[string]any{"new_password": newPW})
	if r.str("status") != "password_changed" || r.body["revoked_sessions"] != float64(2) {
		t.Fatalf("password change answered %s; want password_changed, 2 revoked", r.raw)
	}
	for _, s := range []response{other, third} {
		requireEnded(t, a, b, s, "another session")
	}
	// The caller's session lives on, tokens and all.
	a.must(t, 200, "GET", api+"/me", access, nil)
	b.must(t, 200, "GET", api+"/me", access, nil)
	b.must(t, 200, "POST", api+"/refresh", "", map[string]any{"refresh_token": mine.str("refresh_token")})
	if r := b.call(t, "POST", api+"/login", "", map[string]any{"email": email, "password": pw}); r.status != 401 || r.errCode() != "invalid_credentials" {
		t.Fatalf("the old password = %d %s; want 401 invalid_credentials", r.status, r.raw)
	}
	b.must(t, 200, "POST", api+"/login", "", map[string]any{"email": email, "password": newPW})
	if events, _ := activityOf(t, a, access, ""); !hasType(events, "PasswordChanged") {
		t.Fatalf("activity %v does not list PasswordChanged", events)
	}
}

// A user who signed up with Google has no password, and can set one.
func TestAUserWithoutAPasswordCanSetOne(t *testing.T) {
	t.Parallel()
	idp := testenv.NewGoogleIdP(t)
	c := googleCluster(t, idp)
	a := c.start(t)
	signup := googleSignIn(t, a, idp.Token(t, "1101694844743862"+uuid.NewString()[:4], "nopw-"+uuid.NewString()[:8]+"@example.com"))
	email := signup.str("user", "email")
	r := a.must(t, 200, "POST", api+"/me/password", signup.str("access_token"), map[string]any{"new_password": "my first password"})
	if r.body["revoked_sessions"] != float64(0) {
		t.Fatalf("answered %s; want no session revoked", r.raw)
	}
	a.must(t, 200, "POST", api+"/login", "", map[string]any{"email": email, "password": "my first password"})
}

func hasType(events []map[string]any, typ string) bool {
	for _, e := range events {
		if e["type"] == typ {
			return true
		}
	}
	return false
}

// noticesTo lists the security notices mailed to email, by event type.
func noticesTo(t *testing.T, c *cluster, email string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, m := range mailsTo(t, c, email) {
		for _, h := range c.mail.Headers(t, m.ID)[mail.NoticeHeader] {
			out[h]++
		}
	}
	return out
}

// An email change: a taken address answers the same and gets no code; the
// new one gets a code, a wrong code is refused, the right one moves the
// account; the old address is told, signs in no more, the new one does.
func TestEmailChangeEndToEnd(t *testing.T) {
	t.Parallel()
	c := newCluster(t, map[string]string{"AUTHD_NOTICES": "on"})
	a, b := c.start(t), c.start(t)
	run := strings.ToLower(uuid.NewString()[:8])
	old, taken, next, pw := "old-"+run+"@example.com", "taken-"+run+"@example.com", "new-"+run+"@example.com", "correct horse battery"
	signup := c.signupVerified(t, a, old, pw, nil)
	c.signupVerified(t, a, taken, pw, nil)
	access := signup.str("access_token")
	c.noticesSettled(t)
	takenMails := len(mailsTo(t, c, taken))

	for _, addr := range []string{taken, strings.ToUpper(old)} {
		if r := a.call(t, "POST", api+"/me/email", access, map[string]any{"new_email": addr}); r.status != 202 || r.str("status") != "verification_sent" {
			t.Fatalf("change to a taken address = %d %s; want the same 202", r.status, r.raw)
		}
	}
	if r := a.call(t, "POST", api+"/me/email", access, map[string]any{"new_email": "not an address"}); r.status != 400 || r.errCode() != "validation_failed" {
		t.Fatalf("a bad address = %d %s; want 400 validation_failed", r.status, r.raw)
	}
	seen := len(mailsTo(t, c, next))
	a.must(t, 202, "POST", api+"/me/email", access, map[string]any{"new_email": next})
	code := c.nextCode(t, next, seen)
	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}
	if r := b.call(t, "POST", api+"/me/email/verify", access, map[string]any{"code": wrong}); r.status != 400 || r.errCode() != "invalid_code" {
		t.Fatalf("a wrong code = %d %s; want 400 invalid_code", r.status, r.raw)
	}
	me := b.must(t, 200, "POST", api+"/me/email/verify", access, map[string]any{"code": code})
	if me.str("email") != next || me.body["email_verified"] != true {
		t.Fatalf("verify answered %s; want the new, verified email", me.raw)
	}
	if got := a.must(t, 200, "GET", api+"/me", access, nil); got.str("email") != next {
		t.Fatalf("GET /me right after = %s; want %s", got.raw, next)
	}
	if r := b.call(t, "POST", api+"/me/email/verify", access, map[string]any{"code": code}); r.status != 400 || r.errCode() != "invalid_code" {
		t.Fatalf("the used code again = %d %s; want 400 invalid_code", r.status, r.raw)
	}
	a.must(t, 200, "POST", api+"/login", "", map[string]any{"email": next, "password": pw})
	if r := b.call(t, "POST", api+"/login", "", map[string]any{"email": old, "password": pw}); r.status != 401 {
		t.Fatalf("the old address signs in: %d %s", r.status, r.raw)
	}

	c.noticesSettled(t)
	if got := noticesTo(t, c, old); got["EmailChanged"] != 1 || got["EmailChangeRequested"] != 3 {
		t.Fatalf("notices to the old address: %v; want one EmailChanged and three EmailChangeRequested", got)
	}
	if n := len(mailsTo(t, c, taken)); n != takenMails {
		t.Fatalf("the taken address got %d mails from a change to it; want none", n-takenMails)
	}
	if got := noticesTo(t, c, next); got["EmailChanged"]+got["EmailChangeRequested"] != 0 {
		t.Fatalf("notices to the new address: %v; want no email-change notice", got)
	}
	if events, _ := activityOf(t, a, access, ""); !hasType(events, "EmailChanged") {
		t.Fatalf("activity %v does not list EmailChanged", events)
	}
}

// An address taken by someone else between the request and the code: 409,
// and the account keeps its address.
func TestEmailChangeToAnAddressTakenMeanwhileConflicts(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	a := c.start(t)
	run := strings.ToLower(uuid.NewString()[:8])
	old, next, pw := "mine-"+run+"@example.com", "contested-"+run+"@example.com", "correct horse battery"
	access := c.signupVerified(t, a, old, pw, nil).str("access_token")
	a.must(t, 202, "POST", api+"/me/email", access, map[string]any{"new_email": next})
	code := c.nextCode(t, next, 0)
	c.signupVerified(t, a, next, pw, nil)
	if r := a.call(t, "POST", api+"/me/email/verify", access, map[string]any{"code": code}); r.status != 409 || r.errCode() != "conflict" {
		t.Fatalf("verify after the address was taken = %d %s; want 409 conflict", r.status, r.raw)
	}
	if me := a.must(t, 200, "GET", api+"/me", access, nil); me.str("email") != old {
		t.Fatalf("GET /me = %s; want the old address", me.raw)
	}
	a.must(t, 200, "POST", api+"/login", "", map[string]any{"email": old, "password": pw})
}

// PATCH /me changes the name and locale, GET /me shows them; a malformed
// locale is 400; the mails of a user with locale de use the operator's de
// template, and another user's stay English.
func TestUpdateProfileAndMailsInTheUsersLocale(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	testenv.MailTemplate(t, dir, "login", "de", "Ihr Anmeldecode", "Ihr Code: {{.Code}}", "<p>Ihr Code: {{.Code}}</p>")
	c := newCluster(t, map[string]string{"AUTHD_MAIL_TEMPLATES": dir})
	a, b := c.start(t), c.start(t)
	run := strings.ToLower(uuid.NewString()[:8])
	de, en, pw := "de-"+run+"@example.com", "en-"+run+"@example.com", "correct horse battery"
	access := c.signupVerified(t, a, de, pw, nil).str("access_token")
	c.signupVerified(t, a, en, pw, nil)

	if me := a.must(t, 200, "GET", api+"/me", access, nil); me.body["locale"] != "" {
		t.Fatalf("GET /me before = %s; want locale \"\"", me.raw)
	}
	for _, bad := range []any{map[string]any{"locale": "not a locale!"}, map[string]any{"locale": 7}, map[string]any{"name": strings.Repeat("x", 201)}} {
		if r := a.call(t, "PATCH", api+"/me", access, bad); r.status != 400 || r.errCode() != "validation_failed" {
			t.Fatalf("PATCH /me %v = %d %s; want 400 validation_failed", bad, r.status, r.raw)
		}
	}
	r := a.must(t, 200, "PATCH", api+"/me", access, map[string]any{"name": "Ada L.", "locale": "DE"})
	if r.str("name") != "Ada L." || r.str("locale") != "de" || r.str("email") != de {
		t.Fatalf("PATCH /me answered %s; want the name and the canonical locale de", r.raw)
	}
	if me := b.must(t, 200, "GET", api+"/me", access, nil); me.str("name") != "Ada L." || me.str("locale") != "de" {
		t.Fatalf("GET /me after = %s", me.raw)
	}
	pool := c.dbPool(t)
	before := readDBState(t, pool).events
	a.must(t, 200, "PATCH", api+"/me", access, map[string]any{"name": "Ada L."})
	a.must(t, 200, "PATCH", api+"/me", access, nil)
	if got := eventsAfter(t, pool, before); len(got) != 0 {
		t.Fatalf("a PATCH that changes nothing appended %v", got)
	}

	for _, to := range []string{de, en} {
		// The signup's verify mail is not the one this test reads: claim it,
		// so that WaitForMessage below waits for the sign-in mail.
		c.mail.WaitForMessage(t, to, 15*time.Second)
		a.must(t, 202, "POST", api+"/otp/send", "", map[string]any{"email": to, "purpose": "login"})
	}
	if m := c.mail.WaitForMessage(t, de, 15*time.Second); m.Subject != "Ihr Anmeldecode" || !strings.HasPrefix(m.Text, "Ihr Code: ") {
		t.Errorf("the de user's sign-in mail: %q\n%s", m.Subject, m.Text)
	}
	if m := c.mail.WaitForMessage(t, en, 15*time.Second); m.Subject == "Ihr Anmeldecode" || strings.HasPrefix(m.Text, "Ihr Code") {
		t.Errorf("the other user's sign-in mail is not English: %q\n%s", m.Subject, m.Text)
	}
}
