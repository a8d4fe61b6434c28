package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/internal/testenv"
)

// An address whose domain is no public host name (an IP literal, localhost,
// a label with a hyphen at an end) is refused with validation_failed on
// every endpoint that takes an email, before any work or mail; a Google ID
// token carrying one signs nobody up.
func TestEmailsNeedAMailableDomain(t *testing.T) {
	t.Parallel()
	idp := testenv.NewGoogleIdP(t)
	c := googleCluster(t, idp)
	in := c.start(t)
	pool := c.dbPool(t)
	const pw = "correct horse battery staple"
	c.signupVerified(t, in, "alice@example.com", pw, nil)
	if r := in.rawCall(t, "POST", api+"/register", nil, jsonBody(t, map[string]any{"email": "pending@example.com", "password": pw})); r.status != 202 {
		t.Fatalf("register pending = %d %s", r.status, r.raw)
	}
	c.nextCode(t, "pending@example.com", 0)
	mails := c.mailCount(t)

	bad := map[string]string{
		"IPv4 literal":             "x@[127.0.0.1]",
		"IPv6 literal":             "x@[ipv6:::1]",
		"bare IPv4 address":        "x@127.0.0.1",
		"localhost":                "x@localhost",
		"a subdomain of localhost": "x@app.localhost",
		"label starting with -":    "x@-example.com",
		"label ending with -":      "x@example-.com",
		"TLD starting with -":      "x@example.-com",
		"64-character label":       "x@" + strings.Repeat("a", 64) + ".com",
		"empty label":              "x@example..com",
		"underscore in the host":   "x@ex_ample.com",
		"all-digit TLD":            "x@example.123",
	}
	endpoints := []jsonEndpoint{
		{"/register", map[string]any{"email": "fresh@example.com", "password": pw}},
		{"/register/verify", map[string]any{"email": "pending@example.com", "code": "123456"}},
		{"/login", map[string]any{"email": "alice@example.com", "password": pw}},
		{"/otp/send", map[string]any{"email": "alice@example.com", "purpose": "login"}},
		{"/otp/login", map[string]any{"email": "alice@example.com", "code": "123456"}},
		{"/reset-password", map[string]any{"email": "alice@example.com", "code": "123456", "new_password": "a brand new passphrase"}},
	}
	var probes []probe
	for _, ep := range endpoints {
		for name, e := range bad {
			probes = append(probes, probe{name: ep.path + " email " + name, method: "POST", path: api + ep.path, body: jsonBody(t, with(ep.valid, "email", e)), wantCode: "validation_failed"})
		}
	}
	runProbes(t, in, pool, probes)

	before := readDBState(t, pool)
	for name, e := range bad {
		r := in.call(t, "POST", api+"/google", "", map[string]any{"id_token": idp.Token(t, "google-"+name, e)})
		if r.status != 401 || r.errCode() != "invalid_token" {
			t.Errorf("Google ID token with email %s (%q) = %d %s; want 401 invalid_token", name, e, r.status, r.raw)
		}
	}
	if after := readDBState(t, pool); after.events != before.events || after.uniqueKeys != before.uniqueKeys {
		t.Errorf("Google ID tokens with unmailable emails appended %v and claimed %d keys", after.eventTypes[before.events:], after.uniqueKeys-before.uniqueKeys)
	}
	if n := c.mailCount(t); n != mails {
		t.Errorf("unmailable addresses got %d mails", n-mails)
	}

	// Real host names of every shape still sign up.
	for _, e := range []string{"x@mail.example.co.uk", "x@xn--bcher-kva.example", "x@a-b.c0.example", "x@1example.com"} {
		if r := in.rawCall(t, "POST", api+"/register", nil, jsonBody(t, map[string]any{"email": e, "password": pw})); r.status != 202 {
			t.Errorf("register %s = %d %s; want 202", e, r.status, r.raw)
		}
	}
}

// startWith starts an instance of the cluster whose commands decide by opts'
// clock and which sweeps unverified signups every opts.sweepEvery.
func (c *cluster) startWith(t *testing.T, opts options) *instance {
	t.Helper()
	port := testenv.FreePort(t)
	env := map[string]string{"AUTHD_ADDR": fmt.Sprintf("127.0.0.1:%d", port)}
	for k, v := range c.env {
		env[k] = v
	}
	return runAuthdWith(t, env, fmt.Sprintf("http://127.0.0.1:%d", port), io.Discard, opts)
}

// signupState is what the log and the read model say of the account an
// email was signed up for.
type signupState struct {
	expirations int  // SignupExpired events in its stream
	keyHeld     bool // the email's unique key is held (by anyone)
	row         bool // the users read model has the account
	verified    bool // the read model says verified
}

// holder is the account that holds email now: the signup's id, read from
// the write side's unique key (the log keeps the address sealed).
func holder(t *testing.T, pool *pgxpool.Pool, email string) string {
	t.Helper()
	var user string
	if err := pool.QueryRow(context.Background(), `SELECT owner FROM unique_keys WHERE scope = 'email' AND key = $1`, email).Scan(&user); err != nil {
		t.Fatalf("the holder of %s: %v", email, err)
	}
	return user
}

