package mail_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/authd/authd/internal/mail"
)

func TestCodeMessageRejectsBadInput(t *testing.T) {
	for name, call := range map[string]func() (mail.Message, error){
		"short code": func() (mail.Message, error) {
			return codeMessage("a@x.test", "Acme", "12345", mail.Login, time.Minute)
		},
		"letters": func() (mail.Message, error) {
			return codeMessage("a@x.test", "Acme", "12345a", mail.Login, time.Minute)
		},
		"no purpose":  func() (mail.Message, error) { return codeMessage("a@x.test", "Acme", "123456", 0, time.Minute) },
		"no validity": func() (mail.Message, error) { return codeMessage("a@x.test", "Acme", "123456", mail.Reset, 0) },
		"empty product": func() (mail.Message, error) {
			return codeMessage("a@x.test", " \n", "123456", mail.Verify, time.Minute)
		},
	} {
		if _, err := call(); err == nil {
			t.Errorf("%s: CodeMessage succeeded", name)
		}
	}
	_, err := codeMessage("a@x.test", "Acme", "12345x", mail.Login, time.Minute)
	if strings.Contains(err.Error(), "12345x") {
		t.Errorf("error quotes the code: %v", err)
	}
}

func TestCodeMessageWording(t *testing.T) {
	for _, tc := range []struct {
		ttl  time.Duration
		want string
	}{
		{10 * time.Minute, "expires in 10 minutes"},
		{time.Minute, "expires in 1 minute"},
		{time.Hour, "expires in 1 hour"},
		{90 * time.Second, "expires in 90 seconds"},
	} {
		m, err := codeMessage("a@x.test", "Acme", "000123", mail.Verify, tc.ttl)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(m.Text, tc.want) || !strings.Contains(m.HTML, tc.want) {
			t.Errorf("ttl %v: want %q in both bodies:\n%s", tc.ttl, tc.want, m.Text)
		}
	}
	subjects := map[string]bool{}
	for _, p := range []mail.Purpose{mail.Verify, mail.Login, mail.Reset, mail.AccountExists} {
		m, err := codeMessage("a@x.test", "Acme\r\nBcc: x@y.test", "000123", p, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if strings.ContainsAny(m.Subject, "\r\n") {
			t.Errorf("%v: subject %q has a line break from the product name", p, m.Subject)
		}
		if m.To != "a@x.test" || !strings.Contains(m.Text, "    000123\n") {
			t.Errorf("%v: message %+v", p, m)
		}
		subjects[m.Subject] = true
	}
	if len(subjects) != 4 {
		t.Errorf("the four purposes share subjects: %v", subjects)
	}
}

func TestLogSenderWritesTheCodeAtWarn(t *testing.T) {
	var buf bytes.Buffer
	s := mail.NewLog(slog.New(slog.NewTextHandler(&buf, nil)))
	m, err := codeMessage("dev@example.test", "Acme", "424242", mail.Login, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"level=WARN", "email not sent: SMTP_URL is not set", "development only", "to=dev@example.test", "424242", "sign-in code"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Send(ctx, m); err == nil {
		t.Error("Send with a cancelled context succeeded")
	}
}

// codeMessage renders a code mail from the built-in templates, as authd
// does without AUTHD_MAIL_TEMPLATES.
func codeMessage(to, product, code string, purpose mail.Purpose, ttl time.Duration) (mail.Message, error) {
	tpl, err := mail.Builtin(product)
	if err != nil {
		return mail.Message{}, err
	}
	return tpl.Code(to, "", code, purpose, ttl)
}
