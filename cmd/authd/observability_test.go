package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// requestCounts reads authd_http_requests_total from /metrics, keyed by
// "METHOD route status".
func requestCounts(t *testing.T, in *instance) map[string]float64 {
	t.Helper()
	r := in.rawCall(t, "GET", "/metrics", nil, nil)
	if r.status != 200 {
		t.Fatalf("/metrics = %d", r.status)
	}
	line := regexp.MustCompile(`^authd_http_requests_total\{method="([^"]*)",route="([^"]*)",status="([^"]*)"\} (\S+)$`)
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(r.raw))
	for sc.Scan() {
		if m := line.FindStringSubmatch(sc.Text()); m != nil {
			v, err := strconv.ParseFloat(m[4], 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", sc.Text(), err)
			}
			out[m[1]+" "+m[2]+" "+m[3]] = v
		}
	}
	return out
}

// The request counter counts the status each client received: refusals
// that the commands return as errors are 4xx, not 500s, so a 5xx alert
// fires only on what is one.
func TestRequestMetricsCountTheStatusTheClientReceived(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	in := c.start(t)
	const email = "counted@example.com"
	c.signupVerified(t, in, email, "correct horse battery", nil)

	got := map[string]float64{}
	send := func(path string, body map[string]any) {
		r := in.rawCall(t, "POST", api+path, nil, jsonBody(t, body))
		got[fmt.Sprintf("POST %s %d", api+path, r.status)]++
	}
	for range 3 {
		send("/login", map[string]any{"email": email, "password": "wrong password!"}) // 401
	}
	send("/login", map[string]any{"email": "not an address", "password": "x"})          // 400
	send("/register/verify", map[string]any{"email": email, "code": "000000"})          // 400
	send("/refresh", map[string]any{"refresh_token": "not-a-token"})                    // 401
	send("/login", map[string]any{"email": email, "password": "correct horse battery"}) // 200
	for k, n := range got {
		if strings.HasSuffix(k, " 500") {
			t.Fatalf("%s answered 500 %v times", k, n)
		}
	}

	counts := requestCounts(t, in)
	for k, n := range got {
		if counts[k] < n {
			t.Errorf("authd_http_requests_total{%s} = %v, the client received it %v times (counted: %v)", k, counts[k], n, counts)
		}
	}
	for k, n := range counts {
		if strings.HasSuffix(k, " 500") {
			t.Errorf("authd_http_requests_total{%s} = %v, yet no client received a 500", k, n)
		}
	}
}

// Each request leaves one structured line with what identifies it and its
// outcome, and nothing a client sent as a secret.
func TestEachRequestIsLoggedOnceWithoutSecrets(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	logs := &logBuffer{}
	in := c.startLogged(t, logs)
	const email, pw = "logged@example.com", "correct horse battery"
	v := c.signupVerified(t, in, email, pw, nil)
	access, refresh := v.str("access_token"), v.str("refresh_token")

	wrong := in.rawCall(t, "POST", api+"/login", hdr("X-Request-ID", "req-wrong-pw"), jsonBody(t, map[string]any{"email": email, "password": "a wrong password"}))
	me := in.rawCall(t, "GET", api+"/me", hdr("X-Request-ID", "req-me", "Authorization", "Bearer "+access), nil)
	// Someone else's session, or none: 404, with the caller known.
	other := in.rawCall(t, "DELETE", api+"/sessions/"+uuid.NewString(), hdr("X-Request-ID", "req-revoke", "Authorization", "Bearer "+access), nil)
	if wrong.status != 401 || me.status != 200 || other.status != 404 {
		t.Fatalf("wrong password %d, /me %d, revoke %d", wrong.status, me.status, other.status)
	}

	lines := map[string][]map[string]any{}
	for _, l := range strings.Split(logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "request" {
			id, _ := m["request_id"].(string)
			lines[id] = append(lines[id], m)
		}
	}
	userID := v.str("user", "id")
	for _, want := range []struct {
		id, method, route string
		status            float64
		user              string
	}{
		{"req-wrong-pw", "POST", api + "/login", 401, ""},
		{"req-me", "GET", api + "/me", 200, userID},
		{"req-revoke", "DELETE", api + "/sessions/:session_id", 404, userID},
	} {
		got := lines[want.id]
		if len(got) != 1 {
			t.Errorf("request %s: %d log lines, want 1 (all: %v)", want.id, len(got), lines)
			continue
		}
		l := got[0]
		if l["method"] != want.method || l["route"] != want.route || l["status"] != want.status || l["client_ip"] != "127.0.0.1" {
			t.Errorf("request %s logged as %v; want %s %s %v from 127.0.0.1", want.id, l, want.method, want.route, want.status)
		}
		if _, ok := l["duration"].(float64); !ok {
			t.Errorf("request %s: no duration: %v", want.id, l)
		}
		if u, _ := l["user_id"].(string); u != want.user {
			t.Errorf("request %s: user_id %q, want %q", want.id, u, want.user)
		}
	}
	if leaks := containsAny(logs.String(), []string{pw, "a wrong password", access, refresh}); len(leaks) > 0 {
		t.Errorf("the log shows %q", leaks)
	}
	if n := len(lines); n < 5 {
		t.Errorf("%d requests logged; the sign-up's register and verify were not", n)
	}
}
