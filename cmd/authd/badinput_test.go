package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
)

// probe is one bad request: it must get a 4xx in the error shape (with
// wantCode, exactly that code) and change nothing.
type probe struct {
	name     string
	method   string
	path     string
	header   http.Header
	body     []byte
	wantCode string
}

// jsonEndpoint is an unauthenticated endpoint with a JSON body, and a body it
// accepts the shape of. Each probe spoils one thing of it.
type jsonEndpoint struct {
	path  string
	valid map[string]any
}

// runProbes sends the probes and checks each answer, then that the database
// is as it was: the same events, claims, codes (and their tries) and failed
// login counters.
func runProbes(t *testing.T, in *instance, pool *pgxpool.Pool, probes []probe) {
	t.Helper()
	before := readDBState(t, pool)
	for _, p := range probes {
		r := in.rawCall(t, p.method, p.path, p.header, p.body)
		problems := errorShapeProblems(r)
		if p.wantCode != "" && r.errCode() != p.wantCode {
			problems = append(problems, fmt.Sprintf("code %q, want %q", r.errCode(), p.wantCode))
		}
		if len(problems) > 0 {
			t.Errorf("%s: %s %s (body %q) = %d %s\n\t%s", p.name, p.method, p.path, clip(string(p.body), 120),
				r.status, clip(r.raw, 300), strings.Join(problems, "\n\t"))
		}
	}
	after := readDBState(t, pool)
	if after.events != before.events {
		t.Errorf("bad input appended %d events: %v", after.events-before.events, after.eventTypes[before.events:])
	}
	if after.uniqueKeys != before.uniqueKeys {
		t.Errorf("bad input claimed %d unique keys (emails)", after.uniqueKeys-before.uniqueKeys)
	}
	if added, removed := diffStrings(before.codes, after.codes); len(added)+len(removed) > 0 {
		t.Errorf("bad input changed the live codes (email/purpose/tries): new %q, gone %q", added, removed)
	}
	if after.loginFailures != before.loginFailures {
		t.Errorf("bad input counted failed logins: %d -> %d accounts", before.loginFailures, after.loginFailures)
	}
}

// with returns a copy of m with k set to v.
func with(m map[string]any, k string, v any) map[string]any {
	out := make(map[string]any, len(m)+1)
	for kk, vv := range m {
		out[kk] = vv
	}
	out[k] = v
	return out
}

// rawWith is valid's JSON with field k's value replaced by raw bytes, which
// need not be valid UTF-8.
func rawWith(t *testing.T, valid map[string]any, k string, raw string) []byte {
	t.Helper()
	const marker = "\u0001MARKER\u0001"
	b := jsonBody(t, with(valid, k, marker))
	quoted, _ := json.Marshal(marker)
	out := bytes.Replace(b, quoted, []byte(`"`+raw+`"`), 1)
	if bytes.Equal(out, b) {
		t.Fatalf("marker not found in %s", b)
	}
	return out
}

