// Package mail sends authd's emails (verification, login and reset codes) over
// SMTP, or writes them to the log in development.
package mail

import (
	"context"
	"log/slog"
)

// Message is one email to one recipient. HTML may be empty; Text may not,
// since some readers show only the plain-text part.
type Message struct {
	To      string
	Subject string
	Text    string
	HTML    string
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
	l.log.LogAttrs(ctx, slog.LevelWarn,
		"email not sent: SMTP_URL is not set; development only: the email, codes included, is written to this log instead",
		slog.String("to", m.To),
		slog.String("subject", m.Subject),
		slog.String("text", m.Text),
	)
	return nil
}
