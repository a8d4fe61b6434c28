package main

import (
	"fmt"
	"testing"
)

// Per-IP limits count an IPv6 client by its /64 (API.md, "Edge rules"): a
// host is routinely handed a whole /64, so new addresses in it are not new
// clients. An IPv4 address written IPv4-mapped is that IPv4 client.
func TestRateLimitKeysIPv6ClientsByTheirSlash64(t *testing.T) {
	t.Parallel()
	c := newCluster(t, map[string]string{"AUTHD_RATE_LIMIT": "on", "AUTHD_TRUSTED_PROXIES": "127.0.0.1/32"})
	c.limitsNow = stillInOneWindow()
	in := c.start(t)

	n := 0
	login := func(from string) response {
		n++
		return in.rawCall(t, "POST", api+"/login", hdr("X-Forwarded-For", from),
			jsonBody(t, map[string]any{"email": fmt.Sprintf("nobody-%d@example.com", n), "password": "correct horse battery staple"}))
	}
	wantAdmitted := func(what string, r response) {
		t.Helper()
		if r.status != 401 || r.errCode() != "invalid_credentials" {
			t.Fatalf("%s = %d %s; want 401 invalid_credentials (admitted)", what, r.status, r.raw)
		}
	}

	t.Run("12 addresses of one /64 share its 10 logins a minute", func(t *testing.T) {
		// Spread over the interface-id half, as a client rotating privacy
		// addresses would.
		for i := 1; i <= 10; i++ {
			wantAdmitted(fmt.Sprintf("login #%d", i), login(fmt.Sprintf("2001:db8:1:2:%x::%x", i*4099, i)))
		}
		checkRateLimited(t, "login #11 from a new address of the same /64", login("2001:db8:1:2:ffff:ffff:ffff:ffff"), 60)
		checkRateLimited(t, "login #12 from a new address of the same /64", login("2001:db8:1:2::abcd"), 60)
		wantAdmitted("login from the neighbouring /64", login("2001:db8:1:3::1"))
	})

	t.Run("an IPv4-mapped address is its IPv4 client", func(t *testing.T) {
		for i := 1; i <= 10; i++ {
			from := "192.0.2.55"
			if i%2 == 0 {
				from = "::ffff:192.0.2.55"
			}
			wantAdmitted(fmt.Sprintf("login #%d from %s", i, from), login(from))
		}
		checkRateLimited(t, "login #11 from ::ffff:192.0.2.55", login("::ffff:192.0.2.55"), 60)
		checkRateLimited(t, "login #12 from 192.0.2.55", login("192.0.2.55"), 60)
		// Mapped addresses are not one IPv6 /64 either.
		wantAdmitted("login from ::ffff:192.0.2.56", login("::ffff:192.0.2.56"))
	})
}
