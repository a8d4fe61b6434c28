package testenv_test

import (
	"net/smtp"
	"strings"
	"testing"
	"time"

	"github.com/authd/authd/internal/testenv"
)

func TestMailpitReceivesAndFinds(t *testing.T) {
	mp := testenv.Mailpit(t)
	if !strings.HasPrefix(mp.SMTPURL(), "smtp://127.0.0.1:") {
		t.Fatalf("SMTPURL = %q, want smtp://127.0.0.1:PORT", mp.SMTPURL())
	}
	addr := strings.TrimPrefix(mp.SMTPURL(), "smtp://")

	send := func(to, subject, body string) {
		t.Helper()
		msg := "From: sender@example.test\r\n" +
			"To: " + to + "\r\n" +
			"Subject: " + subject + "\r\n" +
			"Content-Type: text/plain; charset=utf-8\r\n" +
			"\r\n" + body + "\r\n"
		if err := smtp.SendMail(addr, nil, "sender@example.test", []string{to}, []byte(msg)); err != nil {
			t.Fatalf("send %q: %v", subject, err)
		}
	}
	send("other@example.test", "not for alice", "Your code is 111111.")
	send("alice@example.test", "first", "Your code is 123456.")

	got := mp.WaitForMessage(t, "Alice@Example.test", 5*time.Second)
	if got.Subject != "first" || len(got.To) != 1 || got.To[0] != "alice@example.test" || got.From != "sender@example.test" || got.Username != "" {
		t.Fatalf("WaitForMessage = %+v, want the message to alice", got)
	}
	if code := testenv.CodeIn(t, got); code != "123456" {
		t.Fatalf("CodeIn = %q, want 123456", code)
	}

	// A second wait must not hand back the first message again.
	send("alice@example.test", "second", "Your code is 654321; 654321 again.")
	got = mp.WaitForMessage(t, "alice@example.test", 5*time.Second)
	if got.Subject != "second" {
		t.Fatalf("second WaitForMessage = %q, want the new message", got.Subject)
	}
	if code := testenv.CodeIn(t, got); code != "654321" {
		t.Fatalf("CodeIn = %q, want 654321", code)
	}

	msgs := mp.Messages(t)
	if len(msgs) != 3 {
		t.Fatalf("Messages has %d, want 3", len(msgs))
	}
	if msgs[0].Subject != "second" || !strings.Contains(msgs[0].Text, "654321") {
		t.Fatalf("Messages[0] = %+v, want the newest with its text", msgs[0])
	}
}
