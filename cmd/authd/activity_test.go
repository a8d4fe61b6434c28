package main

import (
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/authd/authd/internal/testenv"
)

const (
	chromeMac    = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
	firefoxLinux = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
)

// activityOf reads one page of GET /me/activity with the given query.
func activityOf(t *testing.T, in *instance, token, query string) (events []map[string]any, next string) {
	t.Helper()
	r := in.must(t, 200, "GET", api+"/me/activity"+query, token, nil)
	list, ok := r.body["events"].([]any)
	if !ok {
		t.Fatalf("GET /me/activity%s = %s: no events", query, r.raw)
	}
	for _, e := range list {
		events = append(events, e.(map[string]any))
	}
	if n, ok := r.body["next"]; !ok {
		t.Fatalf("GET /me/activity%s = %s: no next", query, r.raw)
	} else if n != nil {
		next = n.(string)
	}
	return events, next
}

func fieldsOf(events []map[string]any, field string) []any {
	out := make([]any, len(events))
	for i, e := range events {
		out[i] = e[field]
	}
	return out
}

// A user signs in from two places, fails a login, turns two-factor on and
// revokes the first session: GET /me/activity lists those, newest first,
// each with where it came from; pages of two walk them once; another
// user's events never show.
func TestActivityListsWhatTheUserDidNewestFirst(t *testing.T) {
	t.Parallel()
	c := newCluster(t, map[string]string{"AUTHD_TRUSTED_PROXIES": "127.0.0.1/32"})
	in := c.start(t)
	const email, pw = "activity@example.com", "correct horse battery staple"
	from := func(ip, ua string) http.Header { return hdr("X-Forwarded-For", ip, "User-Agent", ua) }

	first := c.signupVerified(t, in, email, pw, from("198.51.100.10", chromeMac))
	other := c.signupVerified(t, in, "someone-else@example.com", pw, from("198.51.100.99", chromeMac))
	second := in.rawCall(t, "POST", api+"/login", from("203.0.113.20", firefoxLinux), jsonBody(t, map[string]any{"email": email, "password": pw}))
	if second.status != 200 {
		t.Fatalf("login = %d %s", second.status, second.raw)
	}
	if r := in.rawCall(t, "POST", api+"/login", from("192.0.2.30", "curl/8.5"), jsonBody(t, map[string]any{"email": email, "password": "wrong " + pw})); r.status != 401 {
		t.Fatalf("a wrong password = %d %s", r.status, r.raw)
	}
	access := second.str("access_token")
	auth := hdr("X-Forwarded-For", "203.0.113.20", "User-Agent", firefoxLinux, "Authorization", "Bearer "+access)
	setup := in.rawCall(t, "POST", api+"/2fa/setup", auth, nil)
	app := &testenv.TOTPApp{Secret: setup.str("secret")}
	if r := in.rawCall(t, "POST", api+"/2fa/enable", auth, jsonBody(t, map[string]any{"code": app.Next(t)})); r.status != 200 {
		t.Fatalf("2fa/enable = %d %s", r.status, r.raw)
	}
	if r := in.rawCall(t, "DELETE", api+"/sessions/"+first.str("session_id"), auth, nil); r.status != 204 {
		t.Fatalf("revoke the first session = %d %s", r.status, r.raw)
	}

	events, next := activityOf(t, in, access, "")
	if next != "" {
		t.Fatalf("a page of the default 20 holding everything has next %q", next)
	}
	types := fieldsOf(events, "type")
	want := []any{"SessionRevoked", "TotpEnabled", "LoginFailed", "SessionStarted", "SessionStarted", "EmailVerified"}
	if !slices.Equal(types, want) {
		t.Fatalf("activity lists %v, want %v", types, want)
	}
	check := func(i int, ip, ua, device string, session, method any) {
		t.Helper()
		e := events[i]
		got := []any{e["ip"], e["user_agent"], e["device"], e["session_id"], e["method"]}
		if w := []any{ip, ua, device, session, method}; !reflect.DeepEqual(got, w) {
			t.Errorf("%s lists ip, user agent, device, session, method %v; want %v", e["type"], got, w)
		}
		if at, err := time.Parse(time.RFC3339Nano, e["occurred_at"].(string)); err != nil || at.Location() != time.UTC || e["id"] == "" {
			t.Errorf("%s has id %v and occurred_at %v", e["type"], e["id"], e["occurred_at"])
		}
	}
	s1, s2 := first.str("session_id"), second.str("session_id")
	check(0, "203.0.113.20", firefoxLinux, "Chrome on macOS", s1, nil) // who revoked it, and the session's device
	check(1, "203.0.113.20", firefoxLinux, "", nil, nil)
	check(2, "192.0.2.30", "curl/8.5", "", nil, nil)
	check(3, "203.0.113.20", firefoxLinux, "Firefox on Linux", s2, []any{"pwd"})
	check(4, "198.51.100.10", chromeMac, "Chrome on macOS", s1, []any{"otp"}) // signed in by the emailed code
	check(5, "198.51.100.10", chromeMac, "", nil, nil)

	var walked []any
	query := "?limit=2"
	for pages := 1; ; pages++ {
		page, next := activityOf(t, in, access, query)
		if len(page) > 2 || pages > 3 {
			t.Fatalf("page %d of limit=2 holds %d events", pages, len(page))
		}
		walked = append(walked, fieldsOf(page, "id")...)
		if next == "" {
			break
		}
		query = "?limit=2&before=" + url.QueryEscape(next)
	}
	if ids := fieldsOf(events, "id"); !slices.Equal(walked, ids) {
		t.Fatalf("pages of 2 walked %v, want %v", walked, ids)
	}

	theirs, _ := activityOf(t, in, other.str("access_token"), "?limit=100")
	if got := fieldsOf(theirs, "type"); len(got) != 2 || theirs[0]["ip"] != "198.51.100.99" || theirs[1]["ip"] != "198.51.100.99" {
		t.Fatalf("the other user's activity is %v", theirs)
	}
	for _, id := range fieldsOf(theirs, "id") {
		if slices.Contains(walked, id) {
			t.Fatalf("event %v is in both users' activity", id)
		}
	}

	for _, q := range []string{"?limit=0", "?limit=101", "?limit=abc", "?limit=", "?limit=1.5", "?before=abc", "?before=", "?before=" + url.QueryEscape(s1)} {
		if r := in.call(t, "GET", api+"/me/activity"+q, access, nil); r.status != 400 || r.errCode() != "validation_failed" {
			t.Errorf("GET /me/activity%s = %d %s; want 400 validation_failed", q, r.status, r.raw)
		}
	}
	if r := in.call(t, "GET", api+"/me/activity", "", nil); r.status != 401 {
		t.Errorf("GET /me/activity without a token = %d %s; want 401", r.status, r.raw)
	}
}

