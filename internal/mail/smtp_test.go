package mail_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/authd/authd/internal/mail"
	"github.com/authd/authd/internal/testenv"
)

const (
	from     = "Acme <no-reply@acme.example>"
	password = "Sup3r-Secret-pw"
)

// withCredentials puts user:password into a Mailpit URL, which accepts any.
func withCredentials(rawURL string) string {
	scheme, rest, _ := strings.Cut(rawURL, "://")
	return scheme + "://authd:" + password + "@" + rest
}

func TestCodeEmailsArriveThroughMailpit(t *testing.T) {
	mp := testenv.Mailpit(t)
	s, err := mail.NewSMTP(withCredentials(mp.SMTPURL()), from)
	if err != nil {
		t.Fatal(err)
	}
	// A product name is configuration, but the HTML must not trust it, and a
	// non-ASCII one makes the subject RFC 2047 encoded.
	const product = "Straße <script>alert(1)</script>"
	for i, purpose := range []mail.Purpose{mail.Verify, mail.Login, mail.Reset} {
		t.Run(purpose.String(), func(t *testing.T) {
			to := purpose.String() + "@example.test"
			code := fmt.Sprintf("%06d", 40213+i*111111)
			m, err := codeMessage(to, product, code, purpose, 10*time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			if err := s.Send(ctx, m); err != nil {
				t.Fatal(err)
			}

			got := mp.WaitForMessage(t, to, 5*time.Second)
			if len(got.To) != 1 || got.To[0] != to {
				t.Errorf("To = %v, want [%s]", got.To, to)
			}
			if got.From != "no-reply@acme.example" {
				t.Errorf("From = %q", got.From)
			}
			if got.Username != "authd" {
				t.Errorf("SMTP AUTH user = %q, want authd", got.Username)
			}
			if got.Subject != m.Subject || !strings.Contains(got.Subject, "Straße <script>") {
				t.Errorf("Subject = %q, want %q", got.Subject, m.Subject)
			}
			if c := testenv.CodeIn(t, got); c != code {
				t.Errorf("code in text = %q, want %q", c, code)
			}
			for _, want := range []string{"10 minutes", "If this wasn't you, ignore this email"} {
				if !strings.Contains(got.Text, want) {
					t.Errorf("text lacks %q:\n%s", want, got.Text)
				}
			}
			if !strings.Contains(got.HTML, ">"+code+"<") {
				t.Errorf("HTML does not show the code %s on its own:\n%s", code, got.HTML)
			}
			if strings.Contains(got.HTML, "<script>") || !strings.Contains(got.HTML, "Straße &lt;script&gt;alert(1)&lt;/script&gt;") {
				t.Errorf("HTML does not escape the product name:\n%s", got.HTML)
			}
			if !strings.Contains(got.HTML, "If this wasn&#39;t you, ignore this email") {
				t.Errorf("HTML lacks the ignore line:\n%s", got.HTML)
			}

			h := mp.Headers(t, got.ID)
			if len(h["Date"]) != 1 {
				t.Errorf("Date header = %q", h["Date"])
			}
			if id := h["Message-Id"]; len(id) != 1 || !strings.HasSuffix(id[0], "@acme.example>") {
				t.Errorf("Message-ID header = %q, want one at the sender's domain", id)
			}
			if ct := h["Content-Type"]; len(ct) != 1 || !strings.HasPrefix(ct[0], "multipart/alternative;") {
				t.Errorf("Content-Type = %q, want multipart/alternative", ct)
			}
			if subj := h["Subject"]; len(subj) != 1 || !strings.HasPrefix(subj[0], "=?UTF-8?") {
				t.Errorf("raw Subject = %q, want RFC 2047 encoded", subj)
			}
			if ua := h["X-Mailer"]; len(ua) != 0 {
				t.Errorf("X-Mailer = %q, want none", ua)
			}
		})
	}
}

func TestSendOverSTARTTLS(t *testing.T) {
	mp := testenv.Mailpit(t, testenv.MailpitSTARTTLS())
	m := mail.Message{To: "tls@example.test", Subject: "over STARTTLS", Text: "hello 123456"}

	s, err := mail.NewSMTP(withCredentials(mp.SMTPURL())+"?tls=starttls", from)
	if err != nil {
		t.Fatal(err)
	}
	// Without trusting the test certificate the handshake must fail: the
	// server's certificate is verified.
	err = s.Send(t.Context(), m)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Send with an untrusted certificate = %v, want a certificate error", err)
	}
	mail.SetRootCAs(s, mp.RootCAs())
	if err := s.Send(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	if got := mp.WaitForMessage(t, m.To, 5*time.Second); got.Subject != m.Subject || got.Username != "authd" {
		t.Fatalf("got %q from SMTP AUTH user %q", got.Subject, got.Username)
	}

	// tls=none really means plain: this Mailpit refuses mail before STARTTLS.
	plain, err := mail.NewSMTP(mp.SMTPURL()+"?tls=none", from)
	if err != nil {
		t.Fatal(err)
	}
	if err := plain.Send(t.Context(), m); err == nil {
		t.Fatal("Send with tls=none to a server requiring STARTTLS succeeded")
	}
}

func TestSendOverImplicitTLS(t *testing.T) {
	mp := testenv.Mailpit(t, testenv.MailpitImplicitTLS())
	if !strings.HasPrefix(mp.SMTPURL(), "smtps://") {
		t.Fatalf("SMTPURL = %q", mp.SMTPURL())
	}
	s, err := mail.NewSMTP(withCredentials(mp.SMTPURL()), from)
	if err != nil {
		t.Fatal(err)
	}
	mail.SetRootCAs(s, mp.RootCAs())
	m := mail.Message{To: "smtps@example.test", Subject: "over SMTPS", Text: "hello 123456", HTML: "<p>hello</p>"}
	if err := s.Send(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	if got := mp.WaitForMessage(t, m.To, 5*time.Second); got.Subject != m.Subject || !strings.Contains(got.HTML, "<p>hello</p>") || got.Username != "authd" {
		t.Fatalf("got %+v", got)
	}
}

func TestNewSMTPRejectsBadURLs(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"http://" + "u:" + password + "@mail.example", "scheme must be smtp or smtps"},
		{"mail.example:587", "has no scheme"},
		{"u:" + password + "@mail.example:587", "has no scheme"},
		{"smtp://", "names no host"},
		{"smtp://u:" + password + "@:587", "names no host"},
		{"smtp://u:" + password + "@mail.example:70000", "port"},
		{"smtp://u:" + password + "@mail.example:smtp", "port"},
		{"smtp://u:" + password + "%zz@mail.example", "percent-encode"},
		// A password given without its user, or as a parameter: as hidden
		// as anywhere else a URL is shown (internal/redact).
		{"smtp://" + password + "%zz@mail.example", "percent-encode"},
		{"smtp://u:p@mail.example?password=" + password, "unknown parameter"},
		{"smtp://:" + password + "@mail.example", "no user name"},
		{"smtp://mail.example/inbox", "only scheme"},
		{"smtp://mail.example?tls=maybe", "tls="},
		{"smtp://mail.example?tsl=none", "unknown parameter"},
		{"smtps://mail.example?tls=none", "does not apply to smtps"},
	} {
		_, err := mail.NewSMTP(tc.url, from)
		if err == nil {
			t.Errorf("NewSMTP(%q) succeeded", tc.url)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewSMTP(%q) = %v, want it to say %q", tc.url, err, tc.want)
		}
		if strings.Contains(err.Error(), password) {
			t.Errorf("NewSMTP(%q) error shows the password: %v", tc.url, err)
		}
	}
	if _, err := mail.NewSMTP("smtp://mail.example", "not an address"); err == nil {
		t.Error("NewSMTP accepted a bad sender address")
	}
}

