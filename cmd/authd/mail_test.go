package main

import (
	"context"
	"io"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/authd/authd/internal/testenv"
)

// The product's name and the operator's templates reach the mails a signup
// and a sign-in code send, over real SMTP.
func TestMailTemplatesAndProductNameReachTheCodeMails(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	testenv.MailTemplate(t, dir, "verify", "en", "Welcome to {{.Product}}", "Your code for {{.Product}}: {{.Code}}", "<p>{{.Product}}: {{.Code}}</p>")
	c := newCluster(t, map[string]string{"AUTHD_PRODUCT_NAME": "Acme Cloud", "AUTHD_MAIL_TEMPLATES": dir})
	a := c.start(t)

	a.must(t, 202, "POST", api+"/register", "", map[string]any{"email": "ada@example.com", "password": "correct horse battery staple"})
	m := c.mail.WaitForMessage(t, "ada@example.com", 15*time.Second)
	if m.Subject != "Welcome to Acme Cloud" || !strings.HasPrefix(m.Text, "Your code for Acme Cloud: ") || !strings.Contains(m.HTML, "<p>Acme Cloud: ") {
		t.Errorf("signup mail from the operator's template: %q\n%s\n%s", m.Subject, m.Text, m.HTML)
	}
	code := strings.TrimPrefix(strings.TrimSpace(m.Text), "Your code for Acme Cloud: ")
	a.must(t, 201, "POST", api+"/register/verify", "", map[string]any{"email": "ada@example.com", "code": code})

	a.must(t, 202, "POST", api+"/otp/send", "", map[string]any{"email": "ada@example.com", "purpose": "login"})
	m = c.mail.WaitForMessage(t, "ada@example.com", 15*time.Second)
	if m.Subject != "Your Acme Cloud sign-in code" || strings.Contains(strings.ToLower(m.Text+m.HTML), "authd") {
		t.Errorf("built-in sign-in mail does not name the product alone: %q\n%s", m.Subject, m.Text)
	}
}

// A template an operator got wrong stops authd before it connects to
// anything, naming the file.
func TestABrokenMailTemplateStopsTheStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	testenv.MailTemplate(t, dir, "reset", "de", "Passwort für {{.Product}}", "Code: {{.Cdoe}}", "<p>{{.Code}}</p>")
	env := map[string]string{
		"AUTHD_MAIL_TEMPLATES": dir,
		"AUTHD_DATA_DIR":       t.TempDir(),
		// Nothing listens there: an error about the template, not about
		// Postgres, shows the templates are checked first.
		"DATABASE_URL": "postgres://postgres@127.0.0.1:1/authd?sslmode=disable",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := run(ctx, func(k string) string { return env[k] }, io.Discard, runtime.GOMAXPROCS(0))
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "reset.de.txt")) || !strings.Contains(err.Error(), "Cdoe") {
		t.Fatalf("run = %v; want an error naming reset.de.txt and the field", err)
	}
}
