// Package redact shows URLs that may carry a secret (a password, a NATS
// token, a password query parameter) without it, for logs and error
// messages. It is the one rule of what in such a URL is secret: the
// settings' log (config), the SMTP sender's errors (mail) and the NATS
// connection's (natsbus, authctl) all mask by it, so that a URL one of them
// would hide is never shown whole by another.
package redact

import (
	"net/url"
	"strings"
)

// mask stands in for what is hidden.
const mask = "xxxxx"

// URL returns s with its password, and any query parameter whose name holds
// "password" (libpq's sslpassword), masked. A string that is not an absolute
// URL, such as a keyword/value Postgres connection string, is shown only as
// set; "" stays "".
func URL(s string) string {
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil || !u.IsAbs() {
		return "(set, not shown)"
	}
	q := u.Query()
	masked := false
	for k := range q {
		if strings.Contains(strings.ToLower(k), "password") {
			q.Set(k, mask)
			masked = true
		}
	}
	if masked {
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// NATSURLs is URL for each of a comma-separated list of NATS URLs, with a
// lone user part masked as well, since NATS reads it as a token.
func NATSURLs(s string) string {
	var parts []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if u, err := url.Parse(p); err == nil && u.User != nil {
			if _, hasPw := u.User.Password(); !hasPw {
				u.User = url.User(mask)
				p = u.String()
			}
		}
		parts = append(parts, URL(p))
	}
	return strings.Join(parts, ",")
}

// Userinfo masks the secret in [scheme://]userinfo@host with plain string
// scanning, for a string that url.Parse rejects: the password of
// user:password, or all of a lone user part, which may be a NATS token or a
// password given without its user.
func Userinfo(raw string) string {
	rest := raw
	if _, after, ok := strings.Cut(raw, "://"); ok {
		rest = after
	}
	start := len(raw) - len(rest)
	authority := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority = rest[:i]
	}
	at := strings.LastIndex(authority, "@")
	if at < 0 {
		return raw
	}
	keep := 0
	if colon := strings.Index(authority[:at], ":"); colon >= 0 {
		keep = colon + 1
	}
	return raw[:start+keep] + mask + raw[start+at:]
}
