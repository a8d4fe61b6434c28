package mail

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"strings"
	texttemplate "text/template"
	"time"
	"unicode"
)

// Purpose says what an emailed code is for; it picks the wording.
type Purpose int

// The zero Purpose is not valid, so a forgotten field fails instead of
// sending a sign-in email for a password reset.
const (
	Verify Purpose = iota + 1 // confirm the address at signup
	Login                     // sign in with a code instead of a password
	Reset                     // choose a new password
	// AccountExists answers a signup for an address that has an account
	// already: it tells the owner, and gives them a sign-in code in case it
	// was them.
	AccountExists
)

// String is the purpose as API.md and the logs spell it.
func (p Purpose) String() string {
	switch p {
	case Verify:
		return "verify"
	case Login:
		return "login"
	case Reset:
		return "reset"
	case AccountExists:
		return "account_exists"
	}
	return fmt.Sprintf("Purpose(%d)", int(p))
}

type wording struct{ subject, intro, ignore string }

// wordingFor holds each purpose's sentences; %[1]s is the product name.
func wordingFor(p Purpose) (wording, bool) {
	switch p {
	case Verify:
		return wording{
			subject: "Verify your email for %[1]s",
			intro:   "Enter this code to verify your email address and finish creating your %[1]s account:",
			ignore:  "If this wasn't you, ignore this email: no account is created without the code.",
		}, true
	case Login:
		return wording{
			subject: "Your %[1]s sign-in code",
			intro:   "Enter this code to sign in to %[1]s:",
			ignore:  "If this wasn't you, ignore this email: nobody can sign in with it unless they can read your email.",
		}, true
	case Reset:
		return wording{
			subject: "Reset your %[1]s password",
			intro:   "Enter this code to choose a new password for your %[1]s account:",
			ignore:  "If this wasn't you, ignore this email: your password stays as it is.",
		}, true
	case AccountExists:
		return wording{
			subject: "Someone tried to sign up for %[1]s with your email",
			intro:   "Someone tried to create a %[1]s account with this email address, which already has one. If it was you, enter this code to sign in:",
			ignore:  "If this wasn't you, ignore this email: nothing about your account has changed.",
		}, true
	}
	return wording{}, false
}

//go:embed templates/code.txt templates/code.html
var templateFS embed.FS

// Parsed once; both template types are safe for concurrent Execute. The HTML
// one escapes every value by context, which matters because the product name
// is configuration and the wording embeds it.
var (
	codeText = texttemplate.Must(texttemplate.ParseFS(templateFS, "templates/code.txt"))
	codeHTML = htmltemplate.Must(htmltemplate.ParseFS(templateFS, "templates/code.html"))
)

type codeData struct {
	Subject, Intro, Code, Validity, Ignore, Product string
}

// CodeMessage renders the email that carries a one-time code: a plain-text
// and an HTML body showing the code, how long it is valid, and what to do if
// the recipient did not ask for it. code must be 6 digits and ttl positive.
func CodeMessage(to, product, code string, purpose Purpose, ttl time.Duration) (Message, error) {
	w, ok := wordingFor(purpose)
	if !ok {
		return Message{}, fmt.Errorf("mail: unknown code purpose %v", purpose)
	}
	if !isSixDigits(code) {
		// The value is not quoted: if it is a code at all, it is a secret.
		return Message{}, errors.New("mail: a code must be 6 digits")
	}
	if ttl <= 0 {
		return Message{}, fmt.Errorf("mail: code validity %v is not positive", ttl)
	}
	// The product name lands in the Subject header and in prose, where a
	// control character is never wanted.
	product = strings.TrimSpace(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, product))
	if product == "" {
		return Message{}, errors.New("mail: product name is empty")
	}
	d := codeData{
		Subject:  fmt.Sprintf(w.subject, product),
		Intro:    fmt.Sprintf(w.intro, product),
		Code:     code,
		Validity: validity(ttl),
		Ignore:   w.ignore,
		Product:  product,
	}
	var text, html bytes.Buffer
	if err := codeText.Execute(&text, d); err != nil {
		return Message{}, fmt.Errorf("mail: render %v text: %w", purpose, err)
	}
	if err := codeHTML.Execute(&html, d); err != nil {
		return Message{}, fmt.Errorf("mail: render %v HTML: %w", purpose, err)
	}
	return Message{To: to, Subject: d.Subject, Text: text.String(), HTML: html.String()}, nil
}

func isSixDigits(s string) bool {
	if len(s) != 6 {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// validity says ttl the way a person would: "10 minutes", "1 hour", and
// seconds only when the duration is not whole minutes.
func validity(ttl time.Duration) string {
	n, unit := int64(ttl.Round(time.Second)/time.Second), "second"
	switch {
	case ttl%time.Hour == 0:
		n, unit = int64(ttl/time.Hour), "hour"
	case ttl%time.Minute == 0:
		n, unit = int64(ttl/time.Minute), "minute"
	}
	if n < 1 {
		n = 1
	}
	if n != 1 {
		unit += "s"
	}
	return fmt.Sprintf("%d %s", n, unit)
}
