package config

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func key(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func TestLoadDefaults(t *testing.T) {
	got, err := Load(env(nil))
	if err != nil {
		t.Fatalf("Load with an empty environment: %v", err)
	}
	want := Config{
		Addr:                  ":8080",
		DatabaseURL:           "postgres://postgres@127.0.0.1:5432/authd?sslmode=disable",
		DataDir:               "./data",
		EmbeddedNATSAddr:      "127.0.0.1:4223",
		Issuer:                "http://localhost:8080",
		MailFrom:              "no-reply@localhost",
		GoogleJWKSURL:         "https://www.googleapis.com/oauth2/v3/certs",
		WebAuthnRPID:          "localhost",
		WebAuthnRPName:        "authd",
		WebAuthnOrigins:       []string{"http://localhost:8080"},
		RateLimit:             true,
		RefreshReuseGrace:     10 * time.Second,
		NATSStream:            "AUTH_EVENTS",
		NATSSubjectPrefix:     "auth.events",
		ReadYourWritesTimeout: 2 * time.Second,
		LogLevel:              slog.LevelInfo,
		AccessTokenTTL:        24 * time.Hour,
		RefreshTokenTTL:       168 * time.Hour,
		RequestLogRate:        1,
		NATSReplicas:          1,
		PendingSignupTTL:      168 * time.Hour,
		ProductName:           "authd",
		Notices:               true,
		ReauthMaxAge:          10 * time.Minute,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("defaults:\n got %s\nwant %s", got.fields(), want.fields())
	}
}

// fields prints a Config with its secrets, for test failures only: plain
// lacks Config's redacting String method.
func (c Config) fields() string {
	type plain Config
	return fmt.Sprintf("%+v", plain(c))
}

func TestLoadValues(t *testing.T) {
	m := map[string]string{
		"AUTHD_ADDR":                     "127.0.0.1:0",
		"DATABASE_URL":                   "host=/tmp user=me dbname=authd_test",
		"NATS_URL":                       "nats://a:4222, tls://b:4222,ws://c:8080,wss://d",
		"AUTHD_DATA_DIR":                 "/var/lib/authd",
		"AUTHD_EMBEDDED_NATS_ADDR":       "[::1]:14223",
		"AUTHD_ISSUER":                   "https://auth.example.com",
		"AUTHD_MASTER_KEY":               base64.StdEncoding.EncodeToString(key(1)) + " , " + base64.RawURLEncoding.EncodeToString(key(0xfb)),
		"SMTP_URL":                       "smtps://user:pw@mail.example.com:465",
		"AUTHD_MAIL_FROM":                "Auth <auth@example.com>",
		"GOOGLE_CLIENT_ID":               " one.apps ,, two.apps ,",
		"GOOGLE_JWKS_URL":                "http://127.0.0.1:9999/certs",
		"AUTHD_WEBAUTHN_RP_ID":           "example.com",
		"AUTHD_WEBAUTHN_RP_NAME":         "Example",
		"AUTHD_WEBAUTHN_ORIGINS":         "https://example.com, https://app.example.com:8443",
		"AUTHD_RATE_LIMIT":               "OFF",
		"AUTHD_TRUSTED_PROXIES":          "10.1.2.3/8, 192.168.0.7, ::1, fd00::/8",
		"AUTHD_REFRESH_REUSE_GRACE":      "0",
		"AUTHD_NATS_STREAM":              "TEST_1",
		"AUTHD_NATS_SUBJECT_PREFIX":      "test.abc",
		"AUTHD_READ_YOUR_WRITES_TIMEOUT": "750ms",
		"AUTHD_LOG_LEVEL":                "Debug",
		"AUTHD_CORS_ORIGINS":             "https://dash.example.com, http://127.0.0.1:3000",
		"AUTHD_ACCESS_TOKEN_TTL":         "15m",
		"AUTHD_REFRESH_TOKEN_TTL":        "720h",
		"AUTHD_REQUEST_LOG":              "0.25",
		"AUTHD_NATS_REPLICAS":            "3",
		"AUTHD_PENDING_SIGNUP_TTL":       "36h",
		"AUTHD_PRODUCT_NAME":             " Acme Cloud – Straße ",
		"AUTHD_MAIL_TEMPLATES":           "/etc/authd/mails",
		"AUTHD_NOTICES":                  "off",
		"AUTHD_REAUTH_MAX_AGE":           "2m30s",
	}
	got, err := Load(env(m))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := Config{
		Addr:                  "127.0.0.1:0",
		DatabaseURL:           "host=/tmp user=me dbname=authd_test",
		NATSURL:               "nats://a:4222, tls://b:4222,ws://c:8080,wss://d",
		DataDir:               "/var/lib/authd",
		EmbeddedNATSAddr:      "[::1]:14223",
		Issuer:                "https://auth.example.com",
		MasterKeys:            [][]byte{key(1), key(0xfb)},
		SMTPURL:               "smtps://user:pw@mail.example.com:465",
		MailFrom:              "Auth <auth@example.com>",
		GoogleClientIDs:       []string{"one.apps", "two.apps"},
		GoogleJWKSURL:         "http://127.0.0.1:9999/certs",
		WebAuthnRPID:          "example.com",
		WebAuthnRPName:        "Example",
		WebAuthnOrigins:       []string{"https://example.com", "https://app.example.com:8443"},
		RateLimit:             false,
		TrustedProxies:        []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.0.7/32"), netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("fd00::/8")},
		RefreshReuseGrace:     0,
		NATSStream:            "TEST_1",
		NATSSubjectPrefix:     "test.abc",
		ReadYourWritesTimeout: 750 * time.Millisecond,
		LogLevel:              slog.LevelDebug,
		CORSOrigins:           []string{"https://dash.example.com", "http://127.0.0.1:3000"},
		AccessTokenTTL:        15 * time.Minute,
		RefreshTokenTTL:       720 * time.Hour,
		RequestLogRate:        0.25,
		NATSReplicas:          3,
		PendingSignupTTL:      36 * time.Hour,
		ProductName:           "Acme Cloud – Straße",
		MailTemplates:         "/etc/authd/mails",
		Notices:               false,
		ReauthMaxAge:          150 * time.Second,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("values:\n got %s\nwant %s", got.fields(), want.fields())
	}
}

func TestLoadRateLimitSpellings(t *testing.T) {
	for v, want := range map[string]bool{"on": true, "true": true, "1": true, "off": false, "false": false, "0": false, "": true} {
		c, err := Load(env(map[string]string{"AUTHD_RATE_LIMIT": v}))
		if err != nil {
			t.Fatalf("AUTHD_RATE_LIMIT=%q: %v", v, err)
		}
		if c.RateLimit != want {
			t.Errorf("AUTHD_RATE_LIMIT=%q: RateLimit = %v, want %v", v, c.RateLimit, want)
		}
	}
}

func TestLoadRequestLogSpellings(t *testing.T) {
	for v, want := range map[string]float64{"": 1, "on": 1, "ON": 1, "off": 0, "0": 0, "1": 1, "0.01": 0.01} {
		c, err := Load(env(map[string]string{"AUTHD_REQUEST_LOG": v}))
		if err != nil {
			t.Fatalf("AUTHD_REQUEST_LOG=%q: %v", v, err)
		}
		if c.RequestLogRate != want {
			t.Errorf("AUTHD_REQUEST_LOG=%q: RequestLogRate = %v, want %v", v, c.RequestLogRate, want)
		}
	}
}

func TestLoadRejects(t *testing.T) {
	tests := []struct {
		name, value, want string
	}{
		{"AUTHD_ADDR", "8080", `"8080" is not host:port`},
		{"AUTHD_ADDR", ":http", `port "http" is not a number`},
		{"AUTHD_ADDR", ":70000", `port "70000" is not a number`},
		{"DATABASE_URL", "postgres://u@h:notaport/db", "is not a Postgres connection string"},
		{"DATABASE_URL", "postgres://u@127.0.0.1:5432", "names no database"},
		{"NATS_URL", "http://127.0.0.1:4222", "scheme is not one of nats://, tls://, ws://, wss://"},
		{"NATS_URL", "127.0.0.1:4222", "has no scheme"},
		{"NATS_URL", "nats://a:4222,,nats://b:4222", "empty entry"},
		{"NATS_URL", "nats://", "names no host"},
		{"AUTHD_EMBEDDED_NATS_ADDR", "127.0.0.1:4222", "uses port 4222"},
		{"AUTHD_EMBEDDED_NATS_ADDR", "0.0.0.0:4223", "is not a loopback address"},
		{"AUTHD_EMBEDDED_NATS_ADDR", ":4223", "is not a loopback address"},
		{"AUTHD_EMBEDDED_NATS_ADDR", "127.0.0.1", "is not host:port"},
		{"AUTHD_ISSUER", "localhost:8080", "is not an absolute URL"},
		{"AUTHD_ISSUER", "ftp://example.com", "scheme is not http or https"},
		{"AUTHD_ISSUER", "https://example.com/?a=b", "has a query or fragment"},
		{"AUTHD_MASTER_KEY", "!!!", "the key: master key is not base64"},
		{"AUTHD_MASTER_KEY", base64.StdEncoding.EncodeToString(key(2)[:16]), "the key: master key is 16 bytes, want 32"},
		{"AUTHD_MASTER_KEY", base64.StdEncoding.EncodeToString(key(2)) + ",", "key 2 of 2 is empty"},
		{"SMTP_URL", "http://mail:25", "scheme is not one of smtp://, smtps://"},
		{"SMTP_URL", "smtp:///nohost", "names no host"},
		{"AUTHD_MAIL_FROM", "not an address", "is not an email address"},
		{"GOOGLE_JWKS_URL", "/certs", "is not an absolute URL"},
		{"AUTHD_WEBAUTHN_RP_ID", "https://example.com", "is not a bare domain"},
		{"AUTHD_WEBAUTHN_ORIGINS", ",", "lists no origin"},
		{"AUTHD_WEBAUTHN_ORIGINS", "localhost:8080", "is not an absolute URL"},
		{"AUTHD_WEBAUTHN_ORIGINS", "http://localhost:8080/", "drop the trailing slash"},
		{"AUTHD_WEBAUTHN_ORIGINS", "http://localhost:8080/app", "is not an origin"},
		{"AUTHD_WEBAUTHN_ORIGINS", "https://evil.example", "is neither AUTHD_WEBAUTHN_RP_ID"},
		{"AUTHD_RATE_LIMIT", "maybe", `"maybe" is not on or off`},
		{"AUTHD_NOTICES", "quiet", `"quiet" is not on or off`},
		{"AUTHD_TRUSTED_PROXIES", "10.0.0.0/33", `"10.0.0.0/33" is not a CIDR`},
		{"AUTHD_TRUSTED_PROXIES", "proxy.local", `"proxy.local" is not a CIDR`},
		{"AUTHD_TRUSTED_PROXIES", "fe80::1%eth0", "has a zone"},
		{"AUTHD_REFRESH_REUSE_GRACE", "abc", `"abc" is not a duration (e.g. 10s)`},
		{"AUTHD_REFRESH_REUSE_GRACE", "10", `"10" is not a duration (e.g. 10s)`},
		{"AUTHD_REFRESH_REUSE_GRACE", "-1s", `"-1s" is negative`},
		{"AUTHD_READ_YOUR_WRITES_TIMEOUT", "0", "must be greater than zero"},
		{"AUTHD_READ_YOUR_WRITES_TIMEOUT", "soon", "is not a duration (e.g. 2s)"},
		{"AUTHD_NATS_STREAM", "AUTH.EVENTS", "is not a JetStream stream name"},
		{"AUTHD_NATS_STREAM", "AUTH EVENTS", "is not a JetStream stream name"},
		{"AUTHD_NATS_STREAM", "AUTH>", "is not a JetStream stream name"},
		{"AUTHD_NATS_SUBJECT_PREFIX", "auth.*", "no spaces or wildcards"},
		{"AUTHD_NATS_SUBJECT_PREFIX", "auth.>", "no spaces or wildcards"},
		{"AUTHD_NATS_SUBJECT_PREFIX", "auth events", "no spaces or wildcards"},
		{"AUTHD_NATS_SUBJECT_PREFIX", "auth..events", "empty token"},
		{"AUTHD_NATS_SUBJECT_PREFIX", "auth.", "empty token"},
		{"AUTHD_CORS_ORIGINS", "*", "is not an absolute URL"},
		{"AUTHD_CORS_ORIGINS", "dash.example.com", "is not an absolute URL"},
		{"AUTHD_CORS_ORIGINS", "https://dash.example.com/", "drop the trailing slash"},
		{"AUTHD_CORS_ORIGINS", "https://dash.example.com/app", "is not an origin"},
		{"AUTHD_CORS_ORIGINS", "https://Dash.example.com", "write it in lower case"},
		{"AUTHD_CORS_ORIGINS", "https://dash.example.com:443", "drop the default port"},
		{"AUTHD_CORS_ORIGINS", "ftp://dash.example.com", "scheme is not http or https"},
		{"AUTHD_LOG_LEVEL", "verbose", `"verbose" is not one of debug, info, warn, error`},
		{"AUTHD_ACCESS_TOKEN_TTL", "0", "must be greater than zero"},
		{"AUTHD_ACCESS_TOKEN_TTL", "-1h", "is negative"},
		{"AUTHD_ACCESS_TOKEN_TTL", "24", "is not a duration (e.g. 24h0m0s)"},
		{"AUTHD_ACCESS_TOKEN_TTL", "30s", "30s is outside 1m0s to 24h0m0s"},
		{"AUTHD_ACCESS_TOKEN_TTL", "87600h", "87600h0m0s is outside 1m0s to 24h0m0s"},
		{"AUTHD_REFRESH_TOKEN_TTL", "0s", "must be greater than zero"},
		{"AUTHD_REFRESH_TOKEN_TTL", "10m", "10m0s is outside 24h0m0s to 8760h0m0s"},
		{"AUTHD_REFRESH_TOKEN_TTL", "9000h", "9000h0m0s is outside 24h0m0s to 8760h0m0s"},
		{"AUTHD_NATS_REPLICAS", "0", `"0" is not a replica count from 1 to 5`},
		{"AUTHD_NATS_REPLICAS", "three", `"three" is not a replica count from 1 to 5`},
		{"AUTHD_NATS_REPLICAS", "7", `"7" is not a replica count from 1 to 5`},
		{"AUTHD_NATS_REPLICAS", "3", "3 needs a JetStream cluster in NATS_URL: the embedded server is one node"},
		{"AUTHD_REQUEST_LOG", "1.5", `"1.5" is not on, off or a sampling rate from 0 to 1`},
		{"AUTHD_REQUEST_LOG", "sometimes", `"sometimes" is not on, off or a sampling rate from 0 to 1`},
		{"AUTHD_REQUEST_LOG", "NaN", `"nan" is not on, off or a sampling rate from 0 to 1`},
		{"AUTHD_PENDING_SIGNUP_TTL", "7d", `"7d" is not a duration (e.g. 168h0m0s)`},
		{"AUTHD_PENDING_SIGNUP_TTL", "0", "must be greater than zero"},
		{"AUTHD_PENDING_SIGNUP_TTL", "-1h", "is negative"},
		{"AUTHD_PENDING_SIGNUP_TTL", "5m", "5m0s is shorter than an emailed code's life (10m0s)"},
		{"AUTHD_REAUTH_MAX_AGE", "0", "must be greater than zero"},
		{"AUTHD_REAUTH_MAX_AGE", "-5m", "is negative"},
		{"AUTHD_REAUTH_MAX_AGE", "500ms", "500ms is outside 1s to 24h0m0s"},
		{"AUTHD_REAUTH_MAX_AGE", "25h", "25h0m0s is outside 1s to 24h0m0s"},
		{"AUTHD_PRODUCT_NAME", "Acme\r\nBcc: victim@example.com", "has a line break or other unprintable character"},
		{"AUTHD_PRODUCT_NAME", "Acme\nCloud", "has a line break or other unprintable character"},
		{"AUTHD_PRODUCT_NAME", "Acme\tCloud", "has a line break or other unprintable character"},
		{"AUTHD_PRODUCT_NAME", strings.Repeat("ß", 65), "is 65 characters long; at most 64"},
	}
	for _, tt := range tests {
		t.Run(tt.name+"="+tt.value, func(t *testing.T) {
			_, err := Load(env(map[string]string{tt.name: tt.value}))
			if err == nil {
				t.Fatalf("Load accepted %s=%q", tt.name, tt.value)
			}
			want := tt.name + ": "
			if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q\ndoes not name %q with %q", err, tt.name, tt.want)
			}
		})
	}
}

