// Package config reads authd's settings from the environment and validates them.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/authd/authd/internal/redact"
	"github.com/authd/authd/internal/seal"
	"github.com/authd/authd/internal/tokens"
)

// Config is every setting authd takes from its environment.
type Config struct {
	Addr             string
	DatabaseURL      string
	NATSURL          string // empty: run an embedded NATS server
	DataDir          string
	EmbeddedNATSAddr string
	Issuer           string
	// MasterKeys seal secrets at rest: the first seals, the rest only open,
	// so an old key can stay while its data is resealed. Nil means dev mode.
	MasterKeys        [][]byte
	SMTPURL           string // empty: codes go to the log
	MailFrom          string
	GoogleClientIDs   []string // empty: Google login is off
	GoogleJWKSURL     string
	WebAuthnRPID      string
	WebAuthnRPName    string
	WebAuthnOrigins   []string
	RateLimit         bool
	TrustedProxies    []netip.Prefix
	RefreshReuseGrace time.Duration
	// NATSStream and NATSSubjectPrefix let tests and side-by-side deployments
	// share one NATS server without seeing each other's events.
	NATSStream            string
	NATSSubjectPrefix     string
	ReadYourWritesTimeout time.Duration
	LogLevel              slog.Level
	// CORSOrigins may call the API from a browser; empty sends no CORS
	// headers at all.
	CORSOrigins []string
	// AccessTokenTTL and RefreshTokenTTL are the token lifetimes; expires_in
	// and refresh_expires_in follow them.
	AccessTokenTTL  time.Duration
	RefreshTokenTTL time.Duration
	// RequestLogRate is the share of requests logged, one line each
	// (AUTHD_REQUEST_LOG): 1 logs all, 0 none; 5xx answers are always logged.
	RequestLogRate float64
	// NATSReplicas is how many JetStream nodes hold the events stream
	// (AUTHD_NATS_REPLICAS); a stream already larger keeps its count.
	NATSReplicas int
	// PendingSignupTTL is how long a signup may stay unverified before it
	// expires and its email is free again.
	PendingSignupTTL time.Duration
	// ProductName is the product's name in every mail (AUTHD_PRODUCT_NAME).
	ProductName string
	// MailTemplates is a folder of templates that replace the built-in mails
	// (AUTHD_MAIL_TEMPLATES); empty keeps the built-in ones.
	MailTemplates string
	// Notices runs the consumer that mails security notices (AUTHD_NOTICES).
	Notices bool
	// ReauthMaxAge is how old an access token's auth_time may be for a
	// "fresh" endpoint (AUTHD_REAUTH_MAX_AGE).
	ReauthMaxAge time.Duration
}

// The defaults are the ones documented in API.md.
const (
	DefaultAddr                  = ":8080"
	DefaultDatabaseURL           = "postgres://postgres@127.0.0.1:5432/authd?sslmode=disable"
	DefaultDataDir               = "./data"
	DefaultEmbeddedNATSAddr      = "127.0.0.1:4223"
	DefaultIssuer                = "http://localhost:8080"
	DefaultMailFrom              = "no-reply@localhost"
	DefaultGoogleJWKSURL         = "https://www.googleapis.com/oauth2/v3/certs"
	DefaultWebAuthnRPID          = "localhost"
	DefaultWebAuthnOrigins       = "http://localhost:8080"
	DefaultRefreshReuseGrace     = 10 * time.Second
	DefaultNATSStream            = "AUTH_EVENTS"
	DefaultNATSSubjectPrefix     = "auth.events"
	DefaultReadYourWritesTimeout = 2 * time.Second
	DefaultAccessTokenTTL        = tokens.DefaultAccessTTL
	DefaultRefreshTokenTTL       = 7 * 24 * time.Hour
	DefaultPendingSignupTTL      = 168 * time.Hour
	DefaultProductName           = "authd"
	DefaultReauthMaxAge          = 10 * time.Minute
)

