package main

import (
	"strings"
	"testing"
	"time"

	"github.com/authd/authd/internal/testenv"
)

// natsCluster is a cluster on a nats-server of the test's own, which the
// test may kill, rather than the machine's shared one.
func natsCluster(t *testing.T, extra map[string]string) (*cluster, *testenv.NATSProcess) {
	t.Helper()
	srv := testenv.StartNATSProcess(t)
	env := map[string]string{"NATS_URL": srv.URL}
	for k, v := range extra {
		env[k] = v
	}
	return newCluster(t, env), srv
}

// A refresh commits its rotation before it answers: with the users read
// model behind (NATS down, so nothing is projected), the answer's user comes
// from the log, never a 500 that loses the new pair the client needs.
func TestRefreshWhileTheReadModelLagsAnswersTheNewPair(t *testing.T) {
	t.Parallel()
	c, srv := natsCluster(t, map[string]string{"AUTHD_READ_YOUR_WRITES_TIMEOUT": "100ms"})
	in := c.start(t)
	srv.Kill()

	const email = "lagging@example.com"
	v := c.signupVerified(t, in, email, "correct horse battery", nil)
	r := in.rawCall(t, "POST", api+"/refresh", nil, jsonBody(t, map[string]any{"refresh_token": v.str("refresh_token")}))
	if r.status != 200 {
		t.Fatalf("refresh with the read model behind = %d %s; want 200 and the new pair", r.status, r.raw)
	}
	checkTokens(t, r, email)
	if r.str("user", "id") != v.str("user", "id") || r.str("refresh_token") == v.str("refresh_token") {
		t.Fatalf("refresh answered %s after sign-up %s", r.raw, v.raw)
	}
	// The new pair is the one the log holds: it refreshes again.
	again := in.rawCall(t, "POST", api+"/refresh", nil, jsonBody(t, map[string]any{"refresh_token": r.str("refresh_token")}))
	if again.status != 200 {
		t.Fatalf("second refresh = %d %s", again.status, again.raw)
	}
}

// NATS down is a degraded service, not an instance to take out of a load
// balancer: every instance shares the bus, and writes still commit.
func TestReadinessSaysDegradedWhileNATSIsDown(t *testing.T) {
	t.Parallel()
	c, srv := natsCluster(t, nil)
	in := c.start(t)
	srv.Kill()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		r := in.rawCall(t, "GET", "/readyz", nil, nil)
		nats := r.str("checks", "nats")
		if strings.HasPrefix(nats, "degraded: ") {
			if r.status != 200 {
				t.Fatalf("/readyz with NATS down = %d %s; want 200 with nats degraded", r.status, r.raw)
			}
			return
		}
		if nats != "ok" {
			t.Fatalf("/readyz with NATS down = %d %s; want nats degraded", r.status, r.raw)
		}
		time.Sleep(50 * time.Millisecond) // the client has not noticed the server is gone yet
	}
	t.Fatal("/readyz still said nats ok 30 s after the server was killed")
}

// A projection the stream stopped delivering to (here a NATS server that
// keeps its connections but answers nothing, as a node stuck or partitioned
// does) leaves the instance ready, degraded: it still serves, from the log
// where a read model is behind. Counted as any projection error, it held
// /readyz at 503 for seconds after every NATS fault of the chaos suite, on
// every instance leading a projection.
func TestAProjectionStoppedByTheStreamLeavesTheInstanceReady(t *testing.T) {
	t.Parallel()
	c, srv := natsCluster(t, nil)
	in := c.start(t)
	srv.Freeze()
	t.Cleanup(srv.Thaw)
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); {
		r := in.rawCall(t, "GET", "/readyz", nil, nil)
		if r.status != 200 {
			t.Fatalf("/readyz with NATS stuck = %d %s; want 200, degraded", r.status, r.raw)
		}
		if strings.HasPrefix(r.str("checks", "projections_stream"), "degraded: ") {
			if p := r.str("checks", "projections"); p != "ok" {
				t.Fatalf("/readyz projections = %q with only the stream stuck; want ok", p)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("no projection reported the stream stuck within 60 s: " + in.rawCall(t, "GET", "/readyz", nil, nil).raw)
}