func TestLoadReportsEveryProblem(t *testing.T) {
	_, err := Load(env(map[string]string{
		"AUTHD_ADDR":                "nope",
		"AUTHD_REFRESH_REUSE_GRACE": "abc",
		"AUTHD_RATE_LIMIT":          "maybe",
		"AUTHD_NATS_STREAM":         "A.B",
		"NATS_URL":                  "http://a:4222,nats://b:x",
	}))
	if err == nil {
		t.Fatal("Load accepted four bad variables")
	}
	for _, name := range []string{"AUTHD_ADDR", "AUTHD_REFRESH_REUSE_GRACE", "AUTHD_RATE_LIMIT", "AUTHD_NATS_STREAM"} {
		if !strings.Contains(err.Error(), name+": ") {
			t.Errorf("error does not mention %s:\n%v", name, err)
		}
	}
	// Each bad entry of a list is its own line, naming the variable.
	if n := strings.Count(err.Error(), "NATS_URL: "); n != 2 {
		t.Errorf("NATS_URL named %d times, want once per bad entry (2):\n%v", n, err)
	}
}

func TestErrorsNeverShowSecrets(t *testing.T) {
	const pw = "Sup3rSecretPw"
	goodKey := base64.StdEncoding.EncodeToString(key(7))
	tests := []struct {
		name, value string
		secrets     []string
	}{
		{"AUTHD_MASTER_KEY", "c2VjcmV0LWJ1dC1zaG9ydA==", []string{"c2VjcmV0LWJ1dC1zaG9ydA", "secret-but-short"}},
		{"AUTHD_MASTER_KEY", "not base64 " + pw, []string{pw}},
		{"AUTHD_MASTER_KEY", goodKey + ",short" + pw, []string{goodKey, pw}},
		{"SMTP_URL", "smtp://user:" + pw + "@mail:notaport", []string{pw}},
		{"SMTP_URL", "smtp://user:" + pw + "%zz@mail:25", []string{pw, "%zz"}},
		{"SMTP_URL", "smtp://user:" + pw + "%zz@mail:bad", []string{pw, "%zz"}},
		{"SMTP_URL", "http://user:" + pw + "@mail:25", []string{pw}},
		{"SMTP_URL", "user:" + pw + "@mail:25", []string{pw}},
		{"NATS_URL", "nats://a:4222,http://user:" + pw + "@b:4222", []string{pw}},
		{"NATS_URL", "nats://user:" + pw + "@b:bad", []string{pw}},
		{"NATS_URL", "http://" + pw + "@b:4222", []string{pw}},
		{"NATS_URL", "nats://" + pw + "@b:bad", []string{pw}},
		{"NATS_URL", pw + "@b:4222", []string{pw}},
		{"DATABASE_URL", "postgres://user:" + pw + "@db:notaport/authd", []string{pw}},
		{"DATABASE_URL", "postgres://user:" + pw + "@db:5432", []string{pw}},
		{"DATABASE_URL", "host=db password=" + pw + " port=x dbname=authd", []string{pw}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(env(map[string]string{tt.name: tt.value}))
			if err == nil {
				t.Fatalf("Load accepted %s", tt.name)
			}
			if !strings.Contains(err.Error(), tt.name+": ") {
				t.Errorf("error does not name %s: %v", tt.name, err)
			}
			for _, s := range tt.secrets {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error shows the secret %q: %v", s, err)
				}
			}
		})
	}
}

