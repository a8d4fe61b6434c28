package commands_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/commands"
	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/codes"
	"github.com/authd/authd/internal/mail"
	"github.com/authd/authd/internal/password"
	"github.com/authd/authd/internal/ratelimit"
	"github.com/authd/authd/internal/testenv"
)

// A signup for a new address, for one with a pending signup and for a
// verified account's address answer the same after the same work: the same
// statements, as many times each, and one mail handed to the sender. Any
// difference in what they do would show in their timing, and tell an
// attacker which addresses have accounts.
func TestRegisterDoesTheSameWorkWhetherOrNotTheAddressIsTaken(t *testing.T) {
	t.Parallel()
	_, url := testenv.Database(t)
	rec := testenv.NewStatements()
	pool := rec.Pool(t, url, 8)
	mp := testenv.Mailpit(t)
	sender, err := mail.NewSMTP(mp.SMTPURL(), "no-reply@example.com")
	if err != nil {
		t.Fatal(err)
	}
	mails, err := mail.Builtin("authd")
	if err != nil {
		t.Fatal(err)
	}
	store := eventstore.NewStore(pool, testenv.Sealer(t), nil)
	limiter := ratelimit.New(pool, time.Now)
	app := commands.New(commands.Deps{
		Store:   store,
		Hasher:  password.NewHasher(password.OWASP(), 2, 8),
		Codes:   codes.New(pool, make([]byte, 32), time.Now),
		Mail:    sender,
		Mails:   mails,
		Limits:  limiter,
		Log:     slog.New(slog.DiscardHandler),
		Now:     time.Now,
		Product: "authd",
	})
	go app.Run(t.Context()) // sends the mails the commands hand off
	ctx := context.Background()
	const pw = "correct horse battery staple"
	register := func(label, email string) {
		t.Helper()
		if err := app.Register(rec.Label(ctx, label), commands.RegisterInput{Email: email, Password: pw}, commands.Request{IP: "192.0.2.1"}); err != nil {
			t.Fatalf("register %s (%s): %v", email, label, err)
		}
	}

	// The setup: a pending signup, and an account whose email is verified.
	register("setup", "pending@example.com")
	register("setup", "owner@example.com")
	owner, err := store.Lookup(ctx, "email", "owner@example.com")
	if err != nil {
		t.Fatal(err)
	}
	verified, err := commands.Encode(&domain.EmailVerified{UserID: uuid.MustParse(owner)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Append(ctx, domain.UserStream(uuid.MustParse(owner)), 1, verified); err != nil {
		t.Fatal(err)
	}
	waitForMails(t, mp, map[string]int{"pending@example.com": 1, "owner@example.com": 1})

	register("new", "new@example.com")
	register("pending", "pending@example.com")
	register("taken", "owner@example.com")

	want := rec.Of("new")
	if len(want) == 0 {
		t.Fatal("no statements recorded for a new address")
	}
	slices.Sort(want)
	for _, path := range []string{"pending", "taken"} {
		got := rec.Of(path)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("a signup for a %s address ran\n\t%s\nand for a new one\n\t%s", path, strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
		}
	}
	// One mail each, handed to the same sender: the owner's says what
	// happened and carries a sign-in code.
	msgs := waitForMails(t, mp, map[string]int{"new@example.com": 1, "pending@example.com": 2, "owner@example.com": 2})
	if s := msgs["owner@example.com"][0].Subject; !strings.Contains(s, "tried to sign up") {
		t.Errorf("the owner's mail about the attempt has subject %q", s)
	}
	if s := msgs["pending@example.com"][0].Subject; !strings.Contains(s, "Verify") {
		t.Errorf("the pending signup's new mail has subject %q", s)
	}
}

// waitForMails waits until Mailpit holds exactly want[address] mails to each
// address, and returns them by address, newest first.
func waitForMails(t *testing.T, mp *testenv.MailpitServer, want map[string]int) map[string][]testenv.MailpitMessage {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := map[string][]testenv.MailpitMessage{}
		for _, m := range mp.Messages(t) {
			for _, to := range m.To {
				got[to] = append(got[to], m)
			}
		}
		done := true
		for addr, n := range want {
			done = done && len(got[addr]) >= n
		}
		if done {
			// Mails are sent after the answer: a late extra one would
			// still arrive, so give it time before counting.
			time.Sleep(500 * time.Millisecond)
			got = map[string][]testenv.MailpitMessage{}
			for _, m := range mp.Messages(t) {
				for _, to := range m.To {
					got[to] = append(got[to], m)
				}
			}
			for addr, n := range want {
				if len(got[addr]) != n {
					t.Errorf("%d mails to %s, want %d", len(got[addr]), addr, n)
				}
			}
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("mails by address: want %v, have %d kinds after 30s", want, len(got))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