// Token lifetime bounds. An access token cannot be revoked by anything but
// the in-memory revocation lists, which keep an entry for tokens.MaxAccessTTL;
// under a minute, clients would refresh more than they work. A refresh token
// outliving a year is a session nobody remembers.
const (
	minAccessTokenTTL  = time.Minute
	minRefreshTokenTTL = time.Hour
	maxRefreshTokenTTL = 365 * 24 * time.Hour
)

// maxProductName bounds the product name in runes: it goes into subjects,
// which mail readers cut short anyway.
const maxProductName = 64

const (
	// MinPendingSignupTTL is an emailed code's life: a signup that expired
	// sooner would leave its code in a mailbox with no signup behind it.
	MinPendingSignupTTL = 10 * time.Minute
	// MaxReauthMaxAge bounds how long a proof of who the user is lets them
	// make sensitive changes: past a day, a stolen token would be as good as
	// the user, which is what fresh authentication is there to prevent.
	MaxReauthMaxAge = 24 * time.Hour
)

// reservedNATSPort is the standard NATS port; the machine's own NATS server
// may already hold it, so the embedded one must stay off it.
const reservedNATSPort = 4222

// Load reads the configuration through getenv (os.Getenv in production, a map
// in tests). It reports every bad variable at once, joined, so an operator
// fixes them in one go rather than one restart per mistake.
func Load(getenv func(string) string) (Config, error) {
	l := loader{getenv: getenv}
	c := Config{
		Addr:                  l.str("AUTHD_ADDR", DefaultAddr),
		DatabaseURL:           l.str("DATABASE_URL", DefaultDatabaseURL),
		NATSURL:               l.str("NATS_URL", ""),
		DataDir:               l.str("AUTHD_DATA_DIR", DefaultDataDir),
		EmbeddedNATSAddr:      l.str("AUTHD_EMBEDDED_NATS_ADDR", DefaultEmbeddedNATSAddr),
		Issuer:                l.str("AUTHD_ISSUER", DefaultIssuer),
		SMTPURL:               l.str("SMTP_URL", ""),
		MailFrom:              l.str("AUTHD_MAIL_FROM", DefaultMailFrom),
		GoogleClientIDs:       splitList(l.str("GOOGLE_CLIENT_ID", "")),
		GoogleJWKSURL:         l.str("GOOGLE_JWKS_URL", DefaultGoogleJWKSURL),
		WebAuthnRPID:          l.str("AUTHD_WEBAUTHN_RP_ID", DefaultWebAuthnRPID),
		WebAuthnRPName:        l.str("AUTHD_WEBAUTHN_RP_NAME", ""),
		WebAuthnOrigins:       splitList(l.str("AUTHD_WEBAUTHN_ORIGINS", DefaultWebAuthnOrigins)),
		NATSStream:            l.str("AUTHD_NATS_STREAM", DefaultNATSStream),
		NATSSubjectPrefix:     l.str("AUTHD_NATS_SUBJECT_PREFIX", DefaultNATSSubjectPrefix),
		RateLimit:             l.onOff("AUTHD_RATE_LIMIT", true),
		RefreshReuseGrace:     l.duration("AUTHD_REFRESH_REUSE_GRACE", DefaultRefreshReuseGrace, true),
		ReadYourWritesTimeout: l.duration("AUTHD_READ_YOUR_WRITES_TIMEOUT", DefaultReadYourWritesTimeout, false),
		LogLevel:              l.logLevel("AUTHD_LOG_LEVEL"),
		MasterKeys:            l.masterKeys("AUTHD_MASTER_KEY"),
		TrustedProxies:        l.prefixes("AUTHD_TRUSTED_PROXIES"),
		CORSOrigins:           splitList(l.str("AUTHD_CORS_ORIGINS", "")),
		AccessTokenTTL:        l.duration("AUTHD_ACCESS_TOKEN_TTL", DefaultAccessTokenTTL, false),
		RefreshTokenTTL:       l.duration("AUTHD_REFRESH_TOKEN_TTL", DefaultRefreshTokenTTL, false),
		RequestLogRate:        l.requestLog("AUTHD_REQUEST_LOG"),
		NATSReplicas:          l.replicas("AUTHD_NATS_REPLICAS"),
		PendingSignupTTL:      l.duration("AUTHD_PENDING_SIGNUP_TTL", DefaultPendingSignupTTL, false),
		ProductName:           l.str("AUTHD_PRODUCT_NAME", DefaultProductName),
		MailTemplates:         l.str("AUTHD_MAIL_TEMPLATES", ""),
		Notices:               l.onOff("AUTHD_NOTICES", true),
		ReauthMaxAge:          l.duration("AUTHD_REAUTH_MAX_AGE", DefaultReauthMaxAge, false),
	}

	// The passkey dialog names the product as the mails do, unless told
	// otherwise.
	if c.WebAuthnRPName == "" {
		c.WebAuthnRPName = c.ProductName
	}
	l.check("AUTHD_ADDR", checkHostPort(c.Addr))
	l.check("DATABASE_URL", checkDatabaseURL(c.DatabaseURL))
	l.check("NATS_URL", checkNATSURLs(c.NATSURL))
	l.check("AUTHD_EMBEDDED_NATS_ADDR", checkEmbeddedNATSAddr(c.EmbeddedNATSAddr))
	l.check("AUTHD_ISSUER", checkIssuer(c.Issuer))
	l.check("SMTP_URL", checkSMTPURL(c.SMTPURL))
	l.check("AUTHD_MAIL_FROM", checkMailFrom(c.MailFrom))
	l.check("AUTHD_PRODUCT_NAME", checkProductName(c.ProductName))
	l.check("GOOGLE_JWKS_URL", checkHTTPURL(c.GoogleJWKSURL))
	l.check("AUTHD_WEBAUTHN_RP_ID", checkRPID(c.WebAuthnRPID))
	l.check("AUTHD_WEBAUTHN_ORIGINS", checkOrigins(c.WebAuthnOrigins, c.WebAuthnRPID))
	l.check("AUTHD_NATS_STREAM", checkStreamName(c.NATSStream))
	l.check("AUTHD_NATS_SUBJECT_PREFIX", checkSubjectPrefix(c.NATSSubjectPrefix))
	l.check("AUTHD_CORS_ORIGINS", checkCORSOrigins(c.CORSOrigins))
	l.check("AUTHD_ACCESS_TOKEN_TTL", checkBetween(c.AccessTokenTTL, minAccessTokenTTL, tokens.MaxAccessTTL))
	l.check("AUTHD_REFRESH_TOKEN_TTL", checkBetween(c.RefreshTokenTTL, max(minRefreshTokenTTL, c.AccessTokenTTL), maxRefreshTokenTTL))
	l.check("AUTHD_REAUTH_MAX_AGE", checkBetween(c.ReauthMaxAge, time.Second, MaxReauthMaxAge))
	if c.NATSReplicas > 1 && c.NATSURL == "" {
		l.check("AUTHD_NATS_REPLICAS", fmt.Errorf("%d needs a JetStream cluster in NATS_URL: the embedded server is one node", c.NATSReplicas))
	}
	if c.PendingSignupTTL > 0 && c.PendingSignupTTL < MinPendingSignupTTL {
		l.check("AUTHD_PENDING_SIGNUP_TTL", fmt.Errorf("%s is shorter than an emailed code's life (%s)", c.PendingSignupTTL, MinPendingSignupTTL))
	}

	if len(l.errs) > 0 {
		return Config{}, fmt.Errorf("invalid configuration:\n%w", errors.Join(l.errs...))
	}
	return c, nil
}

