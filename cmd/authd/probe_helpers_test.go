package main

// Helpers of the bad-input, rate-limit and audit tests: raw requests with any
// headers and bytes, the API's error shape, and a look into the cluster's
// database.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/internal/seal"
	"github.com/authd/authd/internal/testenv"
)

// apiErrorCodes are the error codes API.md lists, with the status each goes
// with; payload_too_large (413) is the body limit's.
var apiErrorCodes = map[string]int{
	"validation_failed":     400,
	"invalid_code":          400,
	"invalid_credentials":   401,
	"unauthorized":          401,
	"invalid_refresh_token": 401,
	"invalid_challenge":     401,
	"invalid_token":         401,
	"email_not_verified":    403,
	"not_found":             404,
	"conflict":              409,
	"payload_too_large":     413,
	"rate_limited":          429,
	"unavailable":           503,
	// The edge's refusal of a body that is compressed or not JSON.
	"unsupported_media_type": 415,
}

// leakMarkers must never appear in an error message a client sees.
var leakMarkers = []string{
	"goroutine ", ".go:", "panic", "runtime.", "pgx", "pgconn", "SQLSTATE", "ERROR:", "sql:",
	"SELECT ", "INSERT ", "UPDATE ", "DELETE FROM", " FROM ", "WHERE ", "duplicate key", "violates",
	"constraint", "relation ", "syntax error", "nats:", "/work/", "github.com/",
}