func TestLogValueHidesSecrets(t *testing.T) {
	const pw = "Sup3rSecretPw"
	keyB64 := base64.StdEncoding.EncodeToString(key(9))
	c, err := Load(env(map[string]string{
		"AUTHD_MASTER_KEY": keyB64,
		"SMTP_URL":         "smtp://mailer:" + pw + "@mail.example.com:587",
		"DATABASE_URL":     "postgres://app:" + pw + "@db:5432/authd?sslpassword=" + pw,
		"NATS_URL":         "nats://svc:" + pw + "@n1:4222,nats://n2:4222, nats://" + pw + "@n3:4222",
	}))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}

	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("starting", "config", c)
	outputs := map[string]string{
		"slog":  buf.String(),
		"%v":    fmt.Sprintf("%v", c),
		"%+v":   fmt.Sprintf("%+v", c),
		"%#v":   fmt.Sprintf("%#v", c),
		"Print": fmt.Sprint(c),
	}
	for name, out := range outputs {
		for _, secret := range []string{pw, keyB64, string(key(9))} {
			if strings.Contains(out, secret) {
				t.Errorf("%s output shows a secret: %s", name, out)
			}
		}
	}
	for _, want := range []string{
		`"master_key":"set"`,
		`"smtp_url":"smtp://mailer:xxxxx@mail.example.com:587"`,
		`"database_url":"postgres://app:xxxxx@db:5432/authd?sslpassword=xxxxx"`,
		`"nats_url":"nats://svc:xxxxx@n1:4222,nats://n2:4222,nats://xxxxx@n3:4222"`,
		`"refresh_reuse_grace":10000000000`,
	} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("slog output lacks %s: %s", want, buf.String())
		}
	}

	buf.Reset()
	dev, err := Load(env(map[string]string{"DATABASE_URL": "host=db password=" + pw + " dbname=authd"}))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("starting", "config", dev)
	if strings.Contains(buf.String(), pw) || !strings.Contains(buf.String(), `"master_key":"generated"`) {
		t.Errorf("dev config logged as %s", buf.String())
	}
}