// loader collects the problems found while the fields are read, so Load can
// go on and report the rest.
type loader struct {
	getenv func(string) string
	errs   []error
}

// check names the variable on each of its problems, also when err joins
// several, so every line of the report says which variable it is about.
func (l *loader) check(name string, err error) {
	if err == nil {
		return
	}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range joined.Unwrap() {
			l.check(name, e)
		}
		return
	}
	l.errs = append(l.errs, fmt.Errorf("%s: %w", name, err))
}

// str treats a variable set to blanks like an unset one: an empty value is
// never a meaningful setting for these, and the default is what people mean.
func (l *loader) str(name, def string) string {
	if v := strings.TrimSpace(l.getenv(name)); v != "" {
		return v
	}
	return def
}

func (l *loader) onOff(name string, def bool) bool {
	v := l.str(name, "")
	switch strings.ToLower(v) {
	case "":
		return def
	case "on", "true", "1":
		return true
	case "off", "false", "0":
		return false
	}
	l.check(name, fmt.Errorf("%q is not on or off (also accepted: true, false, 1, 0)", v))
	return def
}

// requestLog reads on, off or the share of requests to log, a number from 0
// to 1 (0.01 logs one request in a hundred).
func (l *loader) requestLog(name string) float64 {
	v := strings.ToLower(l.str(name, ""))
	switch v {
	case "", "on":
		return 1
	case "off":
		return 0
	}
	rate, err := strconv.ParseFloat(v, 64)
	if err != nil || !(rate >= 0 && rate <= 1) {
		l.check(name, fmt.Errorf("%q is not on, off or a sampling rate from 0 to 1", v))
		return 1
	}
	return rate
}

