package main

import (
	"bytes"
	"context"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"image/png"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/internal/testenv"
)

// tfAMR reads the amr claim of an access token (its signature is checked
// elsewhere: verifyWithJWKS).
func tfAMR(t *testing.T, access string) []string {
	t.Helper()
	parts := strings.Split(access, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", access)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		AMR []string `json:"amr"`
	}
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	return claims.AMR
}

func tfChallenge(t *testing.T, r response) string {
	t.Helper()
	if r.status != 200 || r.body["two_factor_required"] != true || r.body["expires_in"] != float64(300) || r.str("access_token") != "" {
		t.Fatalf("want a challenge: %d %s", r.status, r.raw)
	}
	if m, _ := r.body["methods"].([]any); len(m) != 2 || m[0] != "totp" || m[1] != "backup_code" {
		t.Fatalf("challenge methods: %s", r.raw)
	}
	tok := r.str("challenge_token")
	if raw, err := base64.RawURLEncoding.DecodeString(tok); err != nil || len(raw) < 32 {
		t.Fatalf("challenge token %q is not 256 bits of opaque secret", tok)
	}
	return tok
}

func tfStatus(t *testing.T, in *instance, access string, enabled bool, remaining int) {
	t.Helper()
	s := in.must(t, 200, "GET", api+"/2fa/status", access, nil)
	if s.body["enabled"] != enabled || s.body["backup_codes_remaining"] != float64(remaining) || len(s.body) != 3 {
		t.Fatalf("status %s; want enabled=%v, %d backup codes", s.raw, enabled, remaining)
	}
	at, present := s.body["enabled_at"]
	if !present || enabled && at == nil || !enabled && at != nil {
		t.Fatalf("status enabled_at: %s", s.raw)
	}
	if enabled {
		if _, err := time.Parse(time.RFC3339, at.(string)); err != nil {
			t.Fatalf("enabled_at: %v", err)
		}
	}
	me := in.must(t, 200, "GET", api+"/me", access, nil)
	if me.body["two_factor_enabled"] != enabled {
		t.Fatalf("/me two_factor_enabled: %s", me.raw)
	}
}

var tfBackupShape = regexp.MustCompile(`^[0-9]{4}-[0-9]{4}$`)

func tfBackupCodes(t *testing.T, r response) []string {
	t.Helper()
	list, _ := r.body["backup_codes"].([]any)
	var codes []string
	for _, c := range list {
		s, _ := c.(string)
		if !tfBackupShape.MatchString(s) || slices.Contains(codes, s) {
			t.Fatalf("backup codes: %s", r.raw)
		}
		codes = append(codes, s)
	}
	if len(codes) != 10 {
		t.Fatalf("want 10 backup codes: %s", r.raw)
	}
	return codes
}