// What a user just did is listed though the activity read model is behind
// (NATS down): the log answers for what it has not applied.
func TestActivityWhileTheReadModelLagsListsTheWrites(t *testing.T) {
	t.Parallel()
	c, in, killNATS := readsCluster(t)
	const email, pw = "activity-lag@example.com", "correct horse battery"
	first := c.signupVerified(t, in, email, pw, nil)
	access := first.str("access_token")
	testenv.Eventually(t, 15*time.Second, func() bool {
		events, _ := activityOf(t, in, access, "")
		return len(events) == 2
	})
	killNATS()

	if r := in.call(t, "POST", api+"/login", "", map[string]any{"email": email, "password": "wrong " + pw}); r.status != 401 {
		t.Fatalf("a wrong password = %d %s", r.status, r.raw)
	}
	// The failure is recorded after the answer (the same work for known and
	// unknown addresses): wait for it, so that it comes before the revocation.
	testenv.Eventually(t, 15*time.Second, func() bool {
		events, _ := activityOf(t, in, access, "")
		return slices.Contains(fieldsOf(events, "type"), any("LoginFailed"))
	})
	in.must(t, 204, "DELETE", api+"/sessions/"+first.str("session_id"), access, nil)
	second := in.must(t, 200, "POST", api+"/login", "", map[string]any{"email": email, "password": pw})

	events, _ := activityOf(t, in, second.str("access_token"), "")
	if got, want := fieldsOf(events, "type"), []any{"SessionStarted", "SessionRevoked", "LoginFailed", "SessionStarted", "EmailVerified"}; !slices.Equal(got, want) {
		t.Fatalf("activity lists %v, want %v", got, want)
	}
	if events[1]["device"] != "authd-probe-test" || events[1]["session_id"] != first.str("session_id") {
		t.Fatalf("the revocation lists %v; want the first session and its device", events[1])
	}
}