// replicas reads a JetStream replica count: 1 to 5, as JetStream allows.
func (l *loader) replicas(name string) int {
	v := l.str(name, "")
	if v == "" {
		return 1
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 5 {
		l.check(name, fmt.Errorf("%q is not a replica count from 1 to 5", v))
		return 1
	}
	return n
}

func (l *loader) duration(name string, def time.Duration, zeroAllowed bool) time.Duration {
	v := l.str(name, "")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	switch {
	case err != nil:
		l.check(name, fmt.Errorf("%q is not a duration (e.g. %s)", v, def))
	case d < 0:
		l.check(name, fmt.Errorf("%q is negative", v))
	case d == 0 && !zeroAllowed:
		l.check(name, fmt.Errorf("%q must be greater than zero", v))
	}
	return d
}

// checkBetween bounds a duration that duration already found positive (a bad
// one is reported there, so not again here).
func checkBetween(d, lo, hi time.Duration) error {
	if d <= 0 || lo <= d && d <= hi {
		return nil
	}
	return fmt.Errorf("%s is outside %s to %s", d, lo, hi)
}

func (l *loader) logLevel(name string) slog.Level {
	v := l.str(name, "info")
	switch strings.ToLower(v) {
	case "debug":
		return slog.LevelDebug
	case "info":
		return slog.LevelInfo
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	l.check(name, fmt.Errorf("%q is not one of debug, info, warn, error", v))
	return slog.LevelInfo
}

// masterKeys never quotes the value in its errors: a key that is one typo
// away from right is still a secret.
func (l *loader) masterKeys(name string) [][]byte {
	v := l.str(name, "")
	if v == "" {
		return nil
	}
	parts := strings.Split(v, ",")
	keys := make([][]byte, 0, len(parts))
	for i, p := range parts {
		p = strings.TrimSpace(p)
		which := "the key"
		if len(parts) > 1 {
			which = fmt.Sprintf("key %d of %d", i+1, len(parts))
		}
		if p == "" {
			l.check(name, fmt.Errorf("%s is empty", which))
			continue
		}
		k, err := seal.ParseKey(p)
		if err != nil {
			l.check(name, fmt.Errorf("%s: %w (make one with `openssl rand -base64 %d`)", which, err, seal.KeySize))
			continue
		}
		keys = append(keys, k)
	}
	return keys
}

func (l *loader) prefixes(name string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range splitList(l.getenv(name)) {
		p, err := parsePrefix(s)
		if err != nil {
			l.check(name, err)
			continue
		}
		out = append(out, p)
	}
	return out
}

// parsePrefix takes a CIDR or a bare IP, which means that one address.
func parsePrefix(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR (e.g. 10.0.0.0/8) or an IP", s)
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR (e.g. 10.0.0.0/8) or an IP", s)
		}
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q has a zone, which a proxy's address never carries", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	// Masked so that 10.1.2.3/8 and 10.0.0.0/8 are the same entry when logged.
	return p.Masked(), nil
}

// splitList splits a comma-separated value, trimming blanks and dropping
// empty entries so a trailing comma is harmless.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func checkHostPort(s string) error {
	_, err := parsePort(s)
	return err
}

