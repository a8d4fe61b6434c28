package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/authd/authd/internal/testenv"
)

// instance is an authd serving real HTTP, started in-process with its own
// configuration; several can share a database and a NATS stream.
type instance struct {
	base string
}

type cluster struct {
	env  map[string]string
	mail *testenv.MailpitServer
	// limitsNow, when set, is the clock of the rate limits of the
	// instances started after it is (see stillInOneWindow).
	limitsNow func() time.Time
}

func newCluster(t *testing.T, extra map[string]string) *cluster {
	t.Helper()
	_, dbURL := testenv.Database(t)
	nats := testenv.NATSConfig(t, testenv.MachineNATS)
	mp := testenv.Mailpit(t)
	env := map[string]string{
		"DATABASE_URL":              dbURL,
		"NATS_URL":                  nats.URL,
		"AUTHD_NATS_STREAM":         nats.Stream,
		"AUTHD_NATS_SUBJECT_PREFIX": nats.SubjectPrefix,
		"SMTP_URL":                  mp.SMTPURL(),
		"AUTHD_DATA_DIR":            t.TempDir(),
		"AUTHD_RATE_LIMIT":          "off",
		// A loaded CI machine can take longer than the default to project;
		// the tests read right after writing and must see their writes.
		"AUTHD_READ_YOUR_WRITES_TIMEOUT": "15s",
		"AUTHD_MASTER_KEY":               base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)),
		// Tests count and read the mails they cause; a security notice
		// arriving at its own pace would be one they did not ask for.
		// notices_test.go turns them on.
		"AUTHD_NOTICES": "off",
	}
	for k, v := range extra {
		env[k] = v
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		bus := testenv.OpenNATS(t, nats)
		_ = bus.JetStream().DeleteStream(ctx, nats.Stream)
	})
	return &cluster{env: env, mail: mp}
}

func (c *cluster) start(t *testing.T) *instance {
	t.Helper()
	return c.startLogged(t, io.Discard)
}

// startLogged starts an instance of the cluster on a free port of its own,
// writing its log to logs.
func (c *cluster) startLogged(t *testing.T, logs io.Writer) *instance {
	t.Helper()
	port := testenv.FreePort(t)
	env := map[string]string{"AUTHD_ADDR": fmt.Sprintf("127.0.0.1:%d", port)}
	for k, v := range c.env {
		env[k] = v
	}
	opts := realTime()
	if c.limitsNow != nil {
		opts.limitsNow = c.limitsNow
	}
	return runAuthdWith(t, env, fmt.Sprintf("http://127.0.0.1:%d", port), logs, opts)
}

// runAuthd runs authd in-process with env until the test ends and waits
// until base answers ready.
func runAuthd(t *testing.T, env map[string]string, base string, logs io.Writer) *instance {
	t.Helper()
	return runAuthdWith(t, env, base, logs, realTime())
}

// runAuthdWith is runAuthd with a test's options.
func runAuthdWith(t *testing.T, env map[string]string, base string, logs io.Writer, opts options) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, func(k string) string { return env[k] }, logs, runtime.GOMAXPROCS(0), opts)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("authd at %s: %v", base, err)
		}
	})
	in := &instance{base: base}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(in.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return in
			}
		}
		select {
		case err := <-done:
			done <- nil // the cleanup waits for it: authd has stopped already
			t.Fatalf("authd exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("authd not ready in 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (r response) str(path ...string) string {
	var v any = r.body
	for _, p := range path {
		m, _ := v.(map[string]any)
		v = m[p]
	}
	s, _ := v.(string)
	return s
}

func (r response) errCode() string { return r.str("error", "code") }

// call sends a request; body may be a string (sent as is) or a value (JSON).
func (in *instance) call(t *testing.T, method, path, token string, body any) response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, in.base+path, rd)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := response{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	_ = json.Unmarshal(raw, &out.body)
	if resp.StatusCode >= 500 && resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("%s %s answered %d: %s", method, path, resp.StatusCode, raw)
	}
	return out
}

func (in *instance) must(t *testing.T, want int, method, path, token string, body any) response {
	t.Helper()
	r := in.call(t, method, path, token, body)
	if r.status != want {
		t.Fatalf("%s %s = %d %s; want %d", method, path, r.status, r.raw, want)
	}
	return r
}

