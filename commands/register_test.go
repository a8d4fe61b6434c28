package commands

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/testenv"
)

// A signup for a new address, for one with a pending signup and for a
// verified account's address answer the same after the same work: the same
// statements, as many times each, and one mail handed to the sender. Any
// difference in what they do would show in their timing, and tell an
// attacker which addresses have accounts.
func TestRegisterDoesTheSameWorkWhetherOrNotTheAddressIsTaken(t *testing.T) {
	t.Parallel()
	rec := testenv.NewStatements()
	app := newApp(t, traced(rec))
	store, mp := app.store, app.env.mail
	ctx := context.Background()
	const pw = "correct horse battery staple"
	register := func(label, email string) {
		t.Helper()
		if err := app.Register(rec.Label(ctx, label), RegisterInput{Email: email, Password: pw}, Request{IP: "192.0.2.1"}); err != nil {
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
	verified, err := eventstore.Encode(&domain.EmailVerified{UserID: uuid.MustParse(owner)})
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
