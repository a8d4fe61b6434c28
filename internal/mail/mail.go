// Package mail renders authd's emails (the code mails and the security
// notices) from templates, built-in or the operator's, and sends them over
// SMTP, or writes them to the log in development.
package mail

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/textproto"
	"strings"
)

// Message is one email to one recipient. HTML may be empty; Text may not,
// since some readers show only the plain-text part.
type Message struct {
	To      string
	Subject string
	Text    string
	HTML    string
	// Headers are extra header fields, such as X-Authd-Notice; the ones the
	// sender writes itself (From, To, Subject, Date, MIME) cannot be set here.
	Headers map[string]string
}

// reserved says whether the sender composes the field itself; a Message
// setting one would send two of them, or redirect the mail.
func reserved(name string) bool {
	switch textproto.CanonicalMIMEHeaderKey(name) {
	case "Bcc", "Cc", "Content-Transfer-Encoding", "Content-Type", "Date", "From",
		"Message-Id", "Mime-Version", "Reply-To", "Return-Path", "Sender", "Subject", "To":
		return true
	}
	return false
}

// checkHeaders refuses a header field that could add fields of its own (a
// line break in a name or value) or that the sender writes itself.
func checkHeaders(h map[string]string) error {
	for name, value := range h {
		if name == "" {
			return errors.New("mail: a header has no name")
		}
		for _, c := range []byte(name) {
			// RFC 5322 field names: printable US-ASCII but the colon.
			if c < 33 || c > 126 || c == ':' {
				return fmt.Errorf("mail: header name %q is not printable ASCII without a colon", name)
			}
		}
		if reserved(name) {
			return fmt.Errorf("mail: header %s is the sender's to write", name)
		}
		if strings.ContainsFunc(value, func(r rune) bool { return r < 32 && r != '\t' || r == 127 }) {
			return fmt.Errorf("mail: header %s has a line break or control character", name)
		}
	}
	return nil
}

// Sender delivers a message, or fails; it does not queue or retry, so the
// caller decides whether a lost code email is worth failing a request over.
type Sender interface {
	Send(ctx context.Context, m Message) error
}

// LogSender is the development stand-in for SMTP: it writes each message,
// code included, to the log. API.md allows this only when SMTP_URL is unset;
// no other log line may carry a code.
type LogSender struct {
	log *slog.Logger
}

var (
	_ Sender = (*LogSender)(nil)
	_ Sender = (*SMTP)(nil)
)

// NewLog returns a Sender that logs messages instead of sending them.
func NewLog(log *slog.Logger) *LogSender {
	return &LogSender{log: log}
}

// Send logs m at WARN, loud enough that a production deployment missing
// SMTP_URL is noticed rather than silently losing every code.
func (l *LogSender) Send(ctx context.Context, m Message) error {
	// A cancelled Send fails here as it would over SMTP, so code that works in
	// development does not rely on a Send that cannot fail.
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkHeaders(m.Headers); err != nil {
		return err
	}
	attrs := []slog.Attr{
		slog.String("to", m.To),
		slog.String("subject", m.Subject),
		slog.String("text", m.Text),
	}
	if len(m.Headers) > 0 {
		attrs = append(attrs, slog.Any("headers", m.Headers))
	}
	l.log.LogAttrs(ctx, slog.LevelWarn,
		"email not sent: SMTP_URL is not set; development only: the email, codes included, is written to this log instead",
		attrs...)
	return nil
}