func TestNewSMTPDefaultsAndRedaction(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"smtp://u:" + password + "@mail.example", "smtp://u@mail.example:587"},
		{"smtps://u:" + password + "@mail.example", "smtps://u@mail.example:465"},
		{"smtp://[::1]:2525?tls=none", "smtp://[::1]:2525"},
	} {
		s, err := mail.NewSMTP(tc.url, from)
		if err != nil {
			t.Fatalf("NewSMTP(%q): %v", tc.url, err)
		}
		if got := s.String(); got != tc.want {
			t.Errorf("NewSMTP(%q).String() = %q, want %q", tc.url, got, tc.want)
		}
		if got := fmt.Sprintf("%v %+v %#v %s", s, s, s, slogText(s)); strings.Contains(got, password) {
			t.Errorf("formatting the sender shows the password: %s", got)
		}
	}
}

func slogText(v any) string {
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("sender", "smtp", v)
	return b.String()
}

func TestSendToClosedPortHidesPassword(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	s, err := mail.NewSMTP("smtp://authd:"+password+"@"+addr, from)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Send(t.Context(), mail.Message{To: "x@example.test", Subject: "s", Text: "t"})
	if err == nil {
		t.Fatal("Send to a closed port succeeded")
	}
	if !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "refused") {
		t.Errorf("error %q does not say what failed where", err)
	}
	if strings.Contains(err.Error(), password) {
		t.Errorf("error shows the password: %v", err)
	}
}

// stalledServer accepts connections and then says nothing, as a hung SMTP
// server would; it is not a stand-in for SMTP, only for a peer that stalls.
func stalledServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
			close(done)
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return l.Addr().String()
}