func parsePort(hostPort string) (uint16, error) {
	_, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		return 0, fmt.Errorf("%q is not host:port (e.g. 127.0.0.1:8080 or :8080)", hostPort)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("%q: port %q is not a number from 0 to 65535", hostPort, port)
	}
	return uint16(n), nil
}

// checkEmbeddedNATSAddr insists on loopback because the embedded server has
// no authentication: anyone who reaches it can read and rewrite the audit log.
func checkEmbeddedNATSAddr(s string) error {
	port, err := parsePort(s)
	if err != nil {
		return err
	}
	if port == reservedNATSPort {
		return fmt.Errorf("%q uses port %d, which a NATS server of the machine may hold; pick another (default %s)", s, reservedNATSPort, DefaultEmbeddedNATSAddr)
	}
	host, _, _ := net.SplitHostPort(s)
	if !isLoopbackHost(host) {
		return fmt.Errorf("%q is not a loopback address; the embedded NATS server has no authentication, so it listens on 127.0.0.1, ::1 or localhost only", s)
	}
	return nil
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// checkDatabaseURL relies on pgx's own error text, which masks passwords;
// the value itself is never quoted here.
func checkDatabaseURL(s string) error {
	pc, err := pgx.ParseConfig(s)
	if err != nil {
		return fmt.Errorf("is not a Postgres connection string: %w", err)
	}
	if pc.Database == "" {
		return errors.New("names no database (e.g. postgres://user@host:5432/authd)")
	}
	return nil
}

func checkNATSURLs(s string) error {
	if s == "" {
		return nil
	}
	var errs []error
	for _, raw := range strings.Split(s, ",") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			errs = append(errs, errors.New("has an empty entry in its comma-separated list"))
			continue
		}
		if _, err := parseSecretURL(raw, "nats", "tls", "ws", "wss"); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func checkSMTPURL(s string) error {
	if s == "" {
		return nil
	}
	_, err := parseSecretURL(s, "smtp", "smtps")
	return err
}

// parseSecretURL parses a URL that may carry a password without ever putting
// that password into an error: url.Parse quotes its whole input when it fails.
func parseSecretURL(raw string, schemes ...string) (*url.URL, error) {
	want := strings.Join(schemes, "://, ") + "://"
	if !strings.Contains(raw, "://") {
		return nil, fmt.Errorf("%q has no scheme (one of %s)", redact.Userinfo(raw), want)
	}
	u, err := url.Parse(raw)
	if err != nil {
		// Both the quote and the cause come from the masked form, since a
		// cause from the raw one can quote part of the password (a bad %-escape).
		masked := redact.Userinfo(raw)
		_, merr := url.Parse(masked)
		if merr == nil {
			return nil, fmt.Errorf("%q: the password is not valid in a URL; percent-encode its special characters", masked)
		}
		var uerr *url.Error
		if errors.As(merr, &uerr) {
			merr = uerr.Err
		}
		return nil, fmt.Errorf("%q is not a URL: %w", masked, merr)
	}
	if !slices.Contains(schemes, u.Scheme) {
		return nil, fmt.Errorf("%q: scheme is not one of %s", redact.Userinfo(raw), want)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("%q names no host", redact.Userinfo(raw))
	}
	return u, nil
}

func checkIssuer(s string) error {
	u, err := checkAbsoluteURL(s, "http", "https")
	if err != nil {
		return err
	}
	// OpenID Connect forbids both in an issuer, and verifiers compare it verbatim.
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q has a query or fragment, which an issuer may not have", s)
	}
	return nil
}

