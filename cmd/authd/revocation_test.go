package main

import (
	"net/http"
	"testing"
	"time"
)

// revocationBound is how long another instance may take to refuse a revoked
// session's token in these tests: the contract's one second (API.md
// "Tokens") plus slack for a loaded machine, so that only an instance that
// never learns of the revocation fails.
const revocationBound = 5 * time.Second

// A session revoked on one instance has its access token refused by the
// other while NATS is down: the other reads the revocation from the log
// (revocation.Feed's backstop), and still accepts the session left alone.
func TestRevocationReachesTheOtherInstanceWithNATSDown(t *testing.T) {
	t.Parallel()
	c, srv := natsCluster(t, map[string]string{"AUTHD_READ_YOUR_WRITES_TIMEOUT": "100ms"})
	a, b := c.start(t), c.start(t)

	const email, pw = "revoked-offline@example.com", "correct horse battery"
	first := c.signupVerified(t, a, email, pw, nil)
	second := a.must(t, 200, "POST", api+"/login", "", map[string]any{"email": email, "password": pw})
	for _, tok := range []string{first.str("access_token"), second.str("access_token")} {
		b.must(t, 200, "GET", api+"/me", tok, nil)
	}

	srv.Kill()
	// Both instances know NATS is gone before the revocation is made, so
	// nothing of it can travel over NATS.
	for _, in := range []*instance{a, b} {
		waitNATSDown(t, in)
	}
	a.must(t, 204, "DELETE", api+"/sessions/"+first.str("session_id"), second.str("access_token"), nil)

	revoked := time.Now()
	deadline := revoked.Add(revocationBound)
	for {
		r := b.call(t, "GET", api+"/me", first.str("access_token"), nil)
		if r.status == http.StatusUnauthorized {
			t.Logf("refused on the other instance %s after the revocation answered", time.Since(revoked).Round(time.Millisecond))
			break
		}
		if r.status != http.StatusOK {
			t.Fatalf("GET /me on the other instance with the revoked token = %d %s", r.status, r.raw)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the other instance still accepts the revoked session's token %s after the revocation, with NATS down", revocationBound)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.must(t, 200, "GET", api+"/me", second.str("access_token"), nil)
}

// waitNATSDown waits until in's /readyz says NATS is not ok: it has seen NATS go.
func waitNATSDown(t *testing.T, in *instance) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := in.call(t, "GET", "/readyz", "", nil)
		if nats := r.str("checks", "nats"); nats != "" && nats != "ok" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still says NATS is ok 30s after it was killed: %s", in.base, r.raw)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
