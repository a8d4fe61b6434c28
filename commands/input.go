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
	if len(email) > maxEmailLen || !utf8.ValidString(email) {
		return "", &ValidationError{Field: "email", Message: "is not a valid email address"}
	}
	addr, err := mail.ParseAddress(email)
	if err != nil || addr.Address != email || addr.Name != "" || !strings.Contains(email[strings.LastIndexByte(email, '@')+1:], ".") && !strings.HasSuffix(email, "@localhost") {
		return "", &ValidationError{Field: "email", Message: "is not a valid email address"}
	}
	return email, nil
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
	for _, r := range s {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || unicode.Is(unicode.Cf, r) && r != '\u200d' {
			return "", &ValidationError{Field: field, Message: "contains control or invisible formatting characters"}
		}
	}
	return s, nil
}