func checkHTTPURL(s string) error {
	_, err := checkAbsoluteURL(s, "http", "https")
	return err
}

func checkAbsoluteURL(s string, schemes ...string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || !u.IsAbs() || u.Host == "" {
		return nil, fmt.Errorf("%q is not an absolute URL (e.g. https://auth.example.com)", s)
	}
	for _, sch := range schemes {
		if u.Scheme == sch {
			return u, nil
		}
	}
	return nil, fmt.Errorf("%q: scheme is not %s", s, strings.Join(schemes, " or "))
}

func checkMailFrom(s string) error {
	if _, err := mail.ParseAddress(s); err != nil {
		return fmt.Errorf("%q is not an email address", s)
	}
	return nil
}

// checkProductName keeps the name to one printable line: it goes into the
// Subject header, where a line break would start a header of its own.
func checkProductName(s string) error {
	if n := utf8.RuneCountInString(s); n > maxProductName {
		return fmt.Errorf("is %d characters long; at most %d", n, maxProductName)
	}
	if strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) {
		return fmt.Errorf("%q has a line break or other unprintable character", s)
	}
	return nil
}

func checkRPID(s string) error {
	if strings.ContainsAny(s, ":/ ") {
		return fmt.Errorf("%q is not a bare domain (e.g. example.com, no scheme or port)", s)
	}
	return nil
}

// checkOrigins also checks each origin against the relying party id, because
// a browser refuses every passkey ceremony on a mismatch and the cause is
// hard to see from there.
func checkOrigins(origins []string, rpID string) error {
	if len(origins) == 0 {
		return errors.New("lists no origin")
	}
	var errs []error
	for _, o := range origins {
		u, err := checkOrigin(o)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if h := u.Hostname(); h != rpID && !strings.HasSuffix(h, "."+rpID) {
			errs = append(errs, fmt.Errorf("%q: host is neither AUTHD_WEBAUTHN_RP_ID %q nor a subdomain of it", o, rpID))
		}
	}
	return errors.Join(errs...)
}

// checkOrigin accepts exactly scheme://host[:port], as browsers send it.
func checkOrigin(o string) (*url.URL, error) {
	u, err := checkAbsoluteURL(o, "http", "https")
	if err != nil {
		return nil, err
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("%q is not an origin: it has more than scheme://host[:port]", o)
	}
	if u.Path == "/" {
		return nil, fmt.Errorf("%q is not an origin: drop the trailing slash, browsers send none", o)
	}
	return u, nil
}

// checkCORSOrigins accepts origins in the form browsers send in Origin, since
// they are compared byte for byte: lower case, no default port.
func checkCORSOrigins(origins []string) error {
	var errs []error
	for _, o := range origins {
		u, err := checkOrigin(o)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if o != strings.ToLower(o) {
			errs = append(errs, fmt.Errorf("%q: write it in lower case, as browsers send it", o))
		}
		if u.Port() == "443" && u.Scheme == "https" || u.Port() == "80" && u.Scheme == "http" {
			errs = append(errs, fmt.Errorf("%q: drop the default port, browsers send none", o))
		}
	}
	return errors.Join(errs...)
}

