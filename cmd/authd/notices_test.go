package main

import (
	"context"
	"errors"
	"slices"
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
// from a known device in the same network is not.
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

	var notices []testenv.MailpitMessage
	for _, m := range mailsTo(t, c, email) {
		if h := c.mail.Headers(t, m.ID)[mail.NoticeHeader]; len(h) > 0 {
			if !slices.Equal(h, []string{"SessionStarted"}) {
				t.Errorf("notice %q has %s %v", m.Subject, mail.NoticeHeader, h)
			}
			notices = append(notices, c.mail.Message(t, m.ID))
		}
	}
	if len(notices) != 1 {
		t.Fatalf("%d notices, want 1 (the sign-in from the new device)", len(notices))
	}
	if n := notices[0]; !strings.Contains(n.Text, "198.51.100.23") || !strings.Contains(n.Text, "curl") || !strings.Contains(n.Subject+n.Text, "Acme") {
		t.Fatalf("notice %q does not name the IP, device and product:\n%s", n.Subject, n.Text)
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
func (c *cluster) noticesSettled(t *testing.T) {
	t.Helper()
	stream, pool := c.stream(t), c.dbPool(t)
	eventually(t, 30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var logged uint64
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&logged); err != nil {
			t.Fatal(err)
		}
		s, err := stream.Info(ctx)
		if err != nil || s.State.Msgs < logged {
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
