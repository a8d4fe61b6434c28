package commands

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/internal/testenv"
)

// googleSignIn signs in with an ID token and fails the test unless that
// gives tokens.
func (a *testApp) googleSignIn(t *testing.T, idToken string) Tokens {
	t.Helper()
	in, err := a.GoogleSignIn(t.Context(), idToken, request)
	if err != nil || in.Tokens == nil {
		t.Fatalf("Google sign-in: %+v, %v", in, err)
	}
	return *in.Tokens
}

// A new email signs up with Google (verified, with a default tenant,
// linked); the Google account signs in again to the same user on any
// instance, even with its address changed; an account with the address
// already is linked and keeps its password; another Google account for a
// linked address is refused; and a pending signup is taken over.
func TestGoogleSignUpLoginAndLinking(t *testing.T) {
	t.Parallel()
	idp := testenv.NewGoogleIdP(t)
	a, b := twoApps(t, google(idp))
	ctx := t.Context()
	const sub = "110169484474386276334"

	before := len(a.eventTypes(t, 0))
	signup := a.googleSignIn(t, idp.Token(t, sub, " Grace.Hopper@Example.COM"))
	if u := a.user(t, signup.UserID); u.Email != "grace.hopper@example.com" || !u.EmailVerified || u.Name != "Grace Hopper" || u.Tenant.Name != "Grace Hopper's organization" {
		t.Fatalf("signed-up user: %+v", u)
	}
	if got := a.eventTypes(t, before); !slices.Equal(got, []string{"UserRegistered", "EmailVerified", "TenantCreated", "GoogleLinked", "SessionStarted", "LoginSucceeded"}) {
		t.Fatalf("signup events: %v", got)
	}
	if amr := a.claims(t, signup.AccessToken).AMR; !slices.Equal(amr, []string{"fed"}) {
		t.Fatalf("amr %v, want [fed]", amr)
	}
	// The subject is personal: sealed in the row, in the data as the log is read.
	stream, err := a.store.ReadStream(ctx, domain.UserStream(signup.UserID))
	if err != nil {
		t.Fatal(err)
	}
	var data []byte
	for _, e := range stream {
		if e.Type == domain.TypeGoogleLinked {
			data = e.Data
		}
	}
	var linked struct {
		UserID  string `json:"user_id"`
		Subject string `json:"subject"`
	}
	if err := json.Unmarshal(data, &linked); err != nil || linked.UserID != signup.UserID.String() || linked.Subject != sub {
		t.Fatalf("GoogleLinked data %s", data)
	}

	// Signing in again finds the same user, on any instance, and changes
	// nothing but a new session.
	before = len(a.eventTypes(t, 0))
	again := b.googleSignIn(t, idp.Token(t, sub, "grace.hopper@example.com"))
	if again.UserID != signup.UserID || again.SessionID == signup.SessionID {
		t.Fatalf("second sign-in: %+v", again)
	}
	if got := a.eventTypes(t, before); !slices.Equal(got, []string{"SessionStarted", "LoginSucceeded"}) {
		t.Fatalf("second sign-in events: %v", got)
	}
	// The subject comes first: a Google account whose address changed is
	// still the same account.
	moved := a.googleSignIn(t, idp.Token(t, sub, "grace@navy.example.mil"))
	if moved.UserID != signup.UserID || a.user(t, moved.UserID).Email != "grace.hopper@example.com" {
		t.Fatalf("sign-in after the Google address changed: %+v", moved)
	}
	// A user signed up with Google has no password to log in with.
	if _, err := a.Login(ctx, "grace.hopper@example.com", "any password at all", request); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("password login of a Google-only user: %v; want ErrInvalidCredentials", err)
	}

	// An existing password account with the same (verified) email is linked
	// and keeps its password.
	const pw = "correct horse battery staple"
	reg := a.signUp(t, "linus@example.com", pw)
	before = len(a.eventTypes(t, 0))
	if link := b.googleSignIn(t, idp.Token(t, "200000000000000000002", "Linus@Example.com")); link.UserID != reg.UserID {
		t.Fatalf("linking found user %s, want the password account %s", link.UserID, reg.UserID)
	}
	if got := a.eventTypes(t, before); !slices.Equal(got, []string{"GoogleLinked", "SessionStarted", "LoginSucceeded"}) {
		t.Fatalf("linking events: %v", got)
	}
	if pl := a.login(t, "linus@example.com", pw); pl.UserID != reg.UserID {
		t.Fatalf("password login after linking: %+v", pl)
	}
	if l := a.googleSignIn(t, idp.Token(t, "200000000000000000002", "linus@example.com")); l.UserID != reg.UserID {
		t.Fatalf("sign-in of the linked account: %+v", l)
	}

	// Another Google account presenting a linked address is refused, not
	// relinked.
	before = len(a.eventTypes(t, 0))
	if _, err := a.GoogleSignIn(ctx, idp.Token(t, "300000000000000000003", "linus@example.com"), request); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("another Google account for a linked email: %v; want ErrInvalidToken", err)
	}
	if got := a.eventTypes(t, before); len(got) != 0 {
		t.Fatalf("the refused relink appended %v", got)
	}

	// A signup nobody verified belongs to whoever proves the address: Google
	// sign-in takes it over, and the password it was registered with (by
	// anyone) stops working.
	if err := a.Register(ctx, RegisterInput{Email: "pending@example.com", Password: "someone else's password", Name: "Mallory", TenantName: "Mallory Inc"}, request); err != nil {
		t.Fatal(err)
	}
	code := a.nextCode(t, "pending@example.com")
	takeover := a.googleSignIn(t, idp.Token(t, "400000000000000000004", "pending@example.com"))
	if u := a.user(t, takeover.UserID); u.Name != "Grace Hopper" || u.Tenant.Name != "Grace Hopper's organization" {
		t.Fatalf("taken-over account: %+v", u)
	}
	if _, err := a.Login(ctx, "pending@example.com", "someone else's password", request); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("the pending signup's password still works: %v", err)
	}
	if _, err := a.VerifyRegistration(ctx, "pending@example.com", code, request); !errors.Is(err, ErrInvalidCode) {
		t.Fatalf("the pending signup's code after the takeover: %v; want ErrInvalidCode", err)
	}

	// Cache-Control honoured: every sign-in above, on both instances, with
	// one fetch each.
	if n := idp.Fetches(); n != 2 {
		t.Fatalf("%d JWKS fetches by 2 instances; want 2 (one each, max-age=21600)", n)
	}
}