// checkStreamName follows JetStream's rules: the name becomes a subject token
// and a directory name.
func checkStreamName(s string) error {
	if strings.ContainsAny(s, " \t\r\n.*>/\\") {
		return fmt.Errorf("%q is not a JetStream stream name: no spaces, dots, '*', '>', '/' or '\\'", s)
	}
	return nil
}

func checkSubjectPrefix(s string) error {
	if strings.ContainsAny(s, " \t\r\n*>") {
		return fmt.Errorf("%q is not a subject prefix: no spaces or wildcards ('*', '>')", s)
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" {
			return fmt.Errorf("%q is not a subject prefix: it has an empty token (leading, trailing or double dot)", s)
		}
	}
	return nil
}

// SealingKeys are the master keys secrets are sealed with, the sealing one
// first: AUTHD_MASTER_KEY's or, without it (development), the key kept in
// DataDir, made there on first use (created: by this call). authd and authctl
// both take their keys from here, and every key derived from the master key
// from the first of them, so that all of them open what the others sealed.
func (c Config) SealingKeys() (keys [][]byte, created bool, err error) {
	if len(c.MasterKeys) > 0 {
		return c.MasterKeys, false, nil
	}
	k, created, err := seal.DevKey(c.DataDir)
	if err != nil {
		return nil, false, err
	}
	return [][]byte{k}, created, nil
}

// LogValue shows the settings with secrets masked: passwords in URLs, and the
// master keys only as whether they were given.
func (c Config) LogValue() slog.Value {
	masterKey := "generated"
	if len(c.MasterKeys) > 0 {
		masterKey = "set"
	}
	proxies := make([]string, len(c.TrustedProxies))
	for i, p := range c.TrustedProxies {
		proxies[i] = p.String()
	}
	return slog.GroupValue(
		slog.String("addr", c.Addr),
		slog.String("database_url", redact.URL(c.DatabaseURL)),
		slog.String("nats_url", redact.NATSURLs(c.NATSURL)),
		slog.String("data_dir", c.DataDir),
		slog.String("embedded_nats_addr", c.EmbeddedNATSAddr),
		slog.String("issuer", c.Issuer),
		slog.String("master_key", masterKey),
		slog.Int("master_keys", len(c.MasterKeys)),
		slog.String("smtp_url", redact.URL(c.SMTPURL)),
		slog.String("mail_from", c.MailFrom),
		slog.Any("google_client_ids", c.GoogleClientIDs),
		slog.String("google_jwks_url", c.GoogleJWKSURL),
		slog.String("webauthn_rp_id", c.WebAuthnRPID),
		slog.String("webauthn_rp_name", c.WebAuthnRPName),
		slog.Any("webauthn_origins", c.WebAuthnOrigins),
		slog.Bool("rate_limit", c.RateLimit),
		slog.Any("trusted_proxies", proxies),
		slog.Duration("refresh_reuse_grace", c.RefreshReuseGrace),
		slog.String("nats_stream", c.NATSStream),
		slog.String("nats_subject_prefix", c.NATSSubjectPrefix),
		slog.Duration("read_your_writes_timeout", c.ReadYourWritesTimeout),
		slog.String("log_level", c.LogLevel.String()),
		slog.Duration("access_token_ttl", c.AccessTokenTTL),
		slog.Duration("refresh_token_ttl", c.RefreshTokenTTL),
		slog.Float64("request_log_rate", c.RequestLogRate),
		slog.Int("nats_replicas", c.NATSReplicas),
		slog.Duration("pending_signup_ttl", c.PendingSignupTTL),
		slog.String("product_name", c.ProductName),
		slog.String("mail_templates", c.MailTemplates),
		slog.Bool("notices", c.Notices),
		slog.Duration("reauth_max_age", c.ReauthMaxAge),
	)
}

// String and GoString keep a Config printed with fmt (%v, %+v, %#v) as safe
// as a logged one.
func (c Config) String() string { return c.LogValue().String() }

// GoString: see String.
func (c Config) GoString() string { return c.String() }