// The whole two-factor flow over HTTP against running authd instances, with
// every NATS message recorded and searched for the secret and the codes.
func TestTwoFactorEndToEnd(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tap := tapEvents(t, c) // before authd starts: nothing it publishes is missed
	logs := &logBuffer{}
	a := c.startLogged(t, logs)
	b := c.start(t)
	run := strings.ToLower(uuid.NewString()[:8])
	email, pw := "tf-"+run+"@example.com", "correct horse battery"
	signup := c.signupVerified(t, a, email, pw, nil)
	access := signup.str("access_token")
	var secrets, codes []string // everything that must never be published

	// Before any setup.
	tfStatus(t, a, access, false, 0)
	if r := a.call(t, "POST", api+"/2fa/enable", access, map[string]any{"code": "123456"}); r.status != 409 || r.errCode() != "conflict" {
		t.Fatalf("enable with nothing pending = %d %s", r.status, r.raw)
	}
	a.must(t, 409, "POST", api+"/2fa/backup-codes/regenerate", access, nil)
	a.must(t, 409, "POST", api+"/2fa/disable", access, map[string]any{"code": "123456"})
	for _, path := range []string{"/2fa/setup", "/2fa/enable", "/2fa/disable", "/2fa/backup-codes/regenerate"} {
		if r := a.call(t, "POST", api+path, "", map[string]any{"code": "123456"}); r.status != 401 || r.errCode() != "unauthorized" {
			t.Fatalf("%s without a token = %d %s", path, r.status, r.raw)
		}
	}

	// Setup: a secret, its URI and a QR code; a second setup replaces the first.
	first := a.must(t, 200, "POST", api+"/2fa/setup", access, nil)
	setup := a.must(t, 200, "POST", api+"/2fa/setup", access, nil)
	secret := setup.str("secret")
	secrets = append(secrets, first.str("secret"), secret)
	if secret == first.str("secret") || len(secret) != 32 {
		t.Fatalf("setup secrets %q then %q", first.str("secret"), secret)
	}
	if uri := setup.str("provisioning_uri"); !strings.HasPrefix(uri, "otpauth://totp/authd:"+email+"?secret="+secret+"&issuer=authd") {
		t.Fatalf("provisioning_uri %s", uri)
	}
	qr, ok := strings.CutPrefix(setup.str("qr_code"), "data:image/png;base64,")
	raw, err := base64.StdEncoding.DecodeString(qr)
	if !ok || err != nil {
		t.Fatalf("qr_code is not a PNG data URL: %.80s", setup.str("qr_code"))
	}
	if img, err := png.Decode(bytes.NewReader(raw)); err != nil || img.Bounds().Dx() < 100 {
		t.Fatalf("qr_code PNG: %v", err)
	}
	if setup.header.Get("Cache-Control") != "no-store" {
		t.Fatal("the setup answer may be cached")
	}
	old := &testenv.TOTPApp{Secret: first.str("secret")}
	app := &testenv.TOTPApp{Secret: secret}

	// Enable: bad codes change nothing; a right one gives 10 backup codes.
	pool := c.dbPool(t)
	before := readDBState(t, pool)
	for _, bad := range []any{"", "abcdef", "12345", "1234567", "12 34 5", "123456789", "１２３４５６", strings.Repeat("1", 5000), old.Wrong(t)} {
		if r := a.call(t, "POST", api+"/2fa/enable", access, map[string]any{"code": bad}); r.status != 400 || r.errCode() != "invalid_code" {
			t.Fatalf("enable with %.20q = %d %s", bad, r.status, r.raw)
		}
	}
	if oc := old.Next(t); !app.Matches(oc) { // the replaced secret's code, unless it is by chance this one's too
		if r := a.call(t, "POST", api+"/2fa/enable", access, map[string]any{"code": oc}); r.errCode() != "invalid_code" {
			t.Fatalf("enable with the replaced secret's code = %d %s", r.status, r.raw)
		}
	}
	if r := a.call(t, "POST", api+"/2fa/enable", access, `{"code": 123456}`); r.status != 400 {
		t.Fatalf("a code of the wrong type = %d %s", r.status, r.raw)
	}
	if after := readDBState(t, pool); after.events != before.events {
		t.Fatalf("failed enables appended %v", after.eventTypes[before.events:])
	}
	code := app.Next(t)
	en := a.must(t, 200, "POST", api+"/2fa/enable", access, map[string]any{"code": code[:3] + " " + code[3:]})
	backup := tfBackupCodes(t, en)
	codes = append(codes, backup...)
	tfStatus(t, a, access, true, 10) // read-your-writes
	a.must(t, 409, "POST", api+"/2fa/setup", access, nil)
	a.must(t, 409, "POST", api+"/2fa/enable", access, map[string]any{"code": app.Wrong(t)})

	// A password login now answers a challenge; verify turns it into tokens.
	ch := tfChallenge(t, a.must(t, 200, "POST", api+"/login", "", map[string]any{"email": email, "password": pw}))
	if r := a.call(t, "POST", api+"/2fa/verify", "", map[string]any{"challenge_token": "nope", "code": app.Wrong(t)}); r.status != 401 || r.errCode() != "invalid_challenge" {
		t.Fatalf("verify with an unknown challenge = %d %s", r.status, r.raw)
	}
	if r := a.call(t, "POST", api+"/2fa/verify", "", map[string]any{"challenge_token": ch, "code": "12-ab-56"}); r.status != 400 || r.errCode() != "invalid_code" {
		t.Fatalf("verify with a malformed code = %d %s", r.status, r.raw)
	}
	totpCode := app.Next(t)
	v := b.must(t, 200, "POST", api+"/2fa/verify", "", map[string]any{"challenge_token": ch, "code": totpCode})
	checkTokens(t, v, email)
	if amr := tfAMR(t, v.str("access_token")); !slices.Equal(amr, []string{"pwd", "mfa"}) {
		t.Fatalf("amr after password and TOTP: %v", amr)
	}
	if v.body["user"].(map[string]any)["two_factor_enabled"] != true {
		t.Fatalf("user in tokens: %s", v.raw)
	}
	b.must(t, 200, "GET", api+"/me", v.str("access_token"), nil)
	// The login's try and the answer's were settled, and the challenge used
	// up, with the events they led to: nothing is left in flight.
	var challengesLeft, triesLeft int
	if err := pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM two_factor_challenges), (SELECT count(*) FROM login_failures)`).Scan(&challengesLeft, &triesLeft); err != nil {
		t.Fatal(err)
	}
	if challengesLeft != 0 || triesLeft != 0 {
		t.Fatalf("after a right answer: %d challenges and %d throttle rows left, want none", challengesLeft, triesLeft)
	}
	if r := a.call(t, "POST", api+"/2fa/verify", "", map[string]any{"challenge_token": ch, "code": backup[5]}); r.status != 401 || r.errCode() != "invalid_challenge" {
		t.Fatalf("a used challenge with a right code = %d %s", r.status, r.raw)
	}
	// Its token still names the user, so the answer was counted against them
	// with the lookup that found no challenge; finding none forgave it.
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM login_failures WHERE in_flight > 0`).Scan(&triesLeft); err != nil || triesLeft != 0 {
		t.Fatalf("after answering a used challenge: %d attempts left in flight (%v), want none", triesLeft, err)
	}

	// The same TOTP code is refused on a new challenge; a backup code works once.
	ch = tfChallenge(t, a.must(t, 200, "POST", api+"/login", "", map[string]any{"email": email, "password": pw}))
	if r := a.call(t, "POST", api+"/2fa/verify", "", map[string]any{"challenge_token": ch, "code": totpCode}); r.status != 400 || r.errCode() != "invalid_code" {
		t.Fatalf("the same TOTP code again = %d %s", r.status, r.raw)
	}
	v = a.must(t, 200, "POST", api+"/2fa/verify", "", map[string]any{"challenge_token": ch, "code": backup[0]})
	checkTokens(t, v, email)
	tfStatus(t, a, v.str("access_token"), true, 9)
	ch = tfChallenge(t, a.must(t, 200, "POST", api+"/login", "", map[string]any{"email": email, "password": pw}))
	if r := a.call(t, "POST", api+"/2fa/verify", "", map[string]any{"challenge_token": ch, "code": backup[0]}); r.status != 400 || r.errCode() != "invalid_code" {
		t.Fatalf("a used backup code again = %d %s", r.status, r.raw)
	}
	// Typed without its dash, with spaces.
	spaced := strings.ReplaceAll(backup[1], "-", " ")
	a.must(t, 200, "POST", api+"/2fa/verify", "", map[string]any{"challenge_token": ch, "code": " " + spaced + " "})

	// Regenerate: the old codes stop working.
	re := a.must(t, 200, "POST", api+"/2fa/backup-codes/regenerate", access, nil)
	fresh := tfBackupCodes(t, re)
	codes = append(codes, fresh...)
	tfStatus(t, a, access, true, 10)
	ch = tfChallenge(t, a.must(t, 200, "POST", api+"/login", "", map[string]any{"email": email, "password": pw}))
	if r := a.call(t, "POST", api+"/2fa/verify", "", map[string]any{"challenge_token": ch, "code": backup[2]}); r.errCode() != "invalid_code" {
		t.Fatalf("an old backup code after regenerating = %d %s", r.status, r.raw)
	}
	a.must(t, 200, "POST", api+"/2fa/verify", "", map[string]any{"challenge_token": ch, "code": fresh[0]})

	// An emailed-code login gets a challenge too, bound to its amr.
	seen := len(mailsTo(t, c, email))
	a.must(t, 202, "POST", api+"/otp/send", "", map[string]any{"email": email, "purpose": "login"})
	otp := c.nextCode(t, email, seen)
	codes = append(codes, otp)
	ch = tfChallenge(t, a.must(t, 200, "POST", api+"/otp/login", "", map[string]any{"email": email, "code": otp}))
	v = a.must(t, 200, "POST", api+"/2fa/verify", "", map[string]any{"challenge_token": ch, "code": fresh[1]})
	if amr := tfAMR(t, v.str("access_token")); !slices.Equal(amr, []string{"otp", "mfa"}) {
		t.Fatalf("amr after an emailed code and a backup code: %v", amr)
	}

	// Five answers use a challenge up, even when the sixth is right.
	ch = tfChallenge(t, a.must(t, 200, "POST", api+"/login", "", map[string]any{"email": email, "password": pw}))
	for i := 0; i < 5; i++ {
		if r := a.call(t, "POST", api+"/2fa/verify", "", map[string]any{"challenge_token": ch, "code": app.Wrong(t)}); r.status != 400 || r.errCode() != "invalid_code" {
			t.Fatalf("wrong answer %d = %d %s", i+1, r.status, r.raw)
		}
	}
	if r := a.call(t, "POST", api+"/2fa/verify", "", map[string]any{"challenge_token": ch, "code": fresh[2]}); r.status != 401 || r.errCode() != "invalid_challenge" {
		t.Fatalf("a sixth answer = %d %s", r.status, r.raw)
	}
	ch = tfChallenge(t, a.must(t, 200, "POST", api+"/login", "", map[string]any{"email": email, "password": pw}))
	a.must(t, 200, "POST", api+"/2fa/verify", "", map[string]any{"challenge_token": ch, "code": fresh[2]})
	tfStatus(t, a, access, true, 7)

	// Disable needs a code; then logins need no second factor again.
	before = readDBState(t, pool)
	for _, bad := range []string{"", "nope", app.Wrong(t), "0000-0000", totpCode, backup[3]} {
		if r := a.call(t, "POST", api+"/2fa/disable", access, map[string]any{"code": bad}); r.status != 400 || r.errCode() != "invalid_code" {
			t.Fatalf("disable with %q = %d %s", bad, r.status, r.raw)
		}
	}
	// The only event a wrong code may add: the day's tenth wrong code of the
	// account (five answers above, the rest here) is told to the owner.
	if added := slices.DeleteFunc(eventsAfter(t, pool, before.events), func(typ string) bool { return typ == "CodeGuessingDetected" }); len(added) > 0 {
		t.Fatalf("failed disables appended %v", added)
	}
	pending := tfChallenge(t, a.must(t, 200, "POST", api+"/login", "", map[string]any{"email": email, "password": pw}))
	a.must(t, 204, "POST", api+"/2fa/disable", access, map[string]any{"code": app.Next(t)})
	if r := a.call(t, "POST", api+"/2fa/verify", "", map[string]any{"challenge_token": pending, "code": fresh[4]}); r.status != 401 || r.errCode() != "invalid_challenge" {
		t.Fatalf("a challenge issued before two-factor was turned off = %d %s", r.status, r.raw)
	}
	tfStatus(t, a, access, false, 0)
	a.must(t, 409, "POST", api+"/2fa/backup-codes/regenerate", access, nil)
	a.must(t, 409, "POST", api+"/2fa/disable", access, map[string]any{"code": fresh[3]})
	checkTokens(t, a.must(t, 200, "POST", api+"/login", "", map[string]any{"email": email, "password": pw}), email)
	codes = append(codes, app.Used...)
	codes = append(codes, old.Used...)

	// Every event of the flow is on NATS, and no message carries the secret
	// or any code, in any spelling.
	byType := map[string]func(auditMsg) bool{}
	for _, typ := range []string{"TotpEnabled", "TotpDisabled", "BackupCodesRegenerated", "BackupCodeUsed", "TotpCodeAccepted", "LoginSucceeded"} {
		byType[typ] = func(m auditMsg) bool { return m.str("type") == typ }
	}
	// The last login's session, relayed after everything before it.
	byType["last login"] = func(m auditMsg) bool {
		data, _ := m.env["data"].(map[string]any)
		return m.str("type") == "SessionStarted" && slices.Equal(tfStrings(data["amr"]), []string{"pwd"})
	}
	tap.waitFor(t, byType)
	msgs := tap.all()
	for _, m := range msgs {
		if p := envelopeProblems(m, c.env["AUTHD_NATS_SUBJECT_PREFIX"]); len(p) > 0 {
			t.Errorf("%s: %v", m.str("type"), p)
		}
	}
	var shapes []string
	for _, s := range secrets {
		shapes = append(shapes, s, strings.ToLower(s))
		if raw, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(s); err == nil {
			shapes = append(shapes, string(raw), hex.EncodeToString(raw))
		}
	}
	for _, m := range msgs {
		if found := leaked(string(m.raw), shapes); len(found) > 0 {
			t.Errorf("%s on NATS carries the TOTP secret: %s", m.str("type"), m.raw)
		}
		for _, code := range codes {
			digits := strings.ReplaceAll(code, "-", "")
			if strings.Contains(string(m.raw), code) || codeInMessage(m, digits) {
				t.Errorf("%s on NATS carries the code %s: %s", m.str("type"), code, m.raw)
			}
		}
	}
	t.Logf("%d NATS messages searched for %d secrets and %d codes", len(msgs), len(secrets), len(codes))
	if found := leaked(logs.String(), secrets); len(found) > 0 {
		t.Error("authd's log carries the TOTP secret")
	}
	for _, code := range codes {
		if codeIn(logs.String(), strings.ReplaceAll(code, "-", "")) || strings.Contains(logs.String(), code) {
			t.Errorf("authd's log carries the code %s", code)
		}
	}
	// Nor the log's public parts or the read model.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var dump string
	if err := pool.QueryRow(ctx, `SELECT coalesce(string_agg(data::text, ' '), '') || (SELECT coalesce(string_agg(t::text, ' '), '') FROM two_factor t) FROM events`).Scan(&dump); err != nil {
		t.Fatal(err)
	}
	if found := leaked(dump, secrets); len(found) > 0 {
		t.Error("the events' public parts or the read model carry the TOTP secret")
	}
}

func tfStrings(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, x := range list {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}
