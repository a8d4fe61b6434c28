package commands

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/internal/testenv"
)

// A refresh rotates the refresh token; the one rotated away still answers
// the current pair within the grace, on any instance; after it, using it is
// reuse: the session is revoked, its current refresh token and its access
// tokens with it, on every instance.
func TestRefreshRotationGraceAndReuse(t *testing.T) {
	t.Parallel()
	clk := testenv.NewClock(time.Now())
	a, b := twoApps(t, clock(clk.Now), grace(time.Second))
	ctx := t.Context()
	const email, pw = "refresh@example.com", "correct horse battery"
	a.signUp(t, email, pw)
	login := a.login(t, email, pw)

	p2, err := a.Refresh(ctx, login.RefreshToken, request)
	if err != nil {
		t.Fatal(err)
	}
	if p2.RefreshToken == login.RefreshToken || p2.SessionID != login.SessionID {
		t.Fatalf("refresh did not rotate: %+v", p2)
	}
	again, err := b.Refresh(ctx, login.RefreshToken, request)
	if err != nil || again.RefreshToken != p2.RefreshToken {
		t.Fatalf("the previous refresh token within the grace: %+v, %v; want the current pair", again, err)
	}
	clk.Advance(1200 * time.Millisecond)
	if _, err := a.Refresh(ctx, login.RefreshToken, request); !errors.Is(err, ErrInvalidRefreshToken) {
		t.Fatalf("reuse after the grace: %v; want ErrInvalidRefreshToken", err)
	}
	if _, err := a.Refresh(ctx, p2.RefreshToken, request); !errors.Is(err, ErrInvalidRefreshToken) {
		t.Fatalf("the session survived reuse detection: %v", err)
	}
	if a.authorized(t, p2.AccessToken) {
		t.Fatal("an access token of a session revoked for reuse still works")
	}
	testenv.Eventually(t, time.Second, func() bool { return !b.authorized(t, p2.AccessToken) })
}

// Each instance keeps the state of the sessions it refreshed, so refreshes
// that alternate between instances find each other's state out of date: a
// rotation must still work on every turn, and reuse must still revoke.
func TestRefreshAlternatingBetweenInstances(t *testing.T) {
	t.Parallel()
	a, b := twoApps(t, grace(0))
	ctx := t.Context()
	login := a.signUp(t, "alternating@example.com", "correct horse battery")
	tokens := []string{login.RefreshToken}
	for i, in := range []*testApp{a, b, a, b, a, b} {
		p, err := in.Refresh(ctx, tokens[i], request)
		if err != nil {
			t.Fatalf("refresh %d: %v", i+1, err)
		}
		if !in.authorized(t, p.AccessToken) || in.user(t, p.UserID).ID != login.UserID {
			t.Fatalf("refresh %d: its access token does not work", i+1)
		}
		tokens = append(tokens, p.RefreshToken)
	}
	// b last rotated tokens[5] away; a rotated tokens[4] away, so in the
	// state a holds tokens[5] is current. a must see the reuse all the same.
	if _, err := a.Refresh(ctx, tokens[5], request); !errors.Is(err, ErrInvalidRefreshToken) {
		t.Fatalf("reuse of a rotated-away token: %v; want ErrInvalidRefreshToken", err)
	}
	for _, in := range []*testApp{b, a} {
		if _, err := in.Refresh(ctx, tokens[6], request); !errors.Is(err, ErrInvalidRefreshToken) {
			t.Fatalf("the current token after reuse detection: %v; want ErrInvalidRefreshToken", err)
		}
	}
}

// Logout ends the caller's session on every instance; a user revokes one of
// their sessions (not twice, and nobody else's), or every other one.
func TestLogoutAndSessionRevocation(t *testing.T) {
	t.Parallel()
	a, b := twoApps(t)
	ctx := t.Context()
	const email, pw = "sessions@example.com", "correct horse battery"
	signup := a.signUp(t, email, pw)

	if !b.authorized(t, signup.AccessToken) {
		t.Fatal("a new session's access token does not work")
	}
	if err := a.Logout(ctx, a.claims(t, signup.AccessToken), request); err != nil {
		t.Fatal(err)
	}
	if a.authorized(t, signup.AccessToken) {
		t.Fatal("a logged-out session's access token still works")
	}
	testenv.Eventually(t, time.Second, func() bool { return !b.authorized(t, signup.AccessToken) })

	current, desk := a.login(t, email, pw), a.login(t, email, pw)
	caller := a.claims(t, current.AccessToken)
	if active, err := a.activeSessions(ctx, caller.UserID); err != nil || !slices.Equal(active, []uuid.UUID{desk.SessionID, current.SessionID}) {
		t.Fatalf("active sessions: %v, %v; want the two, newest first", active, err)
	}
	if err := a.RevokeSession(ctx, caller, desk.SessionID, request); err != nil {
		t.Fatal(err)
	}
	if active, err := a.activeSessions(ctx, caller.UserID); err != nil || slices.Contains(active, desk.SessionID) {
		t.Fatalf("a revoked session is still listed: %v, %v", active, err)
	}
	if a.authorized(t, desk.AccessToken) {
		t.Fatal("a revoked session's access token still works")
	}
	if err := a.RevokeSession(ctx, caller, desk.SessionID, request); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoking a revoked session: %v; want ErrNotFound", err)
	}
	stranger := a.signUp(t, "stranger@example.com", pw)
	if err := a.RevokeSession(ctx, caller, stranger.SessionID, request); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoking someone else's session: %v; want ErrNotFound", err)
	}

	l1, l2 := a.login(t, email, pw), a.login(t, email, pw)
	if n, err := a.revokeOthers(ctx, caller); err != nil || n != 2 {
		t.Fatalf("revoke the others: %d, %v; want 2", n, err)
	}
	for _, tok := range []string{l1.AccessToken, l2.AccessToken} {
		if a.authorized(t, tok) {
			t.Fatal("another session's access token still works after revoking the others")
		}
	}
	if !a.authorized(t, current.AccessToken) || !a.authorized(t, stranger.AccessToken) {
		t.Fatal("revoking the others ended the caller's own session or someone else's")
	}
}
