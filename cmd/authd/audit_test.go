package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
)

// auditMsg is one message seen on the cluster's event subjects.
type auditMsg struct {
	subject string
	msgID   string
	header  nats.Header
	raw     []byte
	env     map[string]any
}

func (m auditMsg) str(path ...string) string {
	var v any = m.env
	for _, p := range path {
		mm, _ := v.(map[string]any)
		v = mm[p]
	}
	s, _ := v.(string)
	return s
}

// auditTap collects every message on the cluster's event subjects with a
// core NATS subscription, as an audit consumer would.
type auditTap struct {
	mu   sync.Mutex
	msgs []auditMsg
}

func tapEvents(t *testing.T, c *cluster) *auditTap {
	t.Helper()
	url := c.env["NATS_URL"]
	nc, err := nats.Connect(url, nats.Name("authd audit test"), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("NATS is not reachable at %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	tap := &auditTap{}
	sub, err := nc.Subscribe(c.env["AUTHD_NATS_SUBJECT_PREFIX"]+".>", func(m *nats.Msg) {
		am := auditMsg{subject: m.Subject, header: m.Header, raw: append([]byte(nil), m.Data...)}
		if m.Header != nil {
			am.msgID = m.Header.Get(nats.MsgIdHdr)
		}
		_ = json.Unmarshal(m.Data, &am.env)
		tap.mu.Lock()
		tap.msgs = append(tap.msgs, am)
		tap.mu.Unlock()
	})
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush the subscription: %v", err)
	}
	return tap
}

func (tap *auditTap) all() []auditMsg {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	return append([]auditMsg(nil), tap.msgs...)
}

// waitFor waits until a message matches each of want, and returns them.
func (tap *auditTap) waitFor(t *testing.T, want map[string]func(auditMsg) bool) map[string]auditMsg {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		found := map[string]auditMsg{}
		for _, m := range tap.all() {
			for name, ok := range want {
				if _, done := found[name]; !done && ok(m) {
					found[name] = m
				}
			}
		}
		if len(found) == len(want) {
			return found
		}
		if time.Now().After(deadline) {
			var missing []string
			for name := range want {
				if _, ok := found[name]; !ok {
					missing = append(missing, name)
				}
			}
			var seen []string
			for _, m := range tap.all() {
				seen = append(seen, m.str("type")+"("+m.str("metadata", "request_id")+")")
			}
			t.Fatalf("no message on NATS for %v within 20 s; seen: %v", missing, seen)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

var envelopeKeys = []string{"data", "id", "metadata", "occurred_at", "position", "stream_id", "tenant_id", "type", "user_id", "version"}

// envelopeProblems checks one message against API.md's envelope.
func envelopeProblems(m auditMsg, prefix string) []string {
	var p []string
	if m.env == nil {
		return []string{"not a JSON object"}
	}
	if got := keysOf(m.env); strings.Join(got, ",") != strings.Join(envelopeKeys, ",") {
		p = append(p, fmt.Sprintf("keys %v, want %v", got, envelopeKeys))
	}
	id, err := uuid.Parse(m.str("id"))
	if err != nil {
		p = append(p, fmt.Sprintf("id %q is not a UUID", m.str("id")))
	}
	if m.msgID != m.str("id") || m.msgID == "" || id == uuid.Nil {
		p = append(p, fmt.Sprintf("Nats-Msg-Id %q, id %q", m.msgID, m.str("id")))
	}
	typ := m.str("type")
	if typ == "" || m.subject != prefix+"."+typ {
		p = append(p, fmt.Sprintf("type %q on subject %q", typ, m.subject))
	}
	if m.str("stream_id") == "" {
		p = append(p, "no stream_id")
	}
	for _, k := range []string{"version", "position"} {
		if n, ok := m.env[k].(float64); !ok || n < 1 || n != float64(int64(n)) {
			p = append(p, fmt.Sprintf("%s %v is not a positive integer", k, m.env[k]))
		}
	}
	if _, err := time.Parse(time.RFC3339Nano, m.str("occurred_at")); err != nil {
		p = append(p, fmt.Sprintf("occurred_at %q is not RFC 3339", m.str("occurred_at")))
	}
	for _, k := range []string{"tenant_id", "user_id"} {
		if _, err := uuid.Parse(m.str(k)); err != nil {
			p = append(p, fmt.Sprintf("%s %v is not a UUID", k, m.env[k]))
		}
	}
	md, ok := m.env["metadata"].(map[string]any)
	if !ok {
		p = append(p, "metadata is not an object")
	} else if got := keysOf(md); strings.Join(got, ",") != "ip,request_id,user_agent" {
		p = append(p, fmt.Sprintf("metadata keys %v, want [ip request_id user_agent]", got))
	}
	if _, ok := m.env["data"].(map[string]any); !ok {
		p = append(p, "data is not an object")
	}
	return p
}

// The audit trail on NATS: each state change of API.md's flows arrives as
// one envelope, with who asked in its metadata, and nothing secret anywhere.
func TestAuditEventsOnNATS(t *testing.T) {
	t.Parallel()
	c := newCluster(t, map[string]string{"AUTHD_REFRESH_REUSE_GRACE": "1s"})
	tap := tapEvents(t, c) // before authd starts: nothing it publishes is missed
	logs := &logBuffer{}
	in := c.startLogged(t, logs)
	prefix := c.env["AUTHD_NATS_SUBJECT_PREFIX"]

	const ua = "AuditProbe/2.0 (authd audit test; +https://example.com)"
	run := strings.ToLower(uuid.NewString()[:8])
	sent := func(step string) string { return "audit-" + run + "-" + step }
	// The request id each step's events must carry: authd may take the
	// client's X-Request-ID or make its own; it says which in its answer.
	ids := map[string]string{}
	reqID := func(step string) string {
		if id, ok := ids[step]; ok {
			return id
		}
		return sent(step)
	}
	req := func(step, method, path, token string, body any) response {
		t.Helper()
		h := hdr("User-Agent", ua, "X-Request-ID", sent(step))
		if token != "" {
			h.Set("Authorization", "Bearer "+token)
		}
		var b []byte
		if body != nil {
			b = jsonBody(t, body)
		}
		return in.rawCall(t, method, api+path, h, b)
	}
	want := func(r response, status int, step string) response {
		t.Helper()
		if r.status != status {
			t.Fatalf("%s = %d %s; want %d", step, r.status, r.raw, status)
		}
		if got := r.header.Get("X-Request-ID"); got != "" && got != sent(step) {
			t.Logf("%s: authd made its own request id %q (sent %q)", step, got, sent(step))
			ids[step] = got
		}
		return r
	}

	const email, pw, newPw = "audit@example.com", "correct horse battery staple", "a brand new passphrase!"
	var secrets []string // every password, code and token the flow handles
	secrets = append(secrets, pw, newPw, "wrong password 123")

	want(req("register", "POST", "/register", "", map[string]any{"email": email, "password": pw, "name": "Audit", "tenant_name": "Audit Co"}), 202, "register")
	verifyCode := c.nextCode(t, email, 0)
	signup := want(req("verify", "POST", "/register/verify", "", map[string]any{"email": email, "code": verifyCode}), 201, "verify")
	userID := signup.str("user", "id")
	want(req("login-failed", "POST", "/login", "", map[string]any{"email": email, "password": "wrong password 123"}), 401, "login-failed")
	login := want(req("login", "POST", "/login", "", map[string]any{"email": email, "password": pw}), 200, "login")
	r1 := login.str("refresh_token")
	refreshed := want(req("refresh", "POST", "/refresh", "", map[string]any{"refresh_token": r1}), 200, "refresh")
	time.Sleep(1200 * time.Millisecond) // past AUTHD_REFRESH_REUSE_GRACE
	want(req("reuse", "POST", "/refresh", "", map[string]any{"refresh_token": r1}), 401, "reuse")
	want(req("logout", "POST", "/logout", signup.str("access_token"), nil), 204, "logout")
	last := want(req("login-2", "POST", "/login", "", map[string]any{"email": email, "password": pw}), 200, "login-2")
	seen := len(mailsTo(t, c, email))
	want(req("otp-send", "POST", "/otp/send", "", map[string]any{"email": email, "purpose": "reset"}), 202, "otp-send")
	resetCode := c.nextCode(t, email, seen)
	want(req("reset", "POST", "/reset-password", "", map[string]any{"email": email, "code": resetCode, "new_password": newPw}), 200, "reset")
	codes := []string{verifyCode, resetCode}
	for _, r := range []response{signup, login, refreshed, last} {
		secrets = append(secrets, r.str("access_token"), r.str("refresh_token"))
	}

	is := func(typ, step string, more ...func(auditMsg) bool) func(auditMsg) bool {
		return func(m auditMsg) bool {
			if m.str("type") != typ || m.str("metadata", "request_id") != reqID(step) {
				return false
			}
			for _, f := range more {
				if !f(m) {
					return false
				}
			}
			return true
		}
	}
	reason := func(r string) func(auditMsg) bool {
		return func(m auditMsg) bool { return m.str("data", "reason") == r }
	}
	session := func(id string) func(auditMsg) bool {
		return func(m auditMsg) bool { return m.str("data", "session_id") == id }
	}
	// Each event found by the request that caused it: its request_id is the
	// X-Request-ID the test sent.
	got := tap.waitFor(t, map[string]func(auditMsg) bool{
		"UserRegistered by register":                  is("UserRegistered", "register"),
		"EmailVerified by verify":                     is("EmailVerified", "verify"),
		"SessionStarted by verify":                    is("SessionStarted", "verify", session(signup.str("session_id"))),
		"LoginSucceeded by verify":                    is("LoginSucceeded", "verify"),
		"LoginFailed by login-failed":                 is("LoginFailed", "login-failed"),
		"SessionStarted by login":                     is("SessionStarted", "login", session(login.str("session_id"))),
		"LoginSucceeded by login":                     is("LoginSucceeded", "login", session(login.str("session_id"))),
		"SessionRefreshed by refresh":                 is("SessionRefreshed", "refresh", session(login.str("session_id"))),
		"RefreshTokenReused by reuse":                 is("RefreshTokenReused", "reuse", session(login.str("session_id"))),
		"SessionRevoked by reuse":                     is("SessionRevoked", "reuse", session(login.str("session_id"))),
		"SessionRevoked by logout":                    is("SessionRevoked", "logout", session(signup.str("session_id")), reason("logout")),
		"PasswordReset by reset":                      is("PasswordReset", "reset"),
		"SessionRevoked of the last session by reset": is("SessionRevoked", "reset", session(last.str("session_id"))),
	})

	for name, m := range got {
		for _, p := range envelopeProblems(m, prefix) {
			t.Errorf("%s: %s\n\t%s", name, p, m.raw)
		}
		if m.str("user_id") != userID {
			t.Errorf("%s: user_id %q, want %q", name, m.str("user_id"), userID)
		}
		if ip := m.str("metadata", "ip"); ip != "127.0.0.1" {
			t.Errorf("%s: metadata.ip %q, want 127.0.0.1", name, ip)
		}
		if got := m.str("metadata", "user_agent"); got != ua {
			t.Errorf("%s: metadata.user_agent %q, want %q", name, got, ua)
		}
	}
	if got["LoginFailed by login-failed"].str("data", "reason") == "" {
		t.Errorf("LoginFailed says no reason: %s", got["LoginFailed by login-failed"].raw)
	}

	// Every message: the envelope, and no secret. The password hashes are
	// read from the log's sealed part, so that neither they nor their
	// base64 parts can hide in a message.
	secrets = append(secrets, passwordHashParts(t, c, userID)...)
	all := tap.all()
	for _, m := range all {
		for _, p := range envelopeProblems(m, prefix) {
			t.Errorf("%s message: %s\n\t%s", m.str("type"), p, m.raw)
		}
		if m.str("metadata", "request_id") == "" {
			t.Errorf("%s message without a request_id: %s", m.str("type"), m.raw)
		}
		var headers bytes.Buffer
		for k, vs := range m.header {
			fmt.Fprintf(&headers, "%s: %s\n", k, strings.Join(vs, ", "))
		}
		text := string(m.raw) + "\n" + headers.String()
		for _, s := range leaked(text, secrets) {
			t.Errorf("%s message carries a secret (%s): %s", m.str("type"), clip(s, 24), m.raw)
		}
		lower := strings.ToLower(text)
		for _, word := range []string{"argon2", "password_hash", "passwordhash", "$argon", "sealed", "secret"} {
			if strings.Contains(lower, word) {
				t.Errorf("%s message mentions %q: %s", m.str("type"), word, m.raw)
			}
		}
		for _, code := range codes {
			if codeInMessage(m, code) || codeIn(headers.String(), code) {
				t.Errorf("%s message carries the emailed code %s: %s", m.str("type"), code, m.raw)
			}
		}
	}
	t.Logf("%d messages on %s.>", len(all), prefix)

	// The log lines of this instance are held to the same rule (DESIGN.md:
	// no secret, token or code in any log line).
	for _, s := range leaked(logs.String(), secrets) {
		t.Errorf("authd's log carries a secret (%s)", clip(s, 24))
	}
	for _, code := range codes {
		if codeIn(logs.String(), code) {
			t.Errorf("authd's log carries the emailed code %s", code)
		}
	}
}

// codeIn reports whether code stands in text as a number of its own.
// Log cursors (eventstore.Cursor, "tx/position") are left out first: a
// six-digit transaction id in a read-your-writes warning once matched a
// code by chance.
func codeIn(text, code string) bool {
	text = logCursor.ReplaceAllString(text, "")
	return regexp.MustCompile(`(^|[^0-9])` + regexp.QuoteMeta(code) + `([^0-9]|$)`).MatchString(text)
}

var logCursor = regexp.MustCompile(`[0-9]+/[0-9]+`)

// codeInMessage looks for code in every value of the envelope but ids and
// timestamps, where six digits in a row can occur by chance.
func codeInMessage(m auditMsg, code string) bool {
	var walk func(v any) bool
	walk = func(v any) bool {
		switch x := v.(type) {
		case map[string]any:
			for _, vv := range x {
				if walk(vv) {
					return true
				}
			}
		case []any:
			for _, vv := range x {
				if walk(vv) {
					return true
				}
			}
		case string:
			if _, err := uuid.Parse(x); err == nil {
				return false
			}
			if _, err := time.Parse(time.RFC3339Nano, x); err == nil {
				return false
			}
			return strings.Contains(x, code)
		case float64:
			return fmt.Sprintf("%06d", int64(x)) == code && x == float64(int64(x))
		}
		return false
	}
	return walk(m.env)
}

// leaked returns the secrets found in text, in the forms they could take.
func leaked(text string, secrets []string) []string {
	var out []string
	for _, s := range secrets {
		if s == "" {
			continue
		}
		forms := []string{s}
		if len(s) > 6 {
			forms = append(forms, base64.StdEncoding.EncodeToString([]byte(s)), base64.RawURLEncoding.EncodeToString([]byte(s)))
		}
		if q, err := json.Marshal(s); err == nil {
			forms = append(forms, strings.Trim(string(q), `"`))
		}
		for _, f := range forms {
			if strings.Contains(text, f) {
				out = append(out, s)
				break
			}
		}
	}
	return out
}

// passwordHashParts opens the sealed part of the user's password events
// with the cluster's master key and returns each PHC hash with its salt and
// key, in the base64 forms they could be published in.
func passwordHashParts(t *testing.T, c *cluster, userID string) []string {
	t.Helper()
	sealer := c.sealer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := c.dbPool(t).Query(ctx, `SELECT id, type, sealed, sealed_kid FROM events WHERE user_id = $1 AND sealed IS NOT NULL`, userID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	hashes := 0
	for rows.Next() {
		var id uuid.UUID
		var typ, kid string
		var sealed []byte
		if err := rows.Scan(&id, &typ, &sealed, &kid); err != nil {
			t.Fatal(err)
		}
		out = append(out, base64.StdEncoding.EncodeToString(sealed), base64.RawStdEncoding.EncodeToString(sealed), base64.RawURLEncoding.EncodeToString(sealed))
		plain, err := sealer.Open(kid, sealed, id[:])
		if err != nil {
			t.Fatalf("open the sealed part of %s %s: %v", typ, id, err)
		}
		var secret struct {
			PasswordHash string `json:"password_hash"`
		}
		if err := json.Unmarshal(plain, &secret); err != nil || secret.PasswordHash == "" {
			continue
		}
		hashes++
		phc := secret.PasswordHash
		out = append(out, phc, base64.StdEncoding.EncodeToString([]byte(phc)), base64.RawURLEncoding.EncodeToString([]byte(phc)))
		parts := strings.Split(phc, "$") // "", argon2id, v=19, m=...,t=...,p=..., salt, key
		if len(parts) != 6 {
			t.Fatalf("%s: password hash is not a PHC string: %d parts", typ, len(parts))
		}
		for _, b64 := range parts[4:] {
			out = append(out, b64)
			if raw, err := base64.RawStdEncoding.DecodeString(b64); err == nil {
				out = append(out, base64.StdEncoding.EncodeToString(raw), base64.RawURLEncoding.EncodeToString(raw), fmt.Sprintf("%x", raw))
			}
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if hashes < 2 {
		t.Fatalf("found %d password hashes in the log's sealed parts, want the signup's and the reset's", hashes)
	}
	return out
}