// A Google user with two-factor on gets a challenge, and the session its
// answer opens has both amr.
func TestGoogleUserWithTwoFactorGetsAChallenge(t *testing.T) {
	t.Parallel()
	idp := testenv.NewGoogleIdP(t)
	a := newApp(t, google(idp))
	signup := a.googleSignIn(t, idp.Token(t, "666", "twofa@example.com"))
	_, backup := a.enableTwoFactor(t, a.claims(t, signup.AccessToken))

	in, err := a.GoogleSignIn(t.Context(), idp.Token(t, "666", "twofa@example.com"), request)
	if err != nil || in.Challenge == nil || in.Tokens != nil {
		t.Fatalf("Google sign-in of a 2FA user: %+v, %v; want a challenge", in, err)
	}
	done, err := a.VerifyChallenge(t.Context(), in.Challenge.Token, backup[0], request)
	if err != nil {
		t.Fatal(err)
	}
	if amr := a.claims(t, done.AccessToken).AMR; !slices.Contains(amr, "fed") || !slices.Contains(amr, "mfa") {
		t.Fatalf("amr after the challenge: %v, want fed and mfa", amr)
	}
}

// First sign-ins of one Google account at once, on two instances, make one
// account: the losers of the race find the winner's.
func TestGoogleConcurrentFirstSignInsMakeOneAccount(t *testing.T) {
	t.Parallel()
	idp := testenv.NewGoogleIdP(t)
	a, b := twoApps(t, google(idp))
	a.signUp(t, "existing@example.com", "correct horse battery staple")

	for _, email := range []string{"race@example.com", "existing@example.com"} {
		sub := "sub-of-" + email
		ids := make([]string, 8)
		var wg sync.WaitGroup
		for i := range ids {
			wg.Go(func() {
				in, err := []*testApp{a, b}[i%2].GoogleSignIn(context.Background(), idp.Token(t, sub, email), request)
				if err != nil || in.Tokens == nil {
					t.Errorf("%s: concurrent sign-in %d: %+v, %v", email, i, in, err)
					return
				}
				ids[i] = in.Tokens.UserID.String()
			})
		}
		wg.Wait()
		for _, id := range ids {
			if id != ids[0] {
				t.Fatalf("%s: concurrent sign-ins found different users: %v", email, ids)
			}
		}
	}
	var users, links int
	if err := a.pool.QueryRow(t.Context(), `SELECT count(*) FILTER (WHERE type = 'UserRegistered'), count(*) FILTER (WHERE type = 'GoogleLinked') FROM events`).Scan(&users, &links); err != nil {
		t.Fatal(err)
	}
	if users != 2 || links != 2 {
		t.Fatalf("%d users registered and %d links; want 2 and 2", users, links)
	}
}
