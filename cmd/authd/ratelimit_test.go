package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/authd/authd/internal/testenv"
)

// checkRateLimited fails the test unless r is a 429 rate_limited in the error
// shape with a Retry-After of whole seconds, at least 1 and at most max.
func checkRateLimited(t *testing.T, what string, r response, max int) {
	t.Helper()
	if r.status != 429 || r.errCode() != "rate_limited" {
		t.Errorf("%s = %d %s; want 429 rate_limited", what, r.status, r.raw)
		return
	}
	if p := errorShapeProblems(r); len(p) > 0 {
		t.Errorf("%s: %s", what, strings.Join(p, "; "))
	}
	if ra := retryAfterSeconds(r); ra < 1 || ra > max {
		t.Errorf("%s: Retry-After %q, want whole seconds in [1, %d]", what, r.header.Get("Retry-After"), max)
	}
}

func countEvents(t *testing.T, c *cluster, typ string) int {
	t.Helper()
	var n int
	if err := c.dbPool(t).QueryRow(t.Context(), `SELECT count(*) FROM events WHERE type = $1`, typ).Scan(&n); err != nil {
		t.Fatalf("count %s events: %v", typ, err)
	}
	return n
}

// Per-IP limits with no trusted proxy: the counter is shared by the
// instances on one database, each endpoint group has its own, and
// X-Forwarded-For (or any other client-set header) does not make a new client.
func TestRateLimitPerClientIP(t *testing.T) {
	t.Parallel()
	c := newCluster(t, map[string]string{"AUTHD_RATE_LIMIT": "on"})
	c.limitsNow = stillInOneWindow()
	a, b := c.start(t), c.start(t)
	const pw = "correct horse battery staple"

	t.Run("the 6th register in a minute is refused, on another instance too", func(t *testing.T) {
		for i := 1; i <= 5; i++ {
			r := a.rawCall(t, "POST", api+"/register", nil, jsonBody(t, map[string]any{"email": fmt.Sprintf("signup-%d@example.com", i), "password": pw}))
			if r.status != 202 {
				t.Fatalf("register #%d on A = %d %s; want 202", i, r.status, r.raw)
			}
		}
		r := b.rawCall(t, "POST", api+"/register", nil, jsonBody(t, map[string]any{"email": "signup-6@example.com", "password": pw}))
		checkRateLimited(t, "register #6, on instance B", r, 60)
		checkRateLimited(t, "register #7, on instance A", a.rawCall(t, "POST", api+"/register", nil, jsonBody(t, map[string]any{"email": "signup-7@example.com", "password": pw})), 60)
		// A refused request changes nothing.
		if n := countEvents(t, c, "UserRegistered"); n != 5 {
			t.Errorf("UserRegistered events = %d, want the 5 admitted", n)
		}
	})

	t.Run("another endpoint group still works", func(t *testing.T) {
		r := a.rawCall(t, "POST", api+"/login", nil, jsonBody(t, map[string]any{"email": "nobody@example.com", "password": pw}))
		if r.status != 401 || r.errCode() != "invalid_credentials" {
			t.Errorf("login after register was limited = %d %s; want 401 invalid_credentials", r.status, r.raw)
		}
		r = b.rawCall(t, "POST", api+"/otp/send", nil, jsonBody(t, map[string]any{"email": "nobody@example.com", "purpose": "login"}))
		if r.status != 202 {
			t.Errorf("otp/send after register was limited = %d %s; want 202", r.status, r.raw)
		}
	})

	t.Run("X-Forwarded-For from an untrusted peer is ignored", func(t *testing.T) {
		// otp/send allows 5 a minute; the previous subtest used one.
		for i := 1; i <= 4; i++ {
			h := hdr("X-Forwarded-For", fmt.Sprintf("203.0.113.%d", i), "X-Real-IP", fmt.Sprintf("203.0.113.%d", i),
				"Forwarded", fmt.Sprintf("for=203.0.113.%d", i))
			r := a.rawCall(t, "POST", api+"/otp/send", h, jsonBody(t, map[string]any{"email": fmt.Sprintf("nobody-%d@example.com", i), "purpose": "login"}))
			if r.status != 202 {
				t.Fatalf("otp/send #%d = %d %s; want 202", i+1, r.status, r.raw)
			}
		}
		h := hdr("X-Forwarded-For", "198.51.100.200", "X-Real-IP", "198.51.100.200", "Forwarded", "for=198.51.100.200")
		r := a.rawCall(t, "POST", api+"/otp/send", h, jsonBody(t, map[string]any{"email": "nobody-6@example.com", "purpose": "login"}))
		checkRateLimited(t, "otp/send #6 with a new X-Forwarded-For", r, 60)
	})
}

