package mail_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/internal/mail"
	"github.com/authd/authd/internal/testenv"
)

// notice is the data of a notice as the consumer of the events fills it.
func notice() mail.Notice {
	return mail.Notice{
		When:        time.Date(2026, 3, 1, 23, 30, 0, 0, time.FixedZone("CET", 3600)),
		Device:      "Safari on macOS",
		IP:          "198.51.100.23",
		NewEmail:    "new@example.com",
		PasskeyName: "Phone",
		Failures:    10,
		GuessedCode: domain.GuessedEmailCode,
	}
}

// everyMail renders every mail authd sends from tpl for a recipient of locale.
func everyMail(t *testing.T, tpl *mail.Templates, locale string) map[string]mail.Message {
	t.Helper()
	out := map[string]mail.Message{}
	for _, p := range mail.Purposes() {
		m, err := tpl.Code("owner@example.com", locale, "987654", p, 10*time.Minute)
		if err != nil {
			t.Fatalf("%v: %v", p, err)
		}
		out[p.String()] = m
	}
	for _, e := range mail.NoticeEvents() {
		m, err := tpl.Notice("owner@example.com", locale, e, notice())
		if err != nil {
			t.Fatalf("%s: %v", e, err)
		}
		out[e] = m
	}
	return out
}

func TestEveryBuiltinMailRendersForTheProduct(t *testing.T) {
	tpl, err := mail.Builtin("Acme")
	if err != nil {
		t.Fatal(err)
	}
	mails := everyMail(t, tpl, "")
	if want := len(mail.Purposes()) + len(mail.NoticeEvents()); len(mails) != want || want != 19 {
		t.Fatalf("%d mails, want the 6 code mails and 13 notices", len(mails))
	}
	subjects := map[string]string{}
	for name, m := range mails {
		if m.To != "owner@example.com" {
			t.Errorf("%s: To = %q", name, m.To)
		}
		for part, body := range map[string]string{"subject": m.Subject, "text": m.Text, "HTML": m.HTML} {
			if strings.TrimSpace(body) == "" || strings.Contains(body, "<no value>") {
				t.Errorf("%s %s is empty or lacks a value:\n%s", name, part, body)
			}
			if strings.Contains(strings.ToLower(body), "authd") {
				t.Errorf("%s %s names authd, not the product:\n%s", name, part, body)
			}
			if part != "HTML" && !strings.Contains(body, "Acme") {
				t.Errorf("%s %s does not name the product:\n%s", name, part, body)
			}
		}
		if other, ok := subjects[m.Subject]; ok {
			t.Errorf("%s and %s share the subject %q", name, other, m.Subject)
		}
		subjects[m.Subject] = name
	}
	for _, e := range mail.NoticeEvents() {
		m := mails[e]
		if got := m.Headers[mail.NoticeHeader]; got != e || len(m.Headers) != 1 {
			t.Errorf("%s: headers %v, want %s: %s", e, m.Headers, mail.NoticeHeader, e)
		}
		// 23:30 in CET is 22:30 UTC: the mail says when in UTC, and where from.
		for _, want := range []string{"2026-03-01 22:30 UTC", "Safari on macOS", "198.51.100.23", "If this wasn't you"} {
			if !strings.Contains(m.Text, want) {
				t.Errorf("%s text lacks %q:\n%s", e, want, m.Text)
			}
			if !strings.Contains(m.HTML, strings.ReplaceAll(want, "'", "&#39;")) {
				t.Errorf("%s HTML lacks %q:\n%s", e, want, m.HTML)
			}
		}
	}
	for _, name := range []string{"EmailChangeRequested", "EmailChanged"} {
		if !strings.Contains(mails[name].Text, "new@example.com") {
			t.Errorf("%s does not name the new address:\n%s", name, mails[name].Text)
		}
	}
	for _, name := range []string{"PasskeyAdded", "PasskeyRemoved"} {
		if !strings.Contains(mails[name].Text, "“Phone”") {
			t.Errorf("%s does not name the passkey:\n%s", name, mails[name].Text)
		}
	}
	if !strings.Contains(mails["CodeGuessingDetected"].Text, "10 wrong emailed codes") {
		t.Errorf("CodeGuessingDetected does not say what was guessed:\n%s", mails["CodeGuessingDetected"].Text)
	}
	for _, p := range mail.Purposes() {
		if m := mails[p.String()]; len(m.Headers) != 0 || !strings.Contains(m.Text, "    987654\n") || !strings.Contains(m.HTML, ">987654<") {
			t.Errorf("%v: headers %v, or the code is not shown on its own:\n%s", p, m.Headers, m.Text)
		}
	}
}