func TestSendStopsWhenCtxEnds(t *testing.T) {
	addr := stalledServer(t)
	s, err := mail.NewSMTP("smtp://authd:"+password+"@"+addr, from)
	if err != nil {
		t.Fatal(err)
	}
	m := mail.Message{To: "x@example.test", Subject: "s", Text: "t"}

	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(100*time.Millisecond, cancel)
		start := time.Now()
		err := s.Send(ctx, m)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Send = %v, want context.Canceled", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("Send took %v after cancel", d)
		}
		if strings.Contains(err.Error(), password) {
			t.Errorf("error shows the password: %v", err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		if err := s.Send(ctx, m); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Send = %v, want context.DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("Send took %v for a 100 ms deadline", d)
		}
	})
	t.Run("already cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := s.Send(ctx, m); !errors.Is(err, context.Canceled) {
			t.Fatalf("Send = %v, want context.Canceled", err)
		}
	})
}

func TestSendRejectsHeaderInjection(t *testing.T) {
	mp := testenv.Mailpit(t)
	s, err := mail.NewSMTP(mp.SMTPURL(), from)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []mail.Message{
		{To: "x@example.test", Subject: "hi\r\nBcc: victim@example.test", Text: "t"},
		{To: "x@example.test\r\nBcc: victim@example.test", Subject: "hi", Text: "t"},
		{To: "x@example.test", Subject: "no body"},
	} {
		if err := s.Send(t.Context(), m); err == nil {
			t.Errorf("Send(%q) succeeded", m)
		}
	}
	if n := len(mp.Messages(t)); n != 0 {
		t.Fatalf("Mailpit got %d messages, want none", n)
	}
}

func TestNoticeArrivesThroughMailpitWithItsHeader(t *testing.T) {
	mp := testenv.Mailpit(t)
	s, err := mail.NewSMTP(mp.SMTPURL(), from)
	if err != nil {
		t.Fatal(err)
	}
	tpl, err := mail.Builtin("Acme")
	if err != nil {
		t.Fatal(err)
	}
	n := mail.Notice{
		When:        time.Date(2026, 12, 6, 8, 15, 0, 0, time.UTC),
		Device:      "Chrome on Android <b>",
		IP:          "2001:db8::7",
		PasskeyName: "Pixel",
	}
	m, err := tpl.Notice("owner@example.test", "", "PasskeyAdded", n)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	got := mp.WaitForMessage(t, "owner@example.test", 5*time.Second)
	if got.Subject != "A passkey was added to your Acme account" {
		t.Errorf("Subject = %q", got.Subject)
	}
	if h := mp.Headers(t, got.ID); len(h[mail.NoticeHeader]) != 1 || h[mail.NoticeHeader][0] != "PasskeyAdded" {
		t.Errorf("%s = %q, want [PasskeyAdded]", mail.NoticeHeader, h[mail.NoticeHeader])
	}
	for _, want := range []string{"“Pixel”", "2026-12-06 08:15 UTC", "Chrome on Android <b>", "2001:db8::7", "If this wasn't you"} {
		if !strings.Contains(got.Text, want) {
			t.Errorf("text lacks %q:\n%s", want, got.Text)
		}
	}
	for _, want := range []string{"“Pixel”", "2026-12-06 08:15 UTC", "Chrome on Android &lt;b&gt;", "2001:db8::7", "If this wasn&#39;t you"} {
		if !strings.Contains(got.HTML, want) {
			t.Errorf("HTML lacks %q:\n%s", want, got.HTML)
		}
	}
}

func TestSendRejectsBadHeaders(t *testing.T) {
	mp := testenv.Mailpit(t)
	s, err := mail.NewSMTP(mp.SMTPURL(), from)
	if err != nil {
		t.Fatal(err)
	}
	dev := mail.NewLog(slog.New(slog.DiscardHandler))
	for _, h := range []map[string]string{
		{"X-Authd-Notice": "PasskeyAdded\r\nBcc: victim@example.test"},
		{"X-Authd-Notice": "PasskeyAdded\nBcc: victim@example.test"},
		{"X-Authd-Notice\r\nBcc": "victim@example.test"},
		{"X-Authd Notice": "PasskeyAdded"},
		{"X-Authd-Notice:": "PasskeyAdded"},
		{"": "PasskeyAdded"},
		{"bcc": "victim@example.test"},
		{"Reply-To": "attacker@example.test"},
		{"Subject": "second subject"},
	} {
		m := mail.Message{To: "x@example.test", Subject: "hi", Text: "t", Headers: h}
		if err := s.Send(t.Context(), m); err == nil {
			t.Errorf("SMTP Send with headers %q succeeded", h)
		}
		if err := dev.Send(t.Context(), m); err == nil {
			t.Errorf("log Send with headers %q succeeded", h)
		}
	}
	if n := len(mp.Messages(t)); n != 0 {
		t.Fatalf("Mailpit got %d messages, want none", n)
	}
}
