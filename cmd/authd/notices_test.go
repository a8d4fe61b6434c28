package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/authd/authd/internal/mail"
	"github.com/authd/authd/internal/natsbus"
	"github.com/authd/authd/internal/testenv"
)

// Two instances, each running the notices consumer: the signup's sign-in
// tells nobody, a sign-in from a new device and network is told once, one
// from a known device in the same network is not, and a password reset is
// told once, with the IP it came from.
func TestSecurityNoticesWithTwoInstances(t *testing.T) {
	t.Parallel()
	c := newCluster(t, map[string]string{"AUTHD_NOTICES": "on", "AUTHD_TRUSTED_PROXIES": "127.0.0.1/32", "AUTHD_PRODUCT_NAME": "Acme"})
	a, b := c.start(t), c.start(t)
	const email, pw = "owner@example.com", "correct horse battery staple"
	firefox := "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
	c.signupVerified(t, a, email, pw, hdr("X-Forwarded-For", "203.0.113.7", "User-Agent", firefox))
	login := func(in *instance, ip, ua string) {
		t.Helper()
		r := in.rawCall(t, "POST", api+"/login", hdr("X-Forwarded-For", ip, "User-Agent", ua), jsonBody(t, map[string]any{"email": email, "password": pw}))
		if r.status != 200 {
			t.Fatalf("login from %s = %d %s", ip, r.status, r.raw)
		}
	}
	login(b, "198.51.100.23", "curl/8.5.0")
	login(a, "203.0.113.99", firefox)
	c.noticesSettled(t)
	seen := len(mailsTo(t, c, email))
	from := hdr("X-Forwarded-For", "192.0.2.50", "User-Agent", firefox)
	if r := a.rawCall(t, "POST", api+"/otp/send", from, jsonBody(t, map[string]any{"email": email, "purpose": "reset"})); r.status != 202 {
		t.Fatalf("otp/send = %d %s", r.status, r.raw)
	}
	code := c.nextCode(t, email, seen)
	reset := b.rawCall(t, "POST", api+"/reset-password", from, jsonBody(t, map[string]any{"email": email, "code": code, "new_password": "a brand new passphrase"}))
	if reset.status != 200 {
		t.Fatalf("reset-password = %d %s", reset.status, reset.raw)
	}
	c.noticesSettled(t)

	notices := map[string][]testenv.MailpitMessage{}
	for _, m := range mailsTo(t, c, email) {
		for _, h := range c.mail.Headers(t, m.ID)[mail.NoticeHeader] {
			notices[h] = append(notices[h], c.mail.Message(t, m.ID))
		}
	}
	if len(notices) != 2 || len(notices["SessionStarted"]) != 1 || len(notices["PasswordReset"]) != 1 {
		t.Fatalf("notices by type: %v; want one SessionStarted (the new device) and one PasswordReset", keysOf(notices))
	}
	if n := notices["SessionStarted"][0]; !strings.Contains(n.Text, "198.51.100.23") || !strings.Contains(n.Text, "curl") || !strings.Contains(n.Subject+n.Text, "Acme") {
		t.Fatalf("notice %q does not name the IP, device and product:\n%s", n.Subject, n.Text)
	}
	if n := notices["PasswordReset"][0]; !strings.Contains(n.Text, "192.0.2.50") {
		t.Fatalf("notice %q does not name the IP:\n%s", n.Subject, n.Text)
	}
}

func TestNoticesOffCreatesNoConsumer(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	c.start(t)
	stream := c.stream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := stream.Consumer(ctx, "authd_notices"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("with AUTHD_NOTICES=off, the notices consumer: %v; want not found", err)
	}
}

// stream is the cluster's events stream, as an operator's tool sees it.
func (c *cluster) stream(t *testing.T) jetstream.Stream {
	t.Helper()
	bus := testenv.OpenNATS(t, natsbus.Config{URL: c.env["NATS_URL"], Stream: c.env["AUTHD_NATS_STREAM"], SubjectPrefix: c.env["AUTHD_NATS_SUBJECT_PREFIX"]})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := bus.EnsureStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return stream
}

// noticesSettled waits until every event of the log is in the stream and
// the notices consumer has acked them all: whatever notice they cause is out.
// The relay publishes each event once, so they are all in when the stream's
// last sequence reaches their count; its message count does not, once an
// erasure has deleted messages.
func (c *cluster) noticesSettled(t *testing.T) {
	t.Helper()
	stream, pool := c.stream(t), c.dbPool(t)
	testenv.Eventually(t, 30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var logged uint64
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&logged); err != nil {
			t.Fatal(err)
		}
		s, err := stream.Info(ctx)
		if err != nil || s.State.LastSeq < logged {
			return false
		}
		cons, err := stream.Consumer(ctx, "authd_notices")
		if err != nil {
			return false
		}
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.AckFloor.Stream >= s.State.LastSeq
	})
}