// The notices are named by the event types of the domain that cause them.
func TestNoticesAreNamedByTheirEvents(t *testing.T) {
	for _, e := range []string{
		domain.TypeSessionStarted, domain.TypePasswordReset, domain.TypeTotpEnabled, domain.TypeTotpDisabled,
		domain.TypeBackupCodesRegenerated, domain.TypePasskeyAdded, domain.TypePasskeyRemoved,
		domain.TypeRefreshTokenReused, domain.TypeCodeGuessingDetected,
	} {
		found := false
		for _, n := range mail.NoticeEvents() {
			found = found || n == e
		}
		if !found {
			t.Errorf("no notice for %s", e)
		}
	}
}

func TestNoticeRejectsBadInput(t *testing.T) {
	tpl, err := mail.Builtin("Acme")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tpl.Notice("a@x.test", "", "SessionRefreshed", notice()); err == nil {
		t.Error("a notice for an event that has none rendered")
	}
	n := notice()
	n.When = time.Time{}
	if _, err := tpl.Notice("a@x.test", "", "PasswordChanged", n); err == nil {
		t.Error("a notice with no time rendered")
	}
}

func TestOverridesByLocaleFallBackToEnglish(t *testing.T) {
	dir := t.TempDir()
	testenv.MailTemplate(t, dir, "verify", "de", "Bestätige deine E-Mail für {{.Product}}", "Dein Code: {{.Code}}, gültig {{.Minutes}} Minuten.", "<p>Dein Code: {{.Code}}</p>")
	testenv.MailTemplate(t, dir, "login", "de", "Anmeldecode für {{.Product}}", "Code: {{.Code}}", "<p>{{.Code}}</p>")
	// Spelled in lower case, as a file system may keep it; de-CH all the same.
	testenv.MailTemplate(t, dir, "login", "de-ch", "Grüezi, {{.Product}}", "Code: {{.Code}}", "<p>{{.Code}}</p>")
	testenv.MailTemplate(t, dir, "PasskeyAdded", "de", "Neuer Passkey bei {{.Product}}", "Passkey „{{.PasskeyName}}“ am {{.WhenUTC}} von {{.IP}}.", "<p>{{.PasskeyName}} {{.Device}}</p>")
	// .hidden files are an editor's or a mount's, never templates.
	if err := os.WriteFile(filepath.Join(dir, ".verify.de.txt.swp"), []byte("{{"), 0o644); err != nil {
		t.Fatal(err)
	}
	tpl, err := mail.Load("Acme", dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		locale      string
		purpose     mail.Purpose
		wantSubject string
	}{
		{"de-CH", mail.Verify, "Bestätige deine E-Mail für Acme"},
		{"de", mail.Verify, "Bestätige deine E-Mail für Acme"},
		{"fr", mail.Verify, "Verify your email for Acme"},
		{"", mail.Verify, "Verify your email for Acme"},
		{"not a locale", mail.Verify, "Verify your email for Acme"},
		{"de-CH", mail.Login, "Grüezi, Acme"},
		{"de-ch", mail.Login, "Grüezi, Acme"},
		{"de-AT", mail.Login, "Anmeldecode für Acme"},
		{"de-CH", mail.Reset, "Reset your Acme password"},
	} {
		m, err := tpl.Code("a@x.test", tc.locale, "424242", tc.purpose, 10*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject != tc.wantSubject {
			t.Errorf("%v for %q: subject %q, want %q", tc.purpose, tc.locale, m.Subject, tc.wantSubject)
		}
	}
	m, err := tpl.Code("a@x.test", "de-CH", "424242", mail.Verify, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if m.Text != "Dein Code: 424242, gültig 10 Minuten." || m.HTML != "<p>Dein Code: 424242</p>" {
		t.Errorf("de verify: %q / %q", m.Text, m.HTML)
	}
	// Minutes rounds down, so a translated mail never promises more time.
	m, err = tpl.Code("a@x.test", "de", "424242", mail.Verify, 90*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m.Text != "Dein Code: 424242, gültig 1 Minuten." {
		t.Errorf("de verify for 90 s: %q", m.Text)
	}
	n := notice()
	n.PasskeyName = "<b>Telefon</b>"
	m, err = tpl.Notice("a@x.test", "de-CH", "PasskeyAdded", n)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "Neuer Passkey bei Acme" || m.Text != "Passkey „<b>Telefon</b>“ am 2026-03-01 22:30 UTC von 198.51.100.23." ||
		m.HTML != "<p>&lt;b&gt;Telefon&lt;/b&gt; Safari on macOS</p>" || m.Headers[mail.NoticeHeader] != "PasskeyAdded" {
		t.Errorf("de PasskeyAdded: %+v", m)
	}
}

// An English override replaces the built-in English, also as the fallback
// of every other locale.
func TestEnglishOverrideReplacesTheBuiltin(t *testing.T) {
	dir := t.TempDir()
	testenv.MailTemplate(t, dir, "reset", "en", "{{.Product}} password reset", "Code {{.Code}}", "<p>{{.Code}}</p>")
	tpl, err := mail.Load("Acme", dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, locale := range []string{"", "en-GB", "fr"} {
		m, err := tpl.Code("a@x.test", locale, "424242", mail.Reset, 10*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject != "Acme password reset" {
			t.Errorf("%q: subject %q", locale, m.Subject)
		}
	}
}

func TestBrokenOverridesFailTheLoadNamingTheFile(t *testing.T) {
	const (
		subject = "Code for {{.Product}}"
		text    = "Code {{.Code}}"
		html    = "<p>{{.Code}}</p>"
	)
	for _, tc := range []struct {
		name  string
		write func(t *testing.T, dir string)
		file  string // the file the error must name
		want  string
	}{
		{"does not parse", func(t *testing.T, dir string) {
			testenv.MailTemplate(t, dir, "verify", "de", subject, "Code {{.Code", html)
		}, "verify.de.txt", "unclosed action"},
		{"unknown field", func(t *testing.T, dir string) {
			testenv.MailTemplate(t, dir, "verify", "de", subject, text, "<p>{{.Code}} {{.Nmae}}</p>")
		}, "verify.de.html", "Nmae"},
		{"unknown field in a branch the sample data skips", func(t *testing.T, dir string) {
			testenv.MailTemplate(t, dir, "verify", "de", subject, text, `<p>{{.Code}}{{if eq .Email "nobody"}}{{.Typo}}{{end}}</p>`)
		}, "verify.de.html", "Typo"},
		{"unknown field of the data inside with", func(t *testing.T, dir string) {
			testenv.MailTemplate(t, dir, "verify", "de", subject, "{{.Code}}{{with .Email}}{{if not .}}{{$.Typo}}{{end}}{{end}}", html)
		}, "verify.de.txt", "Typo"},
		{"unknown method of a field", func(t *testing.T, dir string) {
			testenv.MailTemplate(t, dir, "TotpEnabled", "de", "{{if false}}{{.When.Yaer}}{{end}}2FA", text, html)
		}, "TotpEnabled.de.subject.txt", "Yaer"},
		{"unknown field in a defined template", func(t *testing.T, dir string) {
			testenv.MailTemplate(t, dir, "verify", "de", subject, `{{define "x"}}{{.Typo}}{{end}}{{.Code}}`, html)
		}, "verify.de.txt", "Typo"},
		{"a notice's field in a code mail", func(t *testing.T, dir string) {
			testenv.MailTemplate(t, dir, "login", "fr", "{{.NewEmail}}", text, html)
		}, "login.fr.subject.txt", "NewEmail"},
		{"unknown mail", func(t *testing.T, dir string) {
			testenv.MailTemplate(t, dir, "welcome", "de", subject, text, html)
		}, "welcome.de.", `"welcome" is not a mail authd sends`},
		{"unknown locale", func(t *testing.T, dir string) {
			testenv.MailTemplate(t, dir, "verify", "english", subject, text, html)
		}, "verify.english.", "is not a BCP 47 locale"},
		{"a part missing", func(t *testing.T, dir string) {
			testenv.MailTemplate(t, dir, "verify", "de", subject, text, html)
			if err := os.Remove(filepath.Join(dir, "verify.de.subject.txt")); err != nil {
				t.Fatal(err)
			}
		}, "verify.de.subject.txt missing", "needs all three of its files"},
		{"the code not shown", func(t *testing.T, dir string) {
			testenv.MailTemplate(t, dir, "reset", "de", subject, "Hier ist kein Code.", html)
		}, "reset.de.txt", "does not show the code"},
		{"the same locale twice", func(t *testing.T, dir string) {
			testenv.MailTemplate(t, dir, "verify", "de-CH", subject, text, html)
			testenv.MailTemplate(t, dir, "verify", "de-ch", subject, text, html)
		}, "verify.de-", "the same template as"},
		{"a folder", func(t *testing.T, dir string) {
			if err := os.Mkdir(filepath.Join(dir, "de"), 0o755); err != nil {
				t.Fatal(err)
			}
		}, "de", "a folder"},
		{"a stray file", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "README.md"), []byte("notes"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "README.md", "not named <mail>.<locale>"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.write(t, dir)
			_, err := mail.Load("Acme", dir)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			if !strings.Contains(err.Error(), filepath.Join(dir, tc.file)) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error does not name %s with %q:\n%v", tc.file, tc.want, err)
			}
		})
	}

	// Every bad file is reported at once.
	dir := t.TempDir()
	testenv.MailTemplate(t, dir, "verify", "de", subject, "{{if}}", html)
	testenv.MailTemplate(t, dir, "SessionStarted", "de", subject, "{{.Nope}}", html)
	_, err := mail.Load("Acme", dir)
	for _, file := range []string{"verify.de.txt", "SessionStarted.de.txt"} {
		if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, file)) {
			t.Errorf("error does not name %s: %v", file, err)
		}
	}
	if _, err := mail.Load("Acme", filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("Load of a folder that is not there: %v", err)
	}
}

// Values from users are escaped in HTML, and nothing from the data or the
// product name reaches the subject as a line break.
func TestUserFieldsCannotInjectMarkupOrHeaders(t *testing.T) {
	dir := t.TempDir()
	testenv.MailTemplate(t, dir, "PasskeyRemoved", "en", "{{.Product}}: {{.PasskeyName}} removed", "{{.PasskeyName}}", "<p title=\"{{.PasskeyName}}\">{{.Device}}</p>")
	tpl, err := mail.Load("Acme\r\nBcc: x@example.com", dir)
	if err != nil {
		t.Fatal(err)
	}
	n := notice()
	n.Device = "<script>alert(1)</script>"
	n.PasskeyName = "key\"><img src=x onerror=alert(1)>\r\nBcc: victim@example.com"
	m, err := tpl.Notice("a@x.test", "", "PasskeyRemoved", n)
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(m.Subject, "\r\n") {
		t.Errorf("subject %q has a line break", m.Subject)
	}
	if strings.Contains(m.HTML, "<script>") || strings.Contains(m.HTML, "<img") || !strings.Contains(m.HTML, "&lt;script&gt;") {
		t.Errorf("HTML does not escape the data: %s", m.HTML)
	}
	builtin, err := mail.Builtin("Acme")
	if err != nil {
		t.Fatal(err)
	}
	m, err = builtin.Notice("a@x.test", "", "SessionStarted", n)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(m.HTML, "<script>") || !strings.Contains(m.HTML, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Errorf("built-in HTML does not escape the device: %s", m.HTML)
	}
}

// The field check follows what templates may do: methods, fields of fields,
// {{with}}, {{define}}, functions and variables.
func TestOverridesMayUseEveryFieldAndMethod(t *testing.T) {
	dir := t.TempDir()
	testenv.MailTemplate(t, dir, "SessionStarted", "de",
		`{{.Product}} {{.When.Year}} {{(.When).Month}} {{with .When}}{{.Day}}{{end}}`,
		`{{define "where"}}{{or .Device "?"}} {{.IP}}{{end}}{{template "where" .}} {{$n := .Failures}}{{$n}} {{$.Email}} {{len .Email}} {{printf "%s" .WhenUTC}} {{with .Device}}{{.}}{{else}}{{.IP}}{{end}}`,
		`<p>{{if .NewEmail}}{{.NewEmail}}{{else}}{{.Email}}{{end}} {{.When.UTC.Format "02.01.2006"}}</p>`)
	tpl, err := mail.Load("Acme", dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := tpl.Notice("a@x.test", "de", "SessionStarted", notice())
	if err != nil {
		t.Fatal(err)
	}
	if want := "Safari on macOS 198.51.100.23 10 a@x.test 8 2026-03-01 22:30 UTC Safari on macOS"; m.Subject != "Acme 2026 March 1" || m.Text != want {
		t.Errorf("got %q / %q, want %q", m.Subject, m.Text, want)
	}
}