func TestBadInputIsRefusedAndChangesNothing(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	in := c.start(t)
	pool := c.dbPool(t)
	const pw = "correct horse battery staple"

	// Valid setup: a signed-in account, and a pending signup with a live code
	// that the bad codes below must not burn.
	alice := c.signupVerified(t, in, "alice@example.com", pw, nil)
	access, refresh, sessionID := alice.str("access_token"), alice.str("refresh_token"), alice.str("session_id")
	if r := in.rawCall(t, "POST", api+"/register", nil, jsonBody(t, map[string]any{"email": "pending@example.com", "password": pw})); r.status != 202 {
		t.Fatalf("register pending = %d %s", r.status, r.raw)
	}
	pendingCode := c.nextCode(t, "pending@example.com", 0)
	setupMails := c.mailCount(t)
	bearer := hdr("Authorization", "Bearer "+access)

	endpoints := []jsonEndpoint{
		{"/register", map[string]any{"email": "fresh@example.com", "password": pw, "name": "Fresh", "tenant_name": "Fresh Inc"}},
		{"/register/verify", map[string]any{"email": "pending@example.com", "code": "not-a-code"}},
		{"/login", map[string]any{"email": "alice@example.com", "password": pw}},
		{"/refresh", map[string]any{"refresh_token": refresh}},
		{"/otp/send", map[string]any{"email": "alice@example.com", "purpose": "login"}},
		{"/otp/login", map[string]any{"email": "alice@example.com", "code": "not-a-code"}},
		{"/reset-password", map[string]any{"email": "alice@example.com", "code": "not-a-code", "new_password": "a brand new passphrase"}},
	}
	authEndpoints := []struct{ method, path string }{
		{"POST", "/logout"}, {"GET", "/me"}, {"GET", "/sessions"},
		{"DELETE", "/sessions/" + sessionID}, {"DELETE", "/sessions"},
	}

	t.Run("malformed, wrong-typed and empty bodies", func(t *testing.T) {
		deep := strings.Repeat("[", 20000) + strings.Repeat("]", 20000)
		bodies := map[string]string{
			"unclosed object":     `{`,
			"missing value":       `{"email":}`,
			"trailing comma":      `{"email":"alice@example.com",}`,
			"single quotes":       `{'email':'alice@example.com'}`,
			"not JSON":            `email=alice@example.com&password=x`,
			"trailing garbage":    `{"email":"alice@example.com"} {"email":"x"}`,
			"byte order mark":     "\xef\xbb\xbf{\"email\":\"alice@example.com\"}",
			"array":               `[]`,
			"array of object":     `[{"email":"alice@example.com","password":"correct horse battery staple"}]`,
			"string":              `"alice@example.com"`,
			"number":              `5`,
			"boolean":             `true`,
			"null":                `null`,
			"empty":               ``,
			"whitespace":          "  \n\t ",
			"deeply nested array": deep,
			"huge number":         `{"email":1e999}`,
			"NUL byte":            "{\"email\":\"alice@example.com\"\x00}",
		}
		var probes []probe
		for _, ep := range endpoints {
			for name, b := range bodies {
				probes = append(probes, probe{name: ep.path + " " + name, method: "POST", path: api + ep.path, body: []byte(b)})
			}
			for field := range ep.valid {
				for vname, v := range map[string]any{"number": 5, "bool": true, "array": []any{ep.valid[field]}, "object": map[string]any{"v": ep.valid[field]}, "float": 1.5} {
					probes = append(probes, probe{name: fmt.Sprintf("%s %s as %s", ep.path, field, vname), method: "POST", path: api + ep.path, body: jsonBody(t, with(ep.valid, field, v))})
				}
			}
		}
		// The auth endpoints ignore bodies, but without a valid token they
		// must refuse with 401 whatever the body.
		for _, ae := range authEndpoints {
			for name, b := range bodies {
				probes = append(probes, probe{name: ae.method + " " + ae.path + " no token, " + name, method: ae.method, path: api + ae.path, body: []byte(b), wantCode: "unauthorized"})
			}
		}
		runProbes(t, in, pool, probes)
	})

	t.Run("bodies over 64 KiB", func(t *testing.T) {
		var probes []probe
		pad := strings.Repeat("x", 70<<10)
		for _, ep := range endpoints {
			probes = append(probes, probe{name: ep.path + " 70 KiB", method: "POST", path: api + ep.path, body: jsonBody(t, with(ep.valid, "padding", pad)), wantCode: "payload_too_large"})
			probes = append(probes, probe{name: ep.path + " 70 KiB name", method: "POST", path: api + ep.path, body: jsonBody(t, with(ep.valid, "name", pad)), wantCode: "payload_too_large"})
		}
		// Up to 1 MiB the server reads the body and answers; beyond that it
		// may cut the connection while the client is still sending.
		probes = append(probes, probe{name: "/register 900 KiB", method: "POST", path: api + "/register", body: jsonBody(t, with(endpoints[0].valid, "padding", strings.Repeat("x", 900<<10))), wantCode: "payload_too_large"})
		// With a valid token, so that only the size refuses them: a logout or
		// revoke-all that went through would show in the events.
		for _, ae := range authEndpoints {
			probes = append(probes, probe{name: ae.method + " " + ae.path + " 70 KiB", method: ae.method, path: api + ae.path, header: bearer, body: []byte(`{"padding":"` + pad + `"}`), wantCode: "payload_too_large"})
		}
		runProbes(t, in, pool, probes)
	})

	t.Run("invalid emails", func(t *testing.T) {
		invalid := map[string]string{
			"empty":                    "",
			"only spaces":              "   ",
			"no at sign":               "alice.example.com",
			"two at signs":             "alice@@example.com",
			"space inside":             "ali ce@example.com",
			"space in domain":          "alice@exa mple.com",
			"300 characters":           strings.Repeat("a", 288) + "@example.com",
			"display-name form":        "A <a@b.c>",
			"quoted display name":      `"Alice" <alice@example.com>`,
			"angle brackets":           "<alice@example.com>",
			"two addresses":            "alice@example.com, bob@example.com",
			"no dot in domain":         "alice@example",
			"trailing dot":             "alice@example.com.",
			"newline inside":           "alice\n@example.com",
			"header injection":         "alice@example.com\r\nBcc: mallory@example.com",
			"NUL":                      "alice@example.com\u0000",
			"tab inside":               "ali\tce@example.com",
			"SQL-ish":                  "alice'--@example.com' OR '1'='1",
			"only an at sign":          "@",
			"missing local part":       "@example.com",
			"missing domain":           "alice@",
			"domain starts with a dot": "alice@.example.com",
		}
		var probes []probe
		for _, ep := range endpoints {
			if _, ok := ep.valid["email"]; !ok {
				continue
			}
			for name, e := range invalid {
				probes = append(probes, probe{name: ep.path + " email " + name, method: "POST", path: api + ep.path, body: jsonBody(t, with(ep.valid, "email", e)), wantCode: "validation_failed"})
			}
		}
		runProbes(t, in, pool, probes)
	})

	// Addresses that look like someone else's or hide characters: each would
	// be an account (and a mail) for an address that reads as another.
	t.Run("lookalike and invisible characters in emails", func(t *testing.T) {
		odd := map[string]string{
			"cyrillic a (U+0430)":         "\u0430lice@example.com",
			"fullwidth a (U+FF41)":        "\uff41lice@example.com",
			"cyrillic a in the domain":    "alice@ex\u0430mple.com",
			"RTL override (U+202E)":       "alice\u202e@example.com",
			"zero-width joiner (U+200D)":  "alice\u200d@example.com",
			"zero-width space (U+200B)":   "al\u200bice@example.com",
			"trailing zero-width joiner":  "alice@example.com\u200d",
			"replacement character":       "\ufffdlice@example.com",
			"soft hyphen (U+00AD)":        "al\u00adice@example.com",
			"byte order mark inside":      "alice\ufeff@example.com",
			"left-to-right mark (U+200E)": "alice@example.com\u200e",
			"combining acute (U+0301)":    "alice\u0301@example.com",
		}
		var probes []probe
		// One cause (commands.NormalizeEmail) for every endpoint: the ones
		// that show it best are enough.
		for _, ep := range endpoints {
			if ep.path != "/register" && ep.path != "/login" && ep.path != "/otp/send" {
				continue
			}
			for name, e := range odd {
				if ep.path == "/register" || ep.path == "/otp/send" {
					// A distinct address per probe: an accepted one shows as
					// its own mail in Mailpit.
					e = strings.Replace(e, "@", fmt.Sprintf("+%s@", strings.Map(func(r rune) rune {
						if r >= 'a' && r <= 'z' {
							return r
						}
						return -1
					}, strings.ToLower(name))), 1)
				}
				probes = append(probes, probe{name: ep.path + " email " + name, method: "POST", path: api + ep.path, body: jsonBody(t, with(ep.valid, "email", e)), wantCode: "validation_failed"})
			}
		}
		runProbes(t, in, pool, probes)
	})

	t.Run("names", func(t *testing.T) {
		names := map[string]string{
			"10 KB":                    strings.Repeat("n", 10<<10),
			"201 runes":                strings.Repeat("é", 201),
			"bell control character":   "Ada\u0007",
			"NUL":                      "Ada\u0000Lovelace",
			"escape sequence":          "Ada\u001b[31mred",
			"newline":                  "Ada\nLovelace",
			"RTL override (U+202E)":    "Ada\u202eecalevoL",
			"zero-width joiner only":   "\u200d\u200d",
			"zero-width space":         "Ada\u200b",
			"line separator (U+2028)":  "Ada\u2028Lovelace",
			"byte order mark (U+FEFF)": "\ufeffAda",
			"DEL":                      "Ada\u007f",
			"C1 control (U+0085)":      "Ad\u0085a",
		}
		var probes []probe
		i := 0
		for _, field := range []string{"name", "tenant_name"} {
			for name, v := range names {
				i++
				body := map[string]any{"email": fmt.Sprintf("name-probe-%d@example.com", i), "password": pw, "name": "Ok", "tenant_name": "Ok"}
				probes = append(probes, probe{name: "/register " + field + " " + name, method: "POST", path: api + "/register", body: jsonBody(t, with(body, field, v)), wantCode: "validation_failed"})
			}
		}
		runProbes(t, in, pool, probes)
	})

	// RFC 8259: JSON text is UTF-8. Go's decoder would quietly turn these
	// bytes into U+FFFD, so a check on the decoded strings never sees them.
	t.Run("invalid UTF-8 in the raw body", func(t *testing.T) {
		var probes []probe
		reg := map[string]any{"email": "utf8-probe@example.com", "password": pw, "name": "Ok", "tenant_name": "Ok"}
		for i, field := range []string{"name", "tenant_name", "password", "email"} {
			body := with(reg, "email", fmt.Sprintf("utf8-probe-%d@example.com", i))
			probes = append(probes, probe{name: "/register " + field + " with bytes ff fe", method: "POST", path: api + "/register", body: rawWith(t, body, field, "Ada\xff\xfe"), wantCode: "validation_failed"})
		}
		probes = append(probes,
			probe{name: "/register overlong encoding of '/'", method: "POST", path: api + "/register", body: rawWith(t, with(reg, "email", "utf8-probe-o@example.com"), "name", "\xc0\xaf"), wantCode: "validation_failed"},
			probe{name: "/register UTF-16 surrogate bytes", method: "POST", path: api + "/register", body: rawWith(t, with(reg, "email", "utf8-probe-s@example.com"), "name", "\xed\xa0\x80"), wantCode: "validation_failed"},
			probe{name: "/login password with bytes ff fe", method: "POST", path: api + "/login", body: rawWith(t, map[string]any{"email": "alice@example.com", "password": pw}, "password", "correct horse\xff\xfe"), wantCode: "validation_failed"},
			probe{name: "/login email with bytes ff", method: "POST", path: api + "/login", body: rawWith(t, map[string]any{"email": "alice@example.com", "password": pw}, "email", "\xfflice@example.com"), wantCode: "validation_failed"},
			probe{name: "/otp/send email with bytes ff", method: "POST", path: api + "/otp/send", body: rawWith(t, map[string]any{"email": "x", "purpose": "login"}, "email", "utf8-probe-\xff@example.com"), wantCode: "validation_failed"},
		)
		runProbes(t, in, pool, probes)
	})

	t.Run("passwords and purposes", func(t *testing.T) {
		long := strings.Repeat("p", 2000)
		var probes []probe
		for i, v := range []string{"", "short", "1234567", long, strings.Repeat("é", 600)} {
			probes = append(probes,
				probe{name: fmt.Sprintf("/register password #%d (%d bytes)", i, len(v)), method: "POST", path: api + "/register", body: jsonBody(t, map[string]any{"email": fmt.Sprintf("pw-probe-%d@example.com", i), "password": v}), wantCode: "validation_failed"},
				probe{name: fmt.Sprintf("/reset-password new_password #%d (%d bytes)", i, len(v)), method: "POST", path: api + "/reset-password", body: jsonBody(t, map[string]any{"email": "alice@example.com", "code": "123456", "new_password": v}), wantCode: "validation_failed"},
			)
		}
		for i, v := range []string{"", long} {
			probes = append(probes, probe{name: fmt.Sprintf("/login password #%d (%d bytes)", i, len(v)), method: "POST", path: api + "/login", body: jsonBody(t, map[string]any{"email": "alice@example.com", "password": v}), wantCode: "validation_failed"})
		}
		for _, p := range []string{"", "shopping", "verify", "LOGIN", " login", "login\u0000", "reset,login"} {
			probes = append(probes, probe{name: fmt.Sprintf("/otp/send purpose %q", p), method: "POST", path: api + "/otp/send", body: jsonBody(t, map[string]any{"email": "alice@example.com", "purpose": p}), wantCode: "validation_failed"})
		}
		runProbes(t, in, pool, probes)
	})

	// None of these is six digits, so none may count as a try on a live code:
	// pending@example.com's code still works afterwards.
	t.Run("codes", func(t *testing.T) {
		codes := []string{"", "abcdef", "12345", "1234567", "12345678901234567890123456789012345", "\uff11\uff12\uff13\uff14\uff15\uff16",
			"12345\u0000", "123456' OR '1'='1", "١٢٣٤٥٦", "12345a", strings.Repeat("1", 10<<10), " ", "-"}
		var probes []probe
		for _, code := range codes {
			for _, ep := range []struct{ path, email string }{{"/register/verify", "pending@example.com"}, {"/otp/login", "alice@example.com"}, {"/reset-password", "alice@example.com"}} {
				body := map[string]any{"email": ep.email, "code": code}
				if ep.path == "/reset-password" {
					body["new_password"] = "a brand new passphrase"
				}
				probes = append(probes, probe{name: fmt.Sprintf("%s code %q", ep.path, clip(code, 20)), method: "POST", path: api + ep.path, body: jsonBody(t, body)})
			}
		}
		runProbes(t, in, pool, probes)
	})

	t.Run("authorization headers", func(t *testing.T) {
		parts := strings.Split(access, ".")
		if len(parts) != 3 {
			t.Fatalf("access token is not a JWT: %q", access)
		}
		var head, claims map[string]any
		decodeSeg(t, parts[0], &head)
		decodeSeg(t, parts[1], &claims)
		expired := with(claims, "exp", time.Now().Add(-time.Hour).Unix())
		reSigned := func(c map[string]any) string { return parts[0] + "." + encodeSeg(t, c) + "." + parts[2] }
		none, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims(claims)).SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		// Algorithm confusion: HS256 keyed with the published public key.
		var jwks struct {
			Keys []struct{ X, Kid string } `json:"keys"`
		}
		resp, err := http.Get(in.base + "/.well-known/jwks.json")
		if err != nil {
			t.Fatal(err)
		}
		if err := json.NewDecoder(resp.Body).Decode(&jwks); err != nil || len(jwks.Keys) == 0 {
			t.Fatalf("jwks: %v", err)
		}
		resp.Body.Close()
		pub, _ := base64.RawURLEncoding.DecodeString(jwks.Keys[0].X)
		hs := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(claims))
		hs.Header["kid"] = jwks.Keys[0].Kid
		confused, err := hs.SignedString(pub)
		if err != nil {
			t.Fatal(err)
		}
		values := map[string]string{
			"missing":                           "",
			"scheme only":                       "Bearer",
			"scheme and space":                  "Bearer ",
			"basic":                             "Basic YWxpY2VAZXhhbXBsZS5jb206cGFzc3dvcmQ=",
			"other scheme":                      "Token " + access,
			"no scheme":                         access,
			"garbage":                           "Bearer garbage",
			"three dots":                        "Bearer a.b.c",
			"empty segments":                    "Bearer ..",
			"3 KB":                              "Bearer " + strings.Repeat("A", 3<<10),
			"10 KB":                             "Bearer " + strings.Repeat("A", 10<<10),
			"expired-looking (exp in the past)": "Bearer " + reSigned(expired),
			"other user (sub changed)":          "Bearer " + reSigned(with(claims, "sub", uuid.NewString())),
			"alg none":                          "Bearer " + none,
			"HS256 keyed with the public key":   "Bearer " + confused,
			"signature stripped":                "Bearer " + parts[0] + "." + parts[1] + ".",
			"one character appended":            "Bearer " + access + "x",
			"two tokens":                        "Bearer " + access + " " + access,
			"refresh token as access token":     "Bearer " + refresh,
			"SQL-ish":                           "Bearer ' OR '1'='1",
			"non-ASCII":                         "Bearer t\u00f6ken",
		}
		var probes []probe
		for _, ae := range authEndpoints {
			for name, v := range values {
				h := http.Header{}
				if v != "" {
					h.Set("Authorization", v)
				}
				probes = append(probes, probe{name: ae.method + " " + ae.path + " authorization " + name, method: ae.method, path: api + ae.path, header: h})
			}
		}
		runProbes(t, in, pool, probes)
		if r := in.rawCall(t, "GET", api+"/me", bearer, nil); r.status != 200 {
			t.Fatalf("the valid token stopped working: %d %s", r.status, r.raw)
		}
	})

	t.Run("session ids", func(t *testing.T) {
		ids := map[string]string{
			"not a UUID":           "not-a-uuid",
			"SQL quote":            url.PathEscape("1' OR '1'='1"),
			"SQL statement":        url.PathEscape("1; DROP TABLE events; --"),
			"percent-encoded NUL":  "%00",
			"UUID with extra":      uuid.NewString() + "x",
			"UUID too short":       uuid.NewString()[:35],
			"nil UUID":             "00000000-0000-0000-0000-000000000000",
			"unknown UUID":         uuid.NewString(),
			"2 KB":                 strings.Repeat("a", 2<<10),
			"encoded slashes":      "..%2f..%2fme",
			"unicode":              url.PathEscape("\u202e" + uuid.NewString()),
			"percent-encoded UUID": url.PathEscape(sessionID + "\u0000"),
		}
		var probes []probe
		for name, id := range ids {
			probes = append(probes, probe{name: "DELETE /sessions/:id " + name, method: "DELETE", path: api + "/sessions/" + id, header: bearer})
			probes = append(probes, probe{name: "DELETE /sessions/:id " + name + " without a token", method: "DELETE", path: api + "/sessions/" + id, wantCode: "unauthorized"})
		}
		runProbes(t, in, pool, probes)
	})

	t.Run("refresh tokens", func(t *testing.T) {
		flipped := []byte(refresh)
		if flipped[5] == 'A' {
			flipped[5] = 'B'
		} else {
			flipped[5] = 'A'
		}
		std := strings.NewReplacer("-", "+", "_", "/").Replace(refresh)
		values := map[string]string{
			"garbage":                  "garbage",
			"10 KB":                    strings.Repeat("r", 10<<10),
			"one character changed":    string(flipped),
			"padded":                   refresh + "=",
			"one character appended":   refresh + "A",
			"one character removed":    refresh[:len(refresh)-1],
			"standard base64 alphabet": std,
			"access token":             access,
			"a UUID":                   uuid.NewString(),
			"surrounded by spaces":     " " + refresh + " ",
			"SQL-ish":                  "' OR '1'='1",
			"same length, all zeros":   strings.Repeat("A", len(refresh)),
			"non-ASCII of same length": strings.Repeat("é", len(refresh)/2),
			"upper-cased":              strings.ToUpper(refresh),
		}
		if std == refresh {
			delete(values, "standard base64 alphabet")
		}
		if strings.ToUpper(refresh) == refresh {
			delete(values, "upper-cased")
		}
		var probes []probe
		for name, v := range values {
			probes = append(probes, probe{name: "/refresh " + name, method: "POST", path: api + "/refresh", body: jsonBody(t, map[string]any{"refresh_token": v})})
		}
		runProbes(t, in, pool, probes)
	})

	// After the barrage the valid credentials still work: the live code was
	// not burned, the session was not revoked, and no mail went out but
	// the one asked for now.
	t.Run("nothing changed", func(t *testing.T) {
		a := c.mailCount(t)
		if a != setupMails {
			t.Errorf("bad input sent %d emails, to %q", a-setupMails, strangers(t, c))
		}
		if r := in.rawCall(t, "POST", api+"/register/verify", nil, jsonBody(t, map[string]any{"email": "pending@example.com", "code": pendingCode})); r.status != 201 {
			t.Errorf("the live code was burned by bad input: verify = %d %s", r.status, r.raw)
		}
		if r := in.rawCall(t, "POST", api+"/refresh", nil, jsonBody(t, map[string]any{"refresh_token": refresh})); r.status != 200 {
			t.Errorf("the session did not survive bad input: refresh = %d %s", r.status, r.raw)
		}
		// A mail asked for now arrives; mails the bad input might have set
		// off in the background had as long to arrive, and are counted.
		seen := len(mailsTo(t, c, "alice@example.com"))
		if r := in.rawCall(t, "POST", api+"/otp/send", nil, jsonBody(t, map[string]any{"email": "alice@example.com", "purpose": "login"})); r.status != 202 {
			t.Fatalf("otp/send = %d %s", r.status, r.raw)
		}
		c.nextCode(t, "alice@example.com", seen)
		if got := c.mailCount(t); got != a+1 {
			t.Errorf("%d more emails went out in the background during the bad input; all unexpected recipients: %q", got-a-1, strangers(t, c))
		}
	})

	// The control: names that are odd but fine stay accepted, the zero-width
	// joiner of an emoji sequence included.
	t.Run("fine names are accepted", func(t *testing.T) {
		for i, name := range []string{"\U0001F469\u200d\U0001F4BB Ada", "Zoë Ångström-Łukasiewicz", "\u674e\u5c0f\u9f99", "\u0645\u062d\u0645\u062f", strings.Repeat("é", 200)} {
			r := in.rawCall(t, "POST", api+"/register", nil, jsonBody(t, map[string]any{"email": fmt.Sprintf("fine-name-%d@example.com", i), "password": pw, "name": name, "tenant_name": name}))
			if r.status != 202 {
				t.Errorf("register with name %q = %d %s", name, r.status, r.raw)
			}
		}
	})
}

// strangers lists the recipients of mails to anyone but the setup's accounts.
func strangers(t *testing.T, c *cluster) []string {
	var to []string
	for _, m := range c.mail.Messages(t) {
		for _, a := range m.To {
			if a != "alice@example.com" && a != "pending@example.com" {
				to = append(to, a)
			}
		}
	}
	return to
}

// diffStrings lists what b has that a has not, and the other way round.
func diffStrings(a, b []string) (added, removed []string) {
	for _, x := range b {
		if !slices.Contains(a, x) {
			added = append(added, x)
		}
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			removed = append(removed, x)
		}
	}
	return added, removed
}

func decodeSeg(t *testing.T, seg string, v any) {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err == nil {
		err = json.Unmarshal(b, v)
	}
	if err != nil {
		t.Fatalf("decode JWT segment %q: %v", seg, err)
	}
}

func encodeSeg(t *testing.T, v any) string {
	return base64.RawURLEncoding.EncodeToString(jsonBody(t, v))
}
