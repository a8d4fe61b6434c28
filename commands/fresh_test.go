package commands

import (
	"errors"
	"testing"
	"time"

	"github.com/authd/authd/internal/testenv"
)

// A sign-in is the proof a session's tokens carry as auth_time; a refresh
// keeps it, however much later.
func TestAuthTimeSetBySignInKeptByRefresh(t *testing.T) {
	t.Parallel()
	clk := testenv.NewClock(time.Now().Add(-time.Hour))
	a := newApp(t, clock(clk.Now))
	const email, pw = "auth-time@example.com", "correct horse battery"
	signup := a.signUp(t, email, pw)
	if at := a.claims(t, signup.AccessToken).AuthTime; !at.Equal(clk.Now().Truncate(time.Second)) {
		t.Fatalf("signup's auth_time = %v, want %v", at, clk.Now())
	}
	clk.Advance(time.Minute)
	signedIn := clk.Now().Truncate(time.Second)
	login := a.login(t, email, pw)
	if at := a.claims(t, login.AccessToken).AuthTime; !at.Equal(signedIn) {
		t.Fatalf("login's auth_time = %v, want %v", at, signedIn)
	}
	clk.Advance(20 * time.Minute)
	p, err := a.Refresh(t.Context(), login.RefreshToken, request)
	if err != nil {
		t.Fatal(err)
	}
	c := a.claims(t, p.AccessToken)
	if !c.AuthTime.Equal(signedIn) || !c.IssuedAt.After(signedIn) {
		t.Fatalf("after a refresh: auth_time %v, iat %v; want auth_time kept at %v", c.AuthTime, c.IssuedAt, signedIn)
	}
}

// A sensitive change needs a proof no older than the max age; a token
// without auth_time (issued before authd put it in) has none.
func TestRequireFresh(t *testing.T) {
	t.Parallel()
	// On a whole second, as auth_time is on the wire.
	clk := testenv.NewClock(time.Now().Add(-time.Hour).Truncate(time.Second))
	a := newApp(t, clock(clk.Now))
	signup := a.signUp(t, "require-fresh@example.com", "correct horse battery")
	caller := a.claims(t, signup.AccessToken)
	if err := a.RequireFresh(caller); err != nil {
		t.Fatalf("right after signing up: %v", err)
	}
	clk.Advance(10 * time.Minute) // the default max age, its end included
	if err := a.RequireFresh(caller); err != nil {
		t.Fatalf("at the max age: %v", err)
	}
	clk.Advance(time.Second)
	if err := a.RequireFresh(caller); !errors.Is(err, ErrReauthenticationRequired) {
		t.Fatalf("past the max age: %v; want ErrReauthenticationRequired", err)
	}
	caller.AuthTime = time.Time{}
	clk.Advance(-time.Hour)
	if err := a.RequireFresh(caller); !errors.Is(err, ErrReauthenticationRequired) {
		t.Fatalf("no auth_time: %v; want ErrReauthenticationRequired", err)
	}
}