// signupOf is the state of user's account, signed up with email.
func signupOf(t *testing.T, pool *pgxpool.Pool, user, email string) signupState {
	t.Helper()
	ctx := context.Background()
	var s signupState
	q := func(sql string, dst any) {
		if err := pool.QueryRow(ctx, sql, user, email).Scan(dst); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	q(`SELECT count(*) FROM events WHERE stream_id = 'user-' || $1 AND type = 'SignupExpired' AND $2 <> ''`, &s.expirations)
	q(`SELECT EXISTS (SELECT 1 FROM unique_keys WHERE scope = 'email' AND key = $2 AND $1 <> '')`, &s.keyHeld)
	q(`SELECT EXISTS (SELECT 1 FROM users WHERE id = $1::uuid AND $2 <> '')`, &s.row)
	q(`SELECT coalesce((SELECT email_verified FROM users WHERE id = $1::uuid AND $2 <> ''), false)`, &s.verified)
	return s
}

// An unverified signup older than AUTHD_PENDING_SIGNUP_TTL expires: its
// stream gets SignupExpired (ids only), the read model drops it, and its
// email signs up and verifies again at once. A verified account and a
// younger signup are left alone.
func TestUnverifiedSignupsExpireAndFreeTheirEmail(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil) // AUTHD_PENDING_SIGNUP_TTL at its default, 168h
	const ttl = 168 * time.Hour
	// The signups below are made days ago by the clock the commands go by,
	// and end up in the present, where the access tokens are checked.
	clock := testenv.NewClock(time.Now().Add(-ttl - time.Hour))
	in := c.startWith(t, options{now: clock.Now, limitsNow: time.Now, sweepEvery: 20 * time.Millisecond})
	pool := c.dbPool(t)
	const pw = "correct horse battery staple"

	users := map[string]string{"verified@example.com": c.signupVerified(t, in, "verified@example.com", pw, nil).str("user", "id")}
	in.must(t, 202, "POST", api+"/register", "", map[string]any{"email": "old@example.com", "password": pw, "name": "Old"})
	// renewed signs up as long ago as old does, and again within its time:
	// the renewal restarts its clock.
	in.must(t, 202, "POST", api+"/register", "", map[string]any{"email": "renewed@example.com", "password": pw})
	clock.Advance(3 * time.Hour)
	in.must(t, 202, "POST", api+"/register", "", map[string]any{"email": "young@example.com", "password": pw})
	for _, email := range []string{"old@example.com", "renewed@example.com", "young@example.com"} {
		users[email] = holder(t, pool, email)
	}
	clock.Advance(ttl - 4*time.Hour)
	in.must(t, 202, "POST", api+"/register", "", map[string]any{"email": "renewed@example.com", "password": pw})
	clock.Advance(2 * time.Hour) // now: old 169 h, young 166 h, renewed 2 h since its renewal

	oldUser := users["old@example.com"]
	testenv.Eventually(t, 30*time.Second, func() bool {
		s := signupOf(t, pool, oldUser, "old@example.com")
		return s.expirations == 1 && !s.row
	})
	if signupOf(t, pool, oldUser, "old@example.com").keyHeld {
		t.Errorf("old@example.com expired but its email key is still held")
	}
	for _, email := range []string{"verified@example.com", "young@example.com", "renewed@example.com"} {
		if s := signupOf(t, pool, users[email], email); s.expirations != 0 || !s.row || !s.keyHeld {
			t.Errorf("%s: %+v; want it left alone", email, s)
		}
	}
	var data, meta string
	if err := pool.QueryRow(context.Background(), `SELECT data::text, metadata::text FROM events WHERE type = 'SignupExpired'`).Scan(&data, &meta); err != nil {
		t.Fatal(err)
	}
	if want := `{"user_id": "` + oldUser + `"}`; data != want {
		t.Errorf("SignupExpired data = %s; want %s (ids only)", data, want)
	}
	if strings.Contains(meta, "ip") && strings.Contains(meta, ".") {
		t.Errorf("SignupExpired metadata = %s; want no client details", meta)
	}

	// The address is free: it signs up again, verifies and signs in, now
	// (access tokens are checked by the real clock).
	clock.Advance(time.Since(clock.Now()))
	again := c.signupVerified(t, in, "old@example.com", "another good passphrase", nil)
	checkTokens(t, again, "old@example.com")
	if again.str("user", "id") == oldUser {
		t.Errorf("the new signup got the expired account's id %s", oldUser)
	}
	me := in.must(t, 200, "GET", api+"/me", again.str("access_token"), nil)
	if me.str("email") != "old@example.com" || me.body["email_verified"] != true {
		t.Errorf("GET /me after signing up again = %s", me.raw)
	}
	if s := signupOf(t, pool, again.str("user", "id"), "old@example.com"); s.expirations != 0 || !s.verified {
		t.Errorf("the new signup of old@example.com: %+v; want verified", s)
	}
}