const api = "/api/v1/auth"

// nextCode waits for a mail to email beyond the first seen ones and returns its code.
func (c *cluster) nextCode(t *testing.T, email string, seen int) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var mine []testenv.MailpitMessage
		for _, m := range c.mail.Messages(t) {
			for _, to := range m.To {
				if strings.EqualFold(to, email) {
					mine = append(mine, m)
				}
			}
		}
		if len(mine) > seen {
			return testenv.CodeIn(t, c.mail.Message(t, mine[0].ID))
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new mail to %s (seen %d)", email, seen)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func checkTokens(t *testing.T, r response, email string) {
	t.Helper()
	for _, k := range []string{"access_token", "refresh_token", "session_id"} {
		if r.str(k) == "" {
			t.Fatalf("tokens lack %s: %s", k, r.raw)
		}
	}
	if r.str("token_type") != "Bearer" || r.body["expires_in"] != float64(86400) || r.body["refresh_expires_in"] != float64(604800) {
		t.Fatalf("token fields: %s", r.raw)
	}
	if r.str("user", "email") != email {
		t.Fatalf("user in tokens: %s", r.raw)
	}
}

func TestAccountsEndToEnd(t *testing.T) {
	t.Parallel()
	c := newCluster(t, map[string]string{"AUTHD_REFRESH_REUSE_GRACE": "1s"})
	a, b := c.start(t), c.start(t)
	email, pw := "Ada@Example.com ", "correct horse battery"
	norm := "ada@example.com"

	// Signup with an emailed code.
	r := a.must(t, 202, "POST", api+"/register", "", map[string]any{"email": email, "password": pw, "name": "Ada", "tenant_name": "Analytical Engines"})
	if r.str("status") != "verification_sent" {
		t.Fatalf("register: %s", r.raw)
	}
	code := c.nextCode(t, norm, 0)
	if got := a.call(t, "POST", api+"/login", "", map[string]any{"email": norm, "password": pw}); got.status != 403 || got.errCode() != "email_not_verified" {
		t.Fatalf("login before verifying = %d %s", got.status, got.raw)
	}
	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}
	if got := a.call(t, "POST", api+"/register/verify", "", map[string]any{"email": norm, "code": wrong}); got.status != 400 || got.errCode() != "invalid_code" {
		t.Fatalf("verify with a wrong code = %d %s", got.status, got.raw)
	}
	signup := a.must(t, 201, "POST", api+"/register/verify", "", map[string]any{"email": norm, "code": code})
	checkTokens(t, signup, norm)
	if signup.str("user", "tenant", "name") != "Analytical Engines" || signup.body["user"].(map[string]any)["email_verified"] != true {
		t.Fatalf("signup user: %s", signup.raw)
	}
	if got := a.call(t, "POST", api+"/register/verify", "", map[string]any{"email": norm, "code": code}); got.errCode() != "invalid_code" {
		t.Fatalf("a used code = %d %s", got.status, got.raw)
	}

	// Same answers for a taken email and for unknown accounts.
	again := a.must(t, 202, "POST", api+"/register", "", map[string]any{"email": norm, "password": "another password"})
	if again.raw != r.raw {
		t.Fatalf("register of a taken email answered %s, a new one %s", again.raw, r.raw)
	}
	unknown := a.call(t, "POST", api+"/login", "", map[string]any{"email": "nobody@example.com", "password": pw})
	badPw := a.call(t, "POST", api+"/login", "", map[string]any{"email": norm, "password": "wrong password"})
	if unknown.status != 401 || unknown.raw != badPw.raw || unknown.errCode() != "invalid_credentials" {
		t.Fatalf("unknown email %d %s vs wrong password %d %s", unknown.status, unknown.raw, badPw.status, badPw.raw)
	}

	// Password login, me, and the JWKS alone verifying the token.
	login := a.must(t, 200, "POST", api+"/login", "", map[string]any{"email": email, "password": pw})
	checkTokens(t, login, norm)
	access := login.str("access_token")
	me := b.must(t, 200, "GET", api+"/me", access, nil)
	if me.str("email") != norm || me.str("id") != signup.str("user", "id") || me.str("tenant", "name") != "Analytical Engines" {
		t.Fatalf("me: %s", me.raw)
	}
	verifyWithJWKS(t, a, access, me.str("id"), login.str("session_id"))

	// Refresh rotation, the grace, and reuse detection.
	r1 := login.str("refresh_token")
	p2 := a.must(t, 200, "POST", api+"/refresh", "", map[string]any{"refresh_token": r1})
	r2 := p2.str("refresh_token")
	if r2 == r1 || p2.str("session_id") != login.str("session_id") {
		t.Fatalf("refresh did not rotate: %s", p2.raw)
	}
	p2again := b.must(t, 200, "POST", api+"/refresh", "", map[string]any{"refresh_token": r1})
	if p2again.str("refresh_token") != r2 {
		t.Fatal("the previous refresh token within the grace did not answer the current pair")
	}
	time.Sleep(1200 * time.Millisecond)
	if got := a.call(t, "POST", api+"/refresh", "", map[string]any{"refresh_token": r1}); got.status != 401 || got.errCode() != "invalid_refresh_token" {
		t.Fatalf("reuse after the grace = %d %s", got.status, got.raw)
	}
	if got := a.call(t, "POST", api+"/refresh", "", map[string]any{"refresh_token": r2}); got.status != 401 {
		t.Fatalf("the session survived reuse detection: %d %s", got.status, got.raw)
	}
	a.must(t, 401, "GET", api+"/me", p2.str("access_token"), nil)
	testenv.Eventually(t, time.Second, func() bool { return b.call(t, "GET", api+"/me", p2.str("access_token"), nil).status == 401 })

	// Logout, on one instance, is refused by the other within a second.
	access = signup.str("access_token")
	b.must(t, 200, "GET", api+"/me", access, nil)
	a.must(t, 204, "POST", api+"/logout", access, nil)
	a.must(t, 401, "GET", api+"/me", access, nil)
	testenv.Eventually(t, time.Second, func() bool { return b.call(t, "GET", api+"/me", access, nil).status == 401 })

	// Passwordless login with an emailed code.
	seen := len(mailsTo(t, c, norm))
	a.must(t, 202, "POST", api+"/otp/send", "", map[string]any{"email": norm, "purpose": "login"})
	a.must(t, 202, "POST", api+"/otp/send", "", map[string]any{"email": "nobody@example.com", "purpose": "login"})
	if got := a.call(t, "POST", api+"/otp/send", "", map[string]any{"email": norm, "purpose": "shopping"}); got.status != 400 {
		t.Fatalf("a bad purpose = %d", got.status)
	}
	otp := a.must(t, 200, "POST", api+"/otp/login", "", map[string]any{"email": norm, "code": c.nextCode(t, norm, seen)})
	checkTokens(t, otp, norm)

	// Sessions: read-your-writes, revoke one, revoke the others.
	desk := a.must(t, 200, "POST", api+"/login", "", map[string]any{"email": norm, "password": pw})
	list := a.must(t, 200, "GET", api+"/sessions", otp.str("access_token"), nil)
	sessions := list.body["sessions"].([]any)
	if len(sessions) != 2 {
		t.Fatalf("sessions: %s", list.raw)
	}
	first := sessions[0].(map[string]any)
	if first["id"] != desk.str("session_id") || first["current"] != false || first["device"] != "Chrome on macOS" {
		t.Fatalf("newest session first, not current: %s", list.raw)
	}
	a.must(t, 204, "DELETE", api+"/sessions/"+desk.str("session_id"), otp.str("access_token"), nil)
	if l := a.must(t, 200, "GET", api+"/sessions", otp.str("access_token"), nil); strings.Contains(l.raw, desk.str("session_id")) {
		t.Fatalf("a revoked session is still listed: %s", l.raw)
	}
	a.must(t, 401, "GET", api+"/me", desk.str("access_token"), nil)
	a.must(t, 404, "DELETE", api+"/sessions/"+desk.str("session_id"), otp.str("access_token"), nil)
	a.must(t, 400, "DELETE", api+"/sessions/not-a-uuid", otp.str("access_token"), nil)
	l1 := a.must(t, 200, "POST", api+"/login", "", map[string]any{"email": norm, "password": pw})
	l2 := a.must(t, 200, "POST", api+"/login", "", map[string]any{"email": norm, "password": pw})
	if got := a.must(t, 200, "DELETE", api+"/sessions", otp.str("access_token"), nil); got.body["revoked"] != float64(2) {
		t.Fatalf("revoke others: %s", got.raw)
	}
	a.must(t, 401, "GET", api+"/me", l1.str("access_token"), nil)
	a.must(t, 401, "GET", api+"/me", l2.str("access_token"), nil)
	a.must(t, 200, "GET", api+"/me", otp.str("access_token"), nil)

	// A password reset ends every session.
	other := a.must(t, 200, "POST", api+"/login", "", map[string]any{"email": norm, "password": pw})
	seen = len(mailsTo(t, c, norm))
	a.must(t, 202, "POST", api+"/otp/send", "", map[string]any{"email": norm, "purpose": "reset"})
	reset := c.nextCode(t, norm, seen)
	if got := a.call(t, "POST", api+"/reset-password", "", map[string]any{"email": norm, "code": reset, "new_password": "short"}); got.status != 400 {
		t.Fatalf("a short new password = %d %s", got.status, got.raw)
	}
	a.must(t, 200, "POST", api+"/reset-password", "", map[string]any{"email": norm, "code": reset, "new_password": "a brand new passphrase"})
	for _, tok := range []string{otp.str("access_token"), other.str("access_token")} {
		a.must(t, 401, "GET", api+"/me", tok, nil)
		testenv.Eventually(t, time.Second, func() bool { return b.call(t, "GET", api+"/me", tok, nil).status == 401 })
	}
	a.must(t, 401, "POST", api+"/refresh", "", map[string]any{"refresh_token": other.str("refresh_token")})
	a.must(t, 401, "POST", api+"/login", "", map[string]any{"email": norm, "password": pw})
	fresh := a.must(t, 200, "POST", api+"/login", "", map[string]any{"email": norm, "password": "a brand new passphrase"})
	if l := a.must(t, 200, "GET", api+"/sessions", fresh.str("access_token"), nil); len(l.body["sessions"].([]any)) != 1 {
		t.Fatalf("after the reset only the new session should be active: %s", l.raw)
	}
}

