package main

import (
	"strings"
	"testing"
)

// An address whose domain is no public host name (an IP literal, localhost,
// a label with a hyphen at an end) is refused with validation_failed on
// every endpoint that takes an email, before any work or mail; a Google ID
// token carrying one signs nobody up.
func TestEmailsNeedAMailableDomain(t *testing.T) {
	t.Parallel()
	idp := newGoogleIdP(t)
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
		r := in.call(t, "POST", api+"/google", "", map[string]any{"id_token": idp.token(t, "google-"+name, e)})
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