// The sealing keys are AUTHD_MASTER_KEY's when it is set; without it, the
// development key in the data dir, made once and the same key after.
func TestSealingKeys(t *testing.T) {
	set := Config{MasterKeys: [][]byte{key(1), key(2)}, DataDir: t.TempDir()}
	keys, created, err := set.SealingKeys()
	if err != nil || created || !reflect.DeepEqual(keys, set.MasterKeys) {
		t.Errorf("with AUTHD_MASTER_KEY: %x, created %v, %v; want its keys", keys, created, err)
	}

	dev := Config{DataDir: t.TempDir()}
	first, created, err := dev.SealingKeys()
	if err != nil || !created || len(first) != 1 {
		t.Fatalf("first development start: %d keys, created %v, %v; want one key, created", len(first), created, err)
	}
	again, created, err := dev.SealingKeys()
	if err != nil || created || !reflect.DeepEqual(again, first) {
		t.Errorf("second development start: created %v, %v, same key %v; want the key made first", created, err, reflect.DeepEqual(again, first))
	}
}

// TestPasskeyDialogNamesTheProduct: without AUTHD_WEBAUTHN_RP_NAME the
// passkey dialog shows the product's name, as the mails do.
func TestPasskeyDialogNamesTheProduct(t *testing.T) {
	got, err := Load(env(map[string]string{"AUTHD_PRODUCT_NAME": "Acme"}))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got.WebAuthnRPName != "Acme" {
		t.Errorf("WebAuthnRPName = %q, want the product name %q", got.WebAuthnRPName, "Acme")
	}
}