// With AUTHD_TRUSTED_PROXIES, the client is the address the trusted proxy
// reports; the per-account login slow-down does not care about addresses.
func TestRateLimitBehindTrustedProxy(t *testing.T) {
	t.Parallel()
	c := newCluster(t, map[string]string{"AUTHD_RATE_LIMIT": "on", "AUTHD_TRUSTED_PROXIES": "127.0.0.1/32"})
	in := c.start(t)
	const pw = "correct horse battery staple"
	roomInWindow(5 * time.Second) // for the per-IP subtests; the per-account one uses a new address per request

	t.Run("distinct X-Forwarded-For values are distinct clients", func(t *testing.T) {
		send := func(ip string, i int) response {
			return in.rawCall(t, "POST", api+"/otp/send", hdr("X-Forwarded-For", ip), jsonBody(t, map[string]any{"email": fmt.Sprintf("nobody-%d@example.com", i), "purpose": "login"}))
		}
		for i := 1; i <= 8; i++ {
			if r := send(fmt.Sprintf("198.51.100.%d", i), i); r.status != 202 {
				t.Fatalf("otp/send from client #%d = %d %s; want 202 (a client of its own)", i, r.status, r.raw)
			}
		}
		// One of them is still held to its own limit: 4 more, then refused.
		for i := 2; i <= 5; i++ {
			if r := send("198.51.100.1", 100+i); r.status != 202 {
				t.Fatalf("otp/send #%d from 198.51.100.1 = %d %s; want 202", i, r.status, r.raw)
			}
		}
		checkRateLimited(t, "otp/send #6 from 198.51.100.1", send("198.51.100.1", 200), 60)
	})

	// A proxy appends the address it saw to what the client sent, so only
	// the right end of the list is the proxy's word; the left is whatever
	// the client wrote. The client here is 192.0.2.77 and rotates a
	// made-up address in front of it.
	t.Run("a client-written X-Forwarded-For prefix is not believed", func(t *testing.T) {
		var last response
		for i := 1; i <= 6; i++ {
			h := hdr("X-Forwarded-For", fmt.Sprintf("10.9.8.%d, 192.0.2.77", i))
			last = in.rawCall(t, "POST", api+"/otp/send", h, jsonBody(t, map[string]any{"email": fmt.Sprintf("spoof-%d@example.com", i), "purpose": "login"}))
			if i < 6 && last.status != 202 {
				t.Fatalf("otp/send #%d = %d %s; want 202", i, last.status, last.raw)
			}
		}
		checkRateLimited(t, "otp/send #6 from 192.0.2.77 behind a rotating spoofed X-Forwarded-For entry", last, 60)
	})

	t.Run("wrong passwords slow one account down, not another", func(t *testing.T) {
		reg := hdr("X-Forwarded-For", "192.0.2.10")
		c.signupVerified(t, in, "victim@example.com", pw, reg)
		c.signupVerified(t, in, "bystander@example.com", pw, reg)
		failedBefore := countEvents(t, c, "LoginFailed")

		// Each attempt from an address of its own: the slow-down is per
		// account, and the per-IP limit stays out of the way.
		ip := 0
		login := func(email, password string) response {
			ip++
			return in.rawCall(t, "POST", api+"/login", hdr("X-Forwarded-For", fmt.Sprintf("198.18.%d.%d", ip/250, ip%250+1)), jsonBody(t, map[string]any{"email": email, "password": password}))
		}
		// Five wrong passwords are free and the sixth earns the first delay
		// (1 s, then doubling: ratelimit/login.go). Keep guessing until the
		// account must wait with at least 2 s left, so that the login below,
		// sent at once, falls inside the wait however slow hashing is here.
		wrong, first429 := 0, 0
		var throttled response
		for attempt := 1; attempt <= 40; attempt++ {
			r := login("victim@example.com", "wrong password")
			switch {
			case r.status == 401 && r.errCode() == "invalid_credentials":
				wrong++
				continue
			case r.status == 429:
				checkRateLimited(t, fmt.Sprintf("wrong password #%d", attempt), r, 60)
				if first429 == 0 {
					first429 = wrong
				}
				if ra := retryAfterSeconds(r); ra < 8 {
					time.Sleep(time.Duration(max(ra, 1)) * time.Second)
					continue
				}
				throttled = r
			default:
				t.Fatalf("wrong password #%d = %d %s", attempt, r.status, r.raw)
			}
			break
		}
		if throttled.status == 0 {
			t.Fatalf("after %d wrong passwords the account was never made to wait 2 s", wrong)
		}
		if first429 > 7 {
			t.Errorf("the first 429 came after %d wrong passwords; want it after the 6th (5 free, the 6th earns 1 s)", first429)
		}
		t.Logf("first refused after %d wrong passwords; %d wrong passwords in all", first429, wrong)

		right := login("victim@example.com", pw)
		checkRateLimited(t, "the right password while the account must wait", right, 60)
		if r := login("bystander@example.com", pw); r.status != 200 {
			t.Errorf("another account's login = %d %s; want 200", r.status, r.raw)
		}
		// The record of a failed login is written after the answer (it
		// must not make a known address slower than an unknown one).
		testenv.Eventually(t, 15*time.Second, func() bool { return countEvents(t, c, "LoginFailed")-failedBefore >= wrong })
		if n := countEvents(t, c, "LoginFailed") - failedBefore; n != wrong {
			t.Errorf("LoginFailed events = %d, want one per wrong password checked (%d)", n, wrong)
		}
	})
}

