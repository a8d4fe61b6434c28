package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// MailTemplate writes one mail's three template files for locale into dir,
// named as AUTHD_MAIL_TEMPLATES wants them (README, "Mails").
func MailTemplate(t testing.TB, dir, mail, locale, subject, text, html string) {
	t.Helper()
	for suffix, body := range map[string]string{".subject.txt": subject, ".txt": text, ".html": html} {
		if err := os.WriteFile(filepath.Join(dir, mail+"."+locale+suffix), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
