package commands

import (
	"net/mail"
	"strings"
	"unicode"
	"unicode/utf8"
)

const (
	maxEmailLen = 254
	maxNameLen  = 200
)

// NormalizeEmail trims and lower-cases an address and checks it is one plain
// address: emails are compared this way everywhere.
func NormalizeEmail(s string) (string, error) {
	email := strings.ToLower(strings.TrimSpace(s))
	if email == "" {
		return "", &ValidationError{Field: "email", Message: "is required"}
	}
	if len(email) > maxEmailLen || !printableASCII(email) {
		// Internationalised addresses are refused on purpose: lookalike
		// letters and invisible characters would let two addresses that read
		// the same belong to different accounts.
		return "", &ValidationError{Field: "email", Message: "is not a valid email address (plain ASCII only)"}
	}
	addr, err := mail.ParseAddress(email)
	if err != nil || addr.Address != email || addr.Name != "" {
		return "", &ValidationError{Field: "email", Message: "is not a valid email address"}
	}
	if !mailableHost(email[strings.LastIndexByte(email, '@')+1:]) {
		return "", &ValidationError{Field: "email", Message: "is not a valid email address (its domain must be a host name with a dot, such as example.com)"}
	}
	return email, nil
}

// mailableHost says whether domain is a host name a mail to the public can
// go to: labels of 1 to 63 letters, digits or inner hyphens, at least two of
// them, and a top-level label that is not all digits. That refuses IP
// literals ("[127.0.0.1]", and "127.0.0.1" by its numeric last label),
// localhost and its subdomains, and names like "-example.com" that no DNS
// holds: an account there could never verify, yet each signup would cost a
// hash, a mail attempt and its rows.
func mailableHost(domain string) bool {
	labels := strings.Split(domain, ".")
	if len(domain) > 253 || len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if len(l) < 1 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	tld := labels[len(labels)-1]
	return strings.Trim(tld, "0123456789") != "" && tld != "localhost"
}

// cleanName trims a display name and refuses what cannot be shown safely:
// invalid UTF-8, control characters and absurd lengths.
func cleanName(field, s string) (string, error) {
	s = strings.TrimSpace(s)
	if !utf8.ValidString(s) {
		return "", &ValidationError{Field: field, Message: "is not valid UTF-8"}
	}
	if utf8.RuneCountInString(s) > maxNameLen {
		return "", &ValidationError{Field: field, Message: "is too long (200 characters at most)"}
	}
	visible := false
	for _, r := range s {
		if r == utf8.RuneError { // what JSON decoding makes of invalid UTF-8
			return "", &ValidationError{Field: field, Message: "is not valid UTF-8"}
		}
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || unicode.Is(unicode.Cf, r) && r != '\u200d' {
			return "", &ValidationError{Field: field, Message: "contains control or invisible formatting characters"}
		}
		visible = visible || !unicode.IsSpace(r) && r != '\u200d'
	}
	if s != "" && !visible {
		return "", &ValidationError{Field: field, Message: "has nothing visible in it"}
	}
	return s, nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// checkPasswordText refuses a password that cannot be what the user typed:
// JSON decoding turns invalid UTF-8 into U+FFFD, and two different byte
// strings would then hash alike.
func checkPasswordText(field, pw string) error {
	if strings.ContainsRune(pw, utf8.RuneError) {
		return &ValidationError{Field: field, Message: "is not valid UTF-8"}
	}
	return nil
}