func mailsTo(t *testing.T, c *cluster, email string) []testenv.MailpitMessage {
	var out []testenv.MailpitMessage
	for _, m := range c.mail.Messages(t) {
		for _, to := range m.To {
			if strings.EqualFold(to, email) {
				out = append(out, m)
			}
		}
	}
	return out
}

// verifyWithJWKS checks the access token as any client would: with a standard
// JWT library and nothing but the published JWKS.
func verifyWithJWKS(t *testing.T, in *instance, token, userID, sessionID string) {
	t.Helper()
	resp, err := http.Get(in.base + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set struct {
		Keys []struct{ Kty, Crv, X, Kid, Alg string } `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil || len(set.Keys) == 0 {
		t.Fatalf("jwks: %v %+v", err, set)
	}
	claims := jwt.MapClaims{}
	_, err = jwt.ParseWithClaims(token, claims, func(tok *jwt.Token) (any, error) {
		for _, k := range set.Keys {
			if k.Kid == tok.Header["kid"] && k.Kty == "OKP" && k.Crv == "Ed25519" {
				x, err := base64.RawURLEncoding.DecodeString(k.X)
				return ed25519.PublicKey(x), err
			}
		}
		return nil, fmt.Errorf("kid %v not in the JWKS", tok.Header["kid"])
	}, jwt.WithValidMethods([]string{"EdDSA"}), jwt.WithIssuer("http://localhost:8080"), jwt.WithExpirationRequired())
	if err != nil {
		t.Fatalf("the access token does not verify from the JWKS: %v", err)
	}
	if claims["sub"] != userID || claims["sid"] != sessionID || claims["tid"] == nil || claims["jti"] == nil {
		t.Fatalf("claims: %v", claims)
	}
	if amr, _ := claims["amr"].([]any); len(amr) != 1 || amr[0] != "pwd" {
		t.Fatalf("amr: %v", claims["amr"])
	}
}