// throttleFromElsewhere sends wrong passwords for email, each from an
// address of its own outside the owner's networks (next), until the
// account's logins from elsewhere must wait at least 8 s, and returns that
// refusal. 8 s, not less: the owner's own login comes next, and on a loaded
// machine its hashing took longer than a 2 s wait, which then ran out before
// the test could see it still held.
func throttleFromElsewhere(t *testing.T, in *instance, email string, next func() http.Header) response {
	t.Helper()
	for attempt := 1; attempt <= 40; attempt++ {
		r := in.rawCall(t, "POST", api+"/login", next(), jsonBody(t, map[string]any{"email": email, "password": "wrong password"}))
		switch {
		case r.status == 401 && r.errCode() == "invalid_credentials":
			continue
		case r.status == 429:
			if ra := retryAfterSeconds(r); ra < 8 {
				time.Sleep(time.Duration(max(ra, 1)) * time.Second)
				continue
			}
			return r
		default:
			t.Fatalf("wrong password #%d = %d %s", attempt, r.status, r.raw)
		}
	}
	t.Fatal("40 wrong passwords never made the account wait 8 s")
	return response{}
}

// An attacker who keeps the account's login slow-down, or its code quota
// and a code's tries, spent from elsewhere does not keep the owner out: a
// network that signed in to the account lately has limits of its own
// (API.md, "Edge rules").
func TestAnAttackerElsewhereCannotKeepTheOwnerOut(t *testing.T) {
	t.Parallel()
	c := newCluster(t, map[string]string{"AUTHD_RATE_LIMIT": "on", "AUTHD_TRUSTED_PROXIES": "127.0.0.1/32"})
	in := c.start(t)
	const email, pw = "owner@example.com", "correct horse battery staple"
	home := func(host int) http.Header { return hdr("X-Forwarded-For", fmt.Sprintf("192.0.2.%d", host)) }
	// The signup ends in a sign-in from 192.0.2.10: 192.0.2.0/24 is known.
	c.signupVerified(t, in, email, pw, home(10))
	ip := 0
	elsewhere := func() http.Header {
		ip++
		return hdr("X-Forwarded-For", fmt.Sprintf("198.18.%d.%d", ip/250, ip%250+1))
	}

	t.Run("the right password from home while guesses elsewhere keep the account waiting", func(t *testing.T) {
		throttleFromElsewhere(t, in, email, elsewhere)
		// Another address of the owner's /24, not the one that signed in.
		r := in.rawCall(t, "POST", api+"/login", home(77), jsonBody(t, map[string]any{"email": email, "password": pw}))
		if r.status != 200 {
			t.Errorf("the owner's right password from a known network = %d %s; want 200", r.status, r.raw)
		}
		// Elsewhere, the slow-down still holds, right password or not.
		r = in.rawCall(t, "POST", api+"/login", elsewhere(), jsonBody(t, map[string]any{"email": email, "password": pw}))
		checkRateLimited(t, "the right password from elsewhere while the account must wait", r, 60)
	})

	t.Run("a code from home while elsewhere spends the quota and burns codes", func(t *testing.T) {
		before := len(mailsTo(t, c, email))
		attacker := elsewhere()
		for i := 1; i <= 5; i++ {
			if r := in.rawCall(t, "POST", api+"/otp/send", attacker, jsonBody(t, map[string]any{"email": email, "purpose": "login"})); r.status != 202 {
				t.Fatalf("otp/send #%d from elsewhere = %d %s", i, r.status, r.raw)
			}
		}
		// The signup's code took one of the five of the quota: four went out.
		testenv.Eventually(t, 15*time.Second, func() bool { return len(mailsTo(t, c, email)) >= before+4 })
		for i := range 5 {
			r := in.rawCall(t, "POST", api+"/otp/login", elsewhere(), jsonBody(t, map[string]any{"email": email, "code": fmt.Sprintf("%06d", 999990+i)}))
			if r.status != 400 || r.errCode() != "invalid_code" {
				t.Fatalf("wrong code #%d from elsewhere = %d %s; want 400 invalid_code", i+1, r.status, r.raw)
			}
		}
		seen := len(mailsTo(t, c, email))
		if r := in.rawCall(t, "POST", api+"/otp/send", home(77), jsonBody(t, map[string]any{"email": email, "purpose": "login"})); r.status != 202 {
			t.Fatalf("otp/send from home = %d %s", r.status, r.raw)
		}
		code := c.nextCode(t, email, seen)
		r := in.rawCall(t, "POST", api+"/otp/login", home(77), jsonBody(t, map[string]any{"email": email, "code": code}))
		if r.status != 200 {
			t.Errorf("the owner's code from a known network = %d %s; want 200", r.status, r.raw)
		}
	})
}