// hdr builds request headers from name, value pairs.
func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// rawCall sends body exactly as given, with Content-Type application/json
// unless header sets one, and header's fields. Unlike call it never stops the
// test on a 5xx: the caller decides.
func (in *instance) rawCall(t *testing.T, method, path string, header http.Header, body []byte) response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, in.base+path, rd)
	if err != nil {
		t.Fatalf("build %s %s: %v", method, path, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "authd-probe-test/1.0")
	for k, vs := range header {
		req.Header.Del(k)
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := response{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	_ = json.Unmarshal(raw, &out.body)
	return out
}

// jsonBody marshals v, failing the test when it cannot.
func jsonBody(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal %v: %v", v, err)
	}
	return b
}

// errorShapeProblems lists what is wrong with r as an API error answer: a 4xx
// (never a 5xx), exactly {"error":{"code","message"}}, a code of API.md's list
// that goes with the status (413 payload_too_large), and a message that shows
// nothing of the implementation. None means the answer is a proper refusal.
func errorShapeProblems(r response) []string {
	var p []string
	if r.status < 400 || r.status >= 500 {
		p = append(p, fmt.Sprintf("status %d, want a 4xx", r.status))
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal([]byte(r.raw), &top); err != nil {
		return append(p, fmt.Sprintf("body is not a JSON object: %q", clip(r.raw, 200)))
	}
	if len(top) != 1 || top["error"] == nil {
		p = append(p, fmt.Sprintf("top-level keys %v, want exactly [error]", keysOf(top)))
	}
	var e map[string]json.RawMessage
	if err := json.Unmarshal(top["error"], &e); err != nil {
		return append(p, "error is not an object")
	}
	if len(e) != 2 || e["code"] == nil || e["message"] == nil {
		p = append(p, fmt.Sprintf("error keys %v, want exactly [code message]", keysOf(e)))
	}
	var code, msg string
	if err := json.Unmarshal(e["code"], &code); err != nil || code == "" {
		p = append(p, "error.code is not a non-empty string")
	}
	if err := json.Unmarshal(e["message"], &msg); err != nil || msg == "" {
		p = append(p, "error.message is not a non-empty string")
	}
	if want, ok := apiErrorCodes[code]; !ok {
		p = append(p, fmt.Sprintf("code %q is not one of API.md's", code))
	} else if want != r.status && !(code == "validation_failed" && r.status >= 400 && r.status < 500) {
		p = append(p, fmt.Sprintf("code %q with status %d, API.md pairs it with %d", code, r.status, want))
	}
	for _, m := range leakMarkers {
		if strings.Contains(msg, m) {
			p = append(p, fmt.Sprintf("message %q shows %q", clip(msg, 200), m))
		}
	}
	return p
}

func keysOf[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + fmt.Sprintf("…(%d bytes)", len(s))
}

// dbPool opens the cluster's own database (its DATABASE_URL).
func (c *cluster) dbPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, c.env["DATABASE_URL"])
	if err != nil {
		t.Fatalf("open the cluster's database: %v", err)
	}
	if err := pool.Ping(ctx); err != nil {
		t.Fatalf("the cluster's database at %s: %v", c.env["DATABASE_URL"], err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// sealer opens what the cluster's instances sealed, with its master key.
func (c *cluster) sealer(t *testing.T) *seal.Sealer {
	t.Helper()
	key, err := seal.ParseKey(c.env["AUTHD_MASTER_KEY"])
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := seal.New(key)
	if err != nil {
		t.Fatal(err)
	}
	return sealer
}

// dbState is what a request that changes nothing must leave as it was.
type dbState struct {
	events        int
	eventTypes    []string
	uniqueKeys    int
	codes         []string // email/purpose/tries of each live code
	loginFailures int
}

func readDBState(t *testing.T, pool *pgxpool.Pool) dbState {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var s dbState
	q := func(sql string, dst ...any) {
		if err := pool.QueryRow(ctx, sql).Scan(dst...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	q(`SELECT count(*) FROM events`, &s.events)
	q(`SELECT coalesce(array_agg(type ORDER BY position), '{}') FROM events`, &s.eventTypes)
	q(`SELECT count(*) FROM unique_keys`, &s.uniqueKeys)
	q(`SELECT coalesce(array_agg(email || '/' || purpose || '/' || tries ORDER BY email, purpose), '{}') FROM email_codes`, &s.codes)
	q(`SELECT count(*) FROM login_failures`, &s.loginFailures)
	return s
}

// eventsAfter lists the types of the events past the first n, in log order.
func eventsAfter(t *testing.T, pool *pgxpool.Pool, n int) []string {
	t.Helper()
	s := readDBState(t, pool)
	if len(s.eventTypes) <= n {
		return nil
	}
	return s.eventTypes[n:]
}

// mailCount is how many messages the cluster's Mailpit holds.
func (c *cluster) mailCount(t *testing.T) int {
	t.Helper()
	return len(c.mail.Messages(t))
}

// signupVerified registers email and completes the signup with the emailed
// code, returning the Tokens answer.
func (c *cluster) signupVerified(t *testing.T, in *instance, email, pw string, header http.Header) response {
	t.Helper()
	seen := len(mailsTo(t, c, email))
	r := in.rawCall(t, "POST", api+"/register", header, jsonBody(t, map[string]any{"email": email, "password": pw, "name": "Probe"}))
	if r.status != 202 {
		t.Fatalf("register %s = %d %s", email, r.status, r.raw)
	}
	code := c.nextCode(t, email, seen)
	v := in.rawCall(t, "POST", api+"/register/verify", header, jsonBody(t, map[string]any{"email": email, "code": code}))
	if v.status != 201 {
		t.Fatalf("verify %s = %d %s", email, v.status, v.raw)
	}
	return v
}

// requireEnded fails the test unless the session whose Tokens answer is tok
// has ended: its access token refused at once by here (the instance that
// ended it), and by there within the revocation feed's bound, and its
// refresh token refused.
func requireEnded(t *testing.T, here, there *instance, tok response, what string) {
	t.Helper()
	if r := here.call(t, "GET", api+"/me", tok.str("access_token"), nil); r.status != 401 {
		t.Fatalf("%s: the access token on the instance that ended it = %d %s; want 401 at once", what, r.status, r.raw)
	}
	testenv.Eventually(t, 15*time.Second, func() bool {
		return there.call(t, "GET", api+"/me", tok.str("access_token"), nil).status == 401
	})
	if r := there.call(t, "POST", api+"/refresh", "", map[string]any{"refresh_token": tok.str("refresh_token")}); r.status != 401 {
		t.Fatalf("%s: the refresh token = %d %s; want 401", what, r.status, r.raw)
	}
}

// retryAfterSeconds parses the Retry-After header as integer seconds; -1
// when it is missing or not an integer.
func retryAfterSeconds(r response) int {
	v := r.header.Get("Retry-After")
	n, err := strconv.Atoi(v)
	if err != nil {
		return -1
	}
	return n
}

// stillInOneWindow is a clock for the rate limits that stands still in the
// middle of a one-minute window (ratelimit.Limiter truncates the clock to
// the window), so that every request of a test counts in one window however
// slowly the machine runs them: with the real clock, 25 hashed logins took
// 19 s on a loaded machine and straddled two windows.
func stillInOneWindow() func() time.Time {
	return testenv.NewClock(time.Now().Truncate(time.Minute).Add(30 * time.Second)).Now
}

// roomInWindow waits, when needed, until at least need is left of the
// current fixed one-minute window of the rate limiter, for a test that also
// needs the limits' clock to run (a login slow-down it waits out). It waits
// at most need.
func roomInWindow(need time.Duration) {
	now := time.Now()
	end := now.Truncate(time.Minute).Add(time.Minute)
	if left := end.Sub(now); left < need {
		time.Sleep(left + 50*time.Millisecond)
	}
}

// logBuffer collects an instance's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func containsAny(s string, subs []string) []string {
	var found []string
	for _, x := range subs {
		if x != "" && strings.Contains(s, x) && !slices.Contains(found, x) {
			found = append(found, x)
		}
	}
	return found
}
